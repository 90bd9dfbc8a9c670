"""Tests for companion.decoder_attacks: power iteration recovers the top singular value
of a known linear decoder, finite gains match it, the reconstruction attack is feasible
and beats its random start, and bad input fails clearly."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Independent, Normal

from companion.attacks import AttackConfig
from companion.decoder_attacks import (
    decoder_gain,
    latent_sensitivity,
    reconstruction_attack,
)
from companion.models import ConvVAE, VAEConfig


class _LinearDecoder(torch.nn.Module):
    """E[x | z] = W z: the decoder's Jacobian is W everywhere."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(weight)

    def decode(self, z: torch.Tensor):
        mean = z @ self.weight.T
        return Independent(Normal(mean, torch.ones_like(mean)), 1)


def _linear(seed: int = 0) -> _LinearDecoder:
    return _LinearDecoder(
        torch.randn(
            12, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
        )
    )


def test_power_iteration_finds_the_top_singular_pair_of_a_linear_decoder() -> None:
    model = _linear()
    z = torch.randn(5, 4, dtype=torch.float64)
    result = latent_sensitivity(
        model, z, iterations=200, generator=torch.Generator().manual_seed(1)
    )
    _, s, vh = torch.linalg.svd(model.weight.detach())
    torch.testing.assert_close(result.gain, s[0].expand(5))
    torch.testing.assert_close(
        result.direction.abs(), vh[0].abs().expand(5, 4), atol=1e-6, rtol=1e-6
    )
    assert result.gradient_evaluations == 401
    assert model.weight.requires_grad  # unfrozen afterwards


def test_finite_gain_of_the_top_direction_matches_and_bounds_every_other_one() -> None:
    model = _linear()
    z = torch.randn(64, 4, dtype=torch.float64)
    top = latent_sensitivity(model, z, iterations=200)
    torch.testing.assert_close(
        decoder_gain(model, z=z, dz=0.3 * top.direction), top.gain
    )
    random = torch.randn(64, 4, dtype=torch.float64)
    assert (decoder_gain(model, z=z, dz=random) <= top.gain + 1e-9).all()


def test_the_sensitivity_of_a_conv_decoder_bounds_its_finite_differences() -> None:
    torch.manual_seed(0)
    vae = ConvVAE(VAEConfig(image_size=8, z_dim=3, channels=(4,))).double()
    z = torch.randn(6, 3, dtype=torch.float64)
    top = latent_sensitivity(vae, z, iterations=50)
    torch.testing.assert_close(
        decoder_gain(vae, z=z, dz=1e-6 * top.direction), top.gain, rtol=1e-4, atol=1e-8
    )
    for seed in range(5):
        dz = 1e-6 * torch.randn(
            6, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
        )
        assert (decoder_gain(vae, z=z, dz=dz) <= top.gain * (1 + 1e-4)).all()


def test_the_reconstruction_attack_stays_in_the_ball_and_beats_its_random_start() -> (
    None
):
    torch.manual_seed(0)
    vae = ConvVAE(VAEConfig(image_size=8, z_dim=3, channels=(4,))).eval()
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    start = reconstruction_attack(
        vae,
        x,
        config=AttackConfig(radius=0.1, steps=0, restarts=2),
        generator=torch.Generator().manual_seed(0),
    )
    result = reconstruction_attack(
        vae,
        x,
        config=AttackConfig(radius=0.1, steps=10, restarts=2),
        generator=torch.Generator().manual_seed(0),
    )
    assert (
        (result.x_adv - x).abs().max() <= 0.1 + 1e-6
        and 0 <= result.x_adv.min()
        and result.x_adv.max() <= 1
    )
    assert (
        result.objective.mean() > start.objective.mean()
        and (result.objective >= 0).all()
    )


def test_bad_input_raises_value_errors_naming_the_problem() -> None:
    model = _linear()
    with pytest.raises(ValueError, match=r"finite \(B, d\)"):
        latent_sensitivity(model, torch.randn(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="iterations must be >= 1"):
        latent_sensitivity(model, torch.randn(2, 4, dtype=torch.float64), iterations=0)
    with pytest.raises(ValueError, match="non-zero"):
        decoder_gain(
            model,
            z=torch.zeros(2, 4, dtype=torch.float64),
            dz=torch.zeros(2, 4, dtype=torch.float64),
        )
    with pytest.raises(ValueError, match="one step per code"):
        decoder_gain(
            model,
            z=torch.zeros(2, 4, dtype=torch.float64),
            dz=torch.ones(3, 4, dtype=torch.float64),
        )
    with pytest.raises(ValueError, match="needs encode and decode"):
        reconstruction_attack(
            model, torch.rand(2, 1, 8, 8), config=AttackConfig(radius=0.1)
        )
