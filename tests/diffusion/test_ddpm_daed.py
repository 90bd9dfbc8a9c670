"""Tests for companion.diffusion.ddpm and daed: losses, the reverse process, EMA
training, DAED sampling from shared trajectories, and bad input."""

from __future__ import annotations

import pytest
import torch

from companion.diffusion import (
    DDPM,
    DenoisingAutoencoder,
    DiffusionTrainConfig,
    daed_sample,
    daed_samples,
    make_schedule,
    split_step,
    train_dae,
    train_ddpm,
)
from companion.diffusion.ddpm import ema_update
from companion.models.unet import UNet, UNetConfig

CONFIG = UNetConfig(
    image_size=8, channels=8, channel_mults=(1, 2), attention_resolutions=()
)


def _ddpm(T: int = 30) -> DDPM:
    torch.manual_seed(0)
    return DDPM(UNet(CONFIG), make_schedule("linear", T))


def _images(n: int = 16) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def test_an_untrained_net_predicting_zero_noise_has_unit_loss() -> None:
    # The UNet's last layer starts at zero, so ε̂ = 0 and L_simple = E ε² = 1.
    assert _ddpm().loss(torch.zeros(256, 1, 8, 8)).item() == pytest.approx(
        1.0, abs=0.05
    )


def test_posterior_coefficients_reproduce_the_posterior_mean_of_ho_et_al() -> None:
    ddpm = _ddpm(50)
    a_bar, b = ddpm.alpha_bars.double(), ddpm.betas.double()
    # coef_x + coef_z·√ᾱ_t = √ᾱ_{t−1}: the posterior mean of z_t = √ᾱ_t x is √ᾱ_{t−1} x
    t = 10
    assert (
        ddpm.coef_x[t - 1] + ddpm.coef_z[t - 1] * a_bar[t - 1].sqrt()
    ).item() == pytest.approx(a_bar[t - 2].sqrt().item(), rel=1e-5)
    assert (
        ddpm.post_std[0].item() == pytest.approx(0.0, abs=1e-6)
        and ddpm.post_std[1] < b[1].sqrt()
    )


def test_sampling_gives_pixels_and_records_the_requested_states() -> None:
    ddpm = _ddpm()
    x, rec = ddpm.sample(
        5, generator=torch.Generator().manual_seed(0), record_at=(3, 7), progress=False
    )
    assert x.shape == (5, 1, 8, 8) and 0 <= x.min() and x.max() <= 1
    assert set(rec) == {3, 7} and rec[3].shape == (5, 1, 8, 8)


def test_sampling_is_reproducible_from_the_generator() -> None:
    ddpm = _ddpm()
    a, _ = ddpm.sample(4, generator=torch.Generator().manual_seed(3), progress=False)
    b, _ = ddpm.sample(4, generator=torch.Generator().manual_seed(3), progress=False)
    assert torch.equal(a, b)


def test_denoise_returns_noisy_states_and_pixels() -> None:
    z, out = _ddpm().denoise(
        _images(4), t=5, generator=torch.Generator().manual_seed(0), progress=False
    )
    assert z.shape == out.shape == (4, 1, 8, 8) and 0 <= out.min() and out.max() <= 1


def test_reverse_rejects_bad_step_ranges_and_shapes() -> None:
    ddpm = _ddpm()
    with pytest.raises(ValueError, match="t_stop < t_start"):
        ddpm.reverse(torch.zeros(1, 1, 8, 8), t_start=31)
    with pytest.raises(ValueError, match=r"\(B, 1, 8, 8\)"):
        ddpm.reverse(torch.zeros(1, 1, 16, 16), t_start=5)
    with pytest.raises(ValueError, match="record_at"):
        ddpm.reverse(torch.zeros(1, 1, 8, 8), t_start=5, record_at=(5,))


def test_images_of_the_wrong_shape_or_range_are_rejected() -> None:
    ddpm = _ddpm()
    with pytest.raises(ValueError, match="expected"):
        ddpm.denoise(torch.rand(2, 1, 16, 16), t=3)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        train_ddpm(
            ddpm, images=torch.randn(4, 1, 8, 8), config=DiffusionTrainConfig(steps=1)
        )


