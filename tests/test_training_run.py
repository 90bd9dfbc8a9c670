"""Tests for companion.training_run, through the loops that take a run
(:func:`companion.train.train_vae`, :func:`companion.diffusion.ddpm.fit`): two gloo
processes with batch b train to one process's weights with batch 2b, a run stopped
after a checkpoint resumes to the uninterrupted run's weights, and what cannot be shared
out is refused with what to do."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from companion.diffusion.ddpm import train_ddpm
from companion.parallel import World
from companion.train import train_vae
from companion.training_run import TrainingRun
from companion.training_state import Checkpointing
from distributed_ranks import (
    DIFFUSION_BUDGET,
    VAE_BUDGET,
    images,
    models,
    two_rank_results,
)


def _assert_same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, x), y in zip(
        a.state_dict().items(), b.state_dict().values(), strict=True
    ):
        assert torch.equal(x, y), name


@pytest.fixture
def two_ranks(tmp_path_factory: pytest.TempPathFactory):
    """Rank 0's results of distributed_ranks.rank_main on two gloo processes (run once
    per session)."""
    return two_rank_results(tmp_path_factory.getbasetemp())


@pytest.mark.parametrize("name", ["vae", "hvae", "ddpm"])
def test_two_ranks_with_batch_b_reach_one_process_with_batch_2b(
    two_ranks, name: str
) -> None:
    _, saved = two_ranks
    train, valid = images()
    model = models()[name]
    if name == "ddpm":
        train_ddpm(model, images=train, config=DIFFUSION_BUDGET)
    else:
        train_vae(
            model=model, train_images=train, valid_images=valid, config=VAE_BUDGET
        )
    for key, value in model.state_dict().items():
        torch.testing.assert_close(
            saved[f"{name}.{key}"], value, rtol=1e-4, atol=1e-5, msg=key
        )


class _Stopped(Exception):
    """What the test hook raises after the first checkpoint: the run dies there."""


def _stop(step: int) -> None:
    raise _Stopped(step)


def test_a_vae_run_stopped_after_a_checkpoint_resumes_to_the_uninterrupted_weights(
    tmp_path,
) -> None:
    train, valid = images()
    budget = replace(VAE_BUDGET, epochs=3)
    uninterrupted = models()["hvae"]
    stopped, resumed = copy.deepcopy(uninterrupted), copy.deepcopy(uninterrupted)
    expected = train_vae(
        model=uninterrupted, train_images=train, valid_images=valid, config=budget
    )
    path = tmp_path / "hvae.safetensors"

    def every_epoch(after_save=None) -> Checkpointing:
        return Checkpointing(path=path, every_steps=1, after_save=after_save)

    with pytest.raises(_Stopped):
        train_vae(
            model=stopped,
            train_images=train,
            valid_images=valid,
            config=budget,
            run=TrainingRun(),
            checkpoint=every_epoch(_stop),
        )
    assert path.is_file()
    torch.randn(100)  # a new process would start from another global RNG state
    history = train_vae(
        model=resumed,  # a fresh model: everything comes from the checkpoint
        train_images=train,
        valid_images=valid,
        config=budget,
        run=TrainingRun(),
        checkpoint=every_epoch(),
    )
    _assert_same(uninterrupted, resumed)
    assert history.valid_loss == expected.valid_loss


def test_a_diffusion_run_stopped_after_a_checkpoint_resumes_to_the_same_weights(
    tmp_path,
) -> None:
    train, _ = images()
    uninterrupted = models()["ddpm"]
    stopped, resumed = copy.deepcopy(uninterrupted), copy.deepcopy(uninterrupted)
    expected = train_ddpm(uninterrupted, images=train, config=DIFFUSION_BUDGET)
    path = tmp_path / "ddpm.safetensors"
    with pytest.raises(_Stopped):
        train_ddpm(
            stopped,
            images=train,
            config=DIFFUSION_BUDGET,
            run=TrainingRun(),
            checkpoint=Checkpointing(path=path, every_steps=2, after_save=_stop),
        )
    history = train_ddpm(
        resumed,
        images=train,
        config=DIFFUSION_BUDGET,
        run=TrainingRun(),
        checkpoint=Checkpointing(path=path, every_steps=2),
    )
    _assert_same(uninterrupted, resumed)
    assert history.loss == expected.loss


def test_batches_that_do_not_divide_among_the_processes_are_refused() -> None:
    train, valid = images()
    three = TrainingRun(world=World(rank=0, size=3))  # fails before any collective
    with pytest.raises(ValueError, match="64 does not divide into 3 processes"):
        train_vae(
            model=models()["vae"],
            train_images=train,
            valid_images=valid,
            config=VAE_BUDGET,
            run=three,
        )
    with pytest.raises(ValueError, match="16 does not divide into 3 processes"):
        train_ddpm(models()["ddpm"], images=train, config=DIFFUSION_BUDGET, run=three)
    two = TrainingRun(world=World(rank=0, size=2))
    with pytest.raises(ValueError, match="holds 1 of the 65 images, fewer than the 2"):
        train_vae(
            model=models()["vae"],
            train_images=train[:65],
            valid_images=valid,
            config=VAE_BUDGET,
            run=two,
        )


def test_mixed_precision_is_refused_on_a_cpu() -> None:
    with pytest.raises(ValueError, match="CUDA only"):
        TrainingRun(precision="bf16")
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainingRun(precision="fp8")


def test_a_checkpoint_resumes_only_where_resuming_is_on_and_with_its_process_count(
    tmp_path,
) -> None:
    from companion.training_state import save_training_state

    path = tmp_path / "ddpm.safetensors"
    one = TrainingRun()
    assert one.resumed_state(Checkpointing(path=path)) is None  # nothing saved yet
    save_training_state(path, {"kind": "diffusion", "world_size": 1, "step": 4})
    assert TrainingRun(resume=False).resumed_state(Checkpointing(path=path)) is None
    checkpoint = Checkpointing(path=path, every_steps=3, every_minutes=None)
    assert one.resumed_state(checkpoint) == {
        "kind": "diffusion",
        "world_size": 1,
        "step": 4,
    }
    assert not checkpoint.due(6) and checkpoint.due(7)  # counted from step 4
    two = TrainingRun(world=World(rank=0, size=2))
    with pytest.raises(ValueError, match="written by 1 processes; resume it with as"):
        two.resumed_state(Checkpointing(path=path))
