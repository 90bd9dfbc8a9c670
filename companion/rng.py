"""Random draws that honour a generator on any device.

PyTorch draws with a ``torch.Generator`` only on the generator's own device: a CPU
generator (what :func:`companion.profiles.seed_everything` returns, and what a reader
passes) with ``device="cuda"`` raises ``Expected a 'cuda' device type for generator``.
Every seeded draw in the package goes through these functions instead: with a
generator they draw on the generator's device and move the result to ``device``, so a
chapter's seed gives the same numbers on a CPU and on a GPU; without one they draw
directly on ``device`` from the global generator.

The cost of a seeded draw on a GPU is one host-to-device copy of the drawn tensor
(momenta, noise images), small next to the network passes that consume it.
"""

from __future__ import annotations

import torch

__all__ = ["randn", "rand", "randint", "randperm", "bernoulli"]

Shape = tuple[int, ...] | torch.Size


def _where(generator: torch.Generator | None, device: torch.device | str | None):
    return device if generator is None else generator.device


def randn(
    shape: Shape,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Standard normal draws of ``shape`` on ``device``
    (``torch.randn`` with a portable generator)."""
    out = torch.randn(
        tuple(shape), generator=generator, device=_where(generator, device), dtype=dtype
    )
    return out.to(device) if device is not None else out


def rand(
    shape: Shape,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Uniform [0, 1) draws of ``shape`` on ``device``."""
    out = torch.rand(
        tuple(shape), generator=generator, device=_where(generator, device), dtype=dtype
    )
    return out.to(device) if device is not None else out


def randint(
    low: int,
    high: int,
    shape: Shape,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Integers in [low, high) of ``shape`` (int64) on ``device``."""
    out = torch.randint(
        low, high, tuple(shape), generator=generator, device=_where(generator, device)
    )
    return out.to(device) if device is not None else out


def randperm(
    n: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """A random permutation of 0..n−1 (int64) on ``device``."""
    out = torch.randperm(n, generator=generator, device=_where(generator, device))
    return out.to(device) if device is not None else out


def bernoulli(
    probs: torch.Tensor, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """0 / 1 draws with probabilities ``probs``, on ``probs``' device and dtype."""
    if generator is None or generator.device == probs.device:
        return torch.bernoulli(probs, generator=generator)
    return torch.bernoulli(probs.to(generator.device), generator=generator).to(
        probs.device
    )
