"""DAED's split of the diffusion chain, drawn as one would on a whiteboard.

Deja et al. (2022) split a diffusion model at the step k where the forward process's
cumulative noise 1 − ᾱ_k first reaches β_1
(:func:`companion.diffusion.schedules.split_step`). Generation then runs the backward
diffusion only from z_T down to z_k (the *generative* part, where noise dominates and
content is invented) and replaces the remaining k backward steps, z_k → … → z_0 = x,
by one pass of a denoising autoencoder D(z_k) ≈ x (the *denoising* part, where the
image is already decided). :func:`draw_daed_split` draws that picture, with the
chapter's k, T and β_1 in the labels when they are given.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

from companion.style import MAX_FIGURE_WIDTH

__all__ = ["draw_daed_split"]

# x positions (data units) of the drawn states; the ellipses stand for the rest
_STATES = (
    (0.0, r"$x = z_0$"),
    (1.3, r"$z_1$"),
    (2.4, r"$\cdots$"),
    (3.5, r"$z_k$"),
    (4.8, r"$z_{k+1}$"),
    (6.1, r"$\cdots$"),
    (7.4, r"$z_{T-1}$"),
    (8.7, r"$z_T$"),
)
_SPLIT_X = 3.5
_DENOISE_COLOUR = "#d8e8f6"  # light blue
_GENERATE_COLOUR = "#fbe3cf"  # light orange


def draw_daed_split(
    *,
    k: int | None = None,
    T: int | None = None,
    beta_1: float | None = None,
    width: float = MAX_FIGURE_WIDTH,
    height: float = 3.6,
) -> Figure:
    """Draw the diffusion chain and DAED's split of it into a generator and a denoiser.

    The top row is the fixed forward process q(z_t | z_{t−1}), x = z_0 → z_1 → … → z_T.
    Under it, generation: the backward diffusion p_θ(z_{t−1} | z_t) from z_T down to
    the split step z_k (shaded orange, "generative"), then one denoising autoencoder
    D(z_k) ≈ x in a single pass (shaded blue, "denoising") in place of the k backward
    steps z_k → … → x, which are drawn faint and crossed out.

    Args:
        k: the split step, if the labels should state it (1 ≤ k < T); needs ``T``.
        T: the number of diffusion steps, if the labels should state it.
        beta_1: the cumulative noise level that defines k (0 < β_1 < 1), if the labels
            should state it.
        width: figure width in inches, at most
            :data:`companion.style.MAX_FIGURE_WIDTH` (the book's text column).
        height: figure height in inches.

    Returns:
        The figure (one axes, axis off). It is left open: close it, or hand it to
        :func:`companion.pages.glue_figure`, which does.

    Raises:
        ValueError: for a k outside 1..T−1 or without T, a T below 2, a β_1 outside
            (0, 1), or a width over the text column or a non-positive size.
    """
    if T is not None and T < 2:
        raise ValueError(f"T must be at least 2, got {T}")
    if k is not None:
        if T is None:
            raise ValueError("give T with k: the labels state k out of T steps")
        if not 1 <= k < T:
            raise ValueError(f"k must be in 1..T-1 = 1..{T - 1}, got {k}")
    if beta_1 is not None and not 0 < beta_1 < 1:
        raise ValueError(f"beta_1 must be in (0, 1), got {beta_1}")
    if not 0 < width <= MAX_FIGURE_WIDTH or height <= 0:
        raise ValueError(
            f"width must be in (0, {MAX_FIGURE_WIDTH}] inches and height positive, "
            f"got {width} × {height}"
        )

    fig, ax = plt.subplots(figsize=(width, height))
    ax.set(xlim=(-0.75, 9.45), ylim=(-2.75, 1.65))
    ax.set_axis_off()
    y_state, y_forward = 0.0, 0.75

    # the two parts of generation, shaded behind the chain
    ax.add_patch(
        Rectangle((-0.6, -2.7), _SPLIT_X + 0.6, 3.05, color=_DENOISE_COLOUR, zorder=0)
    )
    ax.add_patch(
        Rectangle((_SPLIT_X, -2.7), 9.3 - _SPLIT_X, 3.05, color=_GENERATE_COLOUR)
    )
    ax.plot([_SPLIT_X] * 2, [-2.7, 1.25], color="0.3", linestyle="--", lw=1, zorder=1)
    split = r"split step $k$: first $t$ with $1-\bar\alpha_t \geq \beta_1$"
    ax.text(_SPLIT_X + 0.1, 1.45, split, ha="left", va="center", fontsize=9)

    # the states
    for x, label in _STATES:
        if label == r"$\cdots$":
            ax.text(x, y_state, label, ha="center", va="center", fontsize=12)
            continue
        ax.add_patch(
            FancyBboxPatch(
                (x - 0.42, y_state - 0.22),
                0.84,
                0.44,
                boxstyle="round,pad=0.02",
                facecolor="white",
                edgecolor="0.2",
                lw=1.4 if x == _SPLIT_X else 0.9,
                zorder=2,
            )
        )
        size = 9 if x == 0.0 else 10.5
        ax.text(x, y_state, label, ha="center", va="center", fontsize=size, zorder=3)

    xs = [x for x, _ in _STATES]
    # forward process: arrows along the top, left to right
    for a, b in zip(xs, xs[1:], strict=False):
        ax.add_patch(_arrow((a + 0.3, y_forward), (b - 0.3, y_forward), colour="0.45"))
    ax.text(
        -0.5,
        y_forward + 0.22,
        r"fixed forward process $q(z_t \mid z_{t-1})$",
        va="bottom",
        fontsize=8.5,
        color="0.35",
    )

    # generation, part 1: the backward diffusion from z_T down to z_k
    y_back = -0.55
    generative = [x for x in xs if x >= _SPLIT_X]
    for a, b in zip(generative[::-1], generative[-2::-1], strict=False):
        ax.add_patch(_arrow((a - 0.3, y_back), (b + 0.3, y_back), colour="#c0571b"))
    steps = "T - k" if T is None or k is None else f"T - k = {T - k}"
    ax.text(
        (_SPLIT_X + xs[-1]) / 2,
        y_back - 0.2,
        "GENERATIVE: backward diffusion\n"
        rf"$p_\theta(z_{{t-1}} \mid z_t)$, ${steps}$ steps from $z_T$ to $z_k$",
        ha="center",
        va="top",
        fontsize=9,
        color="#8a3a0c",
    )

    # the k backward steps that DAED drops, faint and crossed out
    denoised = [x for x in xs if x <= _SPLIT_X]
    for a, b in zip(denoised[::-1], denoised[-2::-1], strict=False):
        ax.add_patch(
            _arrow((a - 0.3, y_back), (b + 0.3, y_back), colour="0.65", style="dotted")
        )
    ax.text(
        _SPLIT_X / 2,
        y_back - 0.15,
        f"✕ {'k' if k is None else k} backward steps\nreplaced by",
        ha="center",
        va="top",
        fontsize=8,
        color="0.4",
    )

    # generation, part 2: one denoising autoencoder from z_k straight to x
    ax.add_patch(
        _arrow(
            (_SPLIT_X - 0.1, -0.25),
            (0.1, -0.25),
            colour="#1f5f99",
            lw=2.2,
            connection="arc3,rad=-0.55",
        )
    )
    ax.text(
        _SPLIT_X / 2,
        -1.45,
        "DENOISING: one autoencoder\n"
        r"$D(z_k) \approx x$, one pass",
        ha="center",
        va="top",
        fontsize=9,
        color="#17476f",
    )

    facts = []
    if beta_1 is not None:
        facts.append(rf"$\beta_1 = {beta_1:g}$")
    if k is not None and T is not None:
        facts.append(rf"$k = {k}$ of $T = {T}$ steps ({k / T:.1%} replaced)")
    if facts:
        ax.text(
            9.3,
            -2.6,
            ";  ".join(facts),
            ha="right",
            va="bottom",
            fontsize=9,
            color="0.15",
        )
    fig.tight_layout(pad=0.2)
    return fig


def _arrow(
    start: tuple[float, float],
    end: tuple[float, float],
    *,
    colour: str,
    lw: float = 1.2,
    style: str = "solid",
    connection: str = "arc3",
) -> FancyArrowPatch:
    return FancyArrowPatch(
        start,
        end,
        arrowstyle="-|>",
        mutation_scale=10,
        color=colour,
        lw=lw,
        linestyle=style,
        connectionstyle=connection,
        zorder=2,
    )
