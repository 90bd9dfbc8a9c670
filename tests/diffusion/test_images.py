"""Tests for companion.diffusion.images: padding 28×28 to 32×32 and passing other sizes
through."""

from __future__ import annotations

import pytest
import torch

from companion.data import ImageData
from companion.diffusion import images as diffusion_images


def test_native_digits_pass_through_and_glyphs_render_at_the_size() -> None:
    digits = diffusion_images.load_diffusion_images(
        name="digits", split="valid", image_size=8
    )
    glyphs = diffusion_images.load_diffusion_images(
        name="glyphs", split="valid", image_size=8
    )
    assert digits.images.shape[1:] == glyphs.images.shape[1:] == (1, 8, 8)


def test_28_pixel_images_are_zero_padded_to_32(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = ImageData(
        images=torch.ones(2, 1, 28, 28), labels=torch.zeros(2, dtype=torch.long)
    )
    monkeypatch.setattr(diffusion_images, "load_images", lambda **kwargs: fake)
    out = diffusion_images.load_diffusion_images(
        name="mnist", split="test", image_size=32
    )
    assert out.images.shape == (2, 1, 32, 32)
    assert out.images[:, :, 2:30, 2:30].eq(1).all() and out.images.sum() == 2 * 28 * 28
