"""A classifier that reads the encoder's latent means:
the downstream task attacks target.

Kuzina et al. (2022) measure robustness also by the accuracy of a classifier trained on
E_q[z | x]: an attack that moves the code moves the prediction. The classifier is linear
(multinomial logistic regression), so what it reads is the geometry of the latent space,
not a second network's own features.
"""

from __future__ import annotations

import torch
from torch import nn

from companion.data import check_images
from companion.metrics import accuracy

__all__ = ["latent_means", "fit_latent_classifier", "latent_accuracy"]


@torch.no_grad()
def latent_means(model, images: torch.Tensor, *, batch_size: int = 500) -> torch.Tensor:
    """E_q[z | x] of every image: (N, z_dim) on the model's device."""
    check_images(images, shape=tuple(model.image_shape))
    device = next(model.parameters()).device
    return torch.cat(
        [
            model.encode(images[i : i + batch_size].to(device)).mean
            for i in range(0, len(images), batch_size)
        ]
    )


def fit_latent_classifier(
    model,
    *,
    images: torch.Tensor,
    labels: torch.Tensor,
    n_classes: int = 10,
    steps: int = 500,
    lr: float = 0.05,
    weight_decay: float = 1e-3,
    seed: int = 0,
) -> nn.Linear:
    """Fit a linear classifier on the latent means of ``images`` (full-batch Adam).

    Args:
        model: an encoder model (its weights are not changed).
        images: (N, C, H, W) in [0, 1]; labels: (N,) integers in [0, n_classes).
        steps, lr, weight_decay: Adam settings on the cross-entropy.
        seed: seed of the classifier's initialisation.

    Returns:
        An ``nn.Linear(z_dim, n_classes)`` on the model's device, in eval mode.
    """
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    z = latent_means(model, images)
    y = labels.to(z.device)
    torch.manual_seed(seed)
    classifier = nn.Linear(z.shape[-1], n_classes).to(z.device)
    optimiser = torch.optim.Adam(
        classifier.parameters(), lr=lr, weight_decay=weight_decay
    )
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(steps):
        loss = loss_fn(classifier(z), y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    return classifier.eval()


@torch.no_grad()
def latent_accuracy(
    model, classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor
) -> float:
    """Accuracy of ``classifier`` on the latent means of ``images``."""
    return accuracy(
        classifier(latent_means(model, images)),
        labels.to(next(model.parameters()).device),
    ).item()
