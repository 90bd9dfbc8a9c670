"""An attack beside its baseline: random noise of exactly the same size.

An adversarial perturbation matters only if it does more than noise of the same norm
would. :func:`attack_and_noise` runs the unsupervised SKL attack and the attack on the
latent classifier (:mod:`companion.attacks`) on a batch of references, draws random
L∞ noise with each attacked input's own L∞ norm
(:func:`companion.attacks.random_noise`), and scores all four inputs the same way
(:func:`companion.metrics.attack_report` and the latent classifier's accuracy), as in
Kuzina et al. (2022), section 4.
"""

from __future__ import annotations

import torch

from companion.attacks import (
    AttackConfig,
    classifier_attack,
    random_noise,
    unsupervised_attack,
)
from companion.classifier import latent_means
from companion.metrics import accuracy, attack_report

__all__ = ["COLUMNS", "attack_and_noise"]

COLUMNS = (
    "MS-SSIM of the input",
    "MS-SSIM of the reconstruction",
    "SKL",
    "|Δμ|",
    "accuracy",
    "clean accuracy",
    "L∞",
    "box margin",
)
"""The scores of each row of :func:`attack_and_noise`, in order."""


def attack_and_noise(
    model,
    classifier: torch.nn.Module,
    *,
    x_ref: torch.Tensor,
    y_ref: torch.Tensor,
    config: AttackConfig,
    generator: torch.Generator | None = None,
) -> dict[str, dict[str, float]]:
    """Score the unsupervised and the classifier attack against random noise of the
    same per-image L∞ norm, on the same references.

    Args:
        model: a VAE with ``encode`` and ``reconstruct``.
        classifier: its latent classifier (latent means (B, z_dim) -> logits (B, K)).
        x_ref: (B, C, H, W) references in [0, 1].
        y_ref: (B,) their labels.
        config: the attacks' settings (an L∞ radius).
        generator: seeds, in this order, the SKL attack's starts, the classifier
            attack's starts, and the two noises' signs.

    Returns:
        ``{"attack": scores, "noise": scores}``, each a dict over :data:`COLUMNS`,
        means over the references: MS-SSIM between the inputs (how visible the change
        is) and between the reconstructions (robustness; both in [0, 1], higher is
        closer), the SKL between the posteriors (nats), the distance between the
        latent means, the latent classifier's accuracy on the classifier attack's
        input (or its noise) and on the clean references, the largest L∞ norm of the
        SKL input's perturbation, and the smallest distance of either input to the
        pixel box [0, 1] (negative: outside it).
    """
    if config.norm != "linf":
        raise ValueError(f"the noise baseline is L∞ noise; got norm {config.norm!r}")
    attacked = unsupervised_attack(
        model, x_ref, config=config, generator=generator
    ).x_adv
    fooled = classifier_attack(
        model, classifier, x_ref, y_ref, config=config, generator=generator
    ).x_adv
    noisy = random_noise(x_ref, like=attacked, norm="linf", generator=generator)
    noisy_fooled = random_noise(x_ref, like=fooled, norm="linf", generator=generator)
    with torch.no_grad():
        clean_accuracy = accuracy(classifier(latent_means(model, x_ref)), y_ref).item()
    return {
        kind: _scores(
            model,
            classifier,
            x_ref=x_ref,
            y_ref=y_ref,
            x_skl=x_skl,
            x_classifier=x_classifier,
            clean_accuracy=clean_accuracy,
        )
        for kind, x_skl, x_classifier in (
            ("attack", attacked, fooled),
            ("noise", noisy, noisy_fooled),
        )
    }


@torch.no_grad()
def _scores(
    model,
    classifier: torch.nn.Module,
    *,
    x_ref: torch.Tensor,
    y_ref: torch.Tensor,
    x_skl: torch.Tensor,
    x_classifier: torch.Tensor,
    clean_accuracy: float,
) -> dict[str, float]:
    report = attack_report(model, x_ref=x_ref, x_adv=x_skl)
    fooled = accuracy(classifier(latent_means(model, x_classifier)), y_ref).item()
    box = min(
        x.min().item() if side == "low" else 1 - x.max().item()
        for x in (x_skl, x_classifier)
        for side in ("low", "high")
    )
    values = (
        report.input_ms_ssim.mean().item(),
        report.recon_ms_ssim.mean().item(),
        report.skl.mean().item(),
        report.latent_distance.mean().item(),
        fooled,
        clean_accuracy,
        (x_skl - x_ref).abs().flatten(1).amax(1).max().item(),
        box,
    )
    return dict(zip(COLUMNS, values, strict=True))
