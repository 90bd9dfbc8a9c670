"""Like-for-like robustness: what an attack costs, scored the same way with and without
the HMC defence.

A defence can raise an attacked input's score for two reasons. It may undo the attack
(robustness), or it may simply decode better codes than the encoder does, on clean and
attacked inputs alike (closing the amortisation gap, chapter 5). Only the first is
robustness. So every score here comes in a pair from the same model, the same T and the
same yardstick: the clean reference's chain and the attacked input's chain, both read
after T transitions (T = 0: the encoder's samples), and the attack's *damage* is the
clean score minus the attacked one.

The yardstick is that of Kuzina et al. (2022): MS-SSIM between the model's
reconstruction of the clean reference and the decoded code, and the latent classifier's
prediction, both against the label and against the prediction for the clean reference
(the share of predictions the attack leaves unchanged).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

import torch

from companion.defence import DefenceResult
from companion.metrics import code_report

__all__ = ["Robustness", "robustness", "robustness_curves"]


@dataclass(frozen=True)
class Robustness:
    """One attack at one T, per reference.

    Attributes:
        clean_ms_ssim: (B,) MS-SSIM of the clean reference's decoded code to the model's
            reconstruction of that reference.
        attacked_ms_ssim: (B,) the same for the attacked input's decoded code.
        clean_correct: (B,) the latent classifier is right on the clean code.
        attacked_correct: (B,) it is right on the attacked code.
        unchanged: (B,) the attacked code's predicted class equals the clean code's.
    """

    clean_ms_ssim: torch.Tensor
    attacked_ms_ssim: torch.Tensor
    clean_correct: torch.Tensor
    attacked_correct: torch.Tensor
    unchanged: torch.Tensor

    @property
    def damage(self) -> torch.Tensor:
        """What the attack costs each reference, (B,): clean minus attacked MS-SSIM."""
        return self.clean_ms_ssim - self.attacked_ms_ssim

    def subset(self, index: torch.Tensor) -> Robustness:
        """The same scores for some of the references (an index or a boolean mask)."""
        return Robustness(*(getattr(self, f.name)[index] for f in fields(self)))

    def summary(self) -> dict[str, float]:
        """Means over the references, and the standard error of the mean damage and of
        the mean attacked MS-SSIM."""
        n = len(self.damage)
        return {
            "MS-SSIM clean": self.clean_ms_ssim.mean().item(),
            "MS-SSIM attacked": self.attacked_ms_ssim.mean().item(),
            "damage": self.damage.mean().item(),
            "damage s.e.": (self.damage.std() / n**0.5).item(),
            "attacked s.e.": (self.attacked_ms_ssim.std() / n**0.5).item(),
            "accuracy clean": self.clean_correct.float().mean().item(),
            "accuracy attacked": self.attacked_correct.float().mean().item(),
            "unchanged": self.unchanged.float().mean().item(),
        }


@torch.no_grad()
def robustness(
    model,
    classifier,
    *,
    clean: DefenceResult,
    attacked: DefenceResult,
    x_ref: torch.Tensor,
    y_ref: torch.Tensor,
) -> Robustness:
    """Score the clean and the attacked chains of the same references alike.

    Args:
        model: the VAE both chains ran on (its reconstruction of ``x_ref`` is the
            yardstick).
        classifier: the latent classifier of that model (codes -> logits).
        clean: the chains on the clean references, after some T.
        attacked: the chains on the attacked inputs, after the same T.
        x_ref: (B, C, H, W) the clean references, one per chain.
        y_ref: (B,) their labels.
    """
    if len(clean.z) != len(attacked.z):
        raise ValueError(
            f"one clean chain per attacked chain: got {len(clean.z)} and "
            f"{len(attacked.z)}"
        )
    on_clean = _Scored.of(model, classifier, z=clean.z, x_ref=x_ref, y_ref=y_ref)
    return on_clean.against(
        _Scored.of(model, classifier, z=attacked.z, x_ref=x_ref, y_ref=y_ref)
    )


def robustness_curves(
    model,
    classifier,
    curves: Mapping[str, Mapping[int, DefenceResult]],
    *,
    x_ref: torch.Tensor,
    y_ref: torch.Tensor,
    clean: str = "clean",
) -> dict[str, dict[int, Robustness]]:
    """:func:`robustness` of every attacked set of :func:`companion.defence.
    defence_curves`' output against its ``clean`` set, at every T.

    The clean chains are scored once per T, whatever the number of attacked sets.

    Returns:
        ``{attack name: {T: Robustness}}`` for every set but ``clean``.

    Raises:
        KeyError: no set named ``clean``, or an attacked set read at a T the clean set
            was not.
    """
    if clean not in curves:
        raise KeyError(
            f"no clean set {clean!r} among {sorted(curves)}: run the clean references "
            "in the same defence_curves call"
        )

    def scored(result: DefenceResult) -> _Scored:
        return _Scored.of(model, classifier, z=result.z, x_ref=x_ref, y_ref=y_ref)

    with torch.no_grad():
        on_clean = {t: scored(result) for t, result in curves[clean].items()}
        return {
            name: {
                t: on_clean[t].against(scored(result)) for t, result in curve.items()
            }
            for name, curve in curves.items()
            if name != clean
        }


@dataclass(frozen=True)
class _Scored:
    """One set of chains scored on its own: (B,) MS-SSIM, correctness, prediction."""

    ms_ssim: torch.Tensor
    correct: torch.Tensor
    predicted: torch.Tensor

    @classmethod
    def of(
        cls,
        model,
        classifier,
        *,
        z: torch.Tensor,
        x_ref: torch.Tensor,
        y_ref: torch.Tensor,
    ) -> _Scored:
        report = code_report(model, classifier, z=z, x_ref=x_ref, y_ref=y_ref)
        predicted = classifier(z).argmax(-1)
        return cls(report.recon_ms_ssim.cpu(), report.correct.cpu(), predicted.cpu())

    def against(self, attacked: _Scored) -> Robustness:
        """These (clean) scores paired with the attacked chains' of the same refs."""
        return Robustness(
            clean_ms_ssim=self.ms_ssim,
            attacked_ms_ssim=attacked.ms_ssim,
            clean_correct=self.correct,
            attacked_correct=attacked.correct,
            unchanged=attacked.predicted == self.predicted,
        )
