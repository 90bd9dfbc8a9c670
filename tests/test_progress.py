"""Tests for companion.progress: the environment switch and the explicit override."""

from __future__ import annotations

import pytest

from companion.progress import PROGRESS_ENV, progress_bar, progress_enabled


@pytest.mark.parametrize("value", ["0", "false", "No", " off "])
def test_falsy_environment_value_disables_bars(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(PROGRESS_ENV, value)
    assert progress_enabled() is False
    with progress_bar(range(3), desc="x") as bar:
        assert bar.disable
        assert list(bar) == [0, 1, 2]  # a disabled bar still iterates


@pytest.mark.parametrize("value", [None, "1", "yes"])
def test_bars_are_on_when_the_variable_is_unset_or_truthy(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv(PROGRESS_ENV, raising=False)
    else:
        monkeypatch.setenv(PROGRESS_ENV, value)
    assert progress_enabled() is True


@pytest.mark.parametrize(("env", "explicit"), [("0", True), ("1", False)])
def test_explicit_argument_wins_over_the_environment(
    monkeypatch: pytest.MonkeyPatch, env: str, explicit: bool
) -> None:
    monkeypatch.setenv(PROGRESS_ENV, env)
    assert progress_enabled(explicit) is explicit
    with progress_bar(range(2), desc="x", enabled=explicit) as bar:
        assert bar.disable is (not explicit)
