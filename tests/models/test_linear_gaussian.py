"""Tests for companion.models.linear_gaussian: exact p(x) and p(z|x), the closed-form
PPCA fit, and the mean-field encoder."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import (
    Independent,
    Laplace,
    MultivariateNormal,
    Normal,
    kl_divergence,
)

from companion.models import DiagonalLinearEncoder, LinearGaussian, fit_ppca


def _model(
    x_dim: int, z_dim: int, noise_std: float = 0.5, seed: int = 0
) -> LinearGaussian:
    return LinearGaussian.random(
        x_dim=x_dim,
        z_dim=z_dim,
        noise_std=noise_std,
        generator=torch.Generator().manual_seed(seed),
    )


def _mean_log_likelihood(model: LinearGaussian, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float(model.log_marginal(x).mean())


def test_log_marginal_equals_numerical_integration_over_a_scalar_latent() -> None:
    model = _model(x_dim=3, z_dim=1, noise_std=0.7)
    x, _ = model.sample(5, generator=torch.Generator().manual_seed(1))
    z = torch.linspace(-12.0, 12.0, 24_001, dtype=torch.float64)
    dz = float(z[1] - z[0])
    with torch.no_grad():
        log_joint = model.log_joint(z[:, None, None], x)  # (G, B)
        # trapezoid rule on p(x, z) in log space; the tails beyond ±12 are negligible
        trap = torch.cat(
            [log_joint[:1] - math.log(2), log_joint[1:-1], log_joint[-1:] - math.log(2)]
        )
        integral = torch.logsumexp(trap, dim=0) + math.log(dz)
        exact = model.log_marginal(x)
    torch.testing.assert_close(exact, integral, atol=1e-8, rtol=0)


@pytest.mark.parametrize("z_dim", [1, 2, 3])
def test_bayes_identity_ln_p_x_equals_ln_p_z_plus_ln_p_x_given_z_minus_ln_p_z_given_x(
    z_dim: int,
) -> None:
    model = _model(x_dim=5, z_dim=z_dim, seed=z_dim)
    gen = torch.Generator().manual_seed(10 + z_dim)
    x, _ = model.sample(4, generator=gen)
    with torch.no_grad():
        expected = model.log_marginal(x)
        for _ in range(
            3
        ):  # any z gives the same answer, including ones far from the posterior
            z = 3 * torch.randn(4, z_dim, generator=gen, dtype=torch.float64)
            via_bayes = model.log_joint(z, x) - model.posterior(x).log_prob(z)
            torch.testing.assert_close(via_bayes, expected, atol=1e-10, rtol=0)


@pytest.mark.parametrize("z_dim", [1, 3])
def test_posterior_matches_conditioning_the_joint_gaussian_of_z_and_x(
    z_dim: int,
) -> None:
    model = _model(x_dim=6, z_dim=z_dim, noise_std=0.4, seed=2)
    x, _ = model.sample(7, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        w, mu, var = model.weight, model.bias, model.noise_std**2
        # (z, x) ~ N((0, μ), [[I, Wᵀ], [W, W Wᵀ + σ² I]]); condition on x
        s_zx = w.T
        s_xx = w @ w.T + var * torch.eye(6, dtype=w.dtype)
        gain = torch.linalg.solve(s_xx, s_zx.T).T  # Σ_zx Σ_xx⁻¹
        mean = (x - mu) @ gain.T
        cov = torch.eye(z_dim, dtype=w.dtype) - gain @ s_zx.T
        post = model.posterior(x)
    assert post.batch_shape == (7,) and post.event_shape == (z_dim,)
    torch.testing.assert_close(post.mean, mean, atol=1e-10, rtol=0)
    torch.testing.assert_close(
        post.covariance_matrix, cov.expand(7, -1, -1), atol=1e-10, rtol=0
    )


def test_marginal_covariance_matches_the_covariance_of_ancestral_samples() -> None:
    model = _model(x_dim=4, z_dim=2, noise_std=0.5, seed=4)
    x, z = model.sample(40_000, generator=torch.Generator().manual_seed(5))
    assert x.shape == (40_000, 4) and z.shape == (40_000, 2)
    cov = model.marginal().covariance_matrix.detach()
    # entry-wise standard error sqrt((C_ii C_jj + C_ij²) / n) <= ~0.02 for these scales
    torch.testing.assert_close(torch.cov(x.T), cov, atol=0.06, rtol=0)
    torch.testing.assert_close(x.mean(0), model.bias.detach(), atol=0.05, rtol=0)


@pytest.fixture(scope="module")
def ppca_data() -> tuple[LinearGaussian, torch.Tensor]:
    true = _model(x_dim=6, z_dim=2, noise_std=0.5, seed=6)
    x, _ = true.sample(500, generator=torch.Generator().manual_seed(7))
    return true, x


def test_ppca_fit_is_at_least_as_likely_as_the_true_model_on_its_training_data(
    ppca_data,
) -> None:
    true, x = ppca_data
    fitted = fit_ppca(x, z_dim=2)
    assert _mean_log_likelihood(fitted, x) >= _mean_log_likelihood(true, x)


def test_ppca_fit_is_a_stationary_point_of_the_log_likelihood(ppca_data) -> None:
    _, x = ppca_data
    fitted = fit_ppca(x, z_dim=2)
    fitted.log_marginal(x).mean().backward()
    for name, p in fitted.named_parameters():
        assert p.grad.abs().max() < 1e-8, name


def test_ppca_fit_is_at_least_as_good_as_gradient_ascent_from_a_random_start(
    ppca_data,
) -> None:
    _, x = ppca_data
    fitted = fit_ppca(x, z_dim=2)
    learned = _model(x_dim=6, z_dim=2, noise_std=1.0, seed=8)
    optimiser = torch.optim.Adam(learned.parameters(), lr=0.05)
    for _ in range(400):
        loss = -learned.log_marginal(x).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    best, reached = _mean_log_likelihood(fitted, x), _mean_log_likelihood(learned, x)
    assert best >= reached - 1e-9
    assert (
        best - reached < 0.05
    )  # gradient ascent gets close, so the comparison is meaningful


def test_ppca_fit_recovers_the_marginal_covariance_from_many_samples() -> None:
    true = _model(x_dim=6, z_dim=2, noise_std=0.5, seed=9)
    x, _ = true.sample(50_000, generator=torch.Generator().manual_seed(10))
    fitted = fit_ppca(x, z_dim=2)
    with torch.no_grad():
        c_true = true.marginal().covariance_matrix
        c_fit = fitted.marginal().covariance_matrix
    # entry-wise sampling error ~ sqrt(2 / n) · scale ≈ 0.01 here
    torch.testing.assert_close(c_fit, c_true, atol=0.05, rtol=0)
    assert abs(float(fitted.noise_std.detach()) - 0.5) < 0.02
    torch.testing.assert_close(
        fitted.bias.detach(), true.bias.detach(), atol=0.04, rtol=0
    )


def test_ppca_fit_returns_float64_for_float32_data(ppca_data) -> None:
    _, x = ppca_data
    fitted = fit_ppca(x.float(), z_dim=3)
    assert fitted.weight.dtype == torch.float64 and fitted.weight.shape == (6, 3)


@pytest.mark.parametrize(
    ("x", "z_dim", "message"),
    [
        (torch.zeros(10), 1, r"\(N, D\)"),
        (torch.zeros(2, 10, 3), 1, r"\(N, D\)"),
        (torch.randn(10, 4), 0, r"1\.\.3"),
        (torch.randn(10, 4), 4, r"1\.\.3"),
    ],
)
def test_ppca_fit_rejects_bad_shapes_and_latent_sizes(
    x: torch.Tensor, z_dim: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        fit_ppca(x, z_dim=z_dim)


@pytest.mark.parametrize(
    ("weight", "bias", "noise_std"),
    [
        (torch.zeros(4), torch.zeros(4), 1.0),
        (torch.zeros(4, 2), torch.zeros(3), 1.0),
        (torch.zeros(4, 2), torch.zeros(4, 1), 1.0),
    ],
    ids=["weight-1d", "bias-length", "bias-2d"],
)
def test_linear_gaussian_rejects_mismatched_weight_and_bias(
    weight, bias, noise_std
) -> None:
    with pytest.raises(ValueError, match=r"\(D, d\)"):
        LinearGaussian(weight=weight, bias=bias, noise_std=noise_std)


@pytest.mark.parametrize("noise_std", [0.0, -1.0])
def test_linear_gaussian_rejects_a_non_positive_noise_scale(noise_std: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        LinearGaussian(
            weight=torch.zeros(3, 1), bias=torch.zeros(3), noise_std=noise_std
        )


def test_model_shapes_follow_the_shared_interface() -> None:
    model = _model(x_dim=5, z_dim=2)
    z = torch.zeros(7, 3, 2, dtype=torch.float64)
    x = torch.zeros(3, 5, dtype=torch.float64)
    assert (model.x_dim, model.z_dim) == (5, 2)
    assert model.prior().event_shape == (2,) and model.prior().batch_shape == ()
    assert model.decode(z).batch_shape == (7, 3) and model.decode(z).event_shape == (5,)
    assert model.log_joint(z, x).shape == (7, 3)
    assert model.log_marginal(x).shape == (3,)


def test_diagonal_linear_encoder_gives_a_batch_of_diagonal_gaussians() -> None:
    encoder = DiagonalLinearEncoder(x_dim=5, z_dim=2)
    q = encoder(torch.randn(4, 5, dtype=torch.float64))
    assert q.batch_shape == (4,) and q.event_shape == (2,)
    assert q.mean.shape == (4, 2) and q.mean.dtype == torch.float64
    assert q.rsample((3,)).shape == (3, 4, 2)
    # the scale is shared over x: every example has the same standard deviations
    assert torch.equal(q.stddev, encoder.log_std.exp().expand(4, 2))


def test_diagonal_linear_encoder_can_represent_the_exact_posterior_mean() -> None:
    model = _model(x_dim=5, z_dim=2)
    x, _ = model.sample(6, generator=torch.Generator().manual_seed(11))
    encoder = DiagonalLinearEncoder(x_dim=5, z_dim=2)
    with torch.no_grad():
        w, mu, var = model.weight, model.bias, model.noise_std**2
        a = torch.linalg.solve(
            w.T @ w + var * torch.eye(2, dtype=w.dtype), w.T
        )  # M⁻¹ Wᵀ
        encoder.mean.weight.copy_(a)
        encoder.mean.bias.copy_(-a @ mu)
        torch.testing.assert_close(
            encoder(x).mean, model.posterior(x).mean, atol=1e-10, rtol=0
        )


def _posterior_precision(model: LinearGaussian, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.linalg.inv(model.posterior(x).covariance_matrix)


def test_kl_from_posterior_is_zero_for_the_posterior_and_the_elbo_gap_otherwise() -> (
    None
):
    model = _model(x_dim=5, z_dim=2, seed=12)
    x, _ = model.sample(4, generator=torch.Generator().manual_seed(13))
    gen = torch.Generator().manual_seed(14)
    mean = torch.randn(4, 2, generator=gen, dtype=torch.float64)
    std = torch.rand(4, 2, generator=gen, dtype=torch.float64) + 0.1
    diagonal = Independent(Normal(mean, std), 1)
    with torch.no_grad():
        as_full = MultivariateNormal(mean, covariance_matrix=torch.diag_embed(std**2))
        torch.testing.assert_close(
            model.kl_from_posterior(diagonal, x),
            kl_divergence(as_full, model.posterior(x)),
        )
        torch.testing.assert_close(
            model.kl_from_posterior(model.posterior(x), x),
            torch.zeros(4, dtype=torch.float64),
        )
        # ln p(x) − KL = E_q[ln p(x, z) − ln q(z)], estimated here with many samples
        z = diagonal.sample((20_000,))
        bound = model.log_joint(z, x) - diagonal.log_prob(z)
        se = bound.std(0) / math.sqrt(20_000)
        gap = model.log_marginal(x) - bound.mean(0)
        assert (torch.abs(model.kl_from_posterior(diagonal, x) - gap) <= 5 * se).all()


def test_kl_from_posterior_rejects_a_non_gaussian_q() -> None:
    model = _model(x_dim=3, z_dim=1)
    q = Independent(
        Laplace(
            torch.zeros(2, 1, dtype=torch.float64),
            torch.ones(2, 1, dtype=torch.float64),
        ),
        1,
    )
    with pytest.raises(ValueError, match="Gaussian"):
        model.kl_from_posterior(q, torch.zeros(2, 3, dtype=torch.float64))


def test_mean_field_gap_is_the_kl_of_the_best_diagonal_gaussian() -> None:
    model = _model(x_dim=5, z_dim=3, seed=15)
    x, _ = model.sample(3, generator=torch.Generator().manual_seed(16))
    precision = _posterior_precision(model, x)[0]
    diag = precision.diagonal()
    with torch.no_grad():
        gap = model.mean_field_gap()
        torch.testing.assert_close(
            gap, 0.5 * (diag.log().sum() - torch.logdet(precision))
        )
        best_mean = model.posterior(x).mean
        best = Independent(Normal(best_mean, diag.rsqrt().expand(3, -1)), 1)
        torch.testing.assert_close(model.kl_from_posterior(best, x), gap.expand(3))
        for scale in (0.9, 1.1):  # any other diagonal q is worse
            other = Independent(
                Normal(best_mean, scale * diag.rsqrt().expand(3, -1)), 1
            )
            assert (model.kl_from_posterior(other, x) > gap).all()
    assert gap > 0  # the posterior of this model is correlated
