"""Autodoc settings for the companion package's reference pages (book/api).

NamedTuples and dataclasses document their fields in the class docstring's
"Attributes:" section; autodoc would list each field a second time, as "Alias for field
number N", which only adds noise to the page.
"""

from __future__ import annotations

from typing import Any


def skip_namedtuple_aliases(app, what: str, name: str, obj: Any, skip: bool, options):
    """autodoc-skip-member hook: skip the generated field aliases of NamedTuples."""
    doc = getattr(obj, "__doc__", None) or ""
    if doc.startswith("Alias for field number"):
        return True
    return None


def setup(app) -> dict:
    app.connect("autodoc-skip-member", skip_namedtuple_aliases)
    return {"parallel_read_safe": True}
