"""The smoke runs' rewrite of check cells: every statement runs, failures recorded."""

from __future__ import annotations

import pytest

from check_cells import FAILED, record_failed_asserts


def _run(source: str) -> dict:
    namespace: dict = {}
    exec(record_failed_asserts(source), namespace)  # noqa: S102 - the test's own code
    return namespace


def test_failed_asserts_are_recorded_and_the_cell_runs_to_its_end() -> None:
    namespace = _run(
        "x = 1\n"
        "assert x == 2, 'x should be two'\n"
        "for i in range(3):\n"
        "    assert i < 1\n"
        "after = True\n"
    )
    assert namespace["after"] is True
    assert namespace[FAILED] == [(2, "x should be two"), (4, "i < 1"), (4, "i < 1")]


def test_passing_asserts_record_nothing_and_messages_are_lazy() -> None:
    namespace = _run("assert True, undefined_name\n")
    assert namespace[FAILED] == []


def test_asserts_inside_functions_are_rewritten_too() -> None:
    namespace = _run(
        "def check(v):\n    assert v > 0, f'{v} not positive'\ncheck(-1)\n"
    )
    assert namespace[FAILED] == [(2, "-1 not positive")]


def test_other_exceptions_still_raise() -> None:
    with pytest.raises(KeyError, match="gpu"):
        _run("bars = {'quick': 1, 'full': 2}\nassert bars['gpu'] > 0\n")


def test_magics_are_refused_with_a_syntax_error() -> None:
    with pytest.raises(SyntaxError):
        record_failed_asserts("%timeit 1 + 1\n")
