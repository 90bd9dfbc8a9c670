"""The book's figure style (companion.style)."""

from __future__ import annotations

import matplotlib as mpl

from companion import style


def test_book_style_sets_readable_fonts_and_a_size_that_fits_the_column() -> None:
    with mpl.rc_context():
        style.use_book_style()
        width, _ = mpl.rcParams["figure.figsize"]
        assert width <= style.MAX_FIGURE_WIDTH
        sizes = ("font.size", "axes.labelsize", "xtick.labelsize", "legend.fontsize")
        assert min(float(mpl.rcParams[k]) for k in sizes) >= 8
        assert mpl.rcParams["legend.frameon"] is False
