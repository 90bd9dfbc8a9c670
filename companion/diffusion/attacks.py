"""Attacking denoisers: DAED's autoencoder and the diffusion backward process
(chapter 9, §5).

Both denoisers of chapter 8 take an image x, noise it to step k with the forward
process, z_k = √ᾱ_k x + √(1 − ᾱ_k) ε, and bring z_k back to an image: the denoising
autoencoder in one pass, D(z_k), the diffusion by k ancestral steps of
p_θ(z_{t−1} | z_t). An attacker who perturbs x within an L∞ ball of radius δ wants the
*output* to move.

The attack is white-box and knows the randomness is there. Every noise draw the denoiser
makes (ε, and the k − 1 noises of the backward steps) is drawn ``eot_samples`` times
before the attack starts and held fixed while projected gradient ascent
(:func:`companion.attacks.pgd`) maximises the mean squared pixel distance between the
outputs for x^a and for x^r *under the same draw*, averaged over the draws: expectation
over transformation (Athalye, Carlini & Wagner, 2018). Gradients run through every
backward step. With one draw the attacker tunes x^a to a single realisation of the
noise; scoring that x^a with fresh noise (:func:`output_shift`) measures how much of the
attack the denoiser's randomness washes out,
the role HMC's randomness plays in chapter 6.

Outputs are compared with the *same* fresh noise for x^a and x^r, so the distance counts
what the perturbation did, not the spread the noise alone gives (:func:`noise_spread`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

import torch

from companion import rng
from companion.attacks import AttackConfig, AttackResult, pgd
from companion.data import check_images
from companion.diffusion.daed import DenoisingAutoencoder
from companion.diffusion.ddpm import DDPM, to_model_space, to_pixels
from companion.diffusion.schedules import q_sample
from companion.frozen import frozen

__all__ = [
    "Denoiser",
    "DenoiserNoise",
    "draw_noise",
    "denoise",
    "denoiser_attack",
    "output_shift",
    "noise_spread",
]


class DenoiserNoise(NamedTuple):
    """Every random draw of one pass of a denoiser over a batch.

    Attributes:
        start: (..., B, C, H, W) the ε of z_k = √ᾱ_k x + √(1 − ᾱ_k) ε.
        steps: (..., k − 1, B, C, H, W) the noises of the backward steps k, …, 2 (step 1
            adds none); zero-length for the autoencoder.
    """

    start: torch.Tensor
    steps: torch.Tensor


@dataclass(frozen=True)
class Denoiser:
    """A noise-then-denoise map of images: DAED's autoencoder or the diffusion run back
    from k.

    Build it with :meth:`autoencoder` or :meth:`backward`; call it as ``denoiser(images,
    noise=...)`` to get pixels, differentiably in the images.

    Attributes:
        model: the :class:`DenoisingAutoencoder` or the :class:`DDPM`.
        k: the step images are noised to.
    """

    model: DenoisingAutoencoder | DDPM
    k: int

    @classmethod
    def autoencoder(cls, dae: DenoisingAutoencoder) -> Denoiser:
        """x ↦ D(z_k), z_k ~ q(z_k | x), at the autoencoder's own split step k."""
        return cls(model=dae, k=dae.k)

    @classmethod
    def backward(cls, ddpm: DDPM, *, k: int) -> Denoiser:
        """x ↦ the backward process run from z_k ~ q(z_k | x) down to z_0.

        Raises:
            ValueError: k outside 1..T.
        """
        if not 1 <= k <= ddpm.T:
            raise ValueError(f"k must lie in 1..T = {ddpm.T}, got {k}")
        return cls(model=ddpm, k=k)

    @property
    def name(self) -> str:
        return (
            "autoencoder"
            if isinstance(self.model, DenoisingAutoencoder)
            else "backward diffusion"
        )

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.model.image_shape)

    @property
    def reverse_steps(self) -> int:
        """The number of noise draws in the backward steps (k − 1 for the
        diffusion, none for the autoencoder)."""
        return 0 if isinstance(self.model, DenoisingAutoencoder) else self.k - 1

    def __call__(self, images: torch.Tensor, *, noise: DenoiserNoise) -> torch.Tensor:
        """Denoise pixel images (B, C, H, W) in [0, 1] with the given draws; pixels
        (B, C, H, W)."""
        z = q_sample(
            self.model.schedule, to_model_space(images), self.k, noise=noise.start
        )
        if isinstance(self.model, DenoisingAutoencoder):
            return to_pixels(self.model(z))
        for i, t in enumerate(range(self.k, 0, -1)):
            z = self.model.reverse_step(z, t=t, noise=noise.steps[i] if t > 1 else None)
        return to_pixels(z)


