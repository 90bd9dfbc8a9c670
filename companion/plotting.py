"""Figures the chapters share: image grids and training curves."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from companion.style import MAX_FIGURE_WIDTH

__all__ = ["image_grid", "show_images", "training_curves"]


def image_grid(
    images: torch.Tensor, *, ncol: int = 10, pad: int = 1, pad_value: float = 1.0
) -> np.ndarray:
    """Tile images into one array.

    Args:
        images: (N, 1, H, W) or (N, H, W) values in [0, 1].
        ncol: images per row.
        pad: pixels between images.
        pad_value: grey level of the padding.

    Returns:
        (rows·(H+pad)−pad, ncol·(W+pad)−pad) float array, ready for ``imshow``.
    """
    if ncol < 1 or pad < 0:
        raise ValueError(f"ncol must be >= 1 and pad >= 0, got ncol={ncol}, pad={pad}")
    x = images.detach().cpu().float()
    if x.dim() == 4:
        if x.shape[1] != 1:
            raise ValueError(
                f"expected single-channel images (N, 1, H, W), got {tuple(x.shape)}"
            )
        x = x[:, 0]
    if x.dim() != 3 or len(x) == 0:
        raise ValueError(
            "expected a non-empty (N, H, W) or (N, 1, H, W) tensor, got "
            f"{tuple(images.shape)}"
        )
    n, h, w = x.shape
    ncol = min(ncol, n)
    nrow = -(-n // ncol)
    grid = np.full(
        (nrow * (h + pad) - pad, ncol * (w + pad) - pad), pad_value, dtype=np.float32
    )
    for i in range(n):
        r, c = divmod(i, ncol)
        grid[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = x[
            i
        ].numpy()
    return grid


def show_images(
    images: torch.Tensor,
    *,
    ncol: int = 10,
    title: str | None = None,
    ax: plt.Axes | None = None,
) -> plt.Axes:
    """Draw :func:`image_grid` of ``images`` in grey (0 = black, 1 = white) on ``ax``.

    Without ``ax``, a new figure gets 0.6 in per image, less where that would make the
    grid wider than the book's text column (:data:`companion.style.MAX_FIGURE_WIDTH`).
    """
    if ax is None:
        n = len(images)
        cols = min(ncol, n)
        nrow = -(-n // cols)
        side = min(0.6, MAX_FIGURE_WIDTH / cols)  # inches per image
        _, ax = plt.subplots(figsize=(cols * side, nrow * side + (0.3 if title else 0)))
    ax.imshow(
        image_grid(images, ncol=ncol),
        cmap="gray",
        vmin=0,
        vmax=1,
        interpolation="nearest",
    )
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def training_curves(
    curves: dict[str, Sequence[float]],
    *,
    best_epoch: int | None = None,
    ylabel: str = "−ELBO per image (nats)",
    ax: plt.Axes | None = None,
) -> plt.Axes:
    """Plot named per-epoch curves, marking the epoch whose weights were kept."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3))
    for label, values in curves.items():
        ax.plot(np.arange(1, len(values) + 1), values, label=label)
    if best_epoch is not None and best_epoch >= 0:
        ax.axvline(best_epoch + 1, color="grey", linestyle=":", label="kept")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.legend(frameon=False)
    return ax
