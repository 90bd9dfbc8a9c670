"""A whiteboard drawing of the TV bound's three terms (chapter 5).

Kuzina, Welling & Tomczak (2022, theorem 1) bound how far the defended codes for an
attacked input x^a are from the encoder's codes for its reference x^r by a path through
the model's two true posteriors (:mod:`companion.bounds` computes every term)::

    TV[q^(t)(z|x^a) ‖ q_φ(z|x^r)] ≤ √(½ KL[q^(t)(z|x^a) ‖ p_θ(z|x^a)])   (MCMC term)
                                   + TV[p_θ(z|x^a) ‖ p_θ(z|x^r)]          (attack term)
                                   + √(½ KL[q_φ(z|x^r) ‖ p_θ(z|x^r)])     (approx. gap)

:func:`draw_tv_bound` draws that path in a sketch of code space: each distribution is a
contour, each term an arrow between two of them, and the left side the direct arrow that
the three-arrow path bounds (the triangle inequality). The fooled encoder's code
q_φ(z|x^a), where the chain starts, sits away from both posteriors; the chain's path
bends from it towards p_θ(z|x^a).
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse, FancyArrowPatch

from companion.style import MAX_FIGURE_WIDTH

__all__ = ["TERM_LABELS", "draw_tv_bound"]

#: The three terms' names, as the chapter and the drawing call them.
TERM_LABELS: tuple[str, str, str] = ("MCMC term", "attack term", "approximation gap")

# Centres (x, y) of the distributions in the sketch's data coordinates (0..10 × 0..5).
_CLEAN_ENCODER = (1.4, 1.55)  # q_φ(z|x^r)
_CLEAN_POSTERIOR = (2.6, 3.4)  # p_θ(z|x^r)
_ATTACKED_POSTERIOR = (5.4, 3.55)  # p_θ(z|x^a)
_CHAIN = (6.6, 1.6)  # q^(t)(z|x^a)
_FOOLED_ENCODER = (9.0, 1.0)  # q_φ(z|x^a), the chain's start


def draw_tv_bound(
    *,
    width: float = 7.0,
    height: float = 3.5,
    font_size: float = 9.0,
    show_chain_start: bool = True,
) -> Figure:
    """Draw the TV bound as a path of three labelled arrows between distributions.

    Args:
        width: figure width in inches, at most
            :data:`companion.style.MAX_FIGURE_WIDTH` (the book's text column).
        height: figure height in inches.
        font_size: size of the labels in points.
        show_chain_start: also draw the fooled encoder's code q_φ(z|x^a) and the
            chain's path from it to q^(t)(z|x^a).

    Returns:
        A new pyplot figure (not shown, not closed: close it, or hand it to
        :func:`companion.pages.glue_figure`) with one axes and no ticks. Its texts
        name the distributions, the three terms (:data:`TERM_LABELS`) and the left
        side.

    Raises:
        ValueError: ``width`` exceeds the column or a size is not positive.
    """
    if not 0 < width <= MAX_FIGURE_WIDTH:
        raise ValueError(f"width must be in (0, {MAX_FIGURE_WIDTH}] in, got {width}")
    if height <= 0 or font_size <= 0:
        raise ValueError(f"height and font_size must be > 0, got {height}, {font_size}")
    # through pyplot, so that a notebook's inline backend is set up to show it even
    # when it is the page's first figure (a bare Figure() was glued as text only)
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set(xlim=(0, 10), ylim=(0, 5))
    ax.set_axis_off()
    small = 0.9 * font_size

    def blob(centre, w, h, angle, colour, style="-"):
        for scale, alpha in ((1.0, 0.9), (0.55, 0.6)):
            ax.add_patch(
                Ellipse(
                    centre,
                    w * scale,
                    h * scale,
                    angle=angle,
                    fill=False,
                    ec=colour,
                    ls=style,
                    lw=1.3,
                    alpha=alpha,
                )
            )

    def arrow(start, end, colour, *, style="-|>", ls="-", rad=0.0, lw=1.6):
        ax.add_patch(
            FancyArrowPatch(
                start,
                end,
                arrowstyle=style,
                mutation_scale=12,
                color=colour,
                ls=ls,
                lw=lw,
                shrinkA=14,
                shrinkB=14,
                connectionstyle=f"arc3,rad={rad}",
            )
        )

    posterior, encoder, chain = "tab:blue", "tab:orange", "tab:green"
    blob(_CLEAN_POSTERIOR, 1.5, 0.9, 25, posterior)
    blob(_ATTACKED_POSTERIOR, 1.5, 0.9, 25, posterior)
    blob(_CLEAN_ENCODER, 1.2, 0.55, 0, encoder)
    blob(_CHAIN, 1.3, 0.75, 15, chain)
    text: dict[str, Any] = dict(fontsize=font_size, va="center")
    grey: dict[str, Any] = dict(fontsize=small, va="center", color="grey")
    left: dict[str, Any] = dict(ha="right")
    right: dict[str, Any] = dict(ha="left")
    _say(
        ax,
        _plus(_CLEAN_POSTERIOR, -0.85, 0.1),
        r"$p_\theta(z \mid x^r)$",
        **text,
        **left,
    )
    _say(ax, _plus(_CLEAN_POSTERIOR, -0.85, -0.2), "clean posterior", **grey, **left)
    _say(
        ax,
        _plus(_ATTACKED_POSTERIOR, 0.85, 0.1),
        r"$p_\theta(z \mid x^a)$",
        **text,
        **right,
    )
    _say(
        ax,
        _plus(_ATTACKED_POSTERIOR, 0.85, -0.2),
        "attacked input's posterior",
        **grey,
        **right,
    )
    centre: dict[str, Any] = dict(ha="center")
    _say(ax, _plus(_CLEAN_ENCODER, 0, -0.5), r"$q_\phi(z \mid x^r)$", **text, **centre)
    _say(ax, _plus(_CLEAN_ENCODER, 0, -0.8), "encoder's code, clean", **grey, **centre)
    _say(ax, _plus(_CHAIN, 0, -0.6), r"$q^{(t)}(z \mid x^a)$", **text, **centre)
    _say(ax, _plus(_CHAIN, 0, -0.9), "defended codes", **grey, **centre)
    if show_chain_start:
        blob(_FOOLED_ENCODER, 1.1, 0.5, 0, encoder, style="--")
        _say(
            ax,
            _plus(_FOOLED_ENCODER, 0, -0.5),
            r"$q_\phi(z \mid x^a)$",
            **text,
            **centre,
        )
        _say(ax, _plus(_FOOLED_ENCODER, 0, -0.8), "fooled encoder", **grey, **centre)
        arrow(_FOOLED_ENCODER, _CHAIN, chain, ls="--", rad=-0.25, lw=1.2)
        ax.text(8.3, 1.95, "HMC, t steps", fontsize=small, color=chain, ha="center")

    # The three terms: a path from the defended codes to the clean encoder's code.
    arrow(_CHAIN, _ATTACKED_POSTERIOR, "black")
    arrow(_ATTACKED_POSTERIOR, _CLEAN_POSTERIOR, "black")
    arrow(_CLEAN_POSTERIOR, _CLEAN_ENCODER, "black")
    term: dict[str, Any] = dict(fontsize=small, va="center")
    ax.text(
        6.3,
        2.55,
        "① " + TERM_LABELS[0] + r" $\to 0$ as $t \to \infty$"
        "\n"
        r"$\sqrt{\frac{1}{2}\mathrm{KL}[q^{(t)}(z \mid x^a) \,\Vert\, "
        r"p_\theta(z \mid x^a)]}$",
        ha="left",
        **term,
    )
    ax.text(
        4.0,
        4.5,
        "② " + TERM_LABELS[1] + r", $o(\sqrt{\Vert\varepsilon\Vert})$"
        "\n"
        r"$\mathrm{TV}[p_\theta(z \mid x^a) \,\Vert\, p_\theta(z \mid x^r)]$",
        ha="center",
        **term,
    )
    ax.text(
        2.25,
        2.4,
        "③ " + TERM_LABELS[2] + "\n"
        r"$\sqrt{\frac{1}{2}\mathrm{KL}[q_\phi(z \mid x^r) \,\Vert\, "
        r"p_\theta(z \mid x^r)]}$",
        ha="left",
        **term,
    )
    # The left side: the direct distance that the three-arrow path bounds.
    arrow(_CHAIN, _CLEAN_ENCODER, "tab:red", style="<|-|>", ls=":", rad=-0.15)
    ax.text(
        4.0,
        0.55,
        r"left side $\leq$ ① + ② + ③"
        "\n"
        r"$\mathrm{TV}[q^{(t)}(z \mid x^a) \,\Vert\, q_\phi(z \mid x^r)]$",
        fontsize=small,
        color="tab:red",
        ha="center",
        va="center",
    )
    return fig


def _say(ax: Axes, at: tuple[float, float], label: str, **style: Any) -> None:
    x, y = at
    ax.text(x, y, label, **style)


def _plus(point: tuple[float, float], dx: float, dy: float) -> tuple[float, float]:
    return point[0] + dx, point[1] + dy
