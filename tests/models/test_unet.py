"""Tests for companion.models.unet: output shapes from 8×8 to 32×32, time input,
bad input."""

from __future__ import annotations

import pytest
import torch

from companion.models.unet import UNet, UNetConfig, timestep_embedding


@pytest.mark.parametrize(
    "config",
    [
        UNetConfig(
            image_size=8, channels=8, channel_mults=(1, 2), attention_resolutions=(4,)
        ),
        UNetConfig(
            image_size=16,
            channels=8,
            channel_mults=(1, 2, 2),
            res_blocks=2,
            attention_resolutions=(8,),
        ),
        UNetConfig(
            image_size=28,
            channels=8,
            channel_mults=(1, 2, 2),
            attention_resolutions=(7,),
        ),
        UNetConfig(
            image_size=32,
            channels=8,
            channel_mults=(1, 2, 2, 2),
            res_blocks=3,
            attention_resolutions=(16,),
            dropout=0.3,
        ),
    ],
    ids=lambda c: f"{c.image_size}px",
)
def test_output_has_the_input_shape_for_8_to_32_pixel_images(
    config: UNetConfig,
) -> None:
    net = UNet(config)
    x = torch.randn(3, 1, config.image_size, config.image_size)
    out = net(x, torch.tensor([1, 50, 999]))
    assert out.shape == x.shape
    assert net(x, 7).shape == x.shape  # one step for the whole batch


def test_full_profile_unet_is_the_authors_size() -> None:
    from companion.profiles import FULL
    from companion.recipes import diffusion_unet_config

    config = diffusion_unet_config(FULL)
    assert (config.channels, config.res_blocks, config.dropout, config.image_size) == (
        64,
        3,
        0.3,
        32,
    )
    net = UNet(config)
    assert net(torch.randn(2, 1, 32, 32), torch.tensor([1, 500])).shape == (
        2,
        1,
        32,
        32,
    )


@pytest.mark.parametrize("name", ["quick", "gpu", "full"])
def test_every_profiles_unet_runs_at_its_real_width(name: str) -> None:
    # the smoke runs shrink the UNet's width (profiles.SMOKE_UNET_CHANNELS); the real
    # one is built and run here
    from companion.profiles import get_profile
    from companion.recipes import diffusion_unet_config

    profile = get_profile(name)
    config = diffusion_unet_config(profile)
    assert config.channels == profile.diffusion.channels
    size = config.image_size
    x = torch.randn(2, 1, size, size)
    assert UNet(config)(x, torch.tensor([1, profile.diffusion.T])).shape == x.shape


def test_the_output_depends_on_the_step_once_trained_weights_are_nonzero() -> None:
    torch.manual_seed(0)
    net = UNet(UNetConfig(image_size=8, channels=8))
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(2, 1, 8, 8)
    assert not torch.allclose(net(x, 1), net(x, 100))


def test_timestep_embedding_has_the_requested_width() -> None:
    e = timestep_embedding(torch.tensor([0, 1, 2]), 16)
    assert e.shape == (3, 16) and torch.allclose(e[0, :8], torch.ones(8))


def test_images_of_the_wrong_shape_are_rejected_with_the_expected_shape() -> None:
    net = UNet(UNetConfig(image_size=8, channels=8))
    with pytest.raises(ValueError, match=r"\(B, 1, 8, 8\)"):
        net(torch.randn(2, 1, 16, 16), 1)
    with pytest.raises(ValueError, match=r"\(B, 1, 8, 8\)"):
        net(torch.randn(1, 8, 8), 1)
    with pytest.raises(ValueError, match="t must be"):
        net(torch.randn(2, 1, 8, 8), torch.tensor([1, 2, 3]))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(image_size=28, channel_mults=(1, 2, 2, 2)), "not divisible"),
        (dict(channels=12), "multiple of 8"),
        (dict(res_blocks=0), "res_blocks"),
        (dict(dropout=1.0), "dropout"),
    ],
)
def test_invalid_configurations_are_rejected(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        UNetConfig(**kwargs)
