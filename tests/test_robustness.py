"""Tests for companion.robustness: clean and attacked chains scored alike."""

from __future__ import annotations

import pytest
import torch

from companion.data import load_images
from companion.defence import DefenceResult, defence_curves
from companion.models import ConvVAE, VAEConfig
from companion.robustness import Robustness, robustness, robustness_curves


@pytest.fixture(scope="module")
def setting() -> tuple[ConvVAE, torch.nn.Linear, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = ConvVAE(VAEConfig(image_size=8, z_dim=4, channels=(8, 16))).eval()
    classifier = torch.nn.Linear(4, 10)
    test = load_images(name="digits", split="test")
    return model, classifier, test.images[:6], test.labels[:6]


def _result(z: torch.Tensor) -> DefenceResult:
    nan = torch.full(z.shape[:1], float("nan"))
    return DefenceResult(z, z, nan, nan, nan, torch.zeros(len(z)))


def test_an_attack_that_changes_nothing_does_no_damage(setting) -> None:
    model, classifier, x, y = setting
    with torch.no_grad():
        z = model.encode(x).mean
    scores = robustness(
        model, classifier, clean=_result(z), attacked=_result(z), x_ref=x, y_ref=y
    )
    torch.testing.assert_close(scores.damage, torch.zeros(len(x)))
    assert scores.unchanged.all()
    torch.testing.assert_close(scores.clean_correct, scores.attacked_correct)


def test_damage_is_clean_minus_attacked_score_of_the_same_yardstick(setting) -> None:
    model, classifier, x, y = setting
    with torch.no_grad():
        z = model.encode(x).mean
    far = z + 5.0
    scores = robustness(
        model, classifier, clean=_result(z), attacked=_result(far), x_ref=x, y_ref=y
    )
    torch.testing.assert_close(
        scores.damage, scores.clean_ms_ssim - scores.attacked_ms_ssim
    )
    assert scores.damage.mean() > 0
    expected = classifier(far).argmax(-1) == classifier(z).argmax(-1)
    torch.testing.assert_close(scores.unchanged, expected)
    summary = scores.summary()
    assert summary["damage"] == pytest.approx(scores.damage.mean().item())
    assert summary["damage s.e."] == pytest.approx(
        (scores.damage.std() / len(x) ** 0.5).item()
    )
    assert 0 <= summary["unchanged"] <= 1
    some = scores.subset(torch.tensor([0, 2]))
    torch.testing.assert_close(some.damage, scores.damage[[0, 2]])
    torch.testing.assert_close(some.unchanged, scores.unchanged[[0, 2]])


def test_curves_pair_every_attacked_set_with_the_clean_chains_at_each_t(
    setting,
) -> None:
    model, classifier, x, y = setting
    curves = defence_curves(
        model,
        {"clean": x, "noise": (x + 0.3 * torch.rand_like(x)).clamp(0, 1)},
        steps_grid=[0, 2],
        num_leapfrog=2,
        generator=torch.Generator().manual_seed(0),
    )
    scored = robustness_curves(model, classifier, curves, x_ref=x, y_ref=y)
    assert list(scored) == ["noise"] and list(scored["noise"]) == [0, 2]
    assert isinstance(scored["noise"][2], Robustness)
    direct = robustness(
        model,
        classifier,
        clean=curves["clean"][2],
        attacked=curves["noise"][2],
        x_ref=x,
        y_ref=y,
    )
    torch.testing.assert_close(scored["noise"][2].damage, direct.damage)


def test_bad_pairings_say_what_is_wrong(setting) -> None:
    model, classifier, x, y = setting
    z = torch.zeros(len(x), 4)
    with pytest.raises(ValueError, match="one clean chain per attacked chain"):
        robustness(
            model,
            classifier,
            clean=_result(z),
            attacked=_result(z[:2]),
            x_ref=x,
            y_ref=y,
        )
    with pytest.raises(KeyError, match="no clean set 'clean'"):
        robustness_curves(model, classifier, {"noise": {}}, x_ref=x, y_ref=y)
