"""Tests for companion.sharded_fid: samples drawn by two processes are one process's
samples, and every model's samples are scored and saved."""

from __future__ import annotations

import json

import torch
from safetensors import safe_open

from companion.sample_quality import FeatureClassifier
from companion.sharded_fid import draw_samples, save_samples, score_samples
from distributed_ranks import SAMPLING, dae, images, models
from test_training_run import two_ranks  # noqa: F401 (the two-process fixture)


def test_two_ranks_draw_one_processes_samples(two_ranks) -> None:  # noqa: F811
    _, saved = two_ranks
    ddpm = models()["ddpm"]
    ddpm.load_state_dict(
        {k[len("ddpm.") :]: v for k, v in saved.items() if k.startswith("ddpm.")}
    )
    alone = draw_samples(ddpm.eval(), {0.1: dae().eval()}, **SAMPLING)
    assert alone is not None and set(alone) == {"ddpm", "daed-0.1"}
    for name, x in alone.items():
        assert x.shape == (10, 1, 8, 8)
        torch.testing.assert_close(saved[f"samples.{name}"], x, rtol=0, atol=0)


def test_every_models_samples_are_scored_and_saved_with_their_scores(
    tmp_path,
) -> None:
    torch.manual_seed(0)
    _, valid = images()
    samples = {"ddpm": valid[:12].flip(-1), "daed-0.1": valid[12:24]}
    scores = score_samples(samples, extractor=FeatureClassifier(), real=valid[24:])
    assert set(scores) == set(samples)
    assert set(scores["ddpm"]) == {"fid", "precision", "recall"}
    path = save_samples(tmp_path / "fid.safetensors", samples, scores=scores)
    with safe_open(str(path), framework="pt") as f:
        assert json.loads(f.metadata()["fid"])["scores"] == scores
        assert set(f.keys()) == set(samples)
