"""The HMC defence (Kuzina, Welling & Tomczak, 2022, algorithm 1).

An attack fools the encoder q_φ(z | x), not the model's true posterior
p_θ(z | x) ∝ p(z) p_θ(x | z). The defence starts every chain at z⁰ ~ q_φ(z | x) and runs T
HMC transitions targeting ln p(z) + ln p_θ(x | z); the codes z^(T) are then decoded or
classified instead of the encoder's. It needs nothing from the model but ``encode`` and
``log_joint``, so single-layer and hierarchical VAEs are defended alike.

``backend="torch"`` runs :mod:`companion.hmc.torch`; the backend is the only thing a
caller changes (the NumPyro backend of issue 5 is not written yet).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from companion.data import check_images
from companion.frozen import frozen
from companion.hmc import torch as hmc_torch

__all__ = ["DefenceResult", "BACKENDS", "refine_posterior", "defence_curve"]

BACKENDS = ("torch",)


class DefenceResult(NamedTuple):
    """Codes after T transitions and what the chains did.

    Attributes:
        z: (B, z_dim) the codes z^(T), one chain per input.
        z_start: (B, z_dim) the encoder's samples the chains started from.
        step_size: (B,) per-chain step sizes (adapted during warm-up, then frozen).
        acceptance_rate: (B,) mean acceptance probability over the T transitions.
        energy_error: (B,) mean |ΔH| over the T transitions, in nats.
        divergences: (B,) number of divergent transitions.
    """

    z: torch.Tensor
    z_start: torch.Tensor
    step_size: torch.Tensor
    acceptance_rate: torch.Tensor
    energy_error: torch.Tensor
    divergences: torch.Tensor


def refine_posterior(
    model,
    x: torch.Tensor,
    *,
    steps: int,
    num_leapfrog: int = 10,
    num_warmup: int = 0,
    step_size: float = 0.05,
    backend: str = "torch",
    generator: torch.Generator | None = None,
) -> DefenceResult:
    """Run T HMC transitions on ln p(z) + ln p(x | z) from z ~ q(z | x), one chain per input.

    Args:
        model: a VAE with ``encode`` and ``log_joint`` (its parameters are not changed).
        x: (B, C, H, W) inputs in [0, 1], possibly attacked.
        steps: T, the HMC transitions kept (0 returns the encoder's samples).
        num_leapfrog: leapfrog steps per transition.
        num_warmup: extra transitions before the T that adapt each chain's step size
            (dual averaging); 0 keeps ``step_size`` for all chains.
        step_size: initial (or, without warm-up, fixed) leapfrog step size.
        backend: one of :data:`BACKENDS` (``torch``).
        generator: torch generator of the start codes and of the chains.

    Raises:
        ValueError: T < 0, non-finite or out-of-range inputs, a model without an encoder,
            or an unknown backend.
    """
    _check_request(model, x, steps=[steps], num_warmup=num_warmup, backend=backend)
    with torch.no_grad():
        q = model.encode(x)
        z0 = _sample_start(q, generator)
    with frozen(model):
        result = hmc_torch.run_chains(
            z0, logdensity_fn=lambda z: model.log_joint(z, x), num_warmup=num_warmup, num_transitions=steps,
            num_steps=num_leapfrog, initial_step_size=step_size, generator=generator,
        )
    info = result.info
    mean_or_nan = (lambda t: t.float().mean(0)) if steps else (lambda t: torch.full(z0.shape[:1], float("nan")))
    return DefenceResult(
        z=result.state.position,
        z_start=z0,
        step_size=result.step_size,
        acceptance_rate=mean_or_nan(info.acceptance_rate),
        energy_error=mean_or_nan(info.energy_error.abs()),
        divergences=info.divergent.sum(0) if steps else torch.zeros(z0.shape[0], dtype=torch.long),
    )


def _sample_start(q, generator: torch.Generator | None) -> torch.Tensor:
    """z⁰ ~ q(z | x): the encoder's sample, drawn with ``generator`` where the posterior allows."""
    if generator is not None and hasattr(q, "base_dist"):
        noise = torch.randn(q.mean.shape, generator=generator, dtype=q.mean.dtype, device=q.mean.device)
        return q.mean + q.stddev * noise
    return q.sample()


def defence_curve(
    model,
    x: torch.Tensor,
    *,
    steps_grid: Sequence[int],
    num_leapfrog: int = 10,
    num_warmup: int = 0,
    step_size: float = 0.05,
    backend: str = "torch",
    generator: torch.Generator | None = None,
) -> dict[int, DefenceResult]:
    """The defence after each T of ``steps_grid``, read off one chain per input.

    A chapter that plots robustness against T needs the chains after 10, 50, 100, …
    transitions; running one chain to the largest T and reading it at every T in the grid
    costs max(T) transitions instead of their sum. T = 0 is the encoder alone (its sample,
    no warm-up); every T > 0 is the same chain after ``num_warmup`` adaptation transitions
    and T transitions with frozen step sizes, so results at different T are nested, not
    independent. Other backends than ``torch`` run :func:`refine_posterior` once per T.

    Args:
        model, x, num_leapfrog, num_warmup, step_size, backend, generator: as for
            :func:`refine_posterior`.
        steps_grid: the T (>= 0) to report.

    Returns:
        ``{T: DefenceResult}`` for every T of the grid; the diagnostics at T summarise the
        first T transitions after warm-up.
    """
    grid = sorted(set(steps_grid))
    _check_request(model, x, steps=grid, num_warmup=num_warmup, backend=backend)
    if backend != "torch":
        return {
            t: refine_posterior(model, x, steps=t, num_leapfrog=num_leapfrog, num_warmup=num_warmup if t else 0,
                                step_size=step_size, backend=backend, generator=generator)
            for t in grid
        }
    with torch.no_grad():
        z0 = _sample_start(model.encode(x), generator)
    results = {}
    if grid[0] == 0:
        results[0] = _summarise(z0, z0, torch.full(z0.shape[:1], float("nan"), dtype=z0.dtype, device=z0.device), [])
    if grid[-1] == 0:
        return results
    logdensity_fn = lambda z: model.log_joint(z, x)  # noqa: E731
    with frozen(model):
        warm = hmc_torch.run_chains(
            z0, logdensity_fn=logdensity_fn, num_warmup=num_warmup, num_transitions=0, num_steps=num_leapfrog,
            initial_step_size=step_size, generator=generator,
        )
        state, infos = warm.state, []
        for t in range(1, grid[-1] + 1):
            state, info = hmc_torch.step(state, logdensity_fn=logdensity_fn, step_size=warm.step_size,
                                         num_steps=num_leapfrog, generator=generator)
            infos.append(info)
            if t in grid:
                results[t] = _summarise(state.position.detach(), z0, warm.step_size, infos)
    return results


def _summarise(z: torch.Tensor, z0: torch.Tensor, step_size: torch.Tensor, infos: list) -> DefenceResult:
    """A :class:`DefenceResult` from the per-transition diagnostics so far (none for T = 0)."""
    if not infos:
        nan = torch.full(z0.shape[:1], float("nan"), dtype=z0.dtype, device=z0.device)
        return DefenceResult(z=z, z_start=z0, step_size=step_size, acceptance_rate=nan, energy_error=nan,
                             divergences=torch.zeros(z0.shape[0], dtype=torch.long, device=z0.device))
    stacked = hmc_torch.HMCInfo(*(torch.stack(f) for f in zip(*infos)))
    return DefenceResult(
        z=z, z_start=z0, step_size=step_size,
        acceptance_rate=stacked.acceptance_rate.float().mean(0),
        energy_error=stacked.energy_error.abs().mean(0),
        divergences=stacked.divergent.sum(0),
    )


def _check_request(model, x: torch.Tensor, *, steps: Sequence[int], num_warmup: int, backend: str) -> None:
    """Clear errors for every bad input a defence call can get."""
    if not steps or min(steps) < 0 or num_warmup < 0:
        raise ValueError(f"steps (T) and num_warmup must be >= 0, got {list(steps)} and {num_warmup}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if not hasattr(model, "encode") or not hasattr(model, "log_joint"):
        raise ValueError(f"{type(model).__name__} needs encode and log_joint to be defended by HMC")
    if not torch.isfinite(x).all():
        raise ValueError("inputs must be finite; got NaN or infinite pixels")
    check_images(x, shape=tuple(model.image_shape))
