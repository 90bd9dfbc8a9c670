"""Every term of the HMC defence's total-variation bound, exactly,
on a linear-Gaussian model.

Kuzina, Welling & Tomczak (2022, theorem 1) bound how far the defended codes for an
attacked input x^a = x^r + ε can be from the encoder's codes for the reference x^r::

    TV[q^(t)(z|x^a) ‖ q_φ(z|x^r)] ≤ TV[q^(t)(z|x^a) ‖ p(z|x^a)]     (MCMC term)
                                   + TV[p(z|x^a)    ‖ p(z|x^r)]     (attack term)
                                   + TV[p(z|x^r)    ‖ q_φ(z|x^r)]   (approximation term)
                                 ≤ √(½ KL[q^(t) ‖ p(·|x^a)]) + TV[p(·|x^a) ‖ p(·|x^r)]
                                   + √(½ KL[q_φ(·|x^r) ‖ p(·|x^r)])

(triangle inequality, then Pinsker's inequality on the first and last terms). q^(t) is
the law of an MCMC chain after t transitions started at q_φ(z|x^a). The paper writes the
attack term as o(√‖ε‖) from the continuity of the true posterior in x; on the
linear-Gaussian model it is exact: both posteriors share one covariance, so their total
variation has a closed form.

The MCMC term needs the law of the chain, which no library gives for a real sampler.
For a Gaussian target and HMC with *exact* Hamiltonian dynamics (the limit of leapfrog
as the step size goes to 0, where every proposal is accepted) that law stays Gaussian
and its moments follow a linear recursion, :func:`exact_hmc_marginals`: this is what
makes every term of the bound computable here. The left side, a total variation between
two Gaussians with different covariances, has no closed form and is estimated by Monte
Carlo with its standard error (:func:`tv_monte_carlo`).

All functions work in the dtype of their inputs; use float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch.distributions import Distribution, MultivariateNormal, kl_divergence

from companion import rng
from companion.models.linear_gaussian import (
    DiagonalLinearEncoder,
    LinearGaussian,
    as_multivariate,
)

__all__ = [
    "pinsker",
    "tv_same_covariance",
    "tv_monte_carlo",
    "exact_hmc_marginals",
    "worst_case_l2_perturbation",
    "TVBoundTerms",
    "tv_bound_terms",
]


def pinsker(kl: torch.Tensor) -> torch.Tensor:
    """Pinsker's inequality: TV[P ‖ Q] ≤ √(½ KL[P ‖ Q]); ``kl`` in nats, any shape."""
    return (0.5 * kl.clamp_min(0)).sqrt()


def tv_same_covariance(p: MultivariateNormal, q: MultivariateNormal) -> torch.Tensor:
    """Exact TV between two Gaussians with one covariance Σ: 2 Φ(Δ / 2) − 1.

    Δ = ‖Σ^{-1/2} (μ_p − μ_q)‖ is the Mahalanobis distance of the means; the two
    densities cross on a hyperplane, and the mass of P beyond it is Φ(Δ / 2).

    Returns:
        (batch,) total variation in [0, 1].

    Raises:
        ValueError: the covariances differ (use :func:`tv_monte_carlo`).
    """
    if not torch.allclose(
        p.covariance_matrix, q.covariance_matrix, rtol=1e-8, atol=1e-10
    ):
        raise ValueError(
            "tv_same_covariance needs equal covariances; use tv_monte_carlo otherwise"
        )
    diff = (p.mean - q.mean).unsqueeze(-1)
    white = torch.linalg.solve_triangular(p.scale_tril, diff, upper=False).squeeze(-1)
    half_distance = white.norm(dim=-1) / 2
    return torch.erf(half_distance / math.sqrt(2))  # = 2 Φ(Δ/2) − 1


