"""Convolutional building blocks shared by the single-layer and hierarchical VAEs.

Each stride-2 convolution (kernel 3, padding 1) maps a side s to ceil(s / 2); the
decoder mirrors the encoder with transposed convolutions whose output padding restores
the exact sizes, so any square image from 8×8 to 32×32 and beyond works.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ConvEncoder", "ConvDecoder", "check_architecture", "max_depth"]


def _sizes(image_size: int, n_layers: int) -> list[int]:
    """Spatial sizes after each stride-2, kernel-3, padding-1 convolution:
    s -> ceil(s/2)."""
    sizes = [image_size]
    for _ in range(n_layers):
        sizes.append((sizes[-1] + 1) // 2)
    return sizes


def max_depth(image_size: int) -> int:
    """The most stride-2 convolutions an image of this side supports
    (down to a 1×1 map)."""
    return (image_size - 1).bit_length()


def check_architecture(*, image_size: int, channels: tuple[int, ...]) -> None:
    """Raise ``ValueError`` unless ``channels`` is a non-empty tuple that fits
    ``image_size``."""
    if image_size < 2 or not channels or min(channels) < 1:
        raise ValueError(
            "need image_size >= 2 and a non-empty tuple of positive channels; got "
            f"{image_size}, {channels}"
        )
    if len(channels) > max_depth(image_size):
        raise ValueError(
            f"{len(channels)} stride-2 convolutions are too many for "
            f"{image_size}×{image_size} images; use at most {max_depth(image_size)}"
        )


class ConvEncoder(nn.Module):
    """Images (B, 1, H, W) -> features (B, out_features):
    stride-2 convolutions with SiLU."""

    def __init__(self, *, image_size: int, channels: tuple[int, ...]) -> None:
        super().__init__()
        check_architecture(image_size=image_size, channels=channels)
        layers: list[nn.Module] = []
        c_in = 1
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.SiLU()]
            c_in = c
        self.net = nn.Sequential(*layers, nn.Flatten())
        self.out_features = channels[-1] * _sizes(image_size, len(channels))[-1] ** 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvDecoder(nn.Module):
    """Vectors (..., in_features) -> Bernoulli logits (..., 1, H, W),
    mirroring :class:`ConvEncoder`."""

    def __init__(
        self, *, image_size: int, channels: tuple[int, ...], in_features: int
    ) -> None:
        super().__init__()
        check_architecture(image_size=image_size, channels=channels)
        sizes = _sizes(image_size, len(channels))
        self.in_features = in_features
        self.image_shape = (1, image_size, image_size)
        self._top = (channels[-1], sizes[-1], sizes[-1])
        self.head = nn.Sequential(
            nn.Linear(in_features, channels[-1] * sizes[-1] ** 2), nn.SiLU()
        )
        layers: list[nn.Module] = []
        c_in = channels[-1]
        outs = list(reversed(channels[:-1])) + [channels[0]]
        for i, c_out in enumerate(outs):
            s_in, s_out = sizes[-1 - i], sizes[-2 - i]
            layers += [
                nn.ConvTranspose2d(
                    c_in,
                    c_out,
                    3,
                    stride=2,
                    padding=1,
                    output_padding=s_out - (2 * s_in - 1),
                ),
                nn.SiLU(),
            ]
            c_in = c_out
        layers.append(nn.Conv2d(c_in, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        batch = h.shape[:-1]
        top = self.head(h.reshape(-1, self.in_features)).reshape(-1, *self._top)
        # Channels-last: PyTorch's CPU transposed convolutions run 2-4x faster in this
        # layout (oneDNN) than in the default one, and the decoder's value + gradient is
        # the whole cost of an HMC leapfrog step (benchmarks/bench_hmc.py).
        top = top.contiguous(memory_format=torch.channels_last)
        return self.net(top).reshape(*batch, *self.image_shape)
