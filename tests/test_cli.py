"""Tests for companion.cli: ``train`` fills the cache a chapter then loads from (after
one process and after two), and bad input fails with a clear message, writing
nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

from companion import cache, cli, recipes
from companion.data import load_images
from companion.parallel import World
from companion.profiles import QUICK, smoke_profile
from distributed_ranks import CLI_ARGS
from test_training_run import two_ranks  # noqa: F401 (the two-process fixture)

SMOKE = smoke_profile(QUICK)


def _chapter2_vae() -> torch.nn.Module:
    """Chapter 2's own recipe call on the smoke profile's data."""
    size = SMOKE.data.image_size
    train, valid = (
        load_images(name=SMOKE.data.name, split=s, image_size=size)
        for s in ("train", "valid")
    )
    vae, _ = recipes.chapter2_vae(
        SMOKE, train=train, valid=valid, device=torch.device("cpu")
    )
    return vae


def _chapter2(monkeypatch, cache) -> torch.nn.Module:
    """Chapter 2's call, with the cache at ``cache`` and training forbidden."""
    monkeypatch.setenv("COMPANION_CACHE_DIR", str(cache))
    monkeypatch.setattr(
        recipes, "train_vae", lambda **_: pytest.fail("a cache hit must not train")
    )
    return _chapter2_vae()


def test_the_chapter_loads_the_vae_two_processes_trained(
    two_ranks,  # noqa: F811
    monkeypatch,
) -> None:
    out, _ = two_ranks
    vae = _chapter2(monkeypatch, out / "cache")
    files = list((out / "cache").glob("vae-*.safetensors"))
    assert len(files) == 1 and not list((out / "cache").glob("checkpoints/*"))
    with safe_open(str(files[0]), framework="pt") as f:
        meta = json.loads(f.metadata()["companion"])
    assert meta["provenance"]["processes"] == 2
    assert not vae.training


def test_one_process_trains_the_chapters_vae_weight_for_weight(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("COMPANION_CACHE", "0")  # the chapter trains it itself
    own = _chapter2_vae()
    monkeypatch.delenv("COMPANION_CACHE")
    assert cli.main([*CLI_ARGS, "--cache-dir", str(tmp_path), "--device", "cpu"]) == 0
    cached = _chapter2(monkeypatch, tmp_path)
    for (name, a), b in zip(
        own.state_dict().items(), cached.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_help_explains_the_commands_without_the_book() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "companion", "train", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for words in ("chapter 2's convolutional VAE", "torchrun", "resume", "--cache-dir"):
        assert words in done.stdout


def test_an_unknown_model_name_fails_before_anything_is_written(tmp_path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(SystemExit, match="unknown model 'vea'; choose from vae, hvae"):
        cli.main(["train", "vea", "--cache-dir", str(cache)])
    assert not cache.exists()


def test_a_cache_directory_that_cannot_be_written_fails_clearly(tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    before = dict(os.environ)
    with pytest.raises(SystemExit, match="cannot write to .*a-file/cache"):
        cli.main([*CLI_ARGS, "--cache-dir", str(blocker / "cache")])
    assert dict(os.environ) == before  # the command left the environment as it was


def test_a_global_batch_that_does_not_divide_among_the_processes_fails_clearly(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("COMPANION_CACHE_DIR", str(tmp_path))
    args = cli.build_parser().parse_args(["train", "vae", "ddpm"])
    with pytest.raises(SystemExit, match=r"vae \(64\), ddpm \(128\) does not divide"):
        cli._train(args, World(rank=0, size=3), QUICK)
    assert not list(tmp_path.iterdir())


def test_the_recipes_cache_keys_are_those_the_book_was_built_with(monkeypatch) -> None:
    """The quick profile's file names before the command line existed: a run-aware
    recipe must not move the models the book's stored outputs came from."""
    names = []

    class Found(Exception):
        pass

    def capture(*, key, name="model", **_):
        names.append(cache.cache_path(key, name=name).name)
        raise Found

    monkeypatch.setattr(recipes, "cached_training", capture)
    monkeypatch.setattr(cache, "cached_model", capture)
    cpu = torch.device("cpu")
    size = QUICK.data.image_size
    train, valid = (
        load_images(name=QUICK.data.name, split=s, image_size=size)
        for s in ("train", "valid")
    )
    for recipe in (
        lambda: recipes.chapter2_vae(QUICK, train=train, valid=valid, device=cpu),
        lambda: recipes.chapter3_hvae(QUICK, train=train, valid=valid, device=cpu),
        lambda: recipes.chapter7_ddpm(QUICK, device=cpu),
        lambda: recipes.chapter8_dae(QUICK, beta_1=0.1, device=cpu),
        lambda: recipes.chapter8_generator(QUICK, beta_1=0.1, device=cpu),
    ):
        with pytest.raises(Found):
            recipe()
    assert names == [
        "vae-adf8241e19a7ebc5.safetensors",
        "hvae-9579a39f32cd8c4d.safetensors",
        "ddpm-1705efbd86da9b21.safetensors",
        "dae-0.1-0d2aeae969c6e521.safetensors",
        "generator-0.1-f8a6a20a13235c97.safetensors",
    ]


def test_the_console_script_carries_the_distributions_name() -> None:
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())[
        "project"
    ]
    assert project["scripts"] == {project["name"]: "companion.cli:main"}
    assert cli.PROG == project["name"]
