"""Noise schedules of the forward process, its signal-to-noise ratio, and q(z_t | x).

The forward process adds Gaussian noise in T steps, q(z_t | z_{t−1}) = N(√(1 − β_t)
z_{t−1}, β_t I), so that q(z_t | x) = N(√ᾱ_t x, (1 − ᾱ_t) I) with ᾱ_t = Π_{s ≤ t}
(1 − β_s) (Ho et al., 2020, eq. 4). The signal-to-noise ratio of step t is
SNR(t) = ᾱ_t / (1 − ᾱ_t) (Kingma et al., 2021). Steps are numbered 1..T as in the
papers: index ``t − 1`` of every array holds step t. Schedules are computed in float64
and stored as float32.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from companion import rng

__all__ = [
    "linear_betas",
    "scaled_linear_betas",
    "cosine_betas",
    "SCHEDULES",
    "Schedule",
    "make_schedule",
    "split_step",
    "q_sample",
]


def _check_steps(T: int) -> None:
    if not isinstance(T, int) or isinstance(T, bool) or T < 2:
        raise ValueError(
            f"a diffusion needs at least T = 2 steps (an integer), got T = {T!r}"
        )


def linear_betas(
    T: int, *, beta_start: float = 1e-4, beta_end: float = 0.02
) -> torch.Tensor:
    """β_1..β_T evenly spaced from ``beta_start`` to ``beta_end`` (Ho et al., 2020, §4:
    10⁻⁴ to 0.02 at T = 1000). (T,) float64."""
    _check_steps(T)
    if not 0 < beta_start <= beta_end < 1:
        raise ValueError(
            f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}"
        )
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)


def scaled_linear_betas(T: int) -> torch.Tensor:
    """Ho et al.'s linear schedule rescaled to T steps: both ends multiplied by
    1000 / T, so the total noise Σβ_t, and with it ᾱ along the fraction t / T, stays
    close to the T = 1000 schedule (Nichol & Dhariwal, 2021, code:
    ``get_named_beta_schedule("linear", T)``). (T,) float64."""
    _check_steps(T)
    scale = 1000.0 / T
    if 0.02 * scale >= 1:
        raise ValueError(f"the rescaled linear schedule needs T > 20, got T = {T}")
    return linear_betas(T, beta_start=1e-4 * scale, beta_end=0.02 * scale)


def cosine_betas(T: int, *, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """The cosine schedule of Nichol & Dhariwal (2021, eq. 17): ᾱ_t = f(t) / f(0) with
    f(t) = cos²(π/2 · (t/T + s) / (1 + s)), β_t = 1 − ᾱ_t / ᾱ_{t−1} clipped at
    ``max_beta``. (T,) float64."""
    _check_steps(T)
    steps = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)


SCHEDULES: dict[str, Callable[[int], torch.Tensor]] = {
    "linear": scaled_linear_betas,
    "cosine": cosine_betas,
}
"""Named schedules: ``linear`` (Ho et al., rescaled to T;
exactly theirs at T = 1000) and ``cosine``."""


@dataclass(frozen=True)
class Schedule:
    """A forward process: β_t, ᾱ_t and SNR(t) for t = 1..T, as float32 (T,) tensors.

    Attributes:
        name: the schedule's name (or ``custom``).
        betas: β_t, the variance each step adds.
        alpha_bars: ᾱ_t = Π_{s ≤ t}(1 − β_s), the signal's variance share at step t.
        snr: SNR(t) = ᾱ_t / (1 − ᾱ_t).
    """

    name: str
    betas: torch.Tensor
    alpha_bars: torch.Tensor
    snr: torch.Tensor

    @property
    def T(self) -> int:
        return len(self.betas)

    @classmethod
    def from_betas(cls, betas: torch.Tensor, *, name: str = "custom") -> Schedule:
        """Build a schedule from β_1..β_T; ᾱ and SNR are computed in float64,
        then cast."""
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.dim() != 1:
            raise ValueError(
                f"betas must be a 1-D tensor, got shape {tuple(betas.shape)}"
            )
        _check_steps(len(betas))
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("every β_t must lie in (0, 1)")
        alpha_bars = torch.cumprod(1 - betas, 0)
        snr = alpha_bars / (1 - alpha_bars)
        return cls(
            name=name,
            betas=betas.float(),
            alpha_bars=alpha_bars.float(),
            snr=snr.float(),
        )


def make_schedule(name: str, T: int) -> Schedule:
    """The named schedule (``linear`` or ``cosine``) with T steps.

    Raises:
        ValueError: an unknown name, or T < 2.
    """
    if name not in SCHEDULES:
        raise ValueError(
            f"unknown schedule {name!r}; choose one of {sorted(SCHEDULES)}"
        )
    return Schedule.from_betas(SCHEDULES[name](T), name=name)


def split_step(schedule: Schedule, beta_1: float) -> int:
    """DAED's split step k: the first step t whose cumulative noise variance 1 − ᾱ_t
    reaches β_1.

    Deja et al. (2022, §4) replace steps 1..k by one denoising autoencoder that maps z_k
    to x and keep the diffusion for steps k+1..T;
    k / T is the fraction of steps replaced.

    Args:
        schedule: the forward process.
        beta_1: cumulative noise variance in (0, 1).

    Returns:
        k in 1..T.

    Raises:
        ValueError: β_1 outside (0, 1), or never reached within T steps.
    """
    if not isinstance(beta_1, (int, float)) or not 0 < beta_1 < 1:
        raise ValueError(f"beta_1 must lie in the open interval (0, 1), got {beta_1!r}")
    noise = 1 - schedule.alpha_bars.double()
    reached = (noise >= beta_1).nonzero()
    if len(reached) == 0:
        raise ValueError(
            "the cumulative noise of this schedule reaches only "
            f"{float(noise[-1]):.4g} < beta_1 = {beta_1}"
        )
    return int(reached[0]) + 1


def q_sample(
    schedule: Schedule,
    x: torch.Tensor,
    t: torch.Tensor | int,
    *,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sample z_t ~ q(z_t | x) = N(√ᾱ_t x, (1 − ᾱ_t) I) (Ho et al., 2020, eq. 4).

    Args:
        schedule: the forward process.
        x: (B, ...) clean data (the book scales pixels to [−1, 1]).
        t: (B,) steps in 1..T, or one step for the whole batch.
        noise: the standard normal draw ε to use (shape of x); drawn when ``None``.
        generator: generator for that draw (on x's device).

    Returns:
        z_t with the shape of x.
    """
    t = torch.as_tensor(t, device=x.device)
    if t.dim() == 0:
        t = t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(
            f"t must be one step or one per example ({x.shape[0]},), got shape "
            f"{tuple(t.shape)}"
        )
    if bool(((t < 1) | (t > schedule.T)).any()):
        raise ValueError(f"steps must lie in 1..{schedule.T}")
    if noise is None:
        noise = rng.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    a = schedule.alpha_bars.to(x.device)[t - 1].view(-1, *([1] * (x.dim() - 1)))
    return a.sqrt() * x + (1 - a).sqrt() * noise