def draw_noise(
    denoiser: Denoiser,
    *,
    batch: int,
    draws: tuple[int, ...] = (),
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> DenoiserNoise:
    """Standard normal draws for ``batch`` images, with leading shape ``draws``
    (e.g. (E,))."""
    shape = (batch, *denoiser.image_shape)
    return DenoiserNoise(
        start=rng.randn((*draws, *shape), generator=generator, device=device),
        steps=rng.randn(
            (*draws, denoiser.reverse_steps, *shape), generator=generator, device=device
        ),
    )


@contextmanager
def _evaluating(denoiser: Denoiser) -> Iterator[None]:
    """Frozen weights and eval mode (no dropout) for the duration;
    the training flag is restored."""
    was_training = denoiser.model.training
    denoiser.model.eval()
    try:
        with frozen(denoiser.model):
            yield
    finally:
        denoiser.model.train(was_training)


def _select(noise: DenoiserNoise, e: int) -> DenoiserNoise:
    return DenoiserNoise(start=noise.start[e], steps=noise.steps[e])


def _batched(noise: DenoiserNoise, *, restarts: int = 1) -> DenoiserNoise:
    """Draws with leading shape (E,) for B images → the draws of one batch of
    E·restarts·B images (draw-major; within a draw restart-major, as :func:`pgd` stacks
    its restarts), so that all draws run through the denoiser in one pass."""
    start = noise.start.repeat(1, restarts, 1, 1, 1)  # (E, R·B, C, H, W)
    steps = noise.steps.repeat(1, 1, restarts, 1, 1, 1)  # (E, k − 1, R·B, C, H, W)
    return DenoiserNoise(
        start=start.flatten(0, 1), steps=steps.transpose(0, 1).flatten(1, 2)
    )


def denoise(
    denoiser: Denoiser, images: torch.Tensor, *, noise: DenoiserNoise
) -> torch.Tensor:
    """The denoiser's outputs for the same images under each of several draws, in one
    batch, weights frozen and in eval mode.

    Args:
        images: (B, C, H, W) pixels in [0, 1].
        noise: draws with leading shape (E,) (:func:`draw_noise` with ``draws=(E,)``).

    Returns:
        (E, B, C, H, W) pixels, differentiable in ``images``.
    """
    check_images(images, shape=denoiser.image_shape)
    e = noise.start.shape[0]
    with _evaluating(denoiser):
        out = denoiser(images.repeat(e, 1, 1, 1), noise=_batched(noise))
    return out.view(e, *images.shape)


def denoiser_attack(
    denoiser: Denoiser,
    x_ref: torch.Tensor,
    *,
    config: AttackConfig,
    eot_samples: int = 1,
    generator: torch.Generator | None = None,
) -> tuple[AttackResult, DenoiserNoise]:
    """Perturb images to move a denoiser's output, through all its steps,
    noise held fixed.

    Args:
        denoiser: what to attack (:class:`Denoiser`).
        x_ref: (B, C, H, W) references, pixels in [0, 1].
        config: the projected-gradient settings (radius δ in pixels, norm, steps,
            restarts).
        eot_samples: noise draws averaged in the objective (>= 1).
        generator: seeds the draws and the attack's random starts
            (on the images' device).

    Returns:
        The :class:`~companion.attacks.AttackResult` (its ``objective``: the mean over
        the draws of the squared pixel distance between the outputs, per image) and the
        draws the attack was tuned to, with leading shape (eot_samples,).

    Raises:
        ValueError: images of the wrong shape or outside [0, 1], or ``eot_samples`` < 1.
    """
    check_images(x_ref, shape=denoiser.image_shape)
    if eot_samples < 1:
        raise ValueError(f"eot_samples must be >= 1, got {eot_samples}")
    noise = draw_noise(
        denoiser,
        batch=x_ref.shape[0],
        draws=(eot_samples,),
        generator=generator,
        device=x_ref.device,
    )
    batched = _batched(noise, restarts=config.restarts)
    with _evaluating(denoiser), torch.no_grad():
        target = denoiser(
            x_ref.repeat(eot_samples * config.restarts, 1, 1, 1), noise=batched
        )

    def objective(x: torch.Tensor) -> torch.Tensor:  # (R·B, C, H, W) -> (R·B,)
        moved = denoiser(x.repeat(eot_samples, 1, 1, 1), noise=batched) - target
        return moved.pow(2).flatten(1).sum(1).view(eot_samples, -1).mean(0)

    with _evaluating(denoiser):
        return pgd(objective, x_ref=x_ref, config=config, generator=generator), noise


@torch.no_grad()
def output_shift(
    denoiser: Denoiser,
    *,
    clean: torch.Tensor,
    attacked: torch.Tensor,
    draws: int = 4,
    noise: DenoiserNoise | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """How far attacked images move the denoiser's output:
    RMS pixel difference per image.

    The outputs for x^a and x^r are compared under the *same* noise draws, so the score
    counts what the perturbation did; :func:`noise_spread` gives the scale to read it
    against. Several sets of attacked images (say, two attacks and a random baseline)
    can be scored under one set of draws: the clean outputs are then computed once.

    Args:
        clean: (B, C, H, W) pixels in [0, 1].
        attacked: (B, C, H, W), or (S, B, C, H, W) for S sets of attacked images of the
            same references, pixels in [0, 1].
        draws: fresh noise draws averaged (>= 1), when ``noise`` is not given.
        noise: draws to use instead of fresh ones, with leading shape (E,) (e.g. the
            ones :func:`denoiser_attack` was tuned to).
        generator: seeds the fresh draws.

    Returns:
        (B,), or (S, B) for stacked sets: root mean squared differences over pixels and
        draws (pixels in [0, 1]).
    """
    check_images(clean, shape=denoiser.image_shape)
    stacked = attacked.dim() == clean.dim() + 1
    sets = attacked if stacked else attacked.unsqueeze(0)
    if sets.shape[1:] != clean.shape:
        raise ValueError(
            f"attacked images must have the clean images' shape {tuple(clean.shape)}, "
            f"or a leading set dimension before it; got {tuple(attacked.shape)}"
        )
    check_images(sets.flatten(0, 1), shape=denoiser.image_shape)
    _check_draws(draws)
    b = clean.shape[0]
    paired = (
        noise
        if noise is not None
        else draw_noise(
            denoiser, batch=b, draws=(draws,), generator=generator, device=clean.device
        )
    )
    reference = denoise(denoiser, clean, noise=paired)
    shifts = torch.stack(
        [
            (denoise(denoiser, images, noise=paired) - reference)
            .pow(2)
            .flatten(2)
            .mean((0, 2))
            .sqrt()
            for images in sets
        ]
    )
    return shifts if stacked else shifts[0]


@torch.no_grad()
def noise_spread(
    denoiser: Denoiser,
    images: torch.Tensor,
    *,
    draws: int = 4,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The spread the denoiser's randomness alone gives: RMS pixel difference per image
    between its outputs for the same images under two independent sets of draws.

    Args:
        images: (B, C, H, W) pixels in [0, 1].
        draws: pairs of independent draws averaged (>= 1).
        generator: seeds the draws.

    Returns:
        (B,) root mean squared differences (pixels in [0, 1]).
    """
    check_images(images, shape=denoiser.image_shape)
    _check_draws(draws)
    b = images.shape[0]
    pairs = draw_noise(
        denoiser, batch=b, draws=(2, draws), generator=generator, device=images.device
    )
    spread = denoise(denoiser, images, noise=_select(pairs, 0)) - denoise(
        denoiser, images, noise=_select(pairs, 1)
    )
    return spread.pow(2).flatten(2).mean((0, 2)).sqrt()


def _check_draws(draws: int) -> None:
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
