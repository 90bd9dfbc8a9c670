"""The NumPyro (JAX) twin of :mod:`companion.hmc.torch`: NumPyro's HMC or NUTS kernel,
one independent chain per input, all chains vectorised with ``jax.vmap`` in one jitted
program.

Each chain runs NumPyro's functional kernel ``numpyro.infer.hmc.hmc(potential_fn=...)``
on the potential −ln p(z) − ln p(x_c | z) of its own input x_c, with the JAX port of the
model's log joint from :mod:`companion.hmc.jax_models`. The algorithm is the torch
backend's, so the two can be compared draw for draw in distribution:

* unit mass matrix, and no mass-matrix adaptation: a chain has one input and at most a
  few hundred warm-up transitions, too few to estimate a (z_dim,) variance worth the
  noise it adds, and the torch backend adapts none;
* a fixed ``num_steps`` leapfrog steps per HMC transition (``trajectory_length=None``,
  so NumPyro neither rescales the step size nor derives the step count from it); NUTS
  (``algorithm="nuts"``) chooses its own trajectory lengths instead;
* per-chain step sizes adapted during warm-up only, by NumPyro's dual averaging
  (Hoffman & Gelman, 2014, eq. 6, the same constants γ = 0.05, t₀ = 10, κ = 0.75)
  towards the torch backend's target acceptance of 0.65 (:data:`TARGET_ACCEPTANCE`:
  optimal for fixed-length HMC as the dimension grows, Beskos et al., 2013), then frozen
  at the iterate average. We drive the adaptation ourselves, in one window over the
  whole warm-up, instead of NumPyro's Stan-style windowed warm-up: its windows restart
  dual averaging after each mass-matrix update, which we do not make, and would leave
  the final step size to the short last window;
* momenta are drawn here and handed to the kernel (``HMCState.r``), so that the energy
  error ΔH of every proposal is known exactly for the diagnostics.

The jitted program is keyed by the model's architecture (the port is a hashable
description of it), the chain count and shapes, the numbers of transitions and leapfrog
steps, and the algorithm; weights, inputs, start points, step size and target are
arguments, so a second call with new weights or data does not compile again.
"""

from __future__ import annotations

import os
from functools import partial
from typing import NamedTuple

import torch

from companion.hmc.torch import TARGET_ACCEPTANCE

os.environ.setdefault(
    "XLA_PYTHON_CLIENT_PREALLOCATE", "false"
)  # torch may share the GPU
try:
    import jax
    import jax.numpy as jnp
    from numpyro.infer.hmc import hmc
    from numpyro.infer.hmc_util import dual_averaging
except ImportError as error:
    raise ImportError(
        "the NumPyro backend needs JAX and NumPyro: "
        'pip install "vae-robustness-companion[numpyro]"'
    ) from error

from companion.hmc.jax_models import SUPPORTED_MODELS, PortedModel, port  # noqa: E402 (needs JAX)

__all__ = [
    "ALGORITHMS",
    "TARGET_ACCEPTANCE",
    "SUPPORTED_MODELS",
    "TransitionInfo",
    "ChainResult",
    "PortedModel",
    "port",
    "run_chains",
    "run_model_chains",
]

ALGORITHMS = ("hmc", "nuts")
_NUMPYRO_ALGO = {"hmc": "HMC", "nuts": "NUTS"}


class TransitionInfo(NamedTuple):
    """What the sampling transitions did, each field (T, C).

    Attributes:
        acceptance_rate: min(1, exp(−ΔH)) of HMC's proposal; NUTS: the tree's mean.
        energy_error: ΔH = H(proposal) − H(start) in nats (NUTS: of the chosen point).
        divergent: ΔH above NumPyro's 1000 nats, or not finite
            (the proposal is rejected).
        num_steps: leapfrog steps (gradient evaluations) the transition took.
    """

    acceptance_rate: jax.Array
    energy_error: jax.Array
    divergent: jax.Array
    num_steps: jax.Array


class ChainResult(NamedTuple):
    """The outcome of :func:`run_chains`.

    Attributes:
        position: (C, d) the chains' final positions.
        step_size: (C,) the step sizes frozen after warm-up.
        info: :class:`TransitionInfo` of the sampling transitions, each field (T, C).
    """

    position: jax.Array
    step_size: jax.Array
    info: TransitionInfo


