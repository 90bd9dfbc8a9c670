"""The book's figure style: one set of matplotlib settings that every chapter uses.

Chapters call :func:`use_book_style` once, in their import cell, instead of sizing fonts
and legends figure by figure. The rendered book's text column is about 770 px wide; at
the inline backend's 100 dpi a figure at most :data:`MAX_FIGURE_WIDTH` inches wide is
shown at full size, so its fonts appear at the sizes set here
(``tests/browser_check.py`` flags figures the page has to shrink).
"""

from __future__ import annotations

from typing import Any

import matplotlib as mpl
import matplotlib.style

__all__ = ["BOOK_RC", "MAX_FIGURE_WIDTH", "use_book_style"]

MAX_FIGURE_WIDTH = 7.5  # inches: the text column at 100 dpi

BOOK_RC: dict[str, Any] = {
    "figure.figsize": (6.4, 3.4),
    "figure.dpi": 100,
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def use_book_style() -> None:
    """Apply :data:`BOOK_RC` to matplotlib's global settings (idempotent)."""
    mpl.style.use(BOOK_RC)
