"""The book's models, built and trained from a profile, so that every chapter that uses
chapter 2's VAE or chapter 3's hierarchical VAE gets exactly the same model.

Each recipe seeds the global generators itself before building the model, so the result
does not depend on what a chapter computed before calling it (on a given machine it is
the same model, weight for weight). Trained models are kept in the disk cache of
:mod:`companion.cache`, keyed by the settings, the data's content and the device type, so
chapter 4 and later load the models chapters 2 and 3 trained instead of training them again
(``COMPANION_CACHE=0`` retrains every time).
"""

from __future__ import annotations

import dataclasses
import hashlib

import torch

from companion.cache import cached_training
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
    """Chapter 2's convolutional VAE, trained on ``train`` with early stopping on ``valid`` (cached)."""
    return beta_vae(profile, beta=1.0, train=train, valid=valid, device=device)


def beta_vae(
    profile: Profile, *, beta: float, train: ImageData, valid: ImageData, device: torch.device
) -> tuple[ConvVAE, History]:
    """Chapter 2's VAE trained on the β-ELBO (Higgins et al., 2017): only β differs (cached).

    β = 1 is chapter 2's VAE itself, weight for weight; β > 1 weighs the KL term more,
    which widens the posteriors and shortens the codes. Early stopping reads the β-ELBO.

    Raises:
        ValueError: β not positive.
    """
    if not beta > 0:
        raise ValueError(f"beta must be positive, got {beta}; 1 is the plain ELBO")
    config = VAEConfig(image_size=profile.data.image_size, z_dim=profile.vae.z_dim, channels=profile.vae.channels)
    return _trained(profile, lambda: ConvVAE(config), config=config, budget=training_budget(profile, beta=beta),
                    train=train, valid=valid, device=device, name="vae" if beta == 1 else f"vae-beta{beta:g}")


def chapter3_hvae(
    profile: Profile, *, train: ImageData, valid: ImageData, device: torch.device
) -> tuple[HierarchicalVAE, History]:
    """Chapter 3's hierarchical VAE, with chapter 2's data, split and training budget (cached)."""
    config = HVAEConfig(image_size=profile.data.image_size, z_dims=profile.hvae.z_dims,
                        channels=profile.vae.channels, width=profile.hvae.width)
    return _trained(profile, lambda: HierarchicalVAE(config), config=config, budget=training_budget(profile),
                    train=train, valid=valid, device=device, name="hvae")


def _trained(
    profile: Profile, make, *, config, budget: TrainConfig, train: ImageData, valid: ImageData, device: torch.device,
    name: str,
):
    """Seed, build and train a VAE with ``budget``, through the disk cache."""
    key = dict(recipe=name, config=config, budget=budget, seed=profile.seed, device=torch.device(device).type,
               train=_digest(train.images), valid=_digest(valid.images))

    def build():
        seed_everything(profile.seed)
        return make().to(device)

    def fit(model) -> dict:
        history = train_vae(model=model, train_images=train.images, valid_images=valid.images, config=budget)
        return dataclasses.asdict(history)

    model, record = cached_training(key=key, build=build, train=fit, name=name)
    return model, History(**record)


def _digest(images: torch.Tensor) -> str:
    """SHA-256 of a tensor's values: the data's identity in a cache key."""
    return hashlib.sha256(images.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


