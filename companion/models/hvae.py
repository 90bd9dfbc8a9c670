"""A hierarchical VAE with a bottom-up inference path and a top-down generative path.

Groups of latents z = (z_1, ..., z_L) are ordered **top-down**: group 0 is the top z_L,
drawn first. The generative model is

    p(z) = p(z_L) Π_{l<L} p(z_l | z_{>l}),    p(z_L) = N(0, I),
    p(z_l | z_{>l}) = N(μ_l(s_l), σ_l(s_l)²),   s_l a deterministic top-down state,
    p(x | z) = Bernoulli(logits(z_L, ..., z_1)),

and the posterior follows the same top-down order, conditioned on bottom-up features h_l
of x (the NVAE / very-deep-VAE pattern; Vahdat & Kautz 2020, Child 2021):

    q(z_l | x, z_{>l}) = N(μ_l + Δμ_l(s_l, h_l),  σ_l · Δσ_l(s_l, h_l)),

a *residual* parameterisation relative to the prior (Δμ = 0, Δσ = 1 reproduces it).

The decoder reads every group (skip connections from all latents to the output, as in
the ladder VAE and BIVA) rather than the top-down state alone. On the book's 16×16
digits that choice, with default rather than zero initialisation of the heads, was worth
about 1.5 nats of test NLL: the state-only decoder with zero-initialised heads (q = p at
the start) settled on codes of about 5 nats against the plain VAE's 10.

The model shares the single-layer VAE's interface: codes are flat vectors z of shape
(..., z_dim) with z_dim = Σ group sizes (:meth:`HierarchicalVAE.split` gives the
groups), ``decode(z)`` is p(x | z), ``log_joint(z, x)`` is Σ_l ln p(z_l | z_{>l}) + ln
p(x | z) (what HMC targets), and ``encode(x)`` returns a :class:`HierarchicalPosterior`
that samples, scores and lists its per-group Gaussians. ``kl_groups(q, z)`` gives each
group's KL along a sampled path: the objectives read per-group KL from it without
recomputation.
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

from companion import rng
from companion.data import check_images
from companion.models.conv import ConvDecoder, ConvEncoder, check_architecture

__all__ = ["HVAEConfig", "HierarchicalVAE", "HierarchicalPosterior"]

_MIN_STD = 1e-4
_SOFTPLUS_ONE = 0.5413248546129181  # softplus⁻¹(1): a zero residual leaves σ unchanged


@dataclass(frozen=True)
class HVAEConfig:
    """Architecture of :class:`HierarchicalVAE`.

    Attributes:
        image_size: side of the square single-channel input, in pixels.
        z_dims: size of each latent group, top first (group 0 is z_L).
        channels: stride-2 convolutions of the bottom-up trunk
            (the decoder mirrors them).
        width: width of the deterministic bottom-up features and top-down state.
    """

    image_size: int = 16
    z_dims: tuple[int, ...] = (8, 16)
    channels: tuple[int, ...] = (32, 64)
    width: int = 128

    def __post_init__(self) -> None:
        if not self.z_dims or min(self.z_dims) < 1 or self.width < 1:
            raise ValueError(
                f"invalid HVAEConfig {self}: need at least one group, sizes >= 1, "
                "width >= 1"
            )
        check_architecture(image_size=self.image_size, channels=self.channels)


def _mlp(d_in: int, d_out: int, width: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, width), nn.SiLU(), nn.Linear(width, d_out))


def _gaussian(mean: torch.Tensor, std: torch.Tensor) -> Independent:
    # no argument validation: a sampler far out in the tails may produce non-finite
    # parameters, and must get a non-finite density to reject rather than an exception
    return Independent(Normal(mean, std, validate_args=False), 1, validate_args=False)


class HierarchicalVAE(nn.Module):
    """Hierarchical VAE with L = len(z_dims) groups; see the module docstring."""

    def __init__(self, config: HVAEConfig) -> None:
        super().__init__()
        self.config = config
        width, sizes = config.width, config.z_dims
        self.trunk = ConvEncoder(image_size=config.image_size, channels=config.channels)
        self.trunk_head = nn.Sequential(
            nn.Linear(self.trunk.out_features, width), nn.SiLU()
        )
        # bottom-up residual blocks: block i makes the features of group L-1-i
        # (bottom first)
        self.bottom_up = nn.ModuleList(_mlp(width, width, width) for _ in sizes)
        self.state0 = nn.Parameter(torch.zeros(width))
        # prior heads for groups 1..L-1 (group 0, the top, has the fixed N(0, I) prior)
        self.prior_heads = nn.ModuleList(nn.Linear(width, 2 * d) for d in sizes[1:])
        self.posterior_heads = nn.ModuleList(
            _mlp(2 * width, 2 * d, width) for d in sizes
        )
        # the state carries each group's information to the groups below it
        self.state_updates = nn.ModuleList(_mlp(d, width, width) for d in sizes[:-1])
        self.decoder = ConvDecoder(
            image_size=config.image_size,
            channels=config.channels,
            in_features=sum(sizes),
        )

    # --- shapes -----------------------------------------------------------------------

    @property
    def z_dims(self) -> tuple[int, ...]:
        return self.config.z_dims

    @property
    def z_dim(self) -> int:
        return sum(self.config.z_dims)

    @property
    def n_groups(self) -> int:
        return len(self.config.z_dims)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (1, self.config.image_size, self.config.image_size)

    def split(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Flat codes (..., z_dim) -> the groups [(..., d_0), ..., (..., d_{L-1})],
        top first."""
        if z.shape[-1] != self.z_dim:
            raise ValueError(
                f"codes must have {self.z_dim} entries in their last axis, got "
                f"{tuple(z.shape)}"
            )
        return list(z.split(self.config.z_dims, dim=-1))

    # --- the two passes ---------------------------------------------------------------

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Bottom-up features of images x (B, 1, H, W): one (B, width) tensor per group,
        top first."""
        check_images(x, shape=self.image_shape)
        h = self.trunk_head(self.trunk(x))
        feats = []
        for block in self.bottom_up:
            h = h + block(h)
            feats.append(h)
        return feats[::-1]

    def _prior_group(self, i: int, state: torch.Tensor) -> Independent:
        if i == 0:
            zeros = state.new_zeros(*state.shape[:-1], self.z_dims[0])
            return _gaussian(zeros, torch.ones_like(zeros))
        mean, raw = self.prior_heads[i - 1](state).chunk(2, dim=-1)
        return _gaussian(mean, F.softplus(raw + _SOFTPLUS_ONE) + _MIN_STD)

    def _posterior_group(
        self, i: int, prior: Independent, state: torch.Tensor, feat: torch.Tensor
    ) -> Independent:
        feat = feat.expand(*state.shape[:-1], feat.shape[-1])
        d_mean, d_raw = self.posterior_heads[i](torch.cat([state, feat], dim=-1)).chunk(
            2, dim=-1
        )
        return _gaussian(
            prior.mean + d_mean,
            prior.stddev * F.softplus(d_raw + _SOFTPLUS_ONE) + _MIN_STD,
        )

    def top_down(
        self,
        *,
        batch_shape: tuple[int, ...],
        feats: list[torch.Tensor] | None = None,
        z: torch.Tensor | None = None,
        mode: str = "given",
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        noise: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, list[Independent], list[Independent]]:
        """Run the top-down path once.

        Args:
            batch_shape: leading shape of the codes, e.g. (S, B).
            feats: bottom-up features (per group, (B, width)); ``None`` for the prior.
            z: flat codes ``(*batch_shape, z_dim)`` to follow (``mode="given"``).
            mode: ``given`` (follow ``z``), ``rsample`` (draw each group from q, or from
                the prior when ``feats`` is None, with reparameterisation), or ``mean``
                (take each group's mean: the deterministic encoding).
            temperature: multiplies the prior's standard deviations when sampling it.
            generator: torch generator of the noise in ``rsample`` mode
                (default: global).
            noise: the standard normal draws of ``rsample`` mode, one
                ``(*batch_shape, d_l)`` tensor per group, top first (default: drawn
                here, group by group).

        Returns:
            (z ``(*batch_shape, z_dim)``, priors, posteriors) with one distribution per
            group (posteriors empty when ``feats`` is None).
        """
        groups: list[torch.Tensor] = []
        if mode == "given":
            if z is None:
                raise ValueError("mode='given' follows the codes z: pass z")
            groups = self.split(z)
        state = self.state0.expand(*batch_shape, self.config.width)
        zs, priors, posteriors = [], [], []
        for i in range(self.n_groups):
            prior = self._prior_group(i, state)
            priors.append(prior)
            source = prior
            if feats is not None:
                source = self._posterior_group(i, prior, state, feats[i])
                posteriors.append(source)
            if mode == "given":
                z_i = groups[i]
            elif mode == "mean":
                z_i = source.mean
            elif mode == "rsample":
                base = source.base_dist
                scale = base.scale * (temperature if feats is None else 1.0)
                eps = (
                    rng.randn(
                        base.loc.shape,
                        generator=generator,
                        dtype=base.loc.dtype,
                        device=base.loc.device,
                    )
                    if noise is None
                    else noise[i]
                )
                z_i = base.loc + scale * eps
            else:
                raise ValueError(
                    f"mode must be 'given', 'rsample' or 'mean', got {mode!r}"
                )
            zs.append(z_i)
            if i < self.n_groups - 1:
                state = state + self.state_updates[i](z_i)
        return torch.cat(zs, dim=-1), priors, posteriors

    # --- the shared interface ---------------------------------------------------------

    def encode(self, x: torch.Tensor) -> HierarchicalPosterior:
        """q(z | x) for images x (B, 1, H, W) in [0, 1];
        see :class:`HierarchicalPosterior`."""
        return HierarchicalPosterior(self, self.features(x))

    def decode(self, z: torch.Tensor) -> Distribution:
        """p(x | z) for flat codes z (..., z_dim):
        batch shape (...), event (1, H, W)."""
        self.split(z)  # checks the code size
        return Independent(Bernoulli(logits=self.decoder(z), validate_args=False), 3)

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """ln p(z) = Σ_l ln p(z_l | z_{>l}) for flat codes (..., z_dim) -> (...,)."""
        _, priors, _ = self.top_down(batch_shape=z.shape[:-1], z=z)
        return sum(p.log_prob(g) for p, g in zip(priors, self.split(z), strict=True))

    def log_joint(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """ln p(z) + ln p(x | z): z (..., z_dim), x (..., 1, H, W) -> (...,)."""
        return self.log_prior(z) + self.decode(z).log_prob(x)

    def kl_groups(
        self, q: HierarchicalPosterior, z: torch.Tensor
    ) -> list[torch.Tensor]:
        """KL[q(z_l | x, z_{>l}) ‖ p(z_l | z_{>l})] of every group along the path z.

        Args:
            q: the posterior from :meth:`encode`.
            z: flat codes ``(*S, B, z_dim)``, usually ``q.rsample((S,))``.

        Returns:
            One ``(*S, B)`` tensor per group, top first, in nats; their sum over groups
            is the ELBO's KL term (one-sample estimate over the upper groups,
            analytic per group).
        """
        _, priors, posteriors = self.top_down(
            batch_shape=z.shape[:-1], feats=q.feats, z=z
        )
        return [
            kl_divergence(qi, pi) for qi, pi in zip(posteriors, priors, strict=True)
        ]

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of p(x | z) at the posterior's mean path: (B, 1, H, W) in [0, 1]."""
        return self.decode(self.encode(x).mean).mean  # sigmoid of the logits

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Mean images of p(x | z) for n codes drawn top-down from the prior with its
        standard deviations scaled by ``temperature``: (n, 1, H, W)."""
        z, _, _ = self.top_down(
            batch_shape=(n,),
            mode="rsample",
            temperature=temperature,
            generator=generator,
        )
        return torch.sigmoid(self.decoder(z))


class HierarchicalPosterior:
    """q(z | x) = q(z_L | x) Π_l q(z_l | x, z_{>l}) of a :class:`HierarchicalVAE`.

    Behaves like a torch distribution over flat codes (batch shape (B,), event (z_dim,))
    for what the objectives and samplers need: ``sample``, ``rsample``, ``log_prob`` and
    ``mean`` (the deterministic top-down path of group means). ``groups`` lists the
    per-group Gaussians along that mean path, which is what attacks compare.
    """

    def __init__(self, model: HierarchicalVAE, feats: list[torch.Tensor]) -> None:
        self.model = model
        self.feats = feats
        self.batch_shape = feats[0].shape[:-1]
        self.event_shape = torch.Size([model.z_dim])
        self._mean_path: tuple[torch.Tensor, list[Independent]] | None = None

    def _path(self) -> tuple[torch.Tensor, list[Independent]]:
        if self._mean_path is None:
            z, _, posteriors = self.model.top_down(
                batch_shape=self.batch_shape, feats=self.feats, mode="mean"
            )
            self._mean_path = (z, posteriors)
        return self._mean_path

    @property
    def mean(self) -> torch.Tensor:
        """The codes of the mean path, (B, z_dim), each group's posterior mean
        given the means above."""
        return self._path()[0]

    @property
    def groups(self) -> list[Independent]:
        """q(z_l | x, z_{>l} = mean path) for every group, top first;
        batch (B,), event (d_l,)."""
        return self._path()[1]

    def rsample(
        self,
        sample_shape: torch.Size | tuple[int, ...] = (),
        *,
        generator: torch.Generator | None = None,
        noise: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Reparameterised codes ``(*sample_shape, B, z_dim)``, drawn group by group
        top-down (with ``generator``'s noise when given,
        else the global generator's; or from ``noise``, one standard normal
        ``(*sample_shape, B, d_l)`` tensor per group, top first)."""
        z, _, _ = self.model.top_down(
            batch_shape=(*sample_shape, *self.batch_shape),
            feats=self.feats,
            mode="rsample",
            generator=generator,
            noise=noise,
        )
        return z

    def sample(
        self,
        sample_shape: torch.Size | tuple[int, ...] = (),
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape, generator=generator)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """ln q(z | x) for flat codes (..., B, z_dim) -> (..., B)."""
        _, _, posteriors = self.model.top_down(
            batch_shape=z.shape[:-1], feats=self.feats, z=z
        )
        return sum(
            q.log_prob(g) for q, g in zip(posteriors, self.model.split(z), strict=True)
        )
