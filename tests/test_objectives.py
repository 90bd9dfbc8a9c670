"""Tests for companion.objectives against the exact linear-Gaussian model, and the IWAE
curve on a small ConvVAE.

Monte Carlo checks use tolerances of five standard errors,
estimated from the same draws.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence

from companion.data import binarize, load_images
from companion.models import ConvVAE, LinearGaussian, VAEConfig
from companion.objectives import (
    elbo,
    importance_log_marginal,
    iwae_bound,
    iwae_curve,
    iwae_from_weights,
    log_importance_weights,
    test_nll,
)

D, Z, B = 4, 2, 5


@pytest.fixture(scope="module")
def model() -> LinearGaussian:
    return LinearGaussian.random(
        x_dim=D, z_dim=Z, noise_std=0.5, generator=torch.Generator().manual_seed(0)
    )


@pytest.fixture(scope="module")
def x(model: LinearGaussian) -> torch.Tensor:
    return model.sample(B, generator=torch.Generator().manual_seed(1))[0]


def _diagonal_q(seed: int = 2, scale: float = 0.8) -> Independent:
    gen = torch.Generator().manual_seed(seed)
    mean = torch.randn(B, Z, generator=gen, dtype=torch.float64)
    std = scale * torch.rand(B, Z, generator=gen, dtype=torch.float64) + 0.2
    return Independent(Normal(mean, std), 1)


def _as_mvn(q: Independent) -> MultivariateNormal:
    return MultivariateNormal(q.mean, covariance_matrix=torch.diag_embed(q.variance))


def _expected_log_likelihood(
    model: LinearGaussian, x: torch.Tensor, q: Independent
) -> torch.Tensor:
    """E_q[ln p(x|z)] in closed form for q = N(m, diag s²):

    −D/2 ln 2πσ² − (‖x − W m − μ‖² + tr(W S Wᵀ)) / 2σ²,  S = diag s².
    """
    w, mu, var = model.weight, model.bias, model.noise_std**2
    resid = ((x - q.mean @ w.T - mu) ** 2).sum(-1)
    trace = q.variance @ (w**2).sum(0)
    return -0.5 * D * torch.log(2 * math.pi * var) - (resid + trace) / (2 * var)


def _standard_error(values: torch.Tensor) -> torch.Tensor:
    """Standard error of the mean over dim 0."""
    return values.std(0) / math.sqrt(values.shape[0])


# --- ELBO -----------------------------------------------------------------------------


def test_elbo_with_the_exact_posterior_equals_ln_p_x(model, x) -> None:
    torch.manual_seed(0)
    n = 4_000
    post = model.posterior(x)
    with torch.no_grad():
        terms = elbo(model=model, x=x, posterior=post, n_samples=n)
        exact = model.log_marginal(x)
        z = post.sample((n,))
        # the reconstruction term is the noisiest part of the estimate
        se = _standard_error(model.decode(z).log_prob(x))
    assert terms.elbo.shape == terms.kl.shape == terms.log_likelihood.shape == (B,)
    assert (torch.abs(terms.elbo - exact) <= 5 * se + 1e-10).all()


def test_elbo_kl_term_of_the_exact_posterior_matches_the_analytic_kl_to_the_prior(
    model, x
) -> None:
    torch.manual_seed(1)
    n = 4_000
    post = model.posterior(x)
    with torch.no_grad():
        terms = elbo(model=model, x=x, posterior=post, n_samples=n)
        prior = MultivariateNormal(
            torch.zeros(Z, dtype=torch.float64), torch.eye(Z, dtype=torch.float64)
        )
        analytic = kl_divergence(post, prior)
        z = post.sample((n,))
        se = _standard_error(post.log_prob(z) - model.prior().log_prob(z))
    assert (torch.abs(terms.kl - analytic) <= 5 * se).all()


def test_elbo_plus_kl_to_the_true_posterior_is_ln_p_x_for_any_diagonal_q(
    model, x
) -> None:
    torch.manual_seed(2)
    n = 4_000
    q = _diagonal_q()
    with torch.no_grad():
        terms = elbo(model=model, x=x, posterior=q, n_samples=n)
        gap = kl_divergence(_as_mvn(q), model.posterior(x))
        exact = model.log_marginal(x)
        se = _standard_error(model.decode(q.sample((n,))).log_prob(x))
    assert (
        gap > 0.1
    ).all()  # q is far enough from the posterior for the identity to matter
    assert (torch.abs(terms.elbo + gap - exact) <= 5 * se).all()


def test_elbo_reconstruction_term_is_an_unbiased_estimate_of_its_closed_form(
    model, x
) -> None:
    torch.manual_seed(3)
    n = 4_000
    q = _diagonal_q(seed=5)
    with torch.no_grad():
        terms = elbo(model=model, x=x, posterior=q, n_samples=n)
        expected = _expected_log_likelihood(model, x, q)
        se = _standard_error(model.decode(q.sample((n,))).log_prob(x))
        analytic_kl = kl_divergence(q, model.prior())
    assert (torch.abs(terms.log_likelihood - expected) <= 5 * se).all()
    torch.testing.assert_close(terms.kl, analytic_kl)  # analytic for diagonal Gaussians


@settings(max_examples=30, deadline=None)
@given(
    mean=hnp.arrays(float, (B, Z), elements=st.floats(-3, 3)),
    log_std=hnp.arrays(float, (B, Z), elements=st.floats(-3, 1)),
)
def test_elbo_never_exceeds_ln_p_x(model, x, mean, log_std) -> None:
    q = Independent(Normal(torch.as_tensor(mean), torch.as_tensor(log_std).exp()), 1)
    with torch.no_grad():
        exact_elbo = _expected_log_likelihood(model, x, q) - kl_divergence(
            q, model.prior()
        )
        assert (exact_elbo <= model.log_marginal(x) + 1e-9).all()


def test_beta_scales_only_the_kl_term(model, x) -> None:
    q = _diagonal_q()
    torch.manual_seed(4)
    one = elbo(model=model, x=x, posterior=q, beta=1.0)
    torch.manual_seed(4)
    half = elbo(model=model, x=x, posterior=q, beta=0.5)
    torch.testing.assert_close(half.log_likelihood, one.log_likelihood)
    torch.testing.assert_close(half.elbo, half.log_likelihood - 0.5 * half.kl)


def test_elbo_is_differentiable_in_the_variational_parameters(model, x) -> None:
    mean = torch.zeros(B, Z, dtype=torch.float64, requires_grad=True)
    log_std = torch.zeros(B, Z, dtype=torch.float64, requires_grad=True)
    q = Independent(Normal(mean, log_std.exp()), 1)
    elbo(model=model, x=x, posterior=q, n_samples=3).elbo.sum().backward()
    assert mean.grad.abs().sum() > 0 and log_std.grad.abs().sum() > 0


def test_elbo_rejects_zero_samples(model, x) -> None:
    with pytest.raises(ValueError, match="n_samples"):
        elbo(model=model, x=x, posterior=_diagonal_q(), n_samples=0)


# --- importance sampling --------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 7])
def test_importance_sampling_with_the_exact_posterior_is_exact_with_zero_variance(
    model, x, k: int
) -> None:
    torch.manual_seed(5)
    estimate = importance_log_marginal(
        model=model, x=x, proposal=model.posterior(x), k=k, evals_per_pass=3 * len(x)
    )
    torch.testing.assert_close(
        estimate, model.log_marginal(x).detach(), atol=1e-8, rtol=0
    )


def test_log_importance_weights_have_k_rows_whatever_the_pass_size(model, x) -> None:
    log_w = log_importance_weights(
        model=model, x=x, proposal=_diagonal_q(), k=7, evals_per_pass=3 * len(x)
    )
    assert log_w.shape == (7, B)
    assert not log_w.requires_grad


def test_naive_monte_carlo_with_the_prior_converges_to_ln_p_x() -> None:
    small = LinearGaussian.random(
        x_dim=2, z_dim=1, noise_std=1.0, generator=torch.Generator().manual_seed(3)
    )
    x, _ = small.sample(4, generator=torch.Generator().manual_seed(4))
    torch.manual_seed(6)
    k = 100_000
    log_w = log_importance_weights(
        model=small, x=x, proposal=small.prior(), k=k, evals_per_pass=20_000
    )
    estimate = torch.logsumexp(log_w, 0) - math.log(k)
    # delta method: sd(ln p̂) ≈ sd(w) / (mean(w) √k)
    w = (log_w - log_w.max(0).values).exp()
    se = w.std(0) / (w.mean(0) * math.sqrt(k))
    exact = small.log_marginal(x).detach()
    assert (se < 0.02).all()
    assert (torch.abs(estimate - exact) <= 5 * se).all()


def test_a_batchless_proposal_shares_its_samples_across_the_batch(model, x) -> None:
    prior = model.prior()
    torch.manual_seed(7)
    log_w = log_importance_weights(model=model, x=x, proposal=prior, k=6)
    torch.manual_seed(7)
    z = prior.sample((6,))  # (k, d): the same draws, used for every example
    with torch.no_grad():
        expected = model.log_joint(z[:, None, :], x) - prior.log_prob(z)[:, None]
    assert log_w.shape == (6, B)
    torch.testing.assert_close(log_w, expected)


@pytest.mark.parametrize(("k", "evals"), [(0, 10), (5, 0)])
def test_importance_sampling_rejects_non_positive_k_or_pass_size(
    model, x, k: int, evals: int
) -> None:
    with pytest.raises(ValueError, match="k and evals_per_pass must be >= 1"):
        importance_log_marginal(
            model=model, x=x, proposal=model.prior(), k=k, evals_per_pass=evals
        )


# --- IWAE from one set of weights -----------------------------------------------------


def test_iwae_with_k_equal_to_all_weights_is_their_log_mean_exp() -> None:
    log_w = torch.randn(
        12, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    torch.testing.assert_close(
        iwae_from_weights(log_w, ks=[12])[0], torch.logsumexp(log_w, 0) - math.log(12)
    )


def test_iwae_with_k_one_is_the_mean_log_weight() -> None:
    log_w = torch.randn(
        12, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    torch.testing.assert_close(iwae_from_weights(log_w, ks=[1])[0], log_w.mean(0))


def test_iwae_averages_the_bound_over_disjoint_consecutive_groups() -> None:
    log_w = torch.tensor(
        [[0.0], [math.log(3.0)], [math.log(5.0)], [math.log(7.0)]], dtype=torch.float64
    )
    expected = 0.5 * (math.log(2.0) + math.log(6.0))  # groups {1, 3} and {5, 7}
    torch.testing.assert_close(
        iwae_from_weights(log_w, ks=[2]),
        torch.tensor([[expected]], dtype=torch.float64),
    )


@pytest.mark.parametrize("ks", [[5], [0], [1, 4, 24]])
def test_iwae_rejects_k_that_does_not_divide_the_number_of_weights(
    ks: list[int],
) -> None:
    with pytest.raises(ValueError, match="must divide the number of weights 12"):
        iwae_from_weights(torch.zeros(12, 2), ks=ks)


@settings(max_examples=50, deadline=None)
@given(
    log_w=hnp.arrays(float, (16, 3), elements=st.floats(-20, 20)),
)
def test_iwae_never_decreases_along_a_chain_of_dividing_ks(log_w) -> None:
    # each group of 2k is the union of two groups of k, and log-mean-exp is at least
    # the mean of the halves' log-mean-exps (Jensen), so the curve is monotone for
    # every weight set
    curve = iwae_from_weights(torch.as_tensor(log_w), ks=[1, 2, 4, 8, 16])
    assert (curve[1:] >= curve[:-1] - 1e-12).all()


# --- on a ConvVAE ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def vae_and_images() -> tuple[ConvVAE, torch.Tensor]:
    torch.manual_seed(0)
    vae = ConvVAE(VAEConfig(image_size=8, z_dim=4, channels=(8, 16)))
    images = load_images(name="digits", split="test").images[:12]
    return vae, binarize(images, generator=torch.Generator().manual_seed(0))


def test_iwae_curve_has_one_row_per_k_and_one_column_per_image_and_rises_with_k(
    vae_and_images,
) -> None:
    vae, images = vae_and_images
    vae.train()
    torch.manual_seed(8)
    curve = iwae_curve(
        model=vae,
        images=images,
        ks=(1, 4, 16),
        batch_size=5,
        evals_per_pass=30,
        progress=False,
    )
    assert curve.shape == (3, 12)
    assert torch.isfinite(curve).all() and (curve < 0).all()
    assert (curve[1:] >= curve[:-1] - 1e-5).all()
    assert vae.training  # the caller's mode is restored


def test_test_nll_is_minus_the_last_row_of_the_iwae_curve(vae_and_images) -> None:
    vae, images = vae_and_images
    torch.manual_seed(9)
    curve = iwae_curve(
        model=vae, images=images, ks=(2, 16), batch_size=5, progress=False
    )
    torch.manual_seed(9)
    nll = test_nll(model=vae, images=images, k=16, batch_size=5, progress=False)
    assert nll.shape == (12,)
    torch.testing.assert_close(nll, -curve[-1])


def test_iwae_bound_agrees_with_the_curve_for_one_batch(vae_and_images) -> None:
    vae, images = vae_and_images
    vae.eval()
    torch.manual_seed(10)
    bound = iwae_bound(model=vae, x=images, k=8)
    torch.manual_seed(10)
    curve = iwae_curve(
        model=vae, images=images, ks=(8,), batch_size=len(images), progress=False
    )
    torch.testing.assert_close(bound, curve[0])


@pytest.mark.parametrize("ks", [(3, 4), (0, 4)])
def test_iwae_curve_rejects_ks_that_do_not_divide_the_largest(
    vae_and_images, ks
) -> None:
    vae, images = vae_and_images
    with pytest.raises(ValueError, match="must divide"):
        iwae_curve(model=vae, images=images, ks=ks, progress=False)
