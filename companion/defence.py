"""The HMC defence (Kuzina, Welling & Tomczak, 2022, algorithm 1).

An attack fools the encoder q_φ(z | x), not the model's true posterior
p_θ(z | x) ∝ p(z) p_θ(x | z). The defence starts every chain at z⁰ ~ q_φ(z | x) and runs
T HMC transitions targeting ln p(z) + ln p_θ(x | z); the codes z^(T) are then decoded or
classified instead of the encoder's. It needs nothing from the model but ``encode`` and
``log_joint``, so single-layer and hierarchical VAEs are defended alike.

``backend="torch"`` runs :mod:`companion.hmc.torch`; ``backend="numpyro"`` runs
NumPyro's HMC kernel on a JAX port of the model (:mod:`companion.hmc.numpyro`, which
imports JAX only when asked for). The backend is the only thing a caller changes: both
start from the same codes z⁰ (drawn by PyTorch with ``generator``), run the same
algorithm (unit mass, per-chain dual averaging to the same target during warm-up, fixed
leapfrog count) and return the same :class:`DefenceResult`,
as PyTorch tensors on the input's device.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple, Protocol

import numpy as np
import torch

from companion import rng
from companion.data import check_images
from companion.frozen import frozen
from companion.hmc import torch as hmc_torch

__all__ = [
    "DefenceResult",
    "BACKENDS",
    "refine_posterior",
    "defence_curve",
    "defence_curves",
    "posterior_samples",
]

BACKENDS = ("torch", "numpyro")


class DefenceResult(NamedTuple):
    """Codes after T transitions and what the chains did.

    Attributes:
        z: (B, z_dim) the codes z^(T), one chain per input.
        z_start: (B, z_dim) the encoder's samples the chains started from.
        step_size: (B,) per-chain step sizes (adapted during warm-up, then frozen).
        acceptance_rate: (B,) mean acceptance probability over the T transitions.
        energy_error: (B,) mean ``|ΔH|`` over the T transitions, in nats.
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
    torch_compile: bool = False,
) -> DefenceResult:
    """Run T HMC transitions on ln p(z) + ln p(x | z) from z ~ q(z | x),
    one chain per input.

    Args:
        model: a VAE with ``encode`` and ``log_joint`` (its parameters are not changed).
        x: (B, C, H, W) inputs in [0, 1], possibly attacked.
        steps: T, the HMC transitions kept (0 returns the encoder's samples).
        num_leapfrog: leapfrog steps per transition.
        num_warmup: extra transitions before the T that adapt each chain's step size
            (dual averaging); 0 keeps ``step_size`` for all chains.
        step_size: initial (or, without warm-up, fixed) leapfrog step size.
        backend: one of :data:`BACKENDS`. ``numpyro`` needs
            ``pip install "vae-robustness-companion[numpyro]"``; its first call for a
            given model architecture, batch size and settings compiles (seconds), later
            calls reuse the compiled program.
        generator: torch generator of the start codes and of the chains (the NumPyro
            backend seeds its JAX key from it, so seeded runs repeat exactly).
        torch_compile: run the torch backend's log joint through ``torch.compile``. Its
            value + gradient, the whole cost of a leapfrog step at batch ≥ 64, ran 1.06×
            faster at batch 64 and 1.09× at 1024 on a 2-core CPU with the book's
            channels-last decoder (1.6× and 2.1× before it), and slower at batch 1
            (``benchmarks/bench_hmc.py``), after a compilation of 5-20 s per model,
            batch shape and device: measure before relying on it for long chains. With
            fixed step sizes the chains equal the eager ones up to float rounding; step
            sizes adapted in warm-up agree to about 1 % (dual averaging feeds on
            exp(-ΔH), where rounding shows), and the chains then part ways as two seeds
            would. The NumPyro backend is always jit-compiled and rejects this flag.

    Raises:
        ValueError: T < 0, non-finite or out-of-range inputs, a model without an
            encoder, an unknown backend, or ``torch_compile`` with the NumPyro backend.
        ImportError: ``backend="numpyro"`` without JAX and NumPyro installed.
        TypeError: ``backend="numpyro"`` with a model it has no JAX port of.
    """
    _check_request(
        model,
        x,
        steps=[steps],
        num_warmup=num_warmup,
        step_size=step_size,
        num_leapfrog=num_leapfrog,
        backend=backend,
        torch_compile=torch_compile,
    )
    with torch.no_grad():
        q = model.encode(x)
        z0 = _sample_start(q, generator)
    info: _Diagnostics
    if backend == "torch":
        with frozen(model):
            chains = hmc_torch.run_chains(
                z0,
                logdensity_fn=_log_density(model, x, torch_compile=torch_compile),
                generator=generator,
                num_warmup=num_warmup,
                num_transitions=steps,
                num_steps=num_leapfrog,
                initial_step_size=step_size,
            )
        z, step_sizes, info = chains.state.position, chains.step_size, chains.info
    else:
        # imports JAX: only when asked for
        from companion.hmc import numpyro as hmc_numpyro

        jax_chains = hmc_numpyro.run_model_chains(
            model,
            x,
            z0,
            seed=_jax_seed(generator, z0.device),
            num_warmup=num_warmup,
            num_transitions=steps,
            num_steps=num_leapfrog,
            initial_step_size=step_size,
        )

        def as_torch(a: object, dtype: torch.dtype | None = z0.dtype) -> torch.Tensor:
            return torch.from_numpy(np.array(a)).to(device=z0.device, dtype=dtype)

        z, step_sizes = as_torch(jax_chains.position), as_torch(jax_chains.step_size)
        jax_info = jax_chains.info
        info = _TorchDiagnostics(
            acceptance_rate=as_torch(jax_info.acceptance_rate, dtype=None),
            energy_error=as_torch(jax_info.energy_error, dtype=None),
            divergent=as_torch(jax_info.divergent, dtype=None),
        )
    return _summarise(z, z0, step_sizes, info if steps else None)


