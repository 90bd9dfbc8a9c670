"""companion.noise_baseline: an attack scored beside noise of the same size."""

from __future__ import annotations

import pytest
import torch

from companion.attacks import AttackConfig
from companion.data import load_images
from companion.models import ConvVAE, VAEConfig
from companion.noise_baseline import COLUMNS, attack_and_noise


@pytest.fixture(scope="module")
def setting() -> tuple[ConvVAE, torch.nn.Linear, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = ConvVAE(VAEConfig(image_size=8, z_dim=4, channels=(8, 16))).eval()
    classifier = torch.nn.Linear(4, 10).eval()
    test = load_images(name="digits", split="test")
    return model, classifier, test.images[:12], test.labels[:12]


def _run(setting, *, seed: int = 0, radius: float = 0.1) -> dict:
    model, classifier, x, y = setting
    config = AttackConfig(radius=radius, steps=10, restarts=2)
    generator = torch.Generator().manual_seed(seed)
    return attack_and_noise(
        model, classifier, x_ref=x, y_ref=y, config=config, generator=generator
    )


def test_both_rows_carry_every_column_and_share_the_clean_accuracy(setting) -> None:
    rows = _run(setting)
    assert set(rows) == {"attack", "noise"}
    for scores in rows.values():
        assert tuple(scores) == COLUMNS
        assert all(isinstance(v, float) for v in scores.values())
    assert rows["attack"]["clean accuracy"] == rows["noise"]["clean accuracy"]


def test_the_attack_moves_the_posterior_further_than_noise_of_its_size(
    setting,
) -> None:
    rows = _run(setting)
    assert rows["attack"]["SKL"] > rows["noise"]["SKL"]
    # the noise has each attacked image's own L∞ norm, so the same largest norm
    assert rows["noise"]["L∞"] == pytest.approx(rows["attack"]["L∞"], abs=1e-6)


def test_inputs_stay_in_the_ball_and_the_pixel_box(setting) -> None:
    for radius in (0.05, 0.2):
        for scores in _run(setting, radius=radius).values():
            assert scores["L∞"] <= radius + 1e-6
            assert scores["box margin"] >= -1e-6
            assert 0 <= scores["accuracy"] <= 1


def test_the_same_generator_seed_gives_the_same_scores(setting) -> None:
    assert _run(setting, seed=3) == _run(setting, seed=3)


def test_refuses_an_l2_attack(setting) -> None:
    model, classifier, x, y = setting
    with pytest.raises(ValueError, match="L∞"):
        attack_and_noise(
            model,
            classifier,
            x_ref=x,
            y_ref=y,
            config=AttackConfig(radius=1.0, norm="l2", steps=2, restarts=1),
        )
