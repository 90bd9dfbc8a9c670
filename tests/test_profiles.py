"""Tests for companion.profiles: choosing the profile, its immutability, and seeding."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import replace

import numpy as np
import pytest
import torch

from companion import profiles
from companion.data import OFFLINE_DATASETS
from companion.profiles import (
    FULL,
    GPU,
    PAPER_BETA_1S,
    PROFILE_ENV,
    QUICK,
    active_profile,
    get_profile,
    seed_everything,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("quick", QUICK), ("gpu", GPU), ("full", FULL), (" FULL ", FULL)],
)
@pytest.mark.parametrize("cuda", [True, False])
def test_environment_variable_overrides_the_cuda_based_default(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: profiles.Profile, cuda: bool
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setenv(PROFILE_ENV, value)
    assert active_profile() is expected


def test_unknown_profile_name_in_the_environment_raises_value_error_naming_the_choices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(PROFILE_ENV, "medium")
    with pytest.raises(ValueError, match=r"'medium'.*\['full', 'gpu', 'quick'\]"):
        active_profile()


def test_get_profile_rejects_an_unknown_name_and_names_the_environment_variable() -> (
    None
):
    with pytest.raises(ValueError, match=PROFILE_ENV):
        get_profile("fast")


@pytest.mark.parametrize(("cuda", "expected"), [(False, QUICK), (True, GPU)])
def test_default_without_the_variable_is_quick_on_cpu_and_gpu_with_cuda(
    monkeypatch: pytest.MonkeyPatch, cuda: bool, expected: profiles.Profile
) -> None:
    monkeypatch.delenv(PROFILE_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert active_profile() is expected


def test_empty_variable_falls_back_to_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(PROFILE_ENV, "  ")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert active_profile() is QUICK


def test_profiles_are_registered_under_their_own_names() -> None:
    assert {name: p.name for name, p in profiles.PROFILES.items()} == {
        "quick": "quick",
        "gpu": "gpu",
        "full": "full",
    }
    # the quick profile needs no download: its data ship inside installed packages
    assert (
        QUICK.data.name in OFFLINE_DATASETS and QUICK.diffusion.data in OFFLINE_DATASETS
    )


def test_quick_vae_chapters_use_real_mnist_digits_at_the_papers_resolution() -> None:
    assert (QUICK.data.name, QUICK.data.image_size) == ("mnist_5k", 28)


def test_the_defence_radius_must_be_one_of_the_sweep_radii() -> None:
    with pytest.raises(ValueError, match="radius 0.3 must be one of sweep_radii"):
        profiles.DefenceSettings(radius=0.3)


def test_long_chains_run_on_some_references_and_leave_room_for_draws() -> None:
    with pytest.raises(ValueError, match="long_per_class 6 must be at most per_class"):
        profiles.DefenceSettings(per_class=5, long_per_class=6)
    with pytest.raises(ValueError, match="posterior_draws must be between 4 and"):
        profiles.DefenceSettings(posterior_draws=3)
    with pytest.raises(ValueError, match=r"half the long chains' last T \(250\)"):
        profiles.DefenceSettings(posterior_draws=251)
    for profile in profiles.PROFILES.values():
        smoke = profiles.smoke_profile(profile).defence
        assert smoke.long_steps_grid[-1] // 2 >= smoke.posterior_draws


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        (QUICK, "seed"),
        (QUICK.data, "image_size"),
        (FULL.vae, "z_dim"),
        (FULL.latent_models, "x_dim"),
    ],
)
def test_profiles_and_their_settings_are_frozen_dataclasses(
    obj: object, field: str
) -> None:
    assert dataclasses.is_dataclass(obj)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(obj, field, 1)


def _draws(generator: torch.Generator) -> tuple:
    return (
        random.random(),
        np.random.rand(3).tolist(),
        torch.rand(3).tolist(),
        torch.rand(3, generator=generator).tolist(),
    )


def test_seed_everything_repeats_python_numpy_torch_and_the_returned_generator() -> (
    None
):
    first = _draws(seed_everything(123))
    second = _draws(seed_everything(123))
    other = _draws(seed_everything(124))
    assert first == second
    for a, b in zip(first, other, strict=True):
        assert a != b


def test_companion_seed_replaces_the_profile_seed_and_rejects_non_integers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COMPANION_PROFILE", "quick")
    monkeypatch.setenv("COMPANION_SEED", "7")
    assert profiles.active_profile().seed == 7
    assert profiles.active_profile().vae == profiles.QUICK.vae
    monkeypatch.setenv("COMPANION_SEED", "seven")
    with pytest.raises(ValueError, match="COMPANION_SEED must be an integer"):
        profiles.active_profile()


@pytest.mark.parametrize(
    "profile", list(profiles.PROFILES.values()), ids=lambda p: p.name
)
def test_every_profile_builds_vaes_that_reconstruct_images_of_its_data_size(
    profile,
) -> None:
    from companion.models import ConvVAE, VAEConfig

    size = profile.data.image_size
    vae = ConvVAE(
        VAEConfig(
            image_size=size, z_dim=profile.vae.z_dim, channels=profile.vae.channels
        )
    )
    x = torch.rand(2, 1, size, size)
    assert vae.reconstruct(x).shape == x.shape
    assert all(max(profile.vae.iwae_ks) % k == 0 for k in profile.vae.iwae_ks)
    from companion.models import HierarchicalVAE, HVAEConfig

    for z_dims in (profile.hvae.z_dims, profile.hvae.collapse_z_dims):
        hvae = HierarchicalVAE(
            HVAEConfig(
                image_size=size,
                z_dims=z_dims,
                channels=profile.vae.channels,
                width=profile.hvae.width,
            )
        )
        assert hvae.reconstruct(x).shape == x.shape


@pytest.mark.parametrize(
    "profile", list(profiles.PROFILES.values()), ids=lambda p: p.name
)
def test_open_questions_include_the_plain_vae_the_encoder_alone_and_an_attack_radius(
    profile,
) -> None:
    oq = profile.open_questions
    assert (
        1.0 in oq.betas and len(oq.betas) >= 2
    )  # β = 1 is chapter 2's VAE and at least one more β
    assert 0 in oq.defence_steps_grid and len(oq.defence_steps_grid) >= 2
    assert oq.radius in profile.attack.radii  # one of the radii chapter 4 attacks with
    assert (
        min(oq.adaptive_steps_grid) >= 1
        and oq.adaptive_hmc_steps >= 1
        and oq.eot_samples >= 1
    )


def test_full_profile_diffusion_holds_the_authors_fashion_mnist_model() -> None:
    d = FULL.diffusion
    assert (
        d.data,
        d.channels,
        d.res_blocks,
        d.dropout,
        d.T,
        d.batch_size,
        d.lr,
        d.ema_decay,
    ) == ("fashion_mnist", 64, 3, 0.3, 500, 128, 1e-4, 0.9999)
    assert d.image_size == 32  # 28×28 zero-padded: the UNet halves the side three times


def test_quick_diffusion_settings_are_offline_and_use_the_papers_beta_1_values() -> (
    None
):
    d = QUICK.diffusion
    assert d.data in OFFLINE_DATASETS and d.ood_data == "glyphs"
    assert d.image_size >= 14  # large enough for the samples to be recognisable digits
    assert (
        set(d.beta_1s) <= set(PAPER_BETA_1S) and FULL.diffusion.beta_1s == PAPER_BETA_1S
    )


@pytest.mark.parametrize("profile", [QUICK, FULL], ids=lambda p: p.name)
def test_chapter_nine_attacks_only_the_autoencoders_chapter_eight_trains(
    profile,
) -> None:
    assert set(profile.open_questions.denoiser_beta_1s) <= set(
        profile.diffusion.beta_1s
    )


def test_daed_generators_pair_with_an_autoencoder_and_start_from_a_known_place() -> (
    None
):
    assert (
        QUICK.diffusion.generator_init == "ddpm"
        and FULL.diffusion.generator_init == "scratch"
    )
    with pytest.raises(ValueError, match="generator_init must be one of"):
        replace(QUICK.diffusion, generator_init="pretrained")
    assert QUICK.diffusion.dae_init == "ddpm" and FULL.diffusion.dae_init == "scratch"
    with pytest.raises(ValueError, match="dae_init must be one of"):
        replace(QUICK.diffusion, dae_init="pretrained")
    with pytest.raises(ValueError, match="must be among beta_1s"):
        replace(QUICK.diffusion, generator_beta_1s=(0.3,))


def test_the_gpu_profile_keeps_the_authors_vae_and_their_diffusion_resolution() -> None:
    assert (GPU.data.name, GPU.data.image_size) == ("mnist", 28)
    assert (GPU.vae.channels, GPU.vae.z_dim) == ((32, 64, 96, 128), 64)
    assert (GPU.vae.channels, GPU.vae.z_dim) == (FULL.vae.channels, FULL.vae.z_dim)
    d = GPU.diffusion
    assert (d.data, d.image_size, d.T) == ("fashion_mnist", 32, 500)
    # a smaller UNet than the authors', and fewer steps than the paper's: an hour in all
    assert d.channels < FULL.diffusion.channels and d.train_steps < 10_000


def _counts(settings: object) -> dict[str, object]:
    return {
        f.name: getattr(settings, f.name)
        for f in dataclasses.fields(settings)  # type: ignore[arg-type]
    }


@pytest.mark.parametrize(
    "profile", list(profiles.PROFILES.values()), ids=lambda p: p.name
)
def test_smoke_keeps_data_architectures_and_grid_shapes_and_shrinks_counts(
    profile: profiles.Profile,
) -> None:
    smoke = profiles.smoke_profile(profile)
    assert smoke.smoke and not profile.smoke and smoke.name == profile.name
    assert smoke.data == profile.data
    for kept in ("z_dim", "channels", "batch_size", "lr"):
        assert getattr(smoke.vae, kept) == getattr(profile.vae, kept)
    assert (smoke.hvae.z_dims, smoke.hvae.width) == (
        profile.hvae.z_dims,
        profile.hvae.width,
    )
    d, sd = profile.diffusion, smoke.diffusion
    for kept in ("data", "ood_data", "image_size", "channel_mults"):
        assert getattr(sd, kept) == getattr(d, kept)
    # the UNet keeps its structure at the narrowest width its group norms allow
    assert sd.channels == min(d.channels, profiles.SMOKE_UNET_CHANNELS) == 8
    assert (sd.res_blocks, sd.attention_resolutions, sd.beta_1s) == (
        d.res_blocks,
        d.attention_resolutions,
        d.beta_1s,
    )
    # every grid keeps its length (every table row still runs) and a leading zero
    for before, after in [
        (profile.defence.steps_grid, smoke.defence.steps_grid),
        (profile.attack.step_grid, smoke.attack.step_grid),
        (
            profile.open_questions.defence_steps_grid,
            smoke.open_questions.defence_steps_grid,
        ),
        (profile.vae.iwae_ks, smoke.vae.iwae_ks),
    ]:
        assert len(after) == len(before) and (after[0] == 0) == (before[0] == 0)
        assert list(after) == sorted(set(after))
    assert max(smoke.vae.iwae_ks) == smoke.vae.nll_k
    assert all(max(smoke.vae.iwae_ks) % k == 0 for k in smoke.vae.iwae_ks)
    # the expensive counts are small
    assert smoke.vae.epochs == 1 and smoke.diffusion.train_steps <= 2
    assert smoke.defence.per_class == smoke.attack.per_class == 1
    assert smoke.diffusion.T <= 21 and smoke.diffusion.n_samples <= 16


def test_companion_smoke_shrinks_the_active_profile_and_rejects_other_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(PROFILE_ENV, "full")
    monkeypatch.setenv("COMPANION_SMOKE", "1")
    assert active_profile() == profiles.smoke_profile(FULL)
    monkeypatch.setenv("COMPANION_SMOKE", "0")
    assert active_profile() is FULL
    monkeypatch.setenv("COMPANION_SMOKE", "yes")
    with pytest.raises(ValueError, match="COMPANION_SMOKE must be 0 or 1"):
        active_profile()
