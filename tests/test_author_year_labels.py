"""The bibliography's author–year labels (book/_ext/author_year_labels.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from pybtex.database import Entry, Person

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "author_year_labels", ROOT / "book/_ext/author_year_labels.py"
)
labels = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(labels)


def _entry(key: str, *authors: str, year: str = "2022") -> Entry:
    entry = Entry("inproceedings", fields={"title": key, "year": year})
    entry.key = key
    entry.persons["author"] = [Person(a) for a in authors]
    return entry


def test_labels_name_one_two_or_the_first_author_and_decode_latex_accents() -> None:
    assert labels.author_year(_entry("a", "Child, Rewon", year="2021")) == "Child, 2021"
    assert (
        labels.author_year(_entry("b", "Kingma, D. P.", "Welling, Max", year="2014"))
        == "Kingma and Welling, 2014"
    )
    three = _entry("c", "Deja, Kamil", "Kuzina, Anna", "Trzci{\\'n}ski, Tomasz")
    assert labels.author_year(three) == "Deja et al., 2022"
    assert (
        labels.author_year(_entry("d", 'Kynk{\\"a}{\\"a}nniemi, Tuomas'))
        == "Kynkäänniemi, 2022"
    )


def test_entries_that_would_share_a_label_get_letters_and_others_stay_plain() -> None:
    entries = [
        _entry("x", "Ho, J.", "Jain, A.", "Abbeel, P."),
        _entry("y", "Ho, J.", "Salimans, T.", "Chen, X."),
        _entry("z", "Child, Rewon"),
    ]
    assert list(labels.AuthorYearLabelStyle().format_labels(entries)) == [
        "Ho et al., 2022a",
        "Ho et al., 2022b",
        "Child, 2022",
    ]


def test_an_entry_without_authors_is_refused_by_name() -> None:
    entry = Entry("misc", fields={"year": "2020"})
    entry.key = "anonymous"
    with pytest.raises(ValueError, match="'anonymous' has no author or editor"):
        labels.author_year(entry)
