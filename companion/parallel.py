"""Several processes, one result: the ``torch.distributed`` layer of the command line.

``torchrun --nproc_per_node=K`` starts K copies of a program and tells each its place
through the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``); multi-node runs use torchrun's own rendezvous and set the same
variables. :func:`init_world` reads them, joins the process group (NCCL with CUDA, gloo
on CPU) and returns a :class:`World`: who this process is and what device it drives.
Without torchrun it returns a world of one process and touches nothing, so the same
program runs unchanged in one process.

Everything here is a thin, typed layer over ``torch.distributed``: which contiguous
part of a batch or of a list of references a rank owns (:meth:`World.part`), and
collecting Python objects from every rank (:meth:`World.gather`), and work cut into
numbered chunks shared out and collected in order (:func:`map_chunks`), whose result
does not depend on the number of processes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from companion.progress import progress_bar

__all__ = [
    "World",
    "init_world",
    "close_world",
    "rank_seed",
    "chunk_generator",
    "map_chunks",
]


@dataclass(frozen=True)
class World:
    """This process's place among the processes of one run.

    Attributes:
        rank: 0..size−1; rank 0 alone writes files.
        size: the number of processes K (1 without torchrun).
        local_rank: the rank among the processes of this machine (its GPU index).
        device: the device this process trains on.
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.size:
            raise ValueError(f"rank must lie in 0..{self.size - 1}, got {self.rank}")

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that writes the cache and the results."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when several processes share the work (a process group exists)."""
        return self.size > 1

    def part(self, n: int) -> slice:
        """This rank's contiguous share of n items: rank r of K gets rows
        ⌊rn/K⌋..⌊(r+1)n/K⌋, so the shares are in rank order, cover 0..n−1 once and
        differ in size by at most one."""
        return slice(self.rank * n // self.size, (self.rank + 1) * n // self.size)

    def barrier(self) -> None:
        """Wait until every rank gets here (nothing to wait for in one process)."""
        if self.distributed:
            dist.barrier()

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (picklable), in rank order, on every rank."""
        if not self.distributed:
            return [value]
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, value)
        return out

    def agree(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is True on rank 0 (rank 0 decides, e.g.
        whether the minutes between two checkpoints have passed)."""
        if not self.distributed:
            return flag
        box = [flag]
        dist.broadcast_object_list(box, src=0)
        return bool(box[0])


def init_world(*, device: str | None = None) -> World:
    """Join the process group torchrun set up, or make a world of one process.

    Args:
        device: ``cuda`` or ``cpu``; default CUDA when available. Under torchrun with
            CUDA each process drives GPU ``LOCAL_RANK`` (NCCL); on CPU the processes
            talk through gloo.

    Raises:
        ValueError: an unknown device, or CUDA asked for where there is none.
    """
    kind = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if kind not in ("cuda", "cpu"):
        raise ValueError(f"device must be 'cuda' or 'cpu', got {kind!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for, but torch sees no CUDA device")
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device("cuda", local_rank) if kind == "cuda" else torch.device("cpu")
    if size > 1 and not dist.is_initialized():
        if kind == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if kind == "cuda" else "gloo")
    return World(rank=rank, size=size, local_rank=local_rank, device=dev)


def close_world(world: World) -> None:
    """Leave the process group (no-op in one process)."""
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank r's own random numbers (dropout masks): the run's seed for
    rank 0, so that one process draws what it always drew, and a distinct seed derived
    from it for every other rank."""
    return seed if rank == 0 else (seed * 1_000_003 + rank) % 2**63


def chunk_generator(seed: int, chunk: int, device: torch.device) -> torch.Generator:
    """The generator of chunk c's random numbers: seeded from (seed, c) alone, so a
    chunk draws the same numbers whichever rank runs it."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + chunk)


def map_chunks(
    world: World,
    n_chunks: int,
    work: Callable[[int], dict[str, torch.Tensor]],
    *,
    desc: str,
    progress: bool | None = None,
) -> dict[str, torch.Tensor] | None:
    """Run ``work(c)`` for chunks c = 0..n_chunks−1, chunk c on rank c mod K, and
    collect the results on rank 0.

    Args:
        work: chunk index -> named tensors whose first axis runs over the chunk's items
            (moved to the CPU to be gathered).
        desc: the progress bar's label (rank 0's bar counts its own chunks).

    Returns:
        On rank 0, every name's tensors concatenated in chunk order; None elsewhere.
    """
    mine = range(world.rank, n_chunks, world.size)
    done = {
        c: {k: v.detach().cpu() for k, v in work(c).items()}
        for c in progress_bar(
            mine, desc=desc, enabled=progress if world.is_main else False
        )
    }
    gathered: dict[int, dict[str, torch.Tensor]] = {}
    for part in world.gather(done):
        gathered.update(part)
    if not world.is_main:
        return None
    ordered = [gathered[c] for c in range(n_chunks)]
    return {k: torch.cat([chunk[k] for chunk in ordered]) for k in ordered[0]}
