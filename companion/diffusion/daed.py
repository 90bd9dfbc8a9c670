"""DAED: a diffusion model whose first steps are one denoising autoencoder
(Deja et al., 2022).

Deja et al. observe that the first steps of the backward process act as a denoiser
rather than as a generator, and split the model at the step k where the cumulative noise
variance 1 − ᾱ_k first reaches β_1 (:func:`~companion.diffusion.schedules.split_step`):
the *generator* is a diffusion over steps k+1..T, which turns N(0, I) into z_k, and the
*denoiser* is one autoencoder D(z_k) ≈ x trained on z_k ~ q(z_k | x) with a squared
error. Sampling runs the diffusion from T down to k, then applies D once.
"""

from __future__ import annotations

import torch
from torch import nn

from companion import rng
from companion.data import check_images
from companion.diffusion.ddpm import (
    DDPM,
    DiffusionHistory,
    DiffusionTrainConfig,
    _image_shape,
    fit,
    to_model_space,
    to_pixels,
)
from companion.diffusion.schedules import Schedule, q_sample, split_step
from companion.training_run import TrainingRun
from companion.training_state import Checkpointing

__all__ = ["DenoisingAutoencoder", "train_dae", "daed_samples", "daed_sample"]


class DenoisingAutoencoder(nn.Module):
    """D(z_k) ≈ x: a network that maps states at the fixed step k to clean data in one
    pass.

    The network's output is read as the noise in z_k, and
    D(z_k) = (z_k − √(1 − ᾱ_k) · net(z_k)) / √ᾱ_k. This is still one pass from z_k to x,
    trained on the squared error in x, but the skip connection means an autoencoder for
    little noise (β_1 = 0.001) starts near the identity instead of having to learn it:
    with the output read as x directly, short training left such autoencoders blurring
    images they should barely touch.

    Args:
        net: an image-to-image network called as ``net(z, t)`` (the book uses the DDPM's
            UNet architecture, its time input held at k) exposing ``image_shape``.
        schedule: the forward process.
        beta_1: the cumulative noise level the autoencoder removes;
            k = split_step(schedule, β_1).
    """

    def __init__(self, net: nn.Module, schedule: Schedule, *, beta_1: float) -> None:
        super().__init__()
        self.net = net
        self.schedule = schedule
        self.beta_1 = beta_1
        self.k = split_step(schedule, beta_1)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return _image_shape(self.net)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z_k (B, C, H, W) in data space → x̂ (B, C, H, W) in data space."""
        if z.dim() != 4 or tuple(z.shape[1:]) != self.image_shape:
            raise ValueError(
                "expected states of shape (B, "
                f"{', '.join(map(str, self.image_shape))}), got {tuple(z.shape)}"
            )
        a = self.schedule.alpha_bars[self.k - 1].item()
        eps = self.net(z, torch.full((z.shape[0],), self.k, device=z.device))
        return (z - (1 - a) ** 0.5 * eps) / a**0.5

    def loss(
        self,
        x: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """E ‖x − D(z_k)‖² with z_k ~ q(z_k | x),
        per pixel; x (B, C, H, W) in [−1, 1]; ``noise`` (shape of x): the standard
        normal draw that makes z_k (drawn from ``generator`` when None)."""
        z = q_sample(self.schedule, x, self.k, noise=noise, generator=generator)
        return (self(z) - x).pow(2).mean()

    @torch.no_grad()
    def denoise(
        self, images: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Noise pixel images to step k, then denoise them in one pass.

        Returns:
            z_k (data space) and the denoised images (pixels in [0, 1]).
        """
        check_images(images, shape=self.image_shape)
        device = next(self.parameters()).device
        z = q_sample(
            self.schedule,
            to_model_space(images.to(device)),
            self.k,
            generator=generator,
        )
        return z, to_pixels(self(z))


