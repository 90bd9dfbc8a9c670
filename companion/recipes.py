"""The book's models, built and trained from a profile, so that every chapter that uses
chapter 2's VAE or chapter 3's hierarchical VAE gets exactly the same model.

Each recipe seeds the global generators itself before building the model, so the result
does not depend on what a chapter computed before calling it (on a given machine it is
the same model, weight for weight).
"""

from __future__ import annotations

import torch

from companion.data import ImageData
from companion.models import ConvVAE, HierarchicalVAE, HVAEConfig, VAEConfig
from companion.profiles import Profile, seed_everything
from companion.train import History, TrainConfig, train_vae

__all__ = ["training_budget", "chapter2_vae", "chapter3_hvae", "beta_vae"]


def training_budget(profile: Profile, **overrides) -> TrainConfig:
    """The training settings both VAEs share: chapter 2's epochs, batch, lr, patience, seed."""
    vs = profile.vae
    settings = dict(
        epochs=vs.epochs, batch_size=vs.batch_size, lr=vs.lr, patience=vs.patience,
        binarize=profile.data.binarize, seed=profile.seed,
    )
    return TrainConfig(**(settings | overrides))


def chapter2_vae(
    profile: Profile, *, train: ImageData, valid: ImageData, device: torch.device
) -> tuple[ConvVAE, History]:
    """Chapter 2's convolutional VAE, trained on ``train`` with early stopping on ``valid``."""
    return beta_vae(profile, beta=1.0, train=train, valid=valid, device=device)


def beta_vae(
    profile: Profile, *, beta: float, train: ImageData, valid: ImageData, device: torch.device
) -> tuple[ConvVAE, History]:
    """Chapter 2's VAE trained on the β-ELBO (Higgins et al., 2017): only β differs.

    β = 1 is chapter 2's VAE itself, weight for weight; β > 1 weighs the KL term more,
    which widens the posteriors and shortens the codes. Early stopping reads the β-ELBO.

    Raises:
        ValueError: β not positive.
    """
    if not beta > 0:
        raise ValueError(f"beta must be positive, got {beta}; 1 is the plain ELBO")
    seed_everything(profile.seed)
    config = VAEConfig(image_size=profile.data.image_size, z_dim=profile.vae.z_dim, channels=profile.vae.channels)
    model = ConvVAE(config).to(device)
    history = train_vae(model=model, train_images=train.images, valid_images=valid.images,
                        config=training_budget(profile, beta=beta))
    return model, history


def chapter3_hvae(
    profile: Profile, *, train: ImageData, valid: ImageData, device: torch.device
) -> tuple[HierarchicalVAE, History]:
    """Chapter 3's hierarchical VAE, with chapter 2's data, split and training budget."""
    seed_everything(profile.seed)
    config = HVAEConfig(image_size=profile.data.image_size, z_dims=profile.hvae.z_dims,
                        channels=profile.vae.channels, width=profile.hvae.width)
    model = HierarchicalVAE(config).to(device)
    history = train_vae(model=model, train_images=train.images, valid_images=valid.images,
                        config=training_budget(profile))
    return model, history
