"""Image metrics for attacks and defences: MS-SSIM for small images, and accuracy.

MS-SSIM (Wang, Simoncelli & Bovik, 2003) compares luminance, contrast and structure at
several scales. The standard setting (an 11×11 Gaussian window with σ = 1.5 over five
scales) needs images larger than 160 pixels a side; pytorch-msssim hard-codes that
limit, so we use torchmetrics' implementation, which takes the number of scales from the
weights, with settings valid for 8×8 to 32×32 images:

* a uniform 3×3 window: the finest structure of a 16×16 digit is one or two pixels wide
  (torchmetrics' Gaussian windows are at least 5 taps at σ = 0.5, too wide for the 4×4
  coarsest scale);
* as many scales as keep the coarsest image at least 4 pixels a side (16×16: 16, 8, 4 →
  3 scales; 28×28: 3; 32×32: 4), weighted by the first of the standard five weights
  (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), renormalised to sum to 1;
* negative contrast terms clipped at 0 (``normalize="relu"``), so that very different
  images score 0 rather than NaN.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

from companion.data import check_images

__all__ = [
    "MSSSIM_WEIGHTS",
    "msssim_scales",
    "ms_ssim",
    "mse",
    "psnr",
    "accuracy",
    "AttackReport",
    "attack_report",
    "CodeReport",
    "code_report",
    "log_posterior_ratio",
]

MSSSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_WINDOW = 3


def msssim_scales(image_size: int) -> int:
    """Scales used for images of this side: the coarsest stays at least 4 pixels
    wide."""
    if image_size < 8:
        raise ValueError(
            f"MS-SSIM needs images of at least 8×8 pixels, got {image_size}"
        )
    return min(len(MSSSIM_WEIGHTS), int(math.log2(image_size / 4)) + 1)


def ms_ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """MS-SSIM between image pairs, per pair.

    Args:
        x, y: (N, C, H, W) in [0, 1], same shape, square images of at least 8×8.

    Returns:
        (N,) similarities in [0, 1]; 1 for identical images.
    """
    check_images(x)
    check_images(y)
    if x.shape != y.shape:
        raise ValueError(
            f"MS-SSIM compares images of the same shape, got {tuple(x.shape)} and "
            f"{tuple(y.shape)}"
        )
    n = msssim_scales(min(x.shape[-2:]))
    weights = torch.tensor(MSSSIM_WEIGHTS[:n])
    betas = tuple((weights / weights.sum()).tolist())
    return multiscale_structural_similarity_index_measure(
        x.float(),
        y.float(),
        gaussian_kernel=False,
        kernel_size=_WINDOW,
        betas=betas,
        data_range=1.0,
        reduction="none",
        normalize="relu",
    )


def mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image pair:
    x, y (N, C, H, W) of the same shape -> (N,)."""
    if x.shape != y.shape:
        raise ValueError(
            f"MSE compares images of the same shape, got {tuple(x.shape)} and "
            f"{tuple(y.shape)}"
        )
    return (x.float() - y.float()).pow(2).flatten(1).mean(1)


def psnr(x: torch.Tensor, y: torch.Tensor, *, eps: float = 1e-10) -> torch.Tensor:
    """Peak signal-to-noise ratio per image pair in dB, for pixels in [0, 1]:
    10 log10(1 / MSE). x, y (N, C, H, W) -> (N,)."""
    return -10 * torch.log10(mse(x, y) + eps)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Fraction of rows whose arg-max equals the label:
    logits (N, K), labels (N,) -> scalar."""
    if logits.shape[0] != labels.shape[0]:
        raise ValueError(f"{logits.shape[0]} predictions for {labels.shape[0]} labels")
    return (logits.argmax(-1) == labels).float().mean()


class AttackReport(NamedTuple):
    """How far an attack moved each example, all of shape (B,).

    Attributes:
        input_ms_ssim: MS-SSIM(x^r, x^a): how visible the perturbation is
            (high: subtle).
        recon_ms_ssim: MS-SSIM between the reconstructions of x^r and x^a: the papers'
            main robustness number (high: robust).
        skl: SKL[q(z | x^a), q(z | x^r)] in nats, summed over latent groups.
        latent_distance: ‖E_q[z | x^a] − E_q[z | x^r]‖₂.
    """

    input_ms_ssim: torch.Tensor
    recon_ms_ssim: torch.Tensor
    skl: torch.Tensor
    latent_distance: torch.Tensor


@torch.no_grad()
def attack_report(model, *, x_ref: torch.Tensor, x_adv: torch.Tensor) -> AttackReport:
    """Measure an attack (or a random perturbation) on an encoder model.

    Args:
        model: a VAE with ``encode`` and ``reconstruct``.
        x_ref, x_adv: (B, C, H, W) references and their perturbed versions, in [0, 1].
    """
    from companion.attacks import symmetric_kl

    q_ref, q_adv = model.encode(x_ref), model.encode(x_adv)
    return AttackReport(
        input_ms_ssim=ms_ssim(x_ref, x_adv),
        recon_ms_ssim=ms_ssim(
            model.reconstruct(x_ref).clamp(0, 1), model.reconstruct(x_adv).clamp(0, 1)
        ),
        skl=symmetric_kl(q_adv, q_ref),
        latent_distance=(q_adv.mean - q_ref.mean).norm(dim=-1),
    )


class CodeReport(NamedTuple):
    """What codes z for attacked (or clean) inputs give downstream, all of shape (B,).

    Attributes:
        recon_ms_ssim: MS-SSIM between the mean image of p(x | z) and the reconstruction
            of the clean reference (high: the code still describes the reference).
        correct: whether the latent classifier names the reference's label from z.
    """

    recon_ms_ssim: torch.Tensor
    correct: torch.Tensor


@torch.no_grad()
def code_report(
    model, classifier, *, z: torch.Tensor, x_ref: torch.Tensor, y_ref: torch.Tensor
) -> CodeReport:
    """Decode and classify codes z (B, z_dim) that stand for the references x_ref
    (B, C, H, W).

    This is how the defence is scored: z may be the encoder's code for an attacked input
    or the code after T HMC transitions; the yardsticks are the clean reconstruction and
    label.
    """
    if len(z) != len(x_ref) or len(z) != len(y_ref):
        raise ValueError(
            f"{len(z)} codes for {len(x_ref)} references and {len(y_ref)} labels"
        )
    decoded = model.decode(z).mean.clamp(0, 1)
    return CodeReport(
        recon_ms_ssim=ms_ssim(decoded, model.reconstruct(x_ref).clamp(0, 1)),
        correct=classifier(z).argmax(-1) == y_ref,
    )


@torch.no_grad()
def log_posterior_ratio(
    model, *, z1: torch.Tensor, z2: torch.Tensor, x: torch.Tensor
) -> torch.Tensor:
    """ln PR(z1, z2) = ln p(z1 | x) − ln p(z2 | x) = ln p(x, z1) − ln p(x, z2),
    (B,) nats.

    The evidence ln p(x) cancels, so any model with ``log_joint`` gives the exact ratio
    (Kuzina et al., 2022, section 5). Large values: z2 is far less plausible than z1 as
    a code of x.
    """
    return model.log_joint(z1, x) - model.log_joint(z2, x)
