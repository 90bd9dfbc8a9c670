"""Progress bars for long work, kept out of the rendered book's stored outputs.

Bars are on by default (terminal, Colab, a local Jupyter). ``COMPANION_PROGRESS=0``
turns them off: the Makefile sets it while it executes the book and while nbval checks
it, so stored outputs hold results rather than bars. Bars use ``leave=False`` so that a
finished bar does not stay on screen either.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

__all__ = ["progress_enabled", "progress_bar"]

T = TypeVar("T")
PROGRESS_ENV = "COMPANION_PROGRESS"


def progress_enabled(enabled: bool | None = None) -> bool:
    """``enabled`` if given, else False when ``$COMPANION_PROGRESS`` is
    0/false/no/off."""
    if enabled is not None:
        return enabled
    return os.environ.get(PROGRESS_ENV, "1").strip().lower() not in {
        "0",
        "false",
        "no",
        "off",
    }


def progress_bar(
    iterable: Iterable[T], *, desc: str, enabled: bool | None = None, **kwargs
) -> tqdm:
    """A ``tqdm.auto`` bar over ``iterable`` that disappears when done
    (``leave=False``)."""
    return tqdm(
        iterable,
        desc=desc,
        leave=False,
        disable=not progress_enabled(enabled),
        **kwargs,
    )
