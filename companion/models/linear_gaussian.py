"""The linear-Gaussian latent-variable model (probabilistic PCA):
the book's ground truth.

    p(z) = N(0, I_d),    p(x | z) = N(W z + μ, σ² I_D)

Everything about it is exact (Tipping & Bishop, 1999):

    p(x)     = N(μ, W Wᵀ + σ² I_D)
    p(z | x) = N(M⁻¹ Wᵀ (x − μ), σ² M⁻¹),   M = Wᵀ W + σ² I_d

so estimators of ln p(x), ELBO gaps and samplers can be tested against closed forms.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import (
    Distribution,
    Independent,
    MultivariateNormal,
    Normal,
    kl_divergence,
)

__all__ = ["LinearGaussian", "DiagonalLinearEncoder", "as_multivariate", "fit_ppca"]


class LinearGaussian(nn.Module):
    """p(z) p(x|z) with a linear-Gaussian decoder; parameters are trainable.

    Args:
        weight: W, shape (D, d).
        bias: μ, shape (D,).
        noise_std: σ > 0 (a scalar).
    """

    def __init__(
        self,
        *,
        weight: torch.Tensor,
        bias: torch.Tensor,
        noise_std: float | torch.Tensor,
    ) -> None:
        super().__init__()
        if weight.dim() != 2 or bias.shape != (weight.shape[0],):
            raise ValueError(
                f"weight must be (D, d) and bias (D,); got {tuple(weight.shape)} and "
                f"{tuple(bias.shape)}"
            )
        noise_std = torch.as_tensor(noise_std, dtype=weight.dtype)
        if not bool(noise_std > 0):
            raise ValueError(f"noise_std must be positive, got {float(noise_std)}")
        self.weight = nn.Parameter(weight.clone())
        self.bias = nn.Parameter(bias.clone())
        self.log_noise_std = nn.Parameter(noise_std.log().reshape(()))

    @classmethod
    def random(
        cls,
        *,
        x_dim: int,
        z_dim: int,
        noise_std: float,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> LinearGaussian:
        """A model with W ~ N(0, 1/d) entries and μ ~ N(0, 1)."""
        weight = torch.randn(
            x_dim, z_dim, generator=generator, dtype=dtype
        ) / math.sqrt(z_dim)
        bias = torch.randn(x_dim, generator=generator, dtype=dtype)
        return cls(weight=weight, bias=bias, noise_std=noise_std)

    @property
    def x_dim(self) -> int:
        return self.weight.shape[0]

    @property
    def z_dim(self) -> int:
        return self.weight.shape[1]

    @property
    def noise_std(self) -> torch.Tensor:
        return self.log_noise_std.exp()

    def prior(self) -> Distribution:
        """p(z) = N(0, I_d); event shape (d,)."""
        zeros = self.weight.new_zeros(self.z_dim)
        return Independent(Normal(zeros, torch.ones_like(zeros)), 1)

    def decode(self, z: torch.Tensor) -> Distribution:
        """p(x | z) for z of shape (..., d); event shape (D,)."""
        mean = z @ self.weight.T + self.bias
        return Independent(Normal(mean, self.noise_std.expand_as(mean)), 1)

    def log_joint(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """ln p(z) + ln p(x | z): z (..., d), x broadcastable to (..., D) -> (...,)."""
        return self.prior().log_prob(z) + self.decode(z).log_prob(x)

    def marginal(self) -> MultivariateNormal:
        """p(x) = N(μ, W Wᵀ + σ² I)."""
        eye = torch.eye(self.x_dim, dtype=self.weight.dtype, device=self.weight.device)
        cov = self.weight @ self.weight.T + self.noise_std**2 * eye
        return MultivariateNormal(self.bias, covariance_matrix=cov)

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ln p(x) for x of shape (..., D) -> (...,), in nats."""
        return self.marginal().log_prob(x)

    def posterior(self, x: torch.Tensor) -> MultivariateNormal:
        """Exact p(z | x) for x of shape (B, D): batch shape (B,), event shape (d,)."""
        eye = torch.eye(self.z_dim, dtype=self.weight.dtype, device=self.weight.device)
        var = self.noise_std**2
        m = self.weight.T @ self.weight + var * eye
        mean = torch.linalg.solve(m, self.weight.T @ (x - self.bias).T).T
        cov = var * torch.linalg.inv(m)
        return MultivariateNormal(
            mean, covariance_matrix=cov.expand(*mean.shape[:-1], -1, -1)
        )

    def kl_from_posterior(self, q: Distribution, x: torch.Tensor) -> torch.Tensor:
        """Exact KL[q(z) ‖ p(z | x)] for a Gaussian q with batch shape (B,): (B,) nats.

        This is the ELBO's gap: ln p(x) − ELBO(q) = KL[q ‖ p(z | x)]. ``q`` may be a
        diagonal ``Independent(Normal)`` or a ``MultivariateNormal``.
        """
        return kl_divergence(as_multivariate(q), self.posterior(x))

    def mean_field_gap(self) -> torch.Tensor:
        """min over diagonal Gaussians q of KL[q ‖ p(z | x)],
        the same for every x (nats).

        The posterior precision is Λ = M / σ²; the best diagonal q matches the posterior
        mean with variances 1/Λ_ii, leaving ½ Σ_i ln Λ_ii − ½ ln det Λ.
        """
        eye = torch.eye(self.z_dim, dtype=self.weight.dtype, device=self.weight.device)
        precision = (self.weight.T @ self.weight) / self.noise_std**2 + eye
        return 0.5 * (precision.diagonal().log().sum() - torch.logdet(precision))

    def sample(
        self, n: int, *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Ancestral sampling: returns (x (n, D), z (n, d))."""
        with torch.no_grad():
            z = torch.randn(n, self.z_dim, generator=generator, dtype=self.weight.dtype)
            eps = torch.randn(
                n, self.x_dim, generator=generator, dtype=self.weight.dtype
            )
            x = z @ self.weight.T + self.bias + self.noise_std * eps
        return x, z


class DiagonalLinearEncoder(nn.Module):
    """An amortised mean-field encoder q(z|x) = N(A x + c, diag(s²)),
    with s shared over x.

    For the linear-Gaussian model this family contains the exact posterior mean, but not
    its full covariance: the ELBO gap that remains at the optimum is the mean-field
    (approximation) gap, computable exactly.
    """

    def __init__(
        self, *, x_dim: int, z_dim: int, dtype: torch.dtype = torch.float64
    ) -> None:
        super().__init__()
        self.mean = nn.Linear(x_dim, z_dim, dtype=dtype)
        self.log_std = nn.Parameter(torch.zeros(z_dim, dtype=dtype))

    def forward(self, x: torch.Tensor) -> Distribution:
        """q(z | x) for x (B, D): batch shape (B,), event shape (d,)."""
        mean = self.mean(x)
        return Independent(Normal(mean, self.log_std.exp().expand_as(mean)), 1)


def as_multivariate(q: Distribution) -> MultivariateNormal:
    """A diagonal ``Independent(Normal)`` as the equal ``MultivariateNormal``."""
    if isinstance(q, MultivariateNormal):
        return q
    if (
        isinstance(q, Independent)
        and isinstance(q.base_dist, Normal)
        and q.reinterpreted_batch_ndims == 1
    ):
        return MultivariateNormal(q.mean, scale_tril=torch.diag_embed(q.stddev))
    raise ValueError(
        "expected a Gaussian (Independent Normal or MultivariateNormal), got "
        f"{type(q).__name__}"
    )


def fit_ppca(x: torch.Tensor, *, z_dim: int) -> LinearGaussian:
    """Closed-form maximum-likelihood fit of probabilistic PCA
    (Tipping & Bishop, 1999, eq. 7–8).

    Args:
        x: data, shape (N, D), N > D is not required.
        z_dim: latent dimensionality d < D.

    Returns:
        The model maximising Σ_n ln p(x_n): μ = mean, σ² = average of the D − d smallest
        eigenvalues of the sample covariance, W = U_d (Λ_d − σ² I)^{1/2}.
    """
    if x.dim() != 2:
        raise ValueError(f"x must be (N, D), got shape {tuple(x.shape)}")
    n, d_x = x.shape
    if not 0 < z_dim < d_x:
        raise ValueError(f"z_dim must be in 1..{d_x - 1} for D = {d_x}, got {z_dim}")
    x = x.to(torch.float64)
    mu = x.mean(0)
    cov = (x - mu).T @ (x - mu) / n
    evals, evecs = torch.linalg.eigh(cov)  # ascending
    evals, evecs = evals.flip(0), evecs.flip(1)
    var = evals[z_dim:].mean().clamp_min(1e-12)
    weight = evecs[:, :z_dim] * (evals[:z_dim] - var).clamp_min(0).sqrt()
    return LinearGaussian(weight=weight, bias=mu, noise_std=var.sqrt())
