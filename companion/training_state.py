"""A training run's whole state on disk, so that a stopped run resumes where it was.

A checkpoint holds what a training loop needs to go on as if it had never stopped:
weights, optimizer and EMA state, the step, the data order and the states of every
random number generator. It is one safetensors file: the tensors by path
(``optimizer.state.3.exp_avg``), and everything else (numbers, strings, lists, the
structure) as a small JSON document in the file's header, in which each tensor appears
as ``{"__tensor__": path}``. Loading never runs code (no pickle), and the file is
written to a temporary name and renamed, so a run killed while writing leaves the
previous checkpoint whole.

:class:`Checkpointing` says how often; the training loops
(:func:`companion.train.train_vae`, :func:`companion.diffusion.ddpm.fit`) decide what
goes in.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

__all__ = [
    "Checkpointing",
    "save_training_state",
    "load_training_state",
    "save_tensors",
]

_HEADER = "training_state"


@dataclass
class Checkpointing:
    """Where and how often a training loop saves its state.

    Attributes:
        path: the checkpoint file (safetensors).
        every_steps: save after every this many optimizer steps (the VAE loop saves at
            the end of an epoch once that many steps have passed); None: never by count.
        every_minutes: save when this many minutes have passed since the last save;
            None: never by time.
        after_save: called with the step after every save (a test stops a run here
            to resume it).
    """

    path: Path
    every_steps: int | None = 1_000
    every_minutes: float | None = 15.0
    after_save: Callable[[int], None] | None = None
    _last_step: int = field(default=0, repr=False)
    _last_time: float = field(default_factory=time.monotonic, repr=False)

    def __post_init__(self) -> None:
        if self.every_steps is not None and self.every_steps < 1:
            raise ValueError(
                f"every_steps must be >= 1 or None, got {self.every_steps}"
            )
        if self.every_minutes is not None and not self.every_minutes > 0:
            raise ValueError(
                f"every_minutes must be > 0 or None, got {self.every_minutes}"
            )

    def due(self, step: int) -> bool:
        """True when a save is due at optimizer step ``step`` (count or time)."""
        by_count = (
            self.every_steps is not None and step - self._last_step >= self.every_steps
        )
        by_time = (
            self.every_minutes is not None
            and time.monotonic() - self._last_time >= 60 * self.every_minutes
        )
        return by_count or by_time

    def resumed(self, step: int) -> None:
        """Note that the run resumed from a checkpoint of step ``step`` (the next save
        falls due counting from there)."""
        self._last_step, self._last_time = step, time.monotonic()

    def saved(self, step: int) -> None:
        """Note a save at ``step`` and call :attr:`after_save`."""
        self._last_step, self._last_time = step, time.monotonic()
        if self.after_save is not None:
            self.after_save(step)


def _split(value: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """``value`` as JSON with its tensors moved to ``tensors`` under their paths."""
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().cpu().contiguous().clone()
        return {"__tensor__": path}
    if isinstance(value, Mapping):
        keyed = {str(k): _split(v, f"{path}.{k}", tensors) for k, v in value.items()}
        if all(isinstance(k, int) for k in value):  # optimizer states: int keys
            return {"__int_keys__": keyed}
        return keyed
    if isinstance(value, (list, tuple)):
        return [_split(v, f"{path}.{i}", tensors) for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store {type(value).__name__} at {path} in a checkpoint")


def _join(value: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__tensor__"}:
            return tensors[value["__tensor__"]]
        if set(value) == {"__int_keys__"}:
            return {int(k): _join(v, tensors) for k, v in value["__int_keys__"].items()}
        return {k: _join(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [_join(v, tensors) for v in value]
    return value


def save_tensors(
    path: str | Path, tensors: Mapping[str, torch.Tensor], *, metadata: dict[str, str]
) -> Path:
    """Write named tensors and string metadata to a safetensors file, atomically (a
    temporary file in the same directory, then renamed; parents are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    try:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
            tmp,
            metadata=metadata,
        )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def save_training_state(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Write ``state`` (nested dicts / lists of tensors and JSON values) atomically.

    Tensors are copied to the CPU; int-keyed mappings (an optimizer's ``state``) come
    back with int keys.
    """
    tensors: dict[str, torch.Tensor] = {}
    document = _split(dict(state), "state", tensors)
    return save_tensors(path, tensors, metadata={_HEADER: json.dumps(document)})


def load_training_state(path: str | Path) -> dict[str, Any] | None:
    """The state saved at ``path``, or None when there is no file.

    Raises:
        ValueError: the file is not a checkpoint written by :func:`save_training_state`
            (delete it to start over).
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            header = (f.metadata() or {}).get(_HEADER)
        if header is None:
            raise ValueError("no training state in its header")
        return _join(json.loads(header), tensors)
    except (SafetensorError, OSError, ValueError, KeyError) as err:
        raise ValueError(
            f"{path} is not a readable training checkpoint ({err}); delete it to "
            "train from the start"
        ) from err
