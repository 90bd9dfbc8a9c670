"""Tests for companion.sharded_defence: the references shared among two processes give
one process's attacks and chains, chain by chain."""

from __future__ import annotations

import json

import torch
from safetensors import safe_open

from companion.sharded_defence import defend_references, save_defence
from distributed_ranks import DEFENCE, images, models
from test_training_run import two_ranks  # noqa: F401 (the two-process fixture)


def test_two_ranks_defend_every_reference_as_one_process_does(two_ranks) -> None:  # noqa: F811
    _, saved = two_ranks
    _, valid = images()
    vae = models()["vae"]
    vae.load_state_dict(
        {k[len("vae.") :]: v for k, v in saved.items() if k.startswith("vae.")}
    )
    alone = defend_references(vae.eval(), x_ref=valid[:20], settings=DEFENCE)
    assert alone is not None
    assert {f"defence.{k}" for k in alone} <= set(saved)
    for key, value in alone.items():
        assert value.shape[0] == 20, key
        torch.testing.assert_close(
            saved[f"defence.{key}"], value, rtol=0, atol=0, equal_nan=True, msg=key
        )


def test_the_results_file_holds_every_tensor_and_a_summary_per_t(tmp_path) -> None:
    _, valid = images()
    vae = models()["vae"].eval()
    results = defend_references(vae, x_ref=valid[:7], settings=DEFENCE)
    assert results is not None
    path = save_defence(tmp_path / "out" / "d.safetensors", results, settings=DEFENCE)
    assert [p.name for p in path.parent.iterdir()] == ["d.safetensors"]
    with safe_open(str(path), framework="pt") as f:
        header = json.loads(f.metadata()["defence"])
        assert set(f.keys()) == set(results)
    assert set(header["mean_ms_ssim"]) == {"T0", "T2", "T4"}
    assert header["settings"]["steps_grid"] == [0, 2, 4]
