"""Letters rendered from the fonts matplotlib ships:
an offline out-of-distribution data set.

The diffusion chapters need images *unlike* the training digits, available offline and
identical on every machine. We draw the 52 Latin letters (A–Z, a–z) with 16 typefaces
that every matplotlib installation carries (DejaVu Sans, Sans Mono and Serif, STIX
General; regular, bold, italic / oblique, bold italic) at two ink sizes, as bright
strokes on black like the digits. FreeType renders each glyph at 64 px; we crop it to
its ink, centre it in a square with a margin, and shrink it (antialiased) to the
requested side. The 1 664 images are split 75 / 8 / 17 % by a fixed shuffle,
like the digits.

Labels are letter indices 0..51 (A..Z, a..z).
"""

from __future__ import annotations

import string
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["GLYPH_FONTS", "GLYPH_LETTERS", "render_glyphs", "glyph_split"]

GLYPH_LETTERS = string.ascii_uppercase + string.ascii_lowercase
GLYPH_FONTS = tuple(
    f"{family}{style}.ttf"
    for family, styles in (
        ("DejaVuSans", ("", "-Bold", "-Oblique", "-BoldOblique")),
        ("DejaVuSansMono", ("", "-Bold", "-Oblique", "-BoldOblique")),
        ("DejaVuSerif", ("", "-Bold", "-Italic", "-BoldItalic")),
        ("STIXGeneral", ("", "Bol", "Italic", "BolIta")),
    )
    for style in styles
)
_INK_FRACTIONS = (0.75, 0.95)  # the glyph's longer side as a fraction of the image side
_RENDER_PX = 64
_SPLIT_SEED = 20_221_128
_VALID, _TEST = 0.08, 0.17


def _font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def _render(font_file: str, letter: str) -> np.ndarray:
    from matplotlib.ft2font import FT2Font

    font = FT2Font(str(_font_dir() / font_file))
    font.set_size(_RENDER_PX, 72)
    font.set_text(letter, 0.0)
    font.draw_glyphs_to_bitmap(antialiased=True)
    ink = np.asarray(font.get_image(), dtype=np.float32) / 255.0
    rows, cols = np.nonzero(ink > 0.05)
    if len(rows) == 0:
        raise RuntimeError(f"{font_file} rendered no ink for {letter!r}")
    return ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def _square(ink: np.ndarray, fraction: float) -> np.ndarray:
    side = int(round(max(ink.shape) / fraction))
    out = np.zeros((side, side), dtype=np.float32)
    top, left = (side - ink.shape[0]) // 2, (side - ink.shape[1]) // 2
    out[top : top + ink.shape[0], left : left + ink.shape[1]] = ink
    return out


@lru_cache(maxsize=4)
def render_glyphs(image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All glyph images at ``image_size``: (1 664, 1, S, S) float32 in [0, 1] and
    labels (1 664,).

    Deterministic: the same fonts, sizes and resampling on every machine. Each image is
    scaled so its brightest pixel is 1 (the digits' range).
    """
    if not isinstance(image_size, int) or image_size < 4:
        raise ValueError(f"image_size must be an integer >= 4, got {image_size!r}")
    images, labels = [], []
    for font_file in GLYPH_FONTS:
        for label, letter in enumerate(GLYPH_LETTERS):
            ink = _render(font_file, letter)
            for fraction in _INK_FRACTIONS:
                square = torch.from_numpy(_square(ink, fraction))[None, None]
                small = F.interpolate(
                    square,
                    size=(image_size, image_size),
                    mode="bilinear",
                    align_corners=False,
                    antialias=True,
                )[0]
                images.append(small / small.max().clamp(min=1e-6))
                labels.append(label)
    return torch.stack(images).clamp_(0, 1).contiguous(), torch.tensor(
        labels, dtype=torch.int64
    )


def glyph_split(split: str, *, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One fixed split (``train``, ``valid``, ``test``) of :func:`render_glyphs`."""
    images, labels = render_glyphs(image_size)
    order = np.random.default_rng(_SPLIT_SEED).permutation(len(labels))
    n_test, n_valid = int(round(_TEST * len(labels))), int(round(_VALID * len(labels)))
    chosen = {
        "test": order[:n_test],
        "valid": order[n_test : n_test + n_valid],
        "train": order[n_test + n_valid :],
    }
    idx = torch.from_numpy(np.sort(chosen[split]))
    return images[idx].clone(), labels[idx].clone()
