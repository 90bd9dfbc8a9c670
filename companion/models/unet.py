"""A small UNet for diffusion models
(Ho et al., 2020, appendix B; Nichol & Dhariwal, 2021).

The network maps a noisy image z_t and its step t to an image-shaped output (the
predicted noise ε for a DDPM, the clean image for a denoising autoencoder). Its shape is
the DDPM one, kept small: a sinusoidal time embedding fed to every residual block, a
stack of resolution levels (``res_blocks`` residual blocks each, then a stride-2
downsampling), self-attention at the resolutions listed in ``attention_resolutions``, a
middle block (residual, attention, residual) and the mirror-image upsampling path with
skip connections. The authors' Fashion-MNIST model has 64 base channels, 3 residual
blocks per level and dropout 0.3.

Square inputs whose side is divisible by 2^(levels − 1) work: 8×8 to 32×32 with the
book's settings (28×28 images are zero-padded to 32×32 by the data loader).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["UNetConfig", "UNet", "timestep_embedding"]


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of :class:`UNet`.

    Attributes:
        image_size: side of the square input images.
        in_channels: image channels (1 for grey images).
        channels: base channel count (a multiple of 8:
            group normalisation uses 8 groups).
        channel_mults: channel multiplier of each resolution level, finest first; there
            are ``len(channel_mults) − 1`` downsamplings.
        res_blocks: residual blocks per level on the way down (one more on the way up).
        attention_resolutions: image sides at which self-attention follows each block.
        dropout: dropout rate inside the residual blocks.
    """

    image_size: int = 8
    in_channels: int = 1
    channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2)
    res_blocks: int = 1
    attention_resolutions: tuple[int, ...] = (4,)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.channels < 8 or self.channels % 8:
            raise ValueError(
                f"channels must be a positive multiple of 8, got {self.channels}"
            )
        if not self.channel_mults or any(m < 1 for m in self.channel_mults):
            raise ValueError(
                f"channel_mults must be positive integers, got {self.channel_mults}"
            )
        if self.res_blocks < 1 or not 0 <= self.dropout < 1 or self.in_channels < 1:
            raise ValueError(
                f"invalid UNetConfig {self}: res_blocks >= 1, 0 <= dropout < 1, "
                "in_channels >= 1"
            )
        factor = 2 ** (len(self.channel_mults) - 1)
        if self.image_size < factor or self.image_size % factor:
            raise ValueError(
                f"image_size {self.image_size} is not divisible by "
                f"2^(levels - 1) = {factor}; pad the images "
                "(companion.diffusion.load_diffusion_images pads 28×28 to 32×32) or "
                "use fewer levels"
            )


def timestep_embedding(
    t: torch.Tensor, dim: int, *, max_period: float = 10_000.0
) -> torch.Tensor:
    """Sinusoidal embedding of steps (Vaswani et al., 2017, as in the DDPM code).

    Args:
        t: (B,) steps (integers or floats).
        dim: embedding width (even).

    Returns:
        (B, dim) float32 embedding: cosines then sines of t at geometric frequencies.
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period)
        * torch.arange(half, device=t.device, dtype=torch.float32)
        / half
    )
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _zero_init(conv: nn.Conv2d) -> nn.Conv2d:
    """Zero the weights and bias of ``conv`` (a block then starts as the identity)."""
    nn.init.zeros_(conv.weight)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


class _ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(8, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2 = nn.GroupNorm(8, c_out)
        self.dropout = nn.Dropout(dropout)
        # each block starts as the identity
        self.conv2 = _zero_init(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class _Attention(nn.Module):
    """Single-head self-attention over the pixels of a feature map, with a residual."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(8, c)
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.proj = _zero_init(nn.Conv2d(c, c, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        )
        return x + self.proj(out.transpose(1, 2).reshape(b, c, h, w))


class UNet(nn.Module):
    """ε-prediction (or x-prediction) network of a diffusion model.

    ``forward(x, t)``: x (B, C, H, W) with H = W = ``config.image_size``; t (B,) steps
    or a scalar shared by the batch. Returns (B, C, H, W).
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        ch = config.channels
        emb_dim = 4 * ch
        self.time_mlp = nn.Sequential(
            nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        self.stem = nn.Conv2d(config.in_channels, ch, 3, padding=1)

        self.down = nn.ModuleList()
        skips = [ch]
        size, c = config.image_size, ch
        for level, mult in enumerate(config.channel_mults):
            for _ in range(config.res_blocks):
                block = nn.ModuleList(
                    [_ResBlock(c, ch * mult, emb_dim, config.dropout)]
                )
                c = ch * mult
                if size in config.attention_resolutions:
                    block.append(_Attention(c))
                self.down.append(block)
                skips.append(c)
            if level < len(config.channel_mults) - 1:
                self.down.append(
                    nn.ModuleList([nn.Conv2d(c, c, 3, stride=2, padding=1)])
                )
                skips.append(c)
                size //= 2
        self.mid = nn.ModuleList(
            [
                _ResBlock(c, c, emb_dim, config.dropout),
                _Attention(c),
                _ResBlock(c, c, emb_dim, config.dropout),
            ]
        )
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.channel_mults))):
            for i in range(config.res_blocks + 1):
                block = nn.ModuleList(
                    [_ResBlock(c + skips.pop(), ch * mult, emb_dim, config.dropout)]
                )
                c = ch * mult
                if size in config.attention_resolutions:
                    block.append(_Attention(c))
                if level > 0 and i == config.res_blocks:
                    block.append(nn.Upsample(scale_factor=2, mode="nearest"))
                    block.append(nn.Conv2d(c, c, 3, padding=1))
                    size *= 2
                self.up.append(block)
        self.out = nn.Sequential(
            nn.GroupNorm(8, c),
            nn.SiLU(),
            _zero_init(nn.Conv2d(c, config.in_channels, 3, padding=1)),
        )
        # Convolutions, group norms and their gradients run about 1.2x faster on the
        # CPU with channels-last weights and activations (benchmarks/README.md); the
        # input is converted in forward, and load_state_dict keeps this layout.
        # (Module.to documents memory_format; torch's type stubs leave it out.)
        self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.config.in_channels, self.config.image_size, self.config.image_size)

    def forward(self, x: torch.Tensor, t: torch.Tensor | int | float) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(
                "UNet expects inputs of shape (B, "
                f"{', '.join(map(str, self.image_shape))}), got {tuple(x.shape)}"
            )
        t = torch.as_tensor(t, device=x.device)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ValueError(
                f"t must be a scalar or have shape ({x.shape[0]},), got "
                f"{tuple(t.shape)}"
            )
        emb = self.time_mlp(timestep_embedding(t, self.config.channels))
        h = self.stem(x.contiguous(memory_format=torch.channels_last))
        hs = [h]
        for block in self.down:
            h = _run_block(block, h, emb)
            hs.append(h)
        h = _run_block(self.mid, h, emb)
        for block in self.up:
            h = _run_block(block, torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h).contiguous()


def _run_block(block: nn.Module, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    """The layers of one block in order; residual blocks also read the embedding."""
    # every block of the UNet is an nn.ModuleList, which iterates as plain Modules
    for layer in cast(nn.ModuleList, block):
        h = layer(h, emb) if isinstance(layer, _ResBlock) else layer(h)
    return h
