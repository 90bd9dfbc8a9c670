"""Out-of-distribution detection with a VAE:
scores from the encoder and from HMC chains.

A generative model offers likelihood-like scores for free, and Nalisnick et al. (2019)
showed they can rank some out-of-distribution data *above* the training data. Here we
compare, on in- and out-of-distribution images:

* encoder scores: the ELBO and the IWAE bound with k samples
  (:mod:`companion.objectives`);
* HMC scores: chains started at z⁰ ~ q(z | x) run T transitions on ln p(x, z) (the
  defence of :mod:`companion.defence`); the log joint at z^(T), how far the chain moved
  from its start, and how much less plausible the encoder finds the end than the start,
  ln q(z⁰ | x) − ln q(z^(T) | x). An encoder that never saw such inputs should be more
  wrong about them, so the chain should move further.

Every score is an *outlier* score (higher: more out-of-distribution), so that one
AUROC convention serves all: :func:`auroc` is the probability that a random OOD image
scores above a random in-distribution one (0.5: chance; below 0.5: the score ranks OOD
data as *more* typical).

The OOD sets are simple transformations of the digits themselves (:func:`invert`,
:func:`rotate`); any images in [0, 1] of the model's shape can be scored instead.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torchmetrics.functional.classification import binary_auroc

from companion.data import check_images
from companion.defence import refine_posterior
from companion.objectives import elbo, iwae_bound

__all__ = ["invert", "rotate", "OODScores", "ood_scores", "auroc"]


def invert(images: torch.Tensor) -> torch.Tensor:
    """Pixel-inverted images 1 − x: same strokes, white background.
    (N, C, H, W) in [0, 1]."""
    check_images(images)
    return 1.0 - images


def rotate(images: torch.Tensor, *, quarter_turns: int = 1) -> torch.Tensor:
    """Images rotated by 90° × ``quarter_turns`` (counter-clockwise): (N, C, H, W),
    square."""
    check_images(images)
    if images.dim() != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(
            f"rotate needs square (N, C, H, W) images, got shape {tuple(images.shape)}"
        )
    if quarter_turns % 4 == 0:
        raise ValueError(
            f"quarter_turns={quarter_turns} leaves the images unchanged; use 1, 2 or 3"
        )
    return torch.rot90(images, k=quarter_turns, dims=(-2, -1)).contiguous()


class OODScores(NamedTuple):
    """Outlier scores per image, all (N,), higher = more out-of-distribution.

    Attributes:
        neg_elbo: −ELBO (nats), from ``elbo_samples`` reparameterised samples.
        neg_iwae: −IWAE bound with k samples (nats).
        neg_log_joint: −ln p(x, z^(T)) at the end of the HMC chain (nats).
        chain_distance: ‖z^(T) − z⁰‖₂, how far the chain moved from the encoder's
            sample.
        encoder_surprise: ln q(z⁰ | x) − ln q(z^(T) | x) (nats): how much less plausible
            the encoder finds the chain's end than its start.
    """

    neg_elbo: torch.Tensor
    neg_iwae: torch.Tensor
    neg_log_joint: torch.Tensor
    chain_distance: torch.Tensor
    encoder_surprise: torch.Tensor


def ood_scores(
    model,
    images: torch.Tensor,
    *,
    k: int,
    hmc_steps: int,
    num_leapfrog: int = 10,
    num_warmup: int = 0,
    step_size: float = 0.05,
    elbo_samples: int = 10,
    generator: torch.Generator | None = None,
) -> OODScores:
    """Every score of :class:`OODScores` for ``images`` (N, C, H, W) in [0, 1].

    The pixels are scored as they are (grey levels under the Bernoulli likelihood, as
    the attacks of chapter 4 are); give in- and out-of-distribution images the same
    treatment.

    Args:
        model: a VAE with ``encode``, ``decode`` and ``log_joint`` (single-layer or
            hierarchical).
        k: importance samples of the IWAE score (>= 1).
        hmc_steps: T, transitions of the chains (>= 1).
        num_leapfrog, num_warmup, step_size, generator: as for
            :func:`companion.defence.refine_posterior`.
        elbo_samples: Monte Carlo samples of the ELBO's reconstruction term.

    Raises:
        ValueError: bad images, k, T or ``elbo_samples`` < 1.
    """
    check_images(images, shape=tuple(model.image_shape))
    if k < 1 or hmc_steps < 1 or elbo_samples < 1:
        raise ValueError(
            f"k, hmc_steps and elbo_samples must be >= 1, got {k}, {hmc_steps}, "
            f"{elbo_samples}"
        )
    with torch.no_grad():
        neg_elbo = -elbo(model=model, x=images, n_samples=elbo_samples).elbo
        neg_iwae = -iwae_bound(model=model, x=images, k=k)
    chains = refine_posterior(
        model,
        images,
        steps=hmc_steps,
        num_leapfrog=num_leapfrog,
        num_warmup=num_warmup,
        step_size=step_size,
        generator=generator,
    )
    with torch.no_grad():
        q = model.encode(images)
        return OODScores(
            neg_elbo=neg_elbo,
            neg_iwae=neg_iwae,
            neg_log_joint=-model.log_joint(chains.z, images),
            chain_distance=(chains.z - chains.z_start).norm(dim=-1),
            encoder_surprise=q.log_prob(chains.z_start) - q.log_prob(chains.z),
        )


def auroc(inlier: torch.Tensor, outlier: torch.Tensor) -> torch.Tensor:
    """P(score of a random outlier > score of a random inlier), ties counting half:
    a scalar.

    Args:
        inlier: (N,) outlier scores of in-distribution data; outlier: (M,) of OOD data.

    Raises:
        ValueError: empty or non-finite scores, or not 1-D.
    """
    for name, s in (("inlier", inlier), ("outlier", outlier)):
        if s.dim() != 1 or s.numel() == 0 or not torch.isfinite(s).all():
            raise ValueError(
                f"{name} scores must be a non-empty finite 1-D tensor, got shape "
                f"{tuple(s.shape)}"
            )
    scores = torch.cat([inlier, outlier]).double().cpu()
    # binary_auroc squashes scores outside [0, 1] with a sigmoid, which would tie large
    # scores; dense ranks scaled into [0, 1] keep the order and the ties exactly.
    _, ranks = torch.unique(scores, return_inverse=True)
    labels = torch.cat([torch.zeros(len(inlier)), torch.ones(len(outlier))]).long()
    return binary_auroc(ranks.double() / max(int(ranks.max()), 1), labels)
