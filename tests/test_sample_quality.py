"""Tests for companion.sample_quality: FID through torchmetrics with our features, and
improved precision / recall on feature sets with known answers."""

from __future__ import annotations

import pytest
import torch

from companion.sample_quality import (
    FeatureClassifier,
    fid,
    precision_recall,
    sample_quality,
    train_feature_classifier,
)


def _images(n: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    return (
        torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) * scale
    ).clamp(0, 1)


class Pixels(torch.nn.Module):
    """Features = the 64 pixels, whose FID has a closed form for uniform images."""

    num_features = 64

    def __init__(self) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(
            torch.zeros(())
        )  # fid() reads the device from a parameter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def test_fid_is_zero_for_the_same_images_and_matches_the_gaussian_closed_form() -> None:
    real = _images(20_000, 0)
    assert abs(fid(Pixels(), real=real, fake=real)) < 1e-6
    # U(0, 1) vs U(0, 0.5) pixels, independent:
    # 64 × [(0.5 − 0.25)² + (1/12 + 1/48 − 2·sqrt(1/12 · 1/48))].
    expected = 64 * (0.25**2 + 1 / 12 + 1 / 48 - 2 * (1 / 12 / 48) ** 0.5)
    assert fid(
        Pixels(), real=real, fake=_images(20_000, 1, scale=0.5)
    ) == pytest.approx(expected, rel=0.05)


def test_fid_rejects_images_of_another_shape() -> None:
    with pytest.raises(ValueError, match="expected"):
        fid(FeatureClassifier(), real=_images(4, 0), fake=torch.rand(4, 1, 16, 16))


def test_precision_and_recall_separate_quality_from_coverage() -> None:
    g = torch.Generator().manual_seed(0)
    real = torch.randn(500, 2, generator=g)
    collapsed = 0.1 * torch.randn(
        500, 2, generator=g
    )  # inside the data, covering little of it
    far = torch.randn(500, 2, generator=g) + 10.0  # outside the data
    p, r = precision_recall(real, torch.randn(500, 2, generator=g))
    assert p > 0.9 and r > 0.9
    p, r = precision_recall(real, collapsed)
    assert p > 0.9 and r < 0.3
    p, r = precision_recall(real, far)
    assert p == 0.0 and r == 0.0


def test_precision_recall_rejects_mismatched_or_tiny_sets() -> None:
    with pytest.raises(ValueError, match=r"\(N, d\)"):
        precision_recall(torch.zeros(10, 2), torch.zeros(10, 3))
    with pytest.raises(ValueError, match="more than k"):
        precision_recall(torch.randn(3, 2), torch.randn(10, 2))


def test_feature_classifier_learns_two_separable_classes_and_reports_quality() -> None:
    torch.manual_seed(0)
    model = FeatureClassifier(n_classes=2, num_features=8)
    images = torch.cat([_images(64, 0, 0.2), 0.8 + _images(64, 1, 0.2)]).clamp(0, 1)
    labels = torch.cat([torch.zeros(64), torch.ones(64)]).long()
    losses = train_feature_classifier(
        model, images=images, labels=labels, steps=60, batch_size=32, lr=5e-3
    )
    assert losses[-1] < losses[0]
    assert (model.logits(images).argmax(1) == labels).float().mean() > 0.95
    q = sample_quality(model, real=images, fake=images)
    assert abs(q.fid) < 1e-3 and q.precision == 1.0 and q.recall == 1.0
