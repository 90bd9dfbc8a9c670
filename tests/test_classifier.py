"""Tests for companion.classifier: a linear read-out of the latent means."""

from __future__ import annotations

import pytest
import torch

from companion.classifier import fit_latent_classifier, latent_accuracy, latent_means
from companion.data import load_images
from companion.models import ConvVAE, HierarchicalVAE, HVAEConfig, VAEConfig
from companion.train import TrainConfig, train_vae


@pytest.fixture(scope="module")
def digits():
    return load_images(name="digits", split="train"), load_images(
        name="digits", split="test"
    )


@pytest.mark.parametrize("kind", ["vae", "hvae"])
def test_a_linear_read_out_of_a_briefly_trained_encoder_beats_chance(
    digits, kind: str
) -> None:
    torch.manual_seed(0)
    model = (
        ConvVAE(VAEConfig(image_size=8, z_dim=8, channels=(16,)))
        if kind == "vae"
        else HierarchicalVAE(
            HVAEConfig(image_size=8, z_dims=(4, 4), channels=(16,), width=16)
        )
    )
    train, test = digits
    config = TrainConfig(epochs=5, batch_size=64, lr=3e-3, progress=False)
    train_vae(
        model=model,
        train_images=train.images,
        valid_images=test.images[:50],
        config=config,
    )
    before = [p.clone() for p in model.parameters()]
    classifier = fit_latent_classifier(
        model, images=train.images, labels=train.labels, steps=200
    )
    assert (
        latent_accuracy(model, classifier, test.images, test.labels) > 0.3
    )  # chance: 0.1
    assert all(
        torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True)
    ), "the encoder must not change"
    assert latent_means(model, test.images[:5]).shape == (5, model.z_dim)


def test_mismatched_images_and_labels_are_rejected(digits) -> None:
    train, _ = digits
    model = ConvVAE(VAEConfig(image_size=8, z_dim=2, channels=(4,)))
    with pytest.raises(ValueError, match="labels"):
        fit_latent_classifier(model, images=train.images[:10], labels=train.labels[:9])
    with pytest.raises(ValueError, match="expected"):
        latent_means(model, torch.rand(3, 1, 16, 16))
