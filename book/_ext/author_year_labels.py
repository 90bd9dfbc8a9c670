"""Bibliography labels in the author–year form of the in-text citations.

``bibtex_reference_style: author_year`` makes sphinxcontrib-bibtex cite "Kuzina et al.
(2022)" in the text, but the bibliography page still labels its entries with the
formatting style's alpha labels ("[KWT22]"), which a reader cannot match to the text and
which garble accented names. pybtex ships no author–year label style, so this extension
registers one (names decoded from LaTeX, so "Trzci{\\'n}ski" reads "Trzciński") and a
formatting style that uses it; ``bibtex_default_style: author_year`` in ``_config.yml``
selects it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from string import ascii_lowercase

from pybtex.database import Entry
from pybtex.plugin import register_plugin
from pybtex.richtext import Text
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle

STYLE = "author_year"


def _surname(person) -> str:
    return Text.from_latex(
        " ".join(person.prelast_names + person.last_names)
    ).render_as("text")


def author_year(entry: Entry) -> str:
    """'Child, 2019', 'Kingma and Welling, 2014' or 'Kuzina et al., 2022'."""
    names = [
        _surname(p)
        for p in entry.persons.get("author", entry.persons.get("editor", []))
    ]
    if not names:
        raise ValueError(f"bibliography entry {entry.key!r} has no author or editor")
    if len(names) == 1:
        who = names[0]
    elif len(names) == 2:
        who = " and ".join(names)
    else:
        who = f"{names[0]} et al."
    return f"{who}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearLabelStyle(BaseLabelStyle):
    """Author–year labels, with a, b, … appended where two entries would share one."""

    def format_labels(self, sorted_entries: Iterable[Entry]) -> Iterator[str]:
        entries = list(sorted_entries)
        labels = [author_year(e) for e in entries]
        repeated = {label for label, n in Counter(labels).items() if n > 1}
        seen: Counter[str] = Counter()
        for label in labels:
            if label in repeated:
                yield label + ascii_lowercase[seen[label]]
                seen[label] += 1
            else:
                yield label


class AuthorYearStyle(PlainStyle):
    """pybtex's plain style (sorted by author, year, title) with author–year labels."""

    default_label_style = STYLE


def setup(app) -> dict:
    register_plugin("pybtex.style.labels", STYLE, AuthorYearLabelStyle)
    register_plugin("pybtex.style.formatting", STYLE, AuthorYearStyle)
    return {"parallel_read_safe": True}
