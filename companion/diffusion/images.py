"""Images at the diffusion models' size: zero-padding instead of resampling where it
fits."""

from __future__ import annotations

import torch.nn.functional as F

from companion.data import ImageData, load_images

__all__ = ["load_diffusion_images"]


def load_diffusion_images(*, name: str, split: str, image_size: int) -> ImageData:
    """One split of a data set at ``image_size``, as the diffusion chapters use it.

    28×28 MNIST-like images are zero-padded to 32×32 (the UNet halves the side three
    times), so no pixel is resampled; glyphs are rendered at the size; other sizes are
    resized like :func:`companion.data.load_images` does.
    """
    if name == "glyphs":
        return load_images(name=name, split=split, image_size=image_size)
    native = load_images(name=name, split=split)
    side = native.images.shape[-1]
    pad = image_size - side
    if pad > 0 and pad % 2 == 0 and pad <= side // 4:
        return ImageData(
            images=F.pad(native.images, (pad // 2,) * 4).contiguous(),
            labels=native.labels,
        )
    if pad == 0:
        return native
    return load_images(name=name, split=split, image_size=image_size)
