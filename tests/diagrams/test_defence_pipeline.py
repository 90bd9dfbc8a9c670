"""The threat model and defence pipeline drawing (diagrams.defence_pipeline)."""

from __future__ import annotations

import matplotlib as mpl
import matplotlib.pyplot as plt
import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from companion.diagrams.defence_pipeline import (
    ATTACKER_COLOUR,
    DEFENCE_COLOUR,
    draw_defence_pipeline,
)
from companion.style import MAX_FIGURE_WIDTH


def _texts(fig: Figure) -> str:
    return "\n".join(t.get_text() for ax in fig.axes for t in ax.texts)


def test_draws_a_figure_within_the_column_width() -> None:
    fig = draw_defence_pipeline()
    assert isinstance(fig, Figure)
    width, height = fig.get_size_inches()
    assert width == MAX_FIGURE_WIDTH and 0 < height < width
    plt.close(fig)


def test_draws_every_stage_from_the_clean_input_to_the_class() -> None:
    text = _texts(draw_defence_pipeline())
    stages = ("clean", "x^r", "x^a", "encoder", "HMC", "z^{(0)}", "z^{(T)}")
    for stage in (*stages, "decoder", "reconstruction", "classifier"):
        assert stage in text, stage
    assert r"p_\theta(z \mid x^a)" in text  # the chains' target
    assert r"\Vert_\infty" in text  # the attacker's L∞ ball


def test_marks_what_the_attacker_controls_and_what_the_defence_adds() -> None:
    fig = draw_defence_pipeline()
    text = _texts(fig)
    assert "the attacker controls" in text and "the defence adds" in text
    colours = {to_hex(t.get_color()) for t in fig.axes[0].texts}
    assert {ATTACKER_COLOUR, DEFENCE_COLOUR} <= colours
    plt.close(fig)


def test_prints_the_radius_and_the_number_of_transitions_when_given() -> None:
    assert r"\delta = 0.1" in _texts(draw_defence_pipeline(radius=0.1))
    assert "T = 25" in _texts(draw_defence_pipeline(steps=25))
    plain = _texts(draw_defence_pipeline())
    assert r"\delta = " not in plain and "T = 25" not in plain
    plt.close("all")


def test_the_undefended_path_is_drawn_only_when_asked() -> None:
    assert "undefended" in _texts(draw_defence_pipeline())
    assert "undefended" not in _texts(draw_defence_pipeline(show_bypass=False))
    plt.close("all")


def test_renders_and_refuses_bad_settings() -> None:
    fig = draw_defence_pipeline(radius=0.2, steps=0, width=5.0)
    with mpl.rc_context({"text.usetex": False}):
        fig.canvas.draw()  # mathtext parses every label
    assert fig.get_size_inches()[0] == 5.0
    plt.close(fig)
    with pytest.raises(ValueError, match="width"):
        draw_defence_pipeline(width=MAX_FIGURE_WIDTH + 1)
    with pytest.raises(ValueError, match="radius"):
        draw_defence_pipeline(radius=0.0)
    with pytest.raises(ValueError, match="steps"):
        draw_defence_pipeline(steps=-1)
