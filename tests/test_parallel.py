"""Tests for companion.parallel: a world of one without torchrun, and the shares of a
batch that every rank takes."""

from __future__ import annotations

import pytest
import torch

from companion.parallel import World, init_world, rank_seed


def test_without_torchrun_the_world_is_this_process_alone(monkeypatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    world = init_world(device="cpu")
    assert (world.rank, world.size, world.is_main, world.distributed) == (
        0,
        1,
        True,
        False,
    )
    assert world.gather("x") == ["x"] and world.agree(True)
    world.barrier()


@pytest.mark.parametrize(("n", "size"), [(64, 2), (19, 2), (10, 3), (2, 4)])
def test_the_ranks_shares_cover_a_batch_once_in_rank_order(n: int, size: int) -> None:
    rows = torch.arange(n)
    parts = [rows[World(rank=r, size=size).part(n)] for r in range(size)]
    assert torch.equal(torch.cat(parts), rows)
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_rank_zero_keeps_the_seed_and_other_ranks_get_their_own() -> None:
    assert rank_seed(7, 0) == 7
    assert len({rank_seed(7, r) for r in range(8)}) == 8


def test_a_bad_device_or_rank_is_refused() -> None:
    with pytest.raises(ValueError, match="'cuda' or 'cpu'"):
        init_world(device="tpu")
    with pytest.raises(ValueError, match="rank must lie in 0..1"):
        World(rank=2, size=2)