def train_dae(
    dae: DenoisingAutoencoder,
    *,
    images: torch.Tensor,
    config: DiffusionTrainConfig,
    run: TrainingRun | None = None,
    checkpoint: Checkpointing | None = None,
) -> DiffusionHistory:
    """Train the denoising autoencoder on ``images`` (pixels in [0, 1]); it ends with
    EMA weights (``run``, ``checkpoint``: :func:`companion.diffusion.ddpm.fit`)."""
    check_images(images, shape=dae.image_shape)
    return fit(
        dae,
        # the draw of q_sample(schedule, x, k, generator=g) inside DAE.loss
        draw=lambda x, g: (
            rng.randn(x.shape, generator=g, device=x.device, dtype=x.dtype),
        ),
        loss=lambda m, x, noise: m.loss(x, noise=noise),
        images=images,
        config=config,
        desc=f"training DAE (β₁ = {dae.beta_1})",
        run=run,
        checkpoint=checkpoint,
    )


@torch.no_grad()
def daed_samples(
    ddpm: DDPM,
    daes: dict[float, DenoisingAutoencoder],
    n: int,
    *,
    generator: torch.Generator | None = None,
    batch_size: int = 1_000,
    progress: bool | None = None,
) -> dict[float | None, torch.Tensor]:
    """Samples of the DDPM and of DAED at every β_1,
    all from the same reverse trajectories.

    The generator part of DAED at β_1 is ``ddpm`` run from T down to k (the book's DDPM
    is trained on all steps, so stopped at k it is a diffusion over steps k+1..T);
    recording z_k for every k on one trajectory lets the DDPM and each DAED share their
    noise, which makes their FID difference far less noisy than independent sample sets
    would.

    Returns:
        {None: DDPM samples, β_1: DAED samples}, each
        (n, C, H, W) pixels in [0, 1] on the CPU.
    """
    for dae in daes.values():
        _check_same_process(ddpm, dae)
    ks = tuple(sorted({dae.k for dae in daes.values()}))
    x, recorded = ddpm.sample(
        n, generator=generator, record_at=ks, batch_size=batch_size, progress=progress
    )
    out: dict[float | None, torch.Tensor] = {None: x}
    for beta_1, dae in daes.items():
        device = next(dae.parameters()).device
        z = recorded[dae.k]
        out[beta_1] = torch.cat(
            [
                to_pixels(dae(z[i : i + batch_size].to(device))).cpu()
                for i in range(0, n, batch_size)
            ]
        )
    return out


@torch.no_grad()
def daed_sample(
    diffusion: DDPM,
    dae: DenoisingAutoencoder,
    n: int,
    *,
    generator: torch.Generator | None = None,
    batch_size: int = 1_000,
    progress: bool | None = None,
) -> torch.Tensor:
    """Samples of DAED with its own generator: ``diffusion`` from T down to k,
    then ``dae``.

    ``diffusion`` is meant to be a DAED generator (a DDPM trained only on the steps
    after k, :func:`~companion.diffusion.ddpm.train_ddpm` with ``t_min = k + 1``); steps
    1..k of it are never run. The draws follow :meth:`DDPM.sample`: with the same seed
    and n ≤ ``batch_size``, z_T and the noise of every step down to k are those of a
    DDPM sample, so the two sets differ only by the networks (common random numbers, as
    in :func:`daed_samples`).

    Returns:
        (n, C, H, W) pixels in [0, 1] on the CPU.

    Raises:
        ValueError: n < 1, or the two models built for different forward processes.
    """
    _check_same_process(diffusion, dae)
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    device = diffusion.betas.device
    outs = []
    for start in range(0, n, batch_size):
        m = min(batch_size, n - start)
        z = rng.randn((m, *diffusion.image_shape), device=device, generator=generator)
        z_k, _ = diffusion.reverse(
            z, t_start=diffusion.T, t_stop=dae.k, generator=generator, progress=progress
        )
        outs.append(to_pixels(dae(z_k.to(next(dae.parameters()).device))).cpu())
    return torch.cat(outs)


def _check_same_process(ddpm: DDPM, dae: DenoisingAutoencoder) -> None:
    if dae.schedule.T != ddpm.T or not torch.equal(
        dae.schedule.alpha_bars, ddpm.schedule.alpha_bars
    ):
        raise ValueError(
            f"the DAE for β₁ = {dae.beta_1} was built for another forward process "
            "than the DDPM"
        )