def _one_chain(
    log_joint,
    params,
    x,
    position,
    key,
    initial_step_size,
    target_acceptance,
    *,
    num_warmup: int,
    num_transitions: int,
    num_steps: int,
    algorithm: str,
    max_tree_depth: int,
):
    """Warm up and sample one chain (vmapped over chains by :func:`_run`)."""

    def potential(z):
        return -log_joint(params, z, x)

    init_kernel, sample_kernel = hmc(
        potential_fn=potential, algo=_NUMPYRO_ALGO[algorithm]
    )
    key_init, key_warmup, key_sample = jax.random.split(key, 3)
    state = init_kernel(
        position,
        0,
        step_size=initial_step_size,
        adapt_step_size=False,
        adapt_mass_matrix=False,
        num_steps=num_steps if algorithm == "hmc" else None,
        trajectory_length=None,
        max_tree_depth=max_tree_depth,
        rng_key=key_init,
    )
    state = state._replace(
        r=jnp.zeros_like(position)
    )  # an array from now on: we supply the momenta

    def transition(state, key, step_size):
        momentum = jax.random.normal(key, jnp.shape(position), dtype=position.dtype)
        state = state._replace(
            r=momentum, adapt_state=state.adapt_state._replace(step_size=step_size)
        )
        energy_start = state.potential_energy + 0.5 * jnp.sum(momentum**2)
        new = sample_kernel(state)
        if algorithm == "hmc":
            # a proposal with acceptance probability < 1 may have been rejected (then
            # new.energy is the start's), but its ΔH is −ln α; α = 1 means it was taken
            error = jnp.where(
                new.accept_prob < 1,
                -jnp.log(new.accept_prob),
                new.energy - energy_start,
            )
        else:
            error = new.energy - energy_start
        info = TransitionInfo(new.accept_prob, error, new.diverging, new.num_steps)
        return new, info

    da_init, da_update = dual_averaging()

    def warmup(carry, key):
        state, adaptation, step_size = carry
        state, info = transition(state, key, step_size)
        adaptation = da_update(target_acceptance - info.acceptance_rate, adaptation)
        return (state, adaptation, jnp.exp(adaptation[0])), None

    adaptation = da_init(jnp.log(10.0 * initial_step_size))
    step_size = jnp.asarray(initial_step_size, dtype=position.dtype)
    (state, adaptation, _), _ = jax.lax.scan(
        warmup, (state, adaptation, step_size), jax.random.split(key_warmup, num_warmup)
    )
    if num_warmup:
        step_size = jnp.exp(adaptation[1]).astype(position.dtype)  # the iterate average
    state, info = jax.lax.scan(
        lambda s, k: transition(s, k, step_size),
        state,
        jax.random.split(key_sample, num_transitions),
    )
    return state.z, step_size, info


@partial(
    jax.jit,
    static_argnames=(
        "log_joint",
        "num_warmup",
        "num_transitions",
        "num_steps",
        "algorithm",
        "max_tree_depth",
    ),
)
def _run(
    log_joint,
    params,
    x,
    position,
    key,
    initial_step_size,
    target_acceptance,
    *,
    num_warmup,
    num_transitions,
    num_steps,
    algorithm,
    max_tree_depth,
) -> ChainResult:
    chain = partial(
        _one_chain,
        log_joint,
        num_warmup=num_warmup,
        num_transitions=num_transitions,
        num_steps=num_steps,
        algorithm=algorithm,
        max_tree_depth=max_tree_depth,
    )
    keys = jax.random.split(key, position.shape[0])
    z, step_size, info = jax.vmap(chain, in_axes=(None, 0, 0, 0, None, None))(
        params, x, position, keys, initial_step_size, target_acceptance
    )
    return ChainResult(z, step_size, TransitionInfo(*(f.T for f in info)))


