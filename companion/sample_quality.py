"""Sample quality: FID and improved precision / recall in a classifier's feature space.

FID (Heusel et al., 2017) fits a Gaussian to the features of real and of generated
images and reports the Fréchet distance between the two,
‖μ_r − μ_g‖² + tr(Σ_r + Σ_g − 2(Σ_rΣ_g)^½). The customary features are Inception-v3's,
but its weights cannot be downloaded here and a network trained on 299×299 photographs
says little about 8×8 digits. We use the penultimate layer of a small CNN trained to
classify the active data set (:class:`FeatureClassifier`), handed to torchmetrics'
``FrechetInceptionDistance`` as a custom feature extractor (which needs neither
torch-fidelity nor scipy). Numbers are therefore comparable within the book, not with
published Inception FIDs.

Precision and recall (Kynkäänniemi et al., 2019) separate the two ways samples fail:
precision is the fraction of generated images that fall inside the real data's manifold,
recall the fraction of real images inside the generated one, each manifold being the
union of balls around its points reaching to their k-th nearest neighbour. torchmetrics
does not implement it, so :func:`precision_recall` does, in a few batched lines.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from companion.data import check_images

__all__ = [
    "FeatureClassifier",
    "train_feature_classifier",
    "features",
    "fid",
    "precision_recall",
    "SampleQuality",
    "sample_quality",
]


class FeatureClassifier(nn.Module):
    """A small CNN classifier whose penultimate layer serves as the feature space of
    FID.

    Three 3×3 convolutions (32, 64, 64 channels, the last two with stride 2), global
    average pooling, a ``num_features``-wide layer (the features) and the class logits.
    Works for any image side ≥ 4.
    """

    def __init__(
        self, *, n_classes: int = 10, num_features: int = 64, in_channels: int = 1
    ) -> None:
        super().__init__()
        self.num_features = (
            num_features  # torchmetrics reads this instead of probing the network
        )
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(64, num_features),
            nn.SiLU(),
        )
        self.head = nn.Linear(num_features, n_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Features (B, num_features) of images (B, C, H, W) in [0, 1]
        (what FID calls)."""
        return self.body(images)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits (B, n_classes)."""
        return self.head(self.body(images))


def train_feature_classifier(
    model: FeatureClassifier,
    *,
    images: torch.Tensor,
    labels: torch.Tensor,
    steps: int = 600,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
) -> list[float]:
    """Fit the classifier with Adam on cross-entropy; returns the loss per step."""
    check_images(images)
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    images, labels = images.to(device), labels.to(device)
    losses = []
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(images), (batch_size,), generator=gen).to(device)
        loss = F.cross_entropy(model.logits(images[idx]), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    model.eval()
    return torch.stack(losses).tolist()


@torch.no_grad()
def features(
    extractor: nn.Module, images: torch.Tensor, *, batch_size: int = 1_000
) -> torch.Tensor:
    """Features of images (N, C, H, W) in [0, 1]: (N, d) float64 on the CPU."""
    check_images(images)
    device = next(extractor.parameters()).device
    extractor.eval()
    return torch.cat(
        [
            extractor(images[i : i + batch_size].to(device)).double().cpu()
            for i in range(0, len(images), batch_size)
        ]
    )


@torch.no_grad()
def fid(
    extractor: nn.Module,
    *,
    real: torch.Tensor,
    fake: torch.Tensor,
    batch_size: int = 1_000,
) -> float:
    """Fréchet distance between real and generated images in the extractor's feature
    space.

    Args:
        extractor: ``extractor(images) -> (B, d)`` with a ``num_features`` attribute
            (for instance :class:`FeatureClassifier`).
        real, fake: (N, C, H, W) and (M, C, H, W) in [0, 1]; N, M ≥ 2 (use ≫ d for a
            stable covariance).
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    check_images(real)
    check_images(fake, shape=tuple(real.shape[1:]))
    device = next(extractor.parameters()).device
    extractor.eval()
    metric = FrechetInceptionDistance(feature=extractor, normalize=True).to(device)
    for i in range(0, len(real), batch_size):
        metric.update(real[i : i + batch_size].to(device), real=True)
    for i in range(0, len(fake), batch_size):
        metric.update(fake[i : i + batch_size].to(device), real=False)
    return float(metric.compute())


def precision_recall(
    real_features: torch.Tensor, fake_features: torch.Tensor, *, k: int = 3
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al., 2019) of feature sets.

    Each set's manifold is the union of balls centred on its points with radius the
    distance to the point's k-th nearest neighbour in the same set
    (the authors use k = 3).

    Args:
        real_features: (N, d); fake_features: (M, d); N, M > k.

    Returns:
        precision (share of fake points inside the real manifold) and recall (share of
        real points inside the fake manifold).
    """
    if (
        real_features.dim() != 2
        or fake_features.dim() != 2
        or real_features.shape[1] != fake_features.shape[1]
    ):
        raise ValueError(
            f"need (N, d) and (M, d) features, got {tuple(real_features.shape)}, "
            f"{tuple(fake_features.shape)}"
        )
    if min(len(real_features), len(fake_features)) <= k:
        raise ValueError(f"need more than k = {k} points in each set")

    def radii(x: torch.Tensor) -> torch.Tensor:
        return (
            torch.cdist(x, x).kthvalue(k + 1, dim=1).values
        )  # k + 1: the point itself is at 0

    def coverage(points: torch.Tensor, centres: torch.Tensor, r: torch.Tensor) -> float:
        return (torch.cdist(points, centres) <= r[None]).any(1).double().mean().item()

    real, fake = real_features.double(), fake_features.double()
    return coverage(fake, real, radii(real)), coverage(real, fake, radii(fake))


class SampleQuality(NamedTuple):
    """FID (lower is better) and precision / recall (higher is better) of one
    sample set."""

    fid: float
    precision: float
    recall: float


def sample_quality(
    extractor: nn.Module, *, real: torch.Tensor, fake: torch.Tensor, k: int = 3
) -> SampleQuality:
    """:func:`fid` and :func:`precision_recall` of ``fake`` against ``real`` images."""
    p, r = precision_recall(features(extractor, real), features(extractor, fake), k=k)
    return SampleQuality(
        fid=fid(extractor, real=real, fake=fake), precision=p, recall=r
    )
