"""How a training loop runs: on how many processes, in which precision, with which
checkpoints. :func:`companion.train.train_vae` and :func:`companion.diffusion.ddpm.fit`
(the DDPM's, the DAEs' and the DAED generators' loop) take a :class:`TrainingRun`;
without one they run in one process, in float32, without checkpoints, which is how the
chapters train. ``python -m companion train`` passes one built from its options.

* **Several processes, one global batch.** Under torchrun every rank holds the same
  model and draws the same random numbers: the data order, the Bernoulli pixels of
  dynamic binarisation, the reparameterisation noise, the diffusion steps t and noise ε
  are drawn for the whole global batch (``batch_size`` of the config, whatever the
  number of processes K), and rank r keeps its contiguous rows
  (:meth:`companion.parallel.World.part`). DistributedDataParallel averages the
  gradients, so each update is the update of one process on the global batch: K ranks
  with batch b reach the weights of one process with batch K·b up to float rounding
  (the order of the gradient sums), not a statistically similar model. Only per-rank
  randomness inside the network (dropout, in the ``gpu`` and ``full`` UNets) is drawn
  from seeds derived per rank (:func:`companion.parallel.rank_seed`); with dropout
  the K-rank model equals the one-process model in distribution, not float for float.
  Validation (the VAE's early stopping) is computed whole on every rank, so every rank
  stops at the same epoch.
* **Resumable.** With a :class:`~companion.training_state.Checkpointing`, the loop saves
  its whole state (weights, optimizer, EMA, step, data order, generator states) every N
  steps or minutes and, started again with the same arguments, resumes from it: the
  resumed run ends with the same weights, bit for bit, as an uninterrupted one.
* **Mixed precision** (``precision="bf16"`` or ``"fp16"``, CUDA only; ``"fp32"`` by
  default): the forward pass runs under ``torch.autocast`` (matrix products and
  convolutions in 16-bit floats, reductions and the loss in float32), with a gradient
  scaler for fp16; weights, optimizer state and EMA stay float32. It changes the
  rounding of every step, so the weights differ from float32 training as another
  GPU's kernels would, not only in the last bits; the chapters' claims are checked in
  float32. (On the CPU bf16 is slower or barely faster:
  ``benchmarks/bench_precision.py``.)

One process draws exactly the random numbers K processes draw together, so the loops
have one code path: the chapters' runs are the K = 1 case
(``tests/test_training_run.py`` checks K = 2 against it, and resuming).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from companion.parallel import World
from companion.training_state import (
    Checkpointing,
    load_training_state,
    save_training_state,
)

__all__ = [
    "PRECISIONS",
    "TrainingRun",
    "wrap_objective",
    "check_global_batch",
    "rng_states",
    "set_rng_states",
]

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class TrainingRun:
    """How a training loop runs; the default, ``TrainingRun()``, is how the chapters
    train: one process, float32 (the checkpoint settings act only where the loop is
    given a checkpoint path).

    Attributes:
        world: the processes sharing the work (:func:`companion.parallel.init_world`).
        precision: ``fp32`` (default), or ``bf16`` / ``fp16`` mixed precision on CUDA.
        checkpoint_every_steps: save a resumable checkpoint after this many optimizer
            steps (None: not by count).
        checkpoint_every_minutes: and after this many minutes (None: not by time).
        resume: start from the model's checkpoint when there is one.
        after_save: called with the step after each checkpoint (tests stop runs there).
    """

    world: World = World()
    precision: str = "fp32"
    checkpoint_every_steps: int | None = 1_000
    checkpoint_every_minutes: float | None = 15.0
    resume: bool = True
    after_save: Callable[[int], None] | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {PRECISIONS}, got {self.precision!r}"
            )
        if self.precision != "fp32" and self.world.device.type != "cuda":
            raise ValueError(
                f"mixed precision ({self.precision}) runs on CUDA only; on "
                f"{self.world.device.type} train in fp32"
            )

    def checkpointing(self, path) -> Checkpointing:
        """The :class:`Checkpointing` of one model's checkpoint file ``path``."""
        return Checkpointing(
            path=path,
            every_steps=self.checkpoint_every_steps,
            every_minutes=self.checkpoint_every_minutes,
            after_save=self.after_save,
        )

    def autocast(self) -> contextlib.AbstractContextManager:
        """The forward pass's precision context (nothing at all for fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.world.device.type, dtype=dtype)

    def scaler(self) -> torch.amp.GradScaler:
        """The gradient scaler: fp16's, or a disabled one that passes the loss and the
        optimizer step through unchanged (bf16, fp32), so the loops have one path."""
        return torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")

    def resumed_state(self, checkpoint: Checkpointing | None) -> dict[str, Any] | None:
        """The state a loop resumes from: the checkpoint's, where resuming is on and
        one exists (the checkpoint's next save then falls due counting from its
        ``step``); None otherwise.

        Raises:
            ValueError: the state records another number of processes
                (``world_size``: the diffusion loop's per-rank generator states).
        """
        if checkpoint is None or not self.resume:
            return None
        saved = load_training_state(checkpoint.path)
        if saved is None:
            return None
        written_by = saved.get("world_size", self.world.size)
        if written_by != self.world.size:
            raise ValueError(
                f"the checkpoint {checkpoint.path} was written by {written_by} "
                "processes; resume it with as many, or delete it to start over"
            )
        checkpoint.resumed(saved["step"])
        return saved

    def save_due(self, checkpoint: Checkpointing, *, step: int) -> bool:
        """Whether a save is due at optimizer step ``step``: the same answer on every
        rank (due on any rank, due on all)."""
        return self.world.agree(checkpoint.due(step))

    def save(self, checkpoint: Checkpointing, state: dict[str, Any]) -> None:
        """Rank 0 writes ``state`` (built on every rank, which may gather across
        ranks), and no rank goes on before the file is in place."""
        if self.world.is_main:
            save_training_state(checkpoint.path, state)
        self.world.barrier()
        checkpoint.saved(state["step"])


class _Objective(nn.Module):
    """``model`` with a loss as its forward pass, which is what
    DistributedDataParallel needs to synchronise the gradients of ``encode`` /
    ``decode`` / ``loss`` calls."""

    def __init__(self, model: nn.Module, compute: Callable[..., Any]) -> None:
        super().__init__()
        self.model = model
        self._compute = compute

    def forward(self, *args: torch.Tensor) -> Any:
        return self._compute(self.model, *args)


def wrap_objective(
    model: nn.Module, compute: Callable[..., Any], world: World
) -> nn.Module:
    """``compute(model, *args)`` as a module's forward pass, in DistributedDataParallel
    when ``world`` has several processes."""
    objective = _Objective(model, compute)
    if not world.distributed:
        return objective
    return DistributedDataParallel(
        objective,
        device_ids=[world.device] if world.device.type == "cuda" else None,
    )


def check_global_batch(batch_size: int, world: World) -> None:
    """Refuse a global batch that does not divide into ``world``'s processes."""
    if batch_size % world.size:
        raise ValueError(
            f"the global batch of {batch_size} does not divide into {world.size} "
            f"processes; run a number of processes that divides {batch_size}"
        )


def rng_states(device: torch.device) -> dict[str, torch.Tensor]:
    """The global generators' states (CPU, and ``device``'s on CUDA)."""
    states = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def set_rng_states(states: dict[str, torch.Tensor], device: torch.device) -> None:
    """Restore what :func:`rng_states` returned."""
    torch.set_rng_state(states["cpu"])
    if device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"], device)
