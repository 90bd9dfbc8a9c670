r"""The threat model and the HMC defence as one pipeline (Kuzina et al., 2022).

A clean input :math:`x^r` reaches the model through the attacker, who adds a
perturbation :math:`\varepsilon` with :math:`\|\varepsilon\|_\infty \le \delta`,
knowing the encoder (white box). The encoder :math:`q_\phi(z \mid x^a)` gives a
starting code; the defence runs :math:`T` HMC transitions towards the model's own
posterior :math:`p_\theta(z \mid x^a) \propto p(z)\, p_\theta(x^a \mid z)`, and the
decoder and the latent classifier read :math:`z^{(T)}` instead of the encoder's code.
Without the defence (:math:`T = 0`) they read the encoder's code directly.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch

from companion.style import MAX_FIGURE_WIDTH

__all__ = ["ATTACKER_COLOUR", "DEFENCE_COLOUR", "draw_defence_pipeline"]

ATTACKER_COLOUR = "#c0392b"  # what the attacker controls
DEFENCE_COLOUR = "#1e8449"  # what the defence adds
_MODEL_COLOUR = "#34495e"  # the trained VAE and its classifier, fixed

# The drawing is laid out in units of 0.1 in on a canvas 75 units wide (the text column
# at 7.5 in) and 28 high; a narrower ``width`` scales everything down.
_CANVAS = (75.0, 28.0)


def draw_defence_pipeline(
    *,
    radius: float | None = None,
    steps: int | None = None,
    show_bypass: bool = True,
    width: float = MAX_FIGURE_WIDTH,
) -> Figure:
    """Draw the threat model and the defence: x^r -> attacker -> x^a -> encoder ->
    HMC -> decoder / latent classifier.

    The attacker's part is drawn in :data:`ATTACKER_COLOUR` and the defence's in
    :data:`DEFENCE_COLOUR`; encoder, decoder and classifier (the trained model, which
    neither side changes) in grey-blue.

    Args:
        radius: the L∞ radius δ to print in the attacker's box (pixels in [0, 1]);
            ``None`` prints the symbol δ only.
        steps: the number of HMC transitions T to print in the defence's box; ``None``
            prints the symbol T only.
        show_bypass: draw the undefended path (T = 0: the decoder and classifier read
            the encoder's code) as a dashed arrow under the defence.
        width: figure width in inches, at most :data:`companion.style.MAX_FIGURE_WIDTH`;
            the height follows the drawing's aspect (28 : 75).

    Returns:
        The matplotlib figure (not shown; close it or glue it).

    Raises:
        ValueError: a radius that is not positive, a negative ``steps``, or a width
            outside (0, MAX_FIGURE_WIDTH].
    """
    if radius is not None and not radius > 0:
        raise ValueError(f"radius δ must be positive, got {radius}")
    if steps is not None and steps < 0:
        raise ValueError(f"steps T must be >= 0, got {steps}")
    if not 0 < width <= MAX_FIGURE_WIDTH:
        raise ValueError(
            f"width must be in (0, {MAX_FIGURE_WIDTH}] inches (the text column), "
            f"got {width}"
        )
    scale = width / MAX_FIGURE_WIDTH
    fig = plt.figure(figsize=(width, width * _CANVAS[1] / _CANVAS[0]))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, _CANVAS[0])
    ax.set_ylim(0, _CANVAS[1])
    ax.set_axis_off()
    font = 8.5 * scale

    def box(x: float, y: float, w: float, text: str, colour: str, h: float = 6.0):
        ax.add_patch(
            FancyBboxPatch(
                (x - w / 2, y - h / 2),
                w,
                h,
                boxstyle="round,pad=0.3,rounding_size=0.8",
                facecolor="white",
                edgecolor=colour,
                linewidth=1.4,
            )
        )
        ax.text(x, y, text, ha="center", va="center", fontsize=font, color="black")
        return (x - w / 2 - 0.3, x + w / 2 + 0.3, y - h / 2 - 0.3, y + h / 2 + 0.3)

    def arrow(start, end, *, colour="black", style="-", rad=0.0, label=None, at=None):
        ax.annotate(
            "",
            xy=end,
            xytext=start,
            arrowprops=dict(
                arrowstyle="-|>",
                color=colour,
                linestyle=style,
                linewidth=1.1,
                shrinkA=0,
                shrinkB=0,
                connectionstyle=f"arc3,rad={rad}",
            ),
        )
        if label:
            ax.text(*at, label, ha="center", va="bottom", fontsize=font, color=colour)

    def region(bounds, colour: str, label: str) -> None:
        left, right, bottom, top = bounds
        ax.add_patch(
            FancyBboxPatch(
                (left - 0.8, bottom - 0.8),
                right - left + 1.6,
                top - bottom + 1.6,
                boxstyle="round,pad=0,rounding_size=1",
                facecolor=colour,
                alpha=0.08,
                edgecolor=colour,
                linestyle="--",
                linewidth=1.0,
            )
        )
        ax.text(
            (left + right) / 2,
            top + 1.3,
            label,
            ha="center",
            va="bottom",
            fontsize=font,
            color=colour,
        )

    y = 15.0
    delta = r"\delta" if radius is None else rf"\delta = {radius:g}"
    t = "$T$" if steps is None else f"$T = {steps}$"
    clean = box(4.5, y, 6.5, "clean\ninput $x^r$", "black")
    attacker = box(
        16.5,
        y,
        11.5,
        "adds $\\varepsilon$ with\n$\\Vert\\varepsilon\\Vert_\\infty \\leq "
        + delta
        + "$",
        ATTACKER_COLOUR,
    )
    encoder = box(30.0, y, 9.0, "encoder\n$q_\\phi(z \\mid x^a)$", _MODEL_COLOUR)
    hmc = box(
        45.0,
        y,
        13.5,
        f"HMC, {t}\ntowards $p_\\theta(z \\mid x^a)$",
        DEFENCE_COLOUR,
    )
    split = (55.0, y)
    ax.plot(*split, "o", color="black", markersize=3 * scale)
    top, bottom = 22.0, 8.0
    decoder = box(
        65.0,
        top,
        13.0,
        "decoder $p_\\theta(x \\mid z)$\n→ reconstruction",
        _MODEL_COLOUR,
    )
    classifier = box(65.0, bottom, 13.0, "latent classifier\n→ class", _MODEL_COLOUR)

    arrow((clean[1], y), (attacker[0], y))
    arrow((attacker[1], y), (encoder[0], y), label="$x^a$", at=(24.3, y + 0.4))
    arrow((encoder[1], y), (hmc[0], y), label="$z^{(0)}$", at=(36.6, y + 0.4))
    arrow((hmc[1], y), split)
    ax.text(
        split[0] - 0.3, y + 1.0, "$z^{(T)}$", ha="right", va="bottom", fontsize=font
    )
    arrow(split, (decoder[0], top), rad=-0.25)
    arrow(split, (classifier[0], bottom), rad=0.25)
    if show_bypass:
        arrow(
            (encoder[1] - 2.0, encoder[2]),
            (split[0] - 0.3, y - 0.5),
            colour="grey",
            style="--",
            rad=0.45,
        )
        ax.text(
            45.0,
            4.2,
            "undefended ($T = 0$): the encoder's code",
            ha="center",
            va="bottom",
            fontsize=font * 0.9,
            color="grey",
        )
    region(
        attacker,
        ATTACKER_COLOUR,
        "the attacker controls $\\varepsilon$\n(knows the encoder)",
    )
    region(hmc, DEFENCE_COLOUR, "the defence adds $T$ HMC\ntransitions per input")
    return fig
