"""Tests for companion.bounds: the terms of the TV bound on the linear-Gaussian
model."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import MultivariateNormal

from companion.attacks import symmetric_kl
from companion.bounds import (
    exact_hmc_marginals,
    pinsker,
    tv_bound_terms,
    tv_monte_carlo,
    tv_same_covariance,
    worst_case_l2_perturbation,
)
from companion.hmc import torch as hmc
from companion.models import DiagonalLinearEncoder, LinearGaussian


def _gaussian(mean: list[float], cov: list[list[float]]) -> MultivariateNormal:
    return MultivariateNormal(
        torch.tensor(mean, dtype=torch.float64), torch.tensor(cov, dtype=torch.float64)
    )


def test_pinsker_is_the_square_root_of_half_the_kl() -> None:
    torch.testing.assert_close(
        pinsker(torch.tensor([0.0, 2.0, 0.5])), torch.tensor([0.0, 1.0, 0.5])
    )


def test_tv_of_shifted_unit_gaussians_is_closed_form_and_monte_carlo_agrees() -> None:
    p, q = _gaussian([0.0], [[1.0]]), _gaussian([1.0], [[1.0]])
    exact = tv_same_covariance(p, q)
    torch.testing.assert_close(
        exact,
        torch.tensor(
            2 * 0.5 * (1 + math.erf(0.5 / math.sqrt(2))) - 1, dtype=torch.float64
        ),
    )
    estimate, se = tv_monte_carlo(
        p, q, num_samples=200_000, generator=torch.Generator().manual_seed(0)
    )
    assert abs(estimate - exact) < 4 * se
    assert float(tv_same_covariance(p, p)) == 0.0


def test_tv_same_covariance_refuses_different_covariances() -> None:
    with pytest.raises(ValueError, match="equal covariances"):
        tv_same_covariance(_gaussian([0.0], [[1.0]]), _gaussian([0.0], [[2.0]]))


def test_monte_carlo_tv_of_different_scales_matches_the_crossing_point_formula() -> (
    None
):
    # N(0, 1) vs N(0, 4): the densities cross at ±c, c² = 8 ln 2 / 3;
    # TV = P(|Z|<c) − P(|2Z|<c).
    c = math.sqrt(8 * math.log(2) / 3)
    exact = math.erf(c / math.sqrt(2)) - math.erf(c / (2 * math.sqrt(2)))
    estimate, se = tv_monte_carlo(
        _gaussian([0.0], [[1.0]]),
        _gaussian([0.0], [[4.0]]),
        num_samples=200_000,
        generator=torch.Generator().manual_seed(1),
    )
    assert abs(float(estimate) - exact) < 4 * float(se)
    with pytest.raises(ValueError, match="num_samples"):
        tv_monte_carlo(
            _gaussian([0.0], [[1.0]]), _gaussian([0.0], [[4.0]]), num_samples=1
        )


def test_exact_hmc_leaves_the_target_invariant_and_converges_to_it() -> None:
    target = _gaussian([1.0, -1.0], [[0.5, 0.2], [0.2, 0.3]])
    stay = exact_hmc_marginals(target, target, steps=5, integration_time=0.7)
    for law in stay:
        torch.testing.assert_close(law.mean, target.mean)
        torch.testing.assert_close(law.covariance_matrix, target.covariance_matrix)
    start = _gaussian([5.0, 5.0], [[0.01, 0.0], [0.0, 0.01]])
    laws = exact_hmc_marginals(start, target, steps=400, integration_time=0.3)
    assert len(laws) == 401
    torch.testing.assert_close(laws[-1].mean, target.mean, atol=1e-6, rtol=0)
    torch.testing.assert_close(
        laws[-1].covariance_matrix, target.covariance_matrix, atol=1e-6, rtol=0
    )


def test_one_exact_transition_matches_leapfrog_hmc_with_tiny_steps() -> None:
    # 1-D target N(0, 1/ω²) from the point z0: mean cos(ωτ) z0, variance sin²(ωτ) / ω².
    omega, tau, z0, chains = 2.0, 0.6, 1.5, 20_000
    target = _gaussian([0.0], [[1 / omega**2]])
    law = exact_hmc_marginals(
        _gaussian([z0], [[1e-12]]), target, steps=1, integration_time=tau
    )[1]
    assert math.isclose(float(law.mean), math.cos(omega * tau) * z0, rel_tol=1e-9)
    assert math.isclose(
        float(law.variance), math.sin(omega * tau) ** 2 / omega**2, rel_tol=1e-6
    )
    state = hmc.init(torch.full((chains, 1), z0, dtype=torch.float64), target.log_prob)
    state, info = hmc.step(
        state,
        logdensity_fn=target.log_prob,
        step_size=tau / 200,
        num_steps=200,
        generator=torch.Generator().manual_seed(2),
    )
    z = state.position[:, 0]
    assert (info.acceptance_rate > 0.999).all()
    assert abs(z.mean() - law.mean) < 4 * law.stddev / math.sqrt(chains)
    assert abs(z.var() / law.variance - 1) < 4 * math.sqrt(2 / chains)


def test_exact_hmc_rejects_bad_settings() -> None:
    g = _gaussian([0.0], [[1.0]])
    with pytest.raises(ValueError, match="steps"):
        exact_hmc_marginals(g, g, steps=-1, integration_time=1.0)
    with pytest.raises(ValueError, match="integration_time"):
        exact_hmc_marginals(g, g, steps=1, integration_time=0.0)


@pytest.fixture(scope="module")
def setting() -> tuple[LinearGaussian, DiagonalLinearEncoder, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    model = LinearGaussian.random(x_dim=6, z_dim=2, noise_std=0.5, generator=g)
    model.requires_grad_(False)
    torch.manual_seed(0)
    encoder = DiagonalLinearEncoder(x_dim=6, z_dim=2).requires_grad_(False)
    x, _ = model.sample(3, generator=g)
    return model, encoder, x


def test_the_worst_case_perturbation_beats_every_random_direction(setting) -> None:
    _, encoder, x = setting
    eps = worst_case_l2_perturbation(encoder, radius=0.4)
    assert math.isclose(float(eps.norm()), 0.4, rel_tol=1e-9)
    best = symmetric_kl(encoder(x + eps), encoder(x))
    directions = torch.randn(
        200, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3)
    )
    directions = 0.4 * directions / directions.norm(dim=-1, keepdim=True)
    for d in directions:
        assert (symmetric_kl(encoder(x + d), encoder(x)) <= best + 1e-9).all()
    torch.testing.assert_close(best, best[:1].expand(3))  # the same for every reference
    with pytest.raises(ValueError, match="radius"):
        worst_case_l2_perturbation(encoder, radius=-1.0)


def test_the_bound_holds_and_its_terms_behave(setting) -> None:
    model, encoder, x = setting
    x_adv = x + worst_case_l2_perturbation(encoder, radius=0.5)
    terms = tv_bound_terms(
        model,
        encoder,
        x_ref=x,
        x_adv=x_adv,
        steps=20,
        integration_time=0.1,
        lhs_steps=[0, 10, 20],
        num_samples=20_000,
        generator=torch.Generator().manual_seed(4),
    )
    assert (
        terms.lhs.shape == (3, 3)
        and terms.mcmc.shape == (21, 3)
        and terms.attack.shape == (3,)
    )
    assert (terms.slack > -3 * terms.lhs_stderr).all()
    assert (terms.mcmc[-1] < terms.mcmc[0]).all() and (terms.attack > 0).all()
    clean = tv_bound_terms(
        model,
        encoder,
        x_ref=x,
        x_adv=x,
        steps=2,
        integration_time=0.1,
        num_samples=1000,
    )
    assert (
        clean.lhs.shape == (3, 3)
        and (clean.attack < 1e-12).all()
        and (clean.lhs[0] == 0).all()
    )
    none = tv_bound_terms(
        model, encoder, x_ref=x, x_adv=x, steps=2, integration_time=0.1, lhs_steps=[]
    )
    assert none.lhs.shape == (0, 3)


def test_tv_bound_terms_rejects_bad_shapes_and_steps(setting) -> None:
    model, encoder, x = setting
    with pytest.raises(ValueError, match="x_ref and x_adv"):
        tv_bound_terms(
            model, encoder, x_ref=x, x_adv=x[:2], steps=1, integration_time=0.1
        )
    with pytest.raises(ValueError, match="lhs_steps"):
        tv_bound_terms(
            model,
            encoder,
            x_ref=x,
            x_adv=x,
            steps=1,
            integration_time=0.1,
            lhs_steps=[2],
        )
