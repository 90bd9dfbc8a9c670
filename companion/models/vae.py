"""A convolutional VAE: Gaussian encoder, Bernoulli decoder, standard-normal prior.

The authors' MNIST model (Kuzina et al., 2022, appendix) uses four stride-2 convolutions
with 32/64/96/128 channels and z_dim = 64; :class:`VAEConfig` takes the channel list, so
the same class serves 8×8 to 32×32 images (one halving per channel entry, rounded up).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Bernoulli, Distribution, Independent, Normal, kl_divergence
import torch.nn.functional as F

from companion.data import check_images
from companion.models.conv import ConvDecoder, ConvEncoder, check_architecture

__all__ = ["VAEConfig", "ConvVAE"]

# Lower bound on the encoder's standard deviations: keeps ln q finite for saturated inputs.
_MIN_STD = 1e-4


@dataclass(frozen=True)
class VAEConfig:
    """Architecture of :class:`ConvVAE`.

    Attributes:
        image_size: side of the square single-channel input, in pixels.
        z_dim: latent dimensionality.
        channels: output channels of each stride-2 convolution of the encoder.
    """

    image_size: int = 16
    z_dim: int = 16
    channels: tuple[int, ...] = (32, 64)

    def __post_init__(self) -> None:
        if self.z_dim < 1:
            raise ValueError(f"invalid VAEConfig {self}: need z_dim >= 1")
        check_architecture(image_size=self.image_size, channels=self.channels)


class ConvVAE(nn.Module):
    """VAE with q(z|x) = N(μ(x), diag σ²(x)), p(x|z) = Bernoulli(logits(z)), p(z) = N(0, I).

    The Bernoulli likelihood is evaluated without support validation, so ln p(x|z) of grey
    images in [0, 1] is the cross-entropy used in the literature (attacked images are grey).
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = ConvEncoder(image_size=config.image_size, channels=config.channels)
        self.encoder_head = nn.Linear(self.encoder.out_features, 2 * config.z_dim)
        self.decoder = ConvDecoder(image_size=config.image_size, channels=config.channels, in_features=config.z_dim)

    @property
    def z_dim(self) -> int:
        return self.config.z_dim

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (1, self.config.image_size, self.config.image_size)

    def prior(self) -> Distribution:
        """p(z) = N(0, I); event shape (z_dim,)."""
        p = next(self.parameters())
        zeros = p.new_zeros(self.z_dim)
        return Independent(Normal(zeros, torch.ones_like(zeros)), 1)

    def encode(self, x: torch.Tensor) -> Distribution:
        """q(z | x) for images x (B, 1, H, W) in [0, 1]: batch shape (B,), event (z_dim,)."""
        check_images(x, shape=self.image_shape)
        mean, raw_std = self.encoder_head(self.encoder(x)).chunk(2, dim=-1)
        return Independent(Normal(mean, F.softplus(raw_std) + _MIN_STD), 1)

    def decoder_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Bernoulli logits for codes z (..., z_dim) -> (..., 1, H, W)."""
        return self.decoder(z)

    def decode(self, z: torch.Tensor) -> Distribution:
        """p(x | z) for z (..., z_dim): batch shape (...), event shape (1, H, W)."""
        return Independent(Bernoulli(logits=self.decoder_logits(z), validate_args=False), 3)

    def log_joint(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """ln p(z) + ln p(x | z): z (..., z_dim), x broadcastable to (..., 1, H, W) -> (...,)."""
        return self.prior().log_prob(z) + self.decode(z).log_prob(x)

    def kl_groups(self, q: Distribution, z: torch.Tensor) -> list[torch.Tensor]:
        """[KL[q(z|x) ‖ p(z)]], analytic, broadcast to z's batch shape (*S, B): one group."""
        return [kl_divergence(q, self.prior()).expand(z.shape[:-1])]

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of p(x | z = E_q[z]): the usual deterministic reconstruction, (B, 1, H, W)."""
        return torch.sigmoid(self.decoder_logits(self.encode(x).mean))

    @torch.no_grad()
    def sample(self, n: int, *, temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean images of p(x|z) for n codes z ~ N(0, temperature² I): (n, 1, H, W)."""
        p = next(self.parameters())
        z = temperature * torch.randn(n, self.z_dim, generator=generator, dtype=p.dtype).to(p.device)
        return torch.sigmoid(self.decoder_logits(z))
