"""Tests for companion.recipes: chapters that rebuild a model get the very same
model."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from companion import recipes
from companion.data import load_images
from companion.profiles import QUICK

TINY = replace(
    QUICK,
    data=replace(QUICK.data, image_size=8),
    vae=replace(QUICK.vae, z_dim=4, channels=(8,), epochs=2, batch_size=64),
    hvae=replace(QUICK.hvae, z_dims=(2, 3), width=8),
    open_questions=replace(QUICK.open_questions, beta_epochs=1),
)


def _splits():
    return load_images(name="digits", split="train"), load_images(
        name="digits", split="valid"
    )


def test_a_recipe_gives_the_same_weights_whatever_ran_before_it(monkeypatch) -> None:
    monkeypatch.setenv(
        "COMPANION_CACHE", "0"
    )  # train twice: the cache would hide a difference
    train, valid = _splits()
    first, _ = recipes.chapter2_vae(
        TINY, train=train, valid=valid, device=torch.device("cpu")
    )
    torch.randn(1000)  # a chapter consumed random numbers in between
    second, _ = recipes.chapter2_vae(
        TINY, train=train, valid=valid, device=torch.device("cpu")
    )
    for (name, a), b in zip(
        first.state_dict().items(), second.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_the_hierarchical_recipe_uses_the_profile_groups_and_the_shared_budget() -> (
    None
):
    train, valid = _splits()
    model, history = recipes.chapter3_hvae(
        TINY, train=train, valid=valid, device=torch.device("cpu")
    )
    assert model.z_dims == (2, 3) and len(history.train_loss) <= TINY.vae.epochs
    budget = recipes.training_budget(TINY, free_bits=0.5)
    assert (budget.epochs, budget.lr, budget.patience, budget.free_bits) == (
        2,
        TINY.vae.lr,
        TINY.vae.patience,
        0.5,
    )


def test_a_second_chapter_loads_the_first_chapters_model_and_history_from_the_cache(
    monkeypatch,
) -> None:
    train, valid = _splits()
    first, history = recipes.chapter2_vae(
        TINY, train=train, valid=valid, device=torch.device("cpu")
    )
    monkeypatch.setattr(
        recipes, "train_vae", lambda **_: pytest.fail("a cache hit must not train")
    )
    second, cached = recipes.chapter2_vae(
        TINY, train=train, valid=valid, device=torch.device("cpu")
    )
    assert cached == history and not second.training
    for (name, a), b in zip(
        first.state_dict().items(), second.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    other_valid = load_images(
        name="digits", split="test"
    )  # other data: a miss, so it trains
    with pytest.raises(pytest.fail.Exception, match="must not train"):
        recipes.chapter2_vae(
            TINY, train=train, valid=other_valid, device=torch.device("cpu")
        )


def test_the_beta_recipe_at_beta_one_is_chapter_twos_vae_and_other_betas_differ() -> (
    None
):
    train, valid = _splits()
    plain, _ = recipes.chapter2_vae(
        TINY, train=train, valid=valid, device=torch.device("cpu")
    )
    same, _ = recipes.beta_vae(
        TINY, beta=1.0, train=train, valid=valid, device=torch.device("cpu")
    )
    other, _ = recipes.beta_vae(
        TINY, beta=5.0, train=train, valid=valid, device=torch.device("cpu")
    )
    for (name, a), b in zip(
        plain.state_dict().items(), same.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    assert any(
        not torch.equal(a, c)
        for a, c in zip(
            plain.state_dict().values(), other.state_dict().values(), strict=True
        )
    )


def test_a_beta_vae_trains_on_from_chapter_twos_trained_vae(monkeypatch) -> None:
    monkeypatch.setenv("COMPANION_CACHE", "0")
    train, valid = _splits()
    cpu = torch.device("cpu")
    plain, _ = recipes.chapter2_vae(TINY, train=train, valid=valid, device=cpu)
    starts = []
    real_train_vae = recipes.train_vae

    def spy(*, model, config, **data):
        starts.append((copy.deepcopy(model.state_dict()), config))
        return real_train_vae(model=model, config=config, **data)

    monkeypatch.setattr(recipes, "train_vae", spy)
    _, history = recipes.beta_vae(TINY, beta=5.0, train=train, valid=valid, device=cpu)
    # Without the cache chapter 2's VAE trains again first, then the β-VAE from it.
    (_, first), (start, config) = starts
    assert first.beta == 1.0 and config.beta == 5.0
    assert config.epochs == TINY.open_questions.beta_epochs == len(history.train_loss)
    for (name, a), b in zip(plain.state_dict().items(), start.values(), strict=True):
        assert torch.equal(a, b), name


def test_the_beta_recipe_refuses_a_non_positive_beta() -> None:
    train, valid = _splits()
    with pytest.raises(ValueError, match="beta must be positive"):
        recipes.beta_vae(
            TINY, beta=0.0, train=train, valid=valid, device=torch.device("cpu")
        )


TINY_DIFFUSION = replace(
    QUICK,
    diffusion=replace(
        QUICK.diffusion,
        T=40,
        channels=8,
        attention_resolutions=(),
        train_steps=3,
        dae_steps=2,
        generator_steps=3,
        batch_size=16,
        classifier_steps=2,
    ),
)


def test_daed_generator_starts_from_chapter_sevens_ddpm_and_trains_after_the_split(
    monkeypatch,
) -> None:
    cpu = torch.device("cpu")
    ddpm = recipes.chapter7_ddpm(TINY_DIFFUSION, device=cpu)
    seen = {}
    # Training is recorded, not run; chapter 7's DDPM is a cache hit from here on.
    monkeypatch.setattr(
        "companion.diffusion.train_ddpm",
        lambda model, **kw: seen.update(kw, start=model.state_dict()),
    )
    recipes.chapter8_generator(TINY_DIFFUSION, beta_1=0.1, device=cpu)
    from companion.diffusion import make_schedule, split_step

    assert (
        seen["t_min"] == split_step(make_schedule("linear", 40), 0.1) + 1
        and seen["config"].steps == 3
    )
    for (name, a), b in zip(
        ddpm.state_dict().items(), seen["start"].values(), strict=True
    ):
        assert torch.equal(a, b), name
    scratch = replace(
        TINY_DIFFUSION,
        diffusion=replace(TINY_DIFFUSION.diffusion, generator_init="scratch"),
    )
    recipes.chapter8_generator(scratch, beta_1=0.1, device=cpu)
    assert any(
        not torch.equal(a, b)
        for a, b in zip(ddpm.state_dict().values(), seen["start"].values(), strict=True)
    )


def test_daed_generator_needs_a_beta_1_with_an_autoencoder() -> None:
    with pytest.raises(ValueError, match="not one of the profile's beta_1s"):
        recipes.chapter8_generator(
            TINY_DIFFUSION, beta_1=0.3, device=torch.device("cpu")
        )


def test_daed_autoencoder_starts_from_chapter_sevens_ddpm_network_or_from_scratch(
    monkeypatch,
) -> None:
    cpu = torch.device("cpu")
    ddpm = recipes.chapter7_ddpm(TINY_DIFFUSION, device=cpu)
    starts = []
    monkeypatch.setattr(
        "companion.diffusion.train_dae",
        lambda model, **kw: starts.append(copy.deepcopy(model.net.state_dict())),
    )
    for init in ("ddpm", "scratch"):
        profile = replace(
            TINY_DIFFUSION, diffusion=replace(TINY_DIFFUSION.diffusion, dae_init=init)
        )
        recipes.chapter8_dae(profile, beta_1=0.1, device=cpu)
    from_ddpm, from_scratch = starts
    same = [
        torch.equal(a, b)
        for a, b in zip(ddpm.net.state_dict().values(), from_ddpm.values(), strict=True)
    ]
    assert all(same)
    assert not all(
        torch.equal(a, b)
        for a, b in zip(
            ddpm.net.state_dict().values(), from_scratch.values(), strict=True
        )
    )
