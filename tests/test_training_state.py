"""Tests for companion.training_state: a training state comes back as it was saved,
written atomically, and a damaged file is refused with a clear message."""

from __future__ import annotations

import math

import pytest
import torch

from companion.training_state import (
    Checkpointing,
    load_training_state,
    save_training_state,
)


def test_a_training_state_comes_back_with_its_tensors_ints_and_structure(
    tmp_path,
) -> None:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    gen = torch.Generator().manual_seed(3)
    state = {
        "model": model.state_dict(),
        "optimiser": opt.state_dict(),
        "best_loss": math.inf,
        "best_state": None,
        "generator": gen.get_state(),
        "history": {"loss": [1.0, 0.5]},
    }
    path = save_training_state(tmp_path / "c" / "run.safetensors", state)
    assert [p.name for p in path.parent.iterdir()] == ["run.safetensors"]
    back = load_training_state(path)
    assert back is not None
    twin = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=1e-3)
    twin.load_state_dict(back["optimiser"])  # int-keyed state, tensors and groups
    assert torch.equal(
        back["optimiser"]["state"][0]["exp_avg"], opt.state[model.weight]["exp_avg"]
    )
    assert back["best_loss"] == math.inf and back["best_state"] is None
    assert torch.equal(back["generator"], gen.get_state())
    assert back["history"] == {"loss": [1.0, 0.5]}


def test_no_file_means_no_state_and_a_damaged_file_is_refused(tmp_path) -> None:
    assert load_training_state(tmp_path / "none.safetensors") is None
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="delete it to train from the start"):
        load_training_state(bad)


def test_checkpoints_fall_due_by_step_count() -> None:
    seen = []
    every = Checkpointing(
        path=None, every_steps=3, every_minutes=None, after_save=seen.append
    )
    assert not every.due(2) and every.due(3)
    every.saved(3)
    assert not every.due(5) and every.due(6) and seen == [3]
    every.resumed(10)  # a resumed run counts from its checkpoint, without the hook
    assert not every.due(12) and every.due(13) and seen == [3]
    with pytest.raises(ValueError, match="every_steps"):
        Checkpointing(path=None, every_steps=0)