def test_training_lowers_the_loss_is_seeded_and_ends_with_ema_weights() -> None:
    images = _images(64)
    config = DiffusionTrainConfig(
        steps=30, batch_size=16, lr=3e-3, ema_decay=0.9, warmup_steps=1, progress=False
    )
    a, b = _ddpm(), _ddpm()
    history = train_ddpm(a, images=images, config=config)
    train_ddpm(b, images=images, config=config)
    assert sum(history.loss[-5:]) / 5 < sum(history.loss[:5]) / 5
    assert all(
        torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True)
    )
    assert not a.training


def test_ema_update_moves_each_parameter_towards_the_model() -> None:
    ema, model = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = ema.weight.detach().clone()
    ema_update(ema, model, 0.75)
    assert torch.allclose(ema.weight, 0.75 * before + 0.25 * model.weight)


def test_dae_uses_the_split_step_and_rejects_bad_beta_1() -> None:
    schedule = make_schedule("linear", 100)
    dae = DenoisingAutoencoder(UNet(CONFIG), schedule, beta_1=0.1)
    assert (
        dae.k == split_step(schedule, 0.1) == 11
    )  # 1 − ᾱ first reaches 0.1 at step 11 of 100
    for bad in (0.0, 1.0, 1.2):
        with pytest.raises(ValueError, match=r"\(0, 1\)"):
            DenoisingAutoencoder(UNet(CONFIG), schedule, beta_1=bad)
    with pytest.raises(ValueError, match=r"\(B, 1, 8, 8\)"):
        dae(torch.zeros(2, 1, 4, 4))


def test_dae_training_lowers_its_error() -> None:
    torch.manual_seed(0)
    dae = DenoisingAutoencoder(UNet(CONFIG), make_schedule("linear", 100), beta_1=0.1)
    config = DiffusionTrainConfig(
        steps=40, batch_size=16, lr=3e-3, ema_decay=0.5, warmup_steps=1, progress=False
    )
    history = train_dae(dae, images=_images(64), config=config)
    assert sum(history.loss[-5:]) / 5 < sum(history.loss[:5]) / 5
    _, out = dae.denoise(_images(3))
    assert out.shape == (3, 1, 8, 8)


def test_daed_samples_share_the_ddpm_trajectories() -> None:
    ddpm = _ddpm()
    daes = {
        b: DenoisingAutoencoder(UNet(CONFIG), ddpm.schedule, beta_1=b).eval()
        for b in (0.2, 0.05)
    }
    out = daed_samples(
        ddpm, daes, 6, generator=torch.Generator().manual_seed(0), progress=False
    )
    assert set(out) == {None, 0.2, 0.05} and all(
        v.shape == (6, 1, 8, 8) for v in out.values()
    )
    other = DenoisingAutoencoder(UNet(CONFIG), make_schedule("cosine", 30), beta_1=0.1)
    with pytest.raises(ValueError, match="another forward process"):
        daed_samples(ddpm, {0.1: other}, 2, progress=False)


def test_daed_with_its_own_generator_shares_the_ddpms_random_numbers_down_to_k() -> (
    None
):
    ddpm = _ddpm()
    dae = DenoisingAutoencoder(UNet(CONFIG), ddpm.schedule, beta_1=0.1)
    own = daed_sample(ddpm, dae, 5, generator=torch.Generator().manual_seed(7))
    shared = daed_samples(
        ddpm, {0.1: dae}, 5, generator=torch.Generator().manual_seed(7), progress=False
    )
    torch.testing.assert_close(
        own, shared[0.1]
    )  # the same network as generator: the same samples
    assert own.shape == (5, 1, 8, 8) and 0 <= own.min() and own.max() <= 1
    other = DenoisingAutoencoder(UNet(CONFIG), make_schedule("linear", 40), beta_1=0.1)
    with pytest.raises(ValueError, match="another forward process"):
        daed_sample(ddpm, other, 2)
    with pytest.raises(ValueError, match="n must be positive"):
        daed_sample(ddpm, dae, 0)
