"""Generative models: the convolutional VAE, the hierarchical VAE and the exact
linear-Gaussian model.

Every model exposes the same small interface so that objectives, attacks and samplers
treat them alike:

* ``prior()`` — the distribution p(z) (batch shape ``()``, event shape ``(z_dim,)``);
* ``decode(z)`` — p(x | z) for codes ``z`` of shape (..., z_dim);
* ``log_joint(z, x)`` — ln p(z) + ln p(x | z), shape (...,);
* ``encode(x)`` — q(z | x), for models with an encoder;
* ``kl_groups(q, z)`` — the KL of every latent group along sampled codes z (one group
  for the single-layer VAE).
"""

from companion.models.hvae import HierarchicalPosterior, HierarchicalVAE, HVAEConfig
from companion.models.linear_gaussian import (
    DiagonalLinearEncoder,
    LinearGaussian,
    fit_ppca,
)
from companion.models.vae import ConvVAE, VAEConfig

__all__ = [
    "ConvVAE",
    "VAEConfig",
    "HierarchicalVAE",
    "HVAEConfig",
    "HierarchicalPosterior",
    "LinearGaussian",
    "DiagonalLinearEncoder",
    "fit_ppca",
]