def run_chains(
    log_joint,
    params,
    x: jax.Array,
    position: jax.Array,
    *,
    rng_key: jax.Array,
    num_warmup: int,
    num_transitions: int,
    num_steps: int,
    initial_step_size: float = 0.1,
    target_acceptance: float = TARGET_ACCEPTANCE,
    algorithm: str = "hmc",
    max_tree_depth: int = 10,
) -> ChainResult:
    """Warm up (adapting every chain's step size), freeze the step sizes, then sample.

    One chain per row of ``position``, chain c targeting ln p(z) + ln p(x[c] | z).

    Args:
        log_joint: ``log_joint(params, z, x)`` for one code z (d,) and one
            input -> scalar, hashable (a :class:`PortedModel`'s ``log_joint``).
        params: the weights ``log_joint`` reads (a pytree of arrays).
        x: ``(C, *event)`` one input per chain.
        position: (C, d) starting points.
        rng_key: a JAX PRNG key for all the chains' randomness.
        num_warmup: adaptation transitions (>= 0); their draws are discarded.
        num_transitions: T, transitions with frozen step sizes (>= 0).
        num_steps: leapfrog steps per HMC transition (ignored by NUTS).
        initial_step_size: ε₀ of the adaptation (also the step size if num_warmup = 0).
        target_acceptance: dual averaging's target acceptance probability.
        algorithm: ``"hmc"`` (fixed ``num_steps``) or ``"nuts"`` (NumPyro's NUTS).
        max_tree_depth: NUTS's largest tree depth (at most 2^depth − 1 leapfrog steps).

    Returns:
        A :class:`ChainResult` of JAX arrays. The first call for a given architecture,
        chain count and settings compiles (seconds); later ones reuse the program.
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; choose one of {ALGORITHMS}")
    if num_warmup < 0 or num_transitions < 0 or num_steps < 1:
        raise ValueError(
            f"need num_warmup, num_transitions >= 0 and num_steps >= 1, "
            f"got {num_warmup}, {num_transitions}, {num_steps}"
        )
    if jnp.ndim(position) != 2 or jnp.shape(x)[0] != jnp.shape(position)[0]:
        raise ValueError(
            "position must be (chains, dimensions) with one input per chain, got "
            f"position {jnp.shape(position)} and x {jnp.shape(x)}"
        )
    return _run(
        log_joint,
        params,
        x,
        position,
        rng_key,
        initial_step_size,
        target_acceptance,
        num_warmup=num_warmup,
        num_transitions=num_transitions,
        num_steps=num_steps,
        algorithm=algorithm,
        max_tree_depth=max_tree_depth,
    )


def run_model_chains(
    model: torch.nn.Module,
    x: torch.Tensor,
    position: torch.Tensor,
    *,
    seed: int,
    num_warmup: int,
    num_transitions: int,
    num_steps: int,
    initial_step_size: float = 0.1,
    target_acceptance: float = TARGET_ACCEPTANCE,
    algorithm: str = "hmc",
    max_tree_depth: int = 10,
) -> ChainResult:
    """:func:`run_chains` on a PyTorch model's posterior, from PyTorch tensors.

    The arguments not listed below are those of :func:`run_chains`.

    Args:
        model: a :data:`SUPPORTED_MODELS` instance;
            its current weights are copied to JAX.
        x: ``(C, *event)`` one input per chain (moved to the CPU / JAX's default
            device).
        position: (C, d) starting codes.
        seed: seeds the JAX PRNG key (``jax.random.key(seed)``).

    Returns:
        A :class:`ChainResult` of JAX arrays (``np.asarray`` them for PyTorch).

    Raises:
        TypeError: a model the backend cannot port
            (the message lists the supported ones).
    """
    ported = port(model)
    as_jax = lambda t: jnp.asarray(t.detach().cpu().numpy())  # noqa: E731
    z0 = as_jax(position)
    return run_chains(
        ported.log_joint,
        ported.params,
        as_jax(x).astype(z0.dtype),
        z0,
        rng_key=jax.random.key(seed),
        num_warmup=num_warmup,
        num_transitions=num_transitions,
        num_steps=num_steps,
        initial_step_size=initial_step_size,
        target_acceptance=target_acceptance,
        algorithm=algorithm,
        max_tree_depth=max_tree_depth,
    )