def _log_density(model, x: torch.Tensor, *, torch_compile: bool):
    """z (B, z_dim) -> ln p(z) + ln p(x | z), (B,):
    the target of the torch backend's chains."""
    log_joint = (
        torch.compile(model.log_joint, dynamic=False)
        if torch_compile
        else model.log_joint
    )
    return lambda z: log_joint(z, x)


def _jax_seed(generator: torch.Generator | None, device: torch.device) -> int:
    """A JAX seed drawn from ``generator`` (the global torch generator when None)."""
    return int(rng.randint(0, 2**31 - 1, (1,), generator=generator, device=device))


def _sample_start(q, generator: torch.Generator | None) -> torch.Tensor:
    """z⁰ ~ q(z | x): the encoder's sample, drawn with ``generator``.

    Diagonal Gaussians are sampled here; other posteriors (the hierarchical VAE's) must
    take a ``generator`` keyword in ``sample``, so that seeded defences repeat exactly.
    """
    if generator is None:
        return q.sample()
    if hasattr(q, "base_dist"):
        noise = rng.randn(
            q.mean.shape, generator=generator, dtype=q.mean.dtype, device=q.mean.device
        )
        return q.mean + q.stddev * noise
    return q.sample(generator=generator)


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
    torch_compile: bool = False,
) -> dict[int, DefenceResult]:
    """The defence after each T of ``steps_grid``, read off one chain per input.

    A chapter that plots robustness against T needs the chains after 10, 50, 100, …
    transitions; running one chain to the largest T and reading it at every T in the
    grid costs max(T) transitions instead of their sum. T = 0 is the encoder alone (its
    sample, no warm-up); every T > 0 is the same chain after ``num_warmup`` adaptation
    transitions and T transitions with frozen step sizes, so results at different T are
    nested, not independent. Other backends than ``torch`` run :func:`refine_posterior`
    once per T. The arguments not listed below are those of :func:`refine_posterior`.

    Args:
        steps_grid: the T (>= 0) to report.

    Returns:
        ``{T: DefenceResult}`` for every T of the grid; the diagnostics at T summarise
        the first T transitions after warm-up.
    """
    grid = sorted(set(steps_grid))
    _check_request(
        model,
        x,
        steps=grid,
        num_warmup=num_warmup,
        step_size=step_size,
        num_leapfrog=num_leapfrog,
        backend=backend,
        torch_compile=torch_compile,
    )
    if backend != "torch":
        return {
            t: refine_posterior(
                model,
                x,
                steps=t,
                num_leapfrog=num_leapfrog,
                num_warmup=num_warmup if t else 0,
                step_size=step_size,
                backend=backend,
                generator=generator,
            )
            for t in grid
        }
    with torch.no_grad():
        z0 = _sample_start(model.encode(x), generator)
    results = {}
    if grid[0] == 0:
        results[0] = _summarise(
            z0,
            z0,
            torch.full(z0.shape[:1], float("nan"), dtype=z0.dtype, device=z0.device),
            None,
        )
    if grid[-1] == 0:
        return results
    logdensity_fn = _log_density(model, x, torch_compile=torch_compile)
    with frozen(model):
        warm = hmc_torch.run_chains(
            z0,
            logdensity_fn=logdensity_fn,
            num_warmup=num_warmup,
            num_transitions=0,
            num_steps=num_leapfrog,
            initial_step_size=step_size,
            generator=generator,
        )
        state, infos = warm.state, []
        for t in range(1, grid[-1] + 1):
            state, info = hmc_torch.step(
                state,
                logdensity_fn=logdensity_fn,
                step_size=warm.step_size,
                num_steps=num_leapfrog,
                generator=generator,
            )
            infos.append(info)
            if t in grid:
                stacked = hmc_torch.HMCInfo(
                    *(torch.stack(f) for f in zip(*infos, strict=True))
                )
                results[t] = _summarise(
                    state.position.detach(), z0, warm.step_size, stacked
                )
    return results