def tv_monte_carlo(
    p: MultivariateNormal,
    q: MultivariateNormal,
    *,
    num_samples: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unbiased Monte Carlo estimate of TV[P ‖ Q] = E_P[(1 − q(z) / p(z))₊],
    with its standard error.

    Args:
        p, q: Gaussians with the same batch shape (B,) and event shape (d,).
        num_samples: draws from P per batch element.
        generator: torch generator of the draws.

    Returns:
        (estimate, standard_error), each of shape (B,).
    """
    if num_samples < 2:
        raise ValueError(
            f"num_samples must be >= 2 to give a standard error, got {num_samples}"
        )
    noise = rng.randn(
        (num_samples, *p.batch_shape, *p.event_shape),
        generator=generator,
        dtype=p.mean.dtype,
        device=p.mean.device,
    )
    z = p.mean + (p.scale_tril @ noise.unsqueeze(-1)).squeeze(-1)
    terms = (1 - (q.log_prob(z) - p.log_prob(z)).exp()).clamp_min(0)
    return terms.mean(0), terms.std(0) / math.sqrt(num_samples)


def exact_hmc_marginals(
    start: Distribution,
    target: MultivariateNormal,
    *,
    steps: int,
    integration_time: float,
) -> list[MultivariateNormal]:
    """Laws q^(0), …, q^(T) of HMC chains with exact dynamics on a Gaussian target.

    With unit mass and target N(μ, Σ), Σ⁻¹ = V diag(ω²) Vᵀ, Hamilton's equations are
    harmonic oscillators: after integration time τ, z' − μ = C (z − μ) + S ρ with
    momentum ρ ~ N(0, I), C = V cos(ωτ) Vᵀ and S = V diag(sin(ωτ) / ω) Vᵀ. The energy is
    conserved, so every proposal is accepted, and a Gaussian start stays Gaussian:

        m_{t+1} = μ + C (m_t − μ),    P_{t+1} = C P_t Cᵀ + S Sᵀ,

    whose fixed point is (μ, Σ). Leapfrog HMC with a small step size follows these
    moments closely (the chapter checks it against :mod:`companion.hmc.torch`).

    Args:
        start: q^(0), a Gaussian (diagonal or full) with batch shape (B,), event shape
            (d,).
        target: the posterior, batch shape (B,) (or broadcastable),
            one covariance for all.
        steps: T ≥ 0 transitions.
        integration_time: τ > 0 per transition (leapfrog steps × step size).

    Returns:
        T + 1 Gaussians, the law of the chain after t = 0 … T transitions.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if not integration_time > 0:
        raise ValueError(f"integration_time must be positive, got {integration_time}")
    precision = torch.linalg.inv(target.covariance_matrix)
    omega_sq, basis = torch.linalg.eigh(precision)
    omega = omega_sq.clamp_min(0).sqrt()
    c = basis @ torch.diag_embed(torch.cos(omega * integration_time)) @ basis.mT
    s = basis @ torch.diag_embed(torch.sin(omega * integration_time) / omega) @ basis.mT
    start = as_multivariate(start)
    mu = target.mean
    mean, cov = start.mean, start.covariance_matrix
    laws = [start]
    for _ in range(steps):
        mean = mu + ((mean - mu).unsqueeze(-2) @ c.mT).squeeze(-2)
        cov = c @ cov @ c.mT + s @ s.mT
        cov = 0.5 * (cov + cov.mT)  # keep it exactly symmetric for the Cholesky factor
        laws.append(MultivariateNormal(mean, covariance_matrix=cov))
    return laws


def worst_case_l2_perturbation(
    encoder: DiagonalLinearEncoder, *, radius: float
) -> torch.Tensor:
    """The L2 perturbation of norm ``radius`` that maximises the encoder's symmetric KL.

    For ``q(z|x) = N(A x + c, diag(s²))`` the covariance does not depend on x, so
    ``SKL[q(·|x) ‖ q(·|x + ε)] = εᵀ Aᵀ diag(1/s²) A ε``, the same for every x: the best
    attack is ``radius`` times the top eigenvector of Aᵀ diag(1/s²) A (the exact optimum
    that the projected-gradient attacks of chapter 4 approximate for neural encoders).

    Returns:
        ε of shape (D,), with SKL = radius² × the top eigenvalue.
    """
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    with torch.no_grad():
        a = encoder.mean.weight  # (d, D)
        metric = a.T @ torch.diag((-2 * encoder.log_std).exp()) @ a
        _, vectors = torch.linalg.eigh(metric)
        return radius * vectors[:, -1]


class TVBoundTerms(NamedTuple):
    """The bound's terms for B attacked inputs and chains after t = 0 … T transitions.

    Attributes:
        lhs_steps: (K,) the transitions t at which the left side was estimated.
        lhs: (K, B) Monte Carlo estimate of ``TV[q^(t)(·|x^a) ‖ q_φ(·|x^r)]`` at those
            t.
        lhs_stderr: (K, B) its standard error.
        mcmc: (T+1, B) ``√(½ KL[q^(t)(·|x^a) ‖ p(·|x^a)])``, which goes to 0 as t
            grows.
        attack: (B,) exact ``TV[p(·|x^a) ‖ p(·|x^r)]``, which grows with the attack
            radius.
        approximation: (B,) ``√(½ KL[q_φ(·|x^r) ‖ p(·|x^r)])``,
            the encoder's approximation gap.
    """

    lhs_steps: torch.Tensor
    lhs: torch.Tensor
    lhs_stderr: torch.Tensor
    mcmc: torch.Tensor
    attack: torch.Tensor
    approximation: torch.Tensor

    @property
    def rhs(self) -> torch.Tensor:
        """The bound, (T+1, B), in nats: mcmc + attack + approximation."""
        return self.mcmc + self.attack + self.approximation

    @property
    def slack(self) -> torch.Tensor:
        """(K, B) bound minus left side at ``lhs_steps``
        (≥ 0 up to Monte Carlo error)."""
        return self.rhs[self.lhs_steps] - self.lhs


def tv_bound_terms(
    model: LinearGaussian,
    encoder: DiagonalLinearEncoder,
    *,
    x_ref: torch.Tensor,
    x_adv: torch.Tensor,
    steps: int,
    integration_time: float,
    lhs_steps: Sequence[int] | None = None,
    num_samples: int = 100_000,
    generator: torch.Generator | None = None,
) -> TVBoundTerms:
    """Every term of the TV bound for chains started at q_φ(z|x^a), exact HMC dynamics.

    Args:
        model: the linear-Gaussian model p(z) p(x|z), whose posterior the chains target.
        encoder: the amortised encoder q_φ(z|x).
        x_ref: (B, D) reference inputs x^r.
        x_adv: (B, D) attacked inputs x^a.
        steps: T, the largest number of transitions.
        integration_time: τ per transition (see :func:`exact_hmc_marginals`).
        lhs_steps: the t in 0 … T at which to estimate the left side (default: all; each
            costs ``num_samples`` × B density evaluations,
            the other terms are closed-form).
        num_samples: Monte Carlo draws per estimate of the left side.
        generator: torch generator of those draws.
    """
    if x_ref.shape != x_adv.shape or x_ref.dim() != 2 or x_ref.shape[-1] != model.x_dim:
        raise ValueError(
            f"x_ref and x_adv must both be (B, {model.x_dim}); got "
            f"{tuple(x_ref.shape)} and {tuple(x_adv.shape)}"
        )
    lhs_steps = list(range(steps + 1)) if lhs_steps is None else sorted(set(lhs_steps))
    if lhs_steps and not 0 <= lhs_steps[0] <= lhs_steps[-1] <= steps:
        raise ValueError(f"lhs_steps must lie in 0..{steps}, got {lhs_steps}")
    with torch.no_grad():
        q_ref = as_multivariate(encoder(x_ref))
        q_adv = as_multivariate(encoder(x_adv))
        post_ref, post_adv = model.posterior(x_ref), model.posterior(x_adv)
        laws = exact_hmc_marginals(
            q_adv, post_adv, steps=steps, integration_time=integration_time
        )
        estimates = [
            tv_monte_carlo(laws[t], q_ref, num_samples=num_samples, generator=generator)
            for t in lhs_steps
        ]
        empty = x_ref.new_zeros(0, x_ref.shape[0])
        return TVBoundTerms(
            lhs_steps=torch.tensor(lhs_steps, dtype=torch.long),
            lhs=torch.stack([e[0] for e in estimates]) if estimates else empty,
            lhs_stderr=torch.stack([e[1] for e in estimates]) if estimates else empty,
            mcmc=torch.stack([pinsker(kl_divergence(law, post_adv)) for law in laws]),
            attack=tv_same_covariance(post_adv, post_ref),
            approximation=pinsker(kl_divergence(q_ref, post_ref)),
        )
