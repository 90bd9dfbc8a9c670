"""companion.pages: numbers and figures glued for the rendered book's prose."""

from __future__ import annotations

import matplotlib

matplotlib.use("agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from companion import pages


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (np.float64(0.25), 0.25),
        (np.int64(3), 3),
        (np.array([1.5]), 1.5),
        (torch.tensor(2.0), 2.0),
        (7, 7),
        ("less", "less"),
        (True, True),
    ],
)
def test_plain_turns_scalars_into_python_numbers(value, expected) -> None:
    converted = pages.plain(value)
    assert converted == expected
    assert type(converted) is type(expected)


@pytest.mark.parametrize("value", [np.zeros(3), torch.ones(2), [1, 2], None])
def test_plain_refuses_anything_but_one_number(value) -> None:
    with pytest.raises(TypeError, match="glue"):
        pages.plain(value)


def test_glue_values_glues_plain_numbers_without_display(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(
        pages, "_glue", lambda: lambda *args, **kwargs: calls.append((args, kwargs))
    )
    pages.glue_values(share=np.float64(0.125), t_max=np.int64(25))
    assert calls == [
        (("share", 0.125), {"display": False}),
        (("t_max", 25), {"display": False}),
    ]
    assert type(calls[0][0][1]) is float


def test_glue_values_checks_every_value_before_gluing_any(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(pages, "_glue", lambda: lambda *args, **kw: calls.append(args))
    with pytest.raises(TypeError):
        pages.glue_values(good=1.0, bad=np.zeros(2))
    assert calls == []


def test_without_myst_nb_numbers_are_skipped_and_figures_shown(monkeypatch) -> None:
    monkeypatch.setattr(pages, "_glue", lambda: None)
    shown = []
    monkeypatch.setattr("IPython.display.display", shown.append)
    pages.glue_values(x=1.0)
    figure = plt.figure()
    pages.glue_figure("fig-x", figure)
    assert shown == [figure]
    assert not plt.fignum_exists(figure.number)


def test_glue_figure_glues_and_closes_the_figure(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(
        pages, "_glue", lambda: lambda *args, **kwargs: calls.append((args, kwargs))
    )
    figure = plt.figure()
    pages.glue_figure("fig-x", figure)
    assert calls == [(("fig-x", figure), {"display": False})]
    assert not plt.fignum_exists(figure.number)
