"""Monte Carlo checks of samples against a known Gaussian,
shared by the sampler tests."""

from __future__ import annotations

import numpy as np


def assert_matches_gaussian(
    z: np.ndarray, mean: np.ndarray, cov: np.ndarray, *, k: float = 5.0
) -> None:
    """Sample mean and covariance of n independent draws z (n, d) within k Monte Carlo
    standard errors of N(mean, cov).

    SE(mean_i) = √(Σ_ii / n) and SE(S_ij) = √((Σ_ii Σ_jj + Σ_ij²) / n), the standard
    deviation of a Gaussian sample covariance entry (Anderson, 2003, §3.3). With k = 5 a
    correct sampler fails an entry with probability below 10⁻⁶.
    """
    z, mean, cov = (np.asarray(a, dtype=np.float64) for a in (z, mean, cov))
    n = len(z)
    se_mean = np.sqrt(np.diag(cov) / n)
    se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    mean_error, cov_error = np.abs(z.mean(0) - mean), np.abs(np.cov(z.T) - cov)
    assert (mean_error < k * se_mean).all(), (
        f"mean errors {mean_error} exceed {k} SE {se_mean}"
    )
    assert (cov_error < k * se_cov).all(), (
        f"covariance errors {cov_error} exceed {k} SE {se_cov}"
    )
