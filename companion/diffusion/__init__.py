"""Diffusion models: schedules and SNR, the DDPM, and DAED (Deja et al., 2022).

* :mod:`companion.diffusion.schedules` — β schedules, ᾱ_t, SNR(t), q(z_t | x),
  DAED's split step;
* :mod:`companion.diffusion.ddpm` — ε-prediction DDPM, EMA training, ancestral sampling;
* :mod:`companion.diffusion.daed` — the denoising autoencoder that replaces the first
  steps;
* :mod:`companion.diffusion.attacks` — attacks on the autoencoder and on the backward
  process.
"""

from companion.diffusion.daed import (
    DenoisingAutoencoder,
    daed_sample,
    daed_samples,
    train_dae,
)
from companion.diffusion.ddpm import (
    DDPM,
    DiffusionHistory,
    DiffusionTrainConfig,
    to_model_space,
    to_pixels,
    train_ddpm,
)
from companion.diffusion.schedules import (
    SCHEDULES,
    Schedule,
    cosine_betas,
    linear_betas,
    make_schedule,
    q_sample,
    scaled_linear_betas,
    split_step,
)

__all__ = [
    "DDPM",
    "DiffusionHistory",
    "DiffusionTrainConfig",
    "DenoisingAutoencoder",
    "SCHEDULES",
    "Schedule",
    "cosine_betas",
    "daed_sample",
    "daed_samples",
    "linear_betas",
    "make_schedule",
    "q_sample",
    "scaled_linear_betas",
    "split_step",
    "to_model_space",
    "to_pixels",
    "train_dae",
    "train_ddpm",
]