def defence_curves(
    model,
    inputs: Mapping[str, torch.Tensor],
    *,
    steps_grid: Sequence[int],
    batch_size: int | None = None,
    **settings,
) -> dict[str, dict[int, DefenceResult]]:
    """:func:`defence_curve` for several named sets of inputs, their chains batched
    together.

    The chains of every set run in batches of at most ``batch_size`` rows (the sets
    concatenated, then cut; one batch when None), and each set gets its own results
    back, so a chapter never slices rows. On a CPU a leapfrog step costs the least per
    chain at batches of about 32-128 (chapter 2's VAE on 2 cores: about 0.2 ms per chain
    at 64, 0.4 ms at 400), so long runs over many sets should pass a ``batch_size``.

    Args:
        model: as for :func:`refine_posterior`.
        inputs: name -> (B_name, C, H, W) images; at least one set.
        steps_grid: the T (>= 0) to report.
        batch_size: the most chains per batch (>= 1), or None for one batch.
        settings: the other keyword arguments of :func:`defence_curve`.

    Returns:
        ``{name: {T: DefenceResult}}``, each result holding that set's chains only.
    """
    if not inputs:
        raise ValueError("inputs must name at least one set of images")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 chain or None, got {batch_size}")
    names = list(inputs)
    sizes = [len(inputs[name]) for name in names]
    everything = torch.cat([inputs[name] for name in names])
    batches = [
        defence_curve(model, part, steps_grid=steps_grid, **settings)
        for part in everything.split(batch_size or len(everything))
    ]
    joint = {
        t: DefenceResult(
            *(
                torch.cat(fields)
                for fields in zip(*(b[t] for b in batches), strict=True)
            )
        )
        for t in batches[0]
    }
    out: dict[str, dict[int, DefenceResult]] = {name: {} for name in names}
    for t, result in joint.items():
        for name, *parts in zip(
            names, *(field.split(sizes) for field in result), strict=True
        ):
            out[name][t] = DefenceResult(*parts)
    return out


