"""companion.diagrams.daed_split: the figure of DAED's split, its labels and checks."""

from __future__ import annotations

from collections.abc import Iterator

import matplotlib

matplotlib.use("Agg")  # before pyplot is imported anywhere in this process

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from companion.diagrams.daed_split import draw_daed_split  # noqa: E402
from companion.style import MAX_FIGURE_WIDTH  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures() -> Iterator[None]:
    yield
    plt.close("all")


def _texts(fig: Figure) -> str:
    return "\n".join(t.get_text() for t in fig.axes[0].texts)


def test_the_diagram_names_both_parts_and_the_states_either_side_of_the_split() -> None:
    fig = draw_daed_split()
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    text = _texts(fig)
    assert "GENERATIVE" in text and "DENOISING" in text
    for state in (r"$x = z_0$", r"$z_k$", r"$z_T$"):
        assert state in text
    assert "1-\\bar\\alpha_t \\geq \\beta_1" in text  # how k is chosen


def test_given_k_t_and_beta_1_the_labels_state_them_and_the_share_replaced() -> None:
    text = _texts(draw_daed_split(k=20, T=200, beta_1=0.1))
    assert "20 backward steps" in text  # the k steps the autoencoder replaces
    assert "T - k = 180" in text  # the backward diffusion's steps
    assert r"\beta_1 = 0.1" in text and "10.0% replaced" in text


def test_the_figure_fits_the_text_column() -> None:
    width, _ = draw_daed_split().get_size_inches()
    assert width <= MAX_FIGURE_WIDTH


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(k=0, T=10),
        dict(k=10, T=10),
        dict(k=3),  # k without T
        dict(T=1),
        dict(beta_1=0.0),
        dict(beta_1=1.0),
        dict(width=MAX_FIGURE_WIDTH + 0.1),
        dict(height=0.0),
    ],
)
def test_impossible_settings_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        draw_daed_split(**kwargs)


def test_options_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        draw_daed_split(20, 200)  # type: ignore[misc]
