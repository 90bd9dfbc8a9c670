"""The whiteboard drawing of chapter 5's TV bound (companion.diagrams.tv_bound)."""

from __future__ import annotations

from collections.abc import Iterator

import matplotlib as mpl
import matplotlib.pyplot as plt
import pytest
from matplotlib.figure import Figure

from companion.diagrams.tv_bound import TERM_LABELS, draw_tv_bound
from companion.style import MAX_FIGURE_WIDTH


@pytest.fixture(autouse=True)
def _close_figures() -> Iterator[None]:
    yield
    plt.close("all")


def _texts(fig: Figure) -> str:
    return "\n".join(t.get_text() for ax in fig.axes for t in ax.texts)


def test_draws_a_figure_within_the_column_width() -> None:
    fig = draw_tv_bound()
    assert isinstance(fig, Figure)
    width, height = fig.get_size_inches()
    assert 0 < width <= MAX_FIGURE_WIDTH and height > 0


def test_labels_the_three_terms_and_the_left_side() -> None:
    text = _texts(draw_tv_bound())
    assert TERM_LABELS == ("MCMC term", "attack term", "approximation gap")
    for label in TERM_LABELS:
        assert text.count(label) == 1, label
    assert "left side" in text
    # the terms as chapter 5 states them: two Pinsker terms and one TV
    assert text.count(r"\sqrt{\frac{1}{2}\mathrm{KL}") == 2
    assert r"\mathrm{TV}[p_\theta(z \mid x^a) \,\Vert\, p_\theta(z \mid x^r)]" in text


def test_names_the_clean_and_attacked_posteriors_and_the_encoders_code() -> None:
    text = _texts(draw_tv_bound())
    for name in ("clean posterior", "attacked input's posterior", "encoder's code"):
        assert name in text
    assert "fooled encoder" in text
    assert "fooled encoder" not in _texts(draw_tv_bound(show_chain_start=False))


def test_renders_to_png_and_refuses_a_figure_wider_than_the_column() -> None:
    from IPython.core.pylabtools import print_figure

    fig = draw_tv_bound(width=6.0, height=3.0, font_size=8.0)
    with mpl.rc_context({"text.usetex": False}):
        fig.canvas.draw()  # mathtext parses every label
    # what a notebook's inline backend stores (tight bounding box, as it crops)
    assert print_figure(fig, "png", bbox_inches="tight").startswith(b"\x89PNG")
    assert fig.number in plt.get_fignums(), "a pyplot figure, so notebooks show it"
    assert tuple(fig.get_size_inches()) == (6.0, 3.0)
    with pytest.raises(ValueError, match="width"):
        draw_tv_bound(width=MAX_FIGURE_WIDTH + 1)
    with pytest.raises(ValueError, match="height"):
        draw_tv_bound(height=0)
