"""Tests for companion.glyphs: the offline letters are deterministic,
in range and split cleanly."""

from __future__ import annotations

import pytest
import torch

from companion.data import load_images
from companion.glyphs import GLYPH_FONTS, GLYPH_LETTERS, glyph_split, render_glyphs


def test_every_font_and_letter_renders_at_two_sizes_in_range() -> None:
    images, labels = render_glyphs(8)
    assert images.shape == (len(GLYPH_FONTS) * len(GLYPH_LETTERS) * 2, 1, 8, 8)
    assert 0 <= images.min() and images.amax(dim=(1, 2, 3)).min() == pytest.approx(1.0)
    assert torch.equal(labels.unique(), torch.arange(52))


def test_splits_are_disjoint_cover_everything_and_are_identical_on_every_call() -> None:
    images, _ = render_glyphs(8)
    parts = [glyph_split(s, image_size=8)[0] for s in ("train", "valid", "test")]
    assert sum(len(p) for p in parts) == len(images)
    assert torch.equal(glyph_split("test", image_size=8)[0], parts[2])


def test_load_images_serves_glyphs_at_the_requested_size() -> None:
    data = load_images(name="glyphs", split="valid", image_size=16)
    assert data.images.shape[1:] == (1, 16, 16) and len(data.images) == len(data.labels)


def test_tiny_sizes_are_rejected() -> None:
    with pytest.raises(ValueError, match=">= 4"):
        render_glyphs(2)
