"""Tests for companion.diffusion.attacks: the two denoisers as differentiable maps with
their noise made explicit, the attack through them, the output-shift score,
and bad input."""

from __future__ import annotations

import pytest
import torch

from companion.attacks import AttackConfig, random_noise
from companion.diffusion import DDPM, DenoisingAutoencoder, make_schedule
from companion.diffusion.attacks import (
    Denoiser,
    DenoiserNoise,
    denoise,
    denoiser_attack,
    draw_noise,
    noise_spread,
    output_shift,
)
from companion.models.unet import UNet, UNetConfig

CONFIG = UNetConfig(
    image_size=8, channels=8, channel_mults=(1, 2), attention_resolutions=()
)
T = 30


def _net() -> UNet:
    """A UNet whose output depends on its input
    (a fresh one starts at exactly zero noise)."""
    torch.manual_seed(0)
    net = UNet(CONFIG)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return net


def _ddpm() -> DDPM:
    return DDPM(_net(), make_schedule("linear", T))


def _dae(beta_1: float = 0.1) -> DenoisingAutoencoder:
    return DenoisingAutoencoder(_net(), make_schedule("linear", T), beta_1=beta_1)


def _images(n: int = 6) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def test_autoencoder_denoiser_is_the_daes_denoise_with_explicit_noise() -> None:
    dae = _dae()
    denoiser = Denoiser.autoencoder(dae)
    assert denoiser.k == dae.k and denoiser.reverse_steps == 0
    noise = draw_noise(denoiser, batch=6, generator=torch.Generator().manual_seed(4))
    _, expected = dae.denoise(_images(), generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(denoiser(_images(), noise=noise), expected)


def test_backward_denoiser_is_the_ddpms_denoise_with_explicit_noise() -> None:
    ddpm = _ddpm()
    denoiser = Denoiser.backward(ddpm, k=5)
    noise = draw_noise(denoiser, batch=6, generator=torch.Generator().manual_seed(4))
    assert noise.start.shape == (6, 1, 8, 8) and noise.steps.shape == (4, 6, 1, 8, 8)
    _, expected = ddpm.denoise(
        _images(), t=5, generator=torch.Generator().manual_seed(4), progress=False
    )
    torch.testing.assert_close(denoiser(_images(), noise=noise), expected)


def test_reverse_step_wants_noise_at_every_step_but_the_last() -> None:
    ddpm, z = _ddpm(), torch.zeros(2, 1, 8, 8)
    with pytest.raises(ValueError, match="needs a noise draw"):
        ddpm.reverse_step(z, t=3, noise=None)
    with pytest.raises(ValueError, match="needs no noise draw"):
        ddpm.reverse_step(z, t=1, noise=torch.zeros_like(z))


@pytest.mark.parametrize("kind", ["autoencoder", "backward"])
def test_the_attack_stays_feasible_beats_random_noise_and_reports_its_own_objective(
    kind: str,
) -> None:
    denoiser = (
        Denoiser.autoencoder(_dae())
        if kind == "autoencoder"
        else Denoiser.backward(_ddpm(), k=4)
    )
    x = _images()
    config = AttackConfig(radius=0.1, steps=10, restarts=2)
    result, noise = denoiser_attack(
        denoiser,
        x,
        config=config,
        eot_samples=2,
        generator=torch.Generator().manual_seed(0),
    )
    assert noise.start.shape == (2, 6, 1, 8, 8)
    assert (
        (result.x_adv - x).abs().max() <= 0.1 + 1e-6
        and 0 <= result.x_adv.min()
        and result.x_adv.max() <= 1
    )
    # Scored under the draws it was tuned to, the shift is the objective: mean over
    # draws of Σ pixels².
    tuned = output_shift(denoiser, clean=x, attacked=result.x_adv, noise=noise)
    torch.testing.assert_close(
        tuned.pow(2) * 64, result.objective, rtol=1e-4, atol=1e-6
    )
    noisy = random_noise(
        x, like=result.x_adv, norm="linf", generator=torch.Generator().manual_seed(1)
    )
    random_shift = output_shift(denoiser, clean=x, attacked=noisy, noise=noise)
    assert (tuned > random_shift).all()


def test_attack_is_reproducible_from_its_generator_and_leaves_the_model_as_is() -> None:
    dae = _dae()
    dae.train()
    config = AttackConfig(radius=0.05, steps=3, restarts=1)
    a, _ = denoiser_attack(
        Denoiser.autoencoder(dae),
        _images(),
        config=config,
        generator=torch.Generator().manual_seed(2),
    )
    b, _ = denoiser_attack(
        Denoiser.autoencoder(dae),
        _images(),
        config=config,
        generator=torch.Generator().manual_seed(2),
    )
    assert torch.equal(a.x_adv, b.x_adv)
    assert dae.training and all(p.requires_grad for p in dae.parameters())


def test_output_shift_separates_the_perturbations_effect_from_the_noises() -> None:
    denoiser = Denoiser.backward(_ddpm(), k=6)
    x = _images()
    shift = output_shift(
        denoiser,
        clean=x,
        attacked=x,
        draws=3,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.all(shift == 0)  # same images, same draws: nothing moved
    assert torch.all(
        noise_spread(denoiser, x, draws=3) > 0
    )  # independent draws: the backward process's own spread
    deterministic = Denoiser.autoencoder(
        _dae(beta_1=1e-4)
    )  # k = 1: ε enters scaled by √(1 − ᾱ_1) ≈ 0.06
    assert noise_spread(deterministic, x, draws=2).max() < 0.05


def test_denoise_runs_every_draw_in_one_batch_as_each_draw_alone() -> None:
    denoiser = Denoiser.backward(_ddpm(), k=3)
    x = _images()
    noise = draw_noise(
        denoiser, batch=6, draws=(3,), generator=torch.Generator().manual_seed(5)
    )
    outputs = denoise(denoiser, x, noise=noise)
    assert outputs.shape == (3, *x.shape)
    for e in range(3):
        alone = DenoiserNoise(start=noise.start[e], steps=noise.steps[e])
        with torch.no_grad():
            torch.testing.assert_close(outputs[e], denoiser(x, noise=alone))


def test_stacked_attacked_sets_score_as_each_set_alone_under_the_same_draws() -> None:
    denoiser = Denoiser.backward(_ddpm(), k=4)
    x = _images()
    sets = torch.stack([x, (x + 0.1).clamp(0, 1), (x - 0.2).clamp(0, 1)])
    noise = draw_noise(
        denoiser, batch=6, draws=(2,), generator=torch.Generator().manual_seed(3)
    )
    stacked = output_shift(denoiser, clean=x, attacked=sets, noise=noise)
    assert stacked.shape == (3, 6) and torch.all(stacked[0] == 0)
    for images, shift in zip(sets, stacked, strict=True):
        alone = output_shift(denoiser, clean=x, attacked=images, noise=noise)
        torch.testing.assert_close(shift, alone)


def test_bad_input_is_refused_with_a_clear_message() -> None:
    ddpm, x = _ddpm(), _images()
    for k in (0, T + 1):
        with pytest.raises(ValueError, match=rf"k must lie in 1..T = {T}"):
            Denoiser.backward(ddpm, k=k)
    denoiser = Denoiser.backward(ddpm, k=3)
    config = AttackConfig(radius=0.1, steps=1, restarts=1)
    with pytest.raises(ValueError, match="eot_samples"):
        denoiser_attack(denoiser, x, config=config, eot_samples=0)
    with pytest.raises(ValueError, match="shape"):
        denoiser_attack(denoiser, torch.rand(2, 1, 16, 16), config=config)
    for wrong in (x[:2], x[None, :2]):
        with pytest.raises(ValueError, match="clean images' shape"):
            output_shift(denoiser, clean=x, attacked=wrong)
    with pytest.raises(ValueError, match="draws"):
        output_shift(denoiser, clean=x, attacked=x, draws=0)
    with pytest.raises(ValueError, match="draws"):
        noise_spread(denoiser, x, draws=0)
