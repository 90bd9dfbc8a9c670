"""Tests for companion.timing: what the stopwatch reads, when, and its GPU sync."""

from __future__ import annotations

import time

import pytest
import torch

from companion.timing import Stopwatch


def test_seconds_cover_the_block() -> None:
    with Stopwatch() as clock:
        time.sleep(0.05)
    assert 0.05 <= clock.seconds < 5.0


def test_reading_before_the_block_ends_says_when_to_read() -> None:
    clock = Stopwatch()
    with pytest.raises(RuntimeError, match="after its `with"):
        _ = clock.seconds
    with clock:
        with pytest.raises(RuntimeError, match="has not finished"):
            _ = clock.seconds
    assert clock.seconds >= 0.0


def test_a_second_block_replaces_the_first_reading() -> None:
    clock = Stopwatch()
    with clock:
        time.sleep(0.05)
    with clock:
        pass
    assert clock.seconds < 0.05


@pytest.mark.parametrize(("device", "syncs"), [("cuda:1", 2), ("cpu", 0), (None, 0)])
def test_a_cuda_device_is_synchronised_at_both_ends(
    monkeypatch: pytest.MonkeyPatch, device: str | None, syncs: int
) -> None:
    # This CPU-only torch build has no CUDA to wait for: record the calls instead.
    calls: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "synchronize", calls.append)
    with Stopwatch(device=device):
        pass
    assert calls == [torch.device("cuda:1")] * syncs
