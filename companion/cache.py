"""A disk cache of trained models, so that chapters share them instead of retraining.

Each chapter runs in a fresh kernel; chapter 8 uses the DDPM chapter 7 trained. A model
is identified by a *key*: a JSON-serialisable mapping of everything that determines its
weights (settings dataclasses via ``dataclasses.asdict``, the data set's identity, the
seed) plus :data:`CACHE_VERSION`, which is bumped whenever training code changes what it
produces. The file name is a SHA-256 of the canonical JSON of the key, so equal settings
find the same file on every machine.

Files are safetensors ``state_dict`` s (tensors only: loading never runs code), written
atomically by :func:`companion.train.save_checkpoint`; the key is stored in the header
and compared on load, and so is the identity of the code that trained the model
(:func:`code_identity`: a digest of the package's source and the torch version), so
that a model trained before an edit to the training code, or under another torch, is
never loaded in its place. An unreadable or mismatching file is retrained with a
warning.

Environment:
    ``COMPANION_CACHE_DIR``: where files live (default ``~/.cache/companion/models``).
    ``COMPANION_CACHE=0``: bypass the cache (always train, never write).

Training must be seeded (the book's recipes seed themselves), so a cache hit gives the
same weights as retraining would on the same machine.

One process trains a key at a time: the lookup, the training and the write happen under
a lock file beside the model's (``<name>-<digest>.lock``), so a second process that
asks for the same model while the first trains it (two chapters executed in parallel)
waits and then loads the file instead of training it again. The operating system
releases the lock of a process that dies.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from filelock import FileLock, Timeout
from torch import nn

from companion.train import load_checkpoint, save_checkpoint

__all__ = [
    "CACHE_VERSION",
    "code_identity",
    "source_digest",
    "cache_dir",
    "cache_enabled",
    "cache_key",
    "cache_path",
    "checkpoint_path",
    "cached_model",
    "cached_training",
]

CACHE_DIR_ENV = "COMPANION_CACHE_DIR"
CACHE_ENV = "COMPANION_CACHE"
CACHE_VERSION = 2
"""Part of every key (so of every file name). Edits to the package's source are caught
by :func:`code_identity` without a bump."""

# Modules that draw, format or report, and never shape trained weights: editing them
# keeps the cache. Every other file of the package counts (a new module included).
_PRESENTATION = frozenset(
    {
        "__main__.py",
        "cli.py",
        "diagrams",
        "pages.py",
        "plotting.py",
        "progress.py",
        "style.py",
        "timing.py",
    }
)

M = TypeVar("M", bound=nn.Module)


def cache_dir() -> Path:
    """``$COMPANION_CACHE_DIR``, else ``~/.cache/companion/models``."""
    env = os.environ.get(CACHE_DIR_ENV, "").strip()
    return (
        Path(env).expanduser()
        if env
        else Path.home() / ".cache" / "companion" / "models"
    )


def cache_enabled() -> bool:
    """False when ``$COMPANION_CACHE`` is 0/false/no/off."""
    return os.environ.get(CACHE_ENV, "1").strip().lower() not in {
        "0",
        "false",
        "no",
        "off",
    }


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            "__dataclass__": type(value).__name__,
            **_jsonable(dataclasses.asdict(value)),
        }
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(
        "cache keys hold JSON-like values and dataclasses only, got "
        f"{type(value).__name__}: {value!r}"
    )


def source_digest(root: Path) -> str:
    """SHA-256 over the ``.py`` files under ``root`` (paths and bytes, sorted), leaving
    out the presentational modules that never shape trained weights."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if relative.parts[0] in _PRESENTATION:
            continue
        digest.update(relative.as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


@functools.cache
def code_identity() -> dict[str, str]:
    """What trained a cached model besides its key: the digest of this package's
    source (:func:`source_digest`) and the torch version. Stored in each file's header
    and compared on load."""
    return {
        "source": source_digest(Path(__file__).resolve().parent),
        "torch": torch.__version__,
    }


def cache_key(key: Mapping[str, Any]) -> str:
    """The canonical JSON of ``key`` plus :data:`CACHE_VERSION`
    (sorted keys, no spaces)."""
    if not isinstance(key, Mapping):
        raise TypeError(f"a cache key is a mapping, got {type(key).__name__}")
    return json.dumps(
        {"cache_version": CACHE_VERSION, **_jsonable(key)},
        sort_keys=True,
        separators=(",", ":"),
    )


def cache_path(key: Mapping[str, Any], *, name: str = "model") -> Path:
    """Where the model for ``key`` is stored:
    ``<cache_dir>/<name>-<sha256[:16]>.safetensors``."""
    digest = hashlib.sha256(cache_key(key).encode()).hexdigest()[:16]
    return cache_dir() / f"{name}-{digest}.safetensors"


def checkpoint_path(key: Mapping[str, Any], *, name: str = "model") -> Path:
    """Where a resumable run training the model for ``key`` keeps its checkpoint
    (:mod:`companion.training_state`): ``<cache_dir>/checkpoints/``, same file name as
    the model's, deleted once the model is in the cache."""
    path = cache_path(key, name=name)
    return path.parent / "checkpoints" / path.name


def cached_model(
    *,
    key: Mapping[str, Any],
    build: Callable[[], M],
    train: Callable[[M], object],
    name: str = "model",
) -> M:
    """Return a trained model: from the cache when ``key`` was trained before,
    else trained now.

    Args:
        key: everything that determines the trained weights (JSON-like values and
            dataclasses); see the module docstring.
        build: makes the untrained model (on the device it should end up on).
        train: trains it in place (its return value is ignored); must be seeded.
        name: prefix of the file name, for people browsing the cache directory.

    Returns:
        The model, in eval mode.
    """
    model, _ = cached_training(
        key=key, build=build, train=lambda m: (train(m), None)[1], name=name
    )
    return model


def cached_training(
    *,
    key: Mapping[str, Any],
    build: Callable[[], M],
    train: Callable[[M], Any],
    name: str = "model",
    write: bool = True,
    provenance: Mapping[str, Any] | None = None,
) -> tuple[M, Any]:
    """Like :func:`cached_model`, and also keep what training reported.

    ``train`` returns a JSON-serialisable record (for instance a training history as a
    dict); it is stored in the file's header next to the key, so that a cache hit
    returns the record of the run that produced the weights.

    ``write=False`` trains on a miss without writing (the ranks other than 0 of a
    distributed run); ``provenance`` (JSON-like: how many processes, which precision)
    is stored in the header beside the key and never compared.

    Returns:
        (model in eval mode, record).
    """
    model = build()
    if not cache_enabled():
        return model.eval(), train(model)
    path = cache_path(key, name=name)
    # ranks that do not write train in step with rank 0 (collectives), so they must not
    # wait for its lock
    with _training_lock(path) if write else contextlib.nullcontext():
        return _load_or_train(
            model,
            path=path,
            key=key,
            build=build,
            train=train,
            write=write,
            provenance=provenance,
        )


@contextlib.contextmanager
def _training_lock(path: Path) -> Iterator[None]:
    """Hold ``path``'s lock file; say so on stderr when another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path.with_suffix(".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(
            f"companion.cache: another process is training {path.name}; waiting for "
            "it to finish, then loading its weights",
            file=sys.stderr,
            flush=True,
        )
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _load_or_train(
    model: M,
    *,
    path: Path,
    key: Mapping[str, Any],
    build: Callable[[], M],
    train: Callable[[M], Any],
    write: bool,
    provenance: Mapping[str, Any] | None,
) -> tuple[M, Any]:
    canonical = cache_key(key)
    if path.is_file():
        try:
            meta = load_checkpoint(model, path)
            if meta.get("key") != canonical:
                warnings.warn(
                    f"cached model {path} was stored for another key; retraining it",
                    stacklevel=3,
                )
            elif meta.get("code") != code_identity():
                warnings.warn(
                    f"cached model {path} was trained by other code (stored: "
                    f"{meta.get('code')}; running: {code_identity()}); retraining it",
                    stacklevel=3,
                )
            else:
                return model.eval(), meta.get("record")
        except ValueError as err:
            warnings.warn(
                f"cached model {path} is unreadable ({err}); retraining it",
                stacklevel=3,
            )
        model = build()
    record = train(model)
    if write:
        meta = {"key": canonical, "code": code_identity(), "record": record}
        if provenance is not None:
            meta["provenance"] = _jsonable(provenance)
        save_checkpoint(model, path, metadata=meta)
    return model.eval(), record