def posterior_samples(
    model,
    x: torch.Tensor,
    *,
    n: int,
    steps: int,
    num_leapfrog: int = 10,
    num_warmup: int = 0,
    step_size: float = 0.05,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """n draws from p(z | x) per input: the last states of n independent chains each.

    Every input gets n chains, all in one batch, started at the encoder's samples and
    run for ``num_warmup`` + ``steps`` transitions (:func:`refine_posterior`, torch
    backend). What :func:`companion.attacks.posterior_shift` averages over.

    Args:
        x: (B, C, H, W) inputs in [0, 1].
        n: chains (draws) per input, >= 1.
        steps, num_leapfrog, num_warmup, step_size, generator: as for
            :func:`refine_posterior`.

    Returns:
        (n, B, z_dim) codes.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1 draw per input, got {n}")
    result = refine_posterior(
        model,
        x.repeat(n, *[1] * (x.dim() - 1)),
        steps=steps,
        num_leapfrog=num_leapfrog,
        num_warmup=num_warmup,
        step_size=step_size,
        generator=generator,
    )
    return result.z.reshape(n, len(x), -1)


class _Diagnostics(Protocol):
    """Per-transition diagnostics of C chains, each field (T, C): what
    :func:`_summarise` reads of :class:`~companion.hmc.torch.HMCInfo` and of
    :class:`_TorchDiagnostics`."""

    @property
    def acceptance_rate(self) -> torch.Tensor: ...
    @property
    def energy_error(self) -> torch.Tensor: ...
    @property
    def divergent(self) -> torch.Tensor: ...


class _TorchDiagnostics(NamedTuple):
    """The NumPyro backend's :class:`~companion.hmc.numpyro.TransitionInfo` fields
    that :func:`_summarise` reads, as PyTorch tensors (T, C)."""

    acceptance_rate: torch.Tensor
    energy_error: torch.Tensor
    divergent: torch.Tensor


def _summarise(
    z: torch.Tensor,
    z0: torch.Tensor,
    step_size: torch.Tensor,
    info: _Diagnostics | None,
) -> DefenceResult:
    """A :class:`DefenceResult` from per-transition diagnostics with fields (T, C)
    (None for T = 0)."""
    if info is None:
        nan = torch.full(z0.shape[:1], float("nan"), dtype=z0.dtype, device=z0.device)
        return DefenceResult(
            z=z,
            z_start=z0,
            step_size=step_size,
            acceptance_rate=nan,
            energy_error=nan,
            divergences=torch.zeros(z0.shape[0], dtype=torch.long, device=z0.device),
        )
    return DefenceResult(
        z=z,
        z_start=z0,
        step_size=step_size,
        acceptance_rate=info.acceptance_rate.to(z0.dtype).mean(0),
        energy_error=info.energy_error.abs().to(z0.dtype).mean(0),
        divergences=info.divergent.sum(0),
    )


def _check_request(
    model,
    x: torch.Tensor,
    *,
    steps: Sequence[int],
    num_warmup: int,
    step_size: float,
    num_leapfrog: int,
    backend: str,
    torch_compile: bool,
) -> None:
    """Clear errors for every bad input a defence call can get."""
    if not steps or min(steps) < 0 or num_warmup < 0:
        raise ValueError(
            f"steps (T) and num_warmup must be >= 0, got {list(steps)} and {num_warmup}"
        )
    if not (
        isinstance(step_size, (int, float))
        and math.isfinite(step_size)
        and step_size > 0
    ):
        raise ValueError(
            "step_size must be a positive, finite number of latent units, got "
            f"{step_size!r} (a chain with step 0 never moves; the book starts at 0.05)"
        )
    if num_leapfrog < 1:
        raise ValueError(f"num_leapfrog must be >= 1, got {num_leapfrog}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if torch_compile and backend != "torch":
        raise ValueError(
            f"torch_compile applies to backend='torch' only; backend={backend!r} is "
            "always jit-compiled by JAX: drop torch_compile=True"
        )
    if not hasattr(model, "encode") or not hasattr(model, "log_joint"):
        raise ValueError(
            f"{type(model).__name__} needs encode and log_joint to be defended by HMC"
        )
    if not torch.isfinite(x).all():
        raise ValueError("inputs must be finite; got NaN or infinite pixels")
    check_images(x, shape=tuple(model.image_shape))
