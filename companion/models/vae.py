"""A convolutional VAE: Gaussian encoder, Bernoulli decoder, standard-normal prior.

The authors' MNIST model (Kuzina et al., 2022, appendix) uses four stride-2 convolutions
with 32/64/96/128 channels and z_dim = 64; :class:`VAEConfig` takes the channel list, so
the same class serves 8×8 to 32×32 images (one halving per channel entry, rounded up).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import (
    Bernoulli,
    Distribution,
    Independent,
    Normal,
    kl_divergence,
)

from companion.data import check_images
from companion.models.conv import ConvDecoder, ConvEncoder, check_architecture

__all__ = ["VAEConfig", "ConvVAE"]

# Lower bound on the encoder's standard deviations:
# keeps ln q finite for saturated inputs.
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


def _gaussian_code(features: torch.Tensor) -> Distribution:
    """N(mean, diag std²) from the encoder head's (B, 2 z_dim) output."""
    mean, raw_std = features.chunk(2, dim=-1)
    return Independent(Normal(mean, F.softplus(raw_std) + _MIN_STD), 1)


def _initialised(config: VAEConfig, generator: torch.Generator) -> ConvVAE:
    """A fresh ConvVAE whose default initialisation draws from ``generator``."""
    state = torch.random.get_rng_state()
    torch.random.set_rng_state(generator.get_state())
    try:
        model = ConvVAE(config)
        generator.set_state(torch.random.get_rng_state())
    finally:
        torch.random.set_rng_state(state)
    return model


class _InferenceNetwork(nn.Module):
    """``x -> q(z | x)`` of a :class:`ConvVAE`,
    holding (not copying) its encoder layers."""

    def __init__(self, vae: ConvVAE) -> None:
        super().__init__()
        self.encoder, self.encoder_head = vae.encoder, vae.encoder_head
        self._check = vae.image_shape

    def forward(self, x: torch.Tensor) -> Distribution:
        check_images(x, shape=self._check)
        return _gaussian_code(self.encoder_head(self.encoder(x)))


class ConvVAE(nn.Module):
    """VAE with q(z|x) = N(μ(x), diag σ²(x)), p(x|z) = Bernoulli(logits(z)),
    p(z) = N(0, I).

    The Bernoulli likelihood is evaluated without support validation, so ln p(x|z) of
    grey images in [0, 1] is the cross-entropy used in the literature
    (attacked images are grey).
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = ConvEncoder(
            image_size=config.image_size, channels=config.channels
        )
        self.encoder_head = nn.Linear(self.encoder.out_features, 2 * config.z_dim)
        self.decoder = ConvDecoder(
            image_size=config.image_size,
            channels=config.channels,
            in_features=config.z_dim,
        )

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
        """q(z | x) for images x (B, 1, H, W) in [0, 1]:
        batch shape (B,), event (z_dim,)."""
        check_images(x, shape=self.image_shape)
        return _gaussian_code(self.encoder_head(self.encoder(x)))

    def inference_network(self) -> nn.Module:
        """The encoder as a module of its own, ``x -> q(z | x)``,
        sharing this model's weights.

        What :func:`companion.amortisation.fit_amortised_encoder` trains: its parameters
        are exactly the encoder's, so the decoder stays as it is.
        """
        return _InferenceNetwork(self)

    def with_new_encoder(self, *, generator: torch.Generator | None = None) -> ConvVAE:
        """A copy of this VAE with the same decoder weights and a freshly initialised
        encoder.

        The start of an encoder of different quality for one fixed generative model (fit
        it with :func:`companion.amortisation.fit_amortised_encoder` on
        :meth:`inference_network`): chapter 6 compares encoders on one decoder.

        Args:
            generator: CPU generator of the new encoder's initial weights (PyTorch's
                default initialisation, drawn from it); ``None`` uses the global one.
        """
        copy = ConvVAE(self.config).to(next(self.parameters()).device)
        copy.decoder.load_state_dict(self.decoder.state_dict())
        fresh = (
            ConvVAE(self.config)
            if generator is None
            else _initialised(self.config, generator)
        )
        copy.encoder.load_state_dict(fresh.encoder.state_dict())
        copy.encoder_head.load_state_dict(fresh.encoder_head.state_dict())
        return copy.train(self.training)

    def decoder_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Bernoulli logits for codes z (..., z_dim) -> (..., 1, H, W)."""
        return self.decoder(z)

    def decode(self, z: torch.Tensor) -> Distribution:
        """p(x | z) for z (..., z_dim): batch shape (...), event shape (1, H, W)."""
        return Independent(
            Bernoulli(logits=self.decoder_logits(z), validate_args=False), 3
        )

    def log_joint(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """ln p(z) + ln p(x | z): z (..., z_dim), x broadcastable to
        (..., 1, H, W) -> (...,)."""
        return self.prior().log_prob(z) + self.decode(z).log_prob(x)

    def kl_groups(self, q: Distribution, z: torch.Tensor) -> list[torch.Tensor]:
        """``[KL[q(z|x) ‖ p(z)]]``, analytic, broadcast to z's batch shape ``(*S, B)``:
        one group."""
        return [kl_divergence(q, self.prior()).expand(z.shape[:-1])]

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of p(x | z = E_q[z]): the usual deterministic reconstruction,
        (B, 1, H, W)."""
        return torch.sigmoid(self.decoder_logits(self.encode(x).mean))

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Mean images of p(x|z) for n codes z ~ N(0, temperature² I): (n, 1, H, W)."""
        p = next(self.parameters())
        z = temperature * torch.randn(
            n, self.z_dim, generator=generator, dtype=p.dtype
        ).to(p.device)
        return torch.sigmoid(self.decoder_logits(z))
