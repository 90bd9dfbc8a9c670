"""Tests for companion.cache: hit, miss, corrupt files, a disabled cache,
stable keys."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from companion import cache
from companion.cache import cache_key, cache_path, cached_model


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(cache.CACHE_DIR_ENV, str(tmp_path / "models"))
    monkeypatch.delenv(cache.CACHE_ENV, raising=False)
    return tmp_path / "models"


class Counter:
    """A seeded 'training' that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, model: nn.Module) -> None:
        self.calls += 1
        torch.manual_seed(7)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn_like(p))


@dataclasses.dataclass(frozen=True)
class Settings:
    width: int = 3
    sizes: tuple[int, ...] = (1, 2)


KEY = {"settings": Settings(), "seed": 0}


def test_a_miss_trains_and_writes_then_a_hit_loads_the_weights_untrained() -> None:
    train = Counter()
    first = cached_model(key=KEY, build=lambda: nn.Linear(3, 2), train=train)
    assert train.calls == 1 and cache_path(KEY).is_file()
    second = cached_model(key=KEY, build=lambda: nn.Linear(3, 2), train=train)
    assert train.calls == 1
    assert torch.equal(first.weight, second.weight) and not second.training


def test_a_different_key_is_a_miss() -> None:
    train = Counter()
    cached_model(key=KEY, build=lambda: nn.Linear(3, 2), train=train)
    cached_model(key={**KEY, "seed": 1}, build=lambda: nn.Linear(3, 2), train=train)
    assert train.calls == 2
    assert cache_path(KEY) != cache_path({**KEY, "seed": 1})


def test_a_corrupt_file_is_retrained_with_a_warning_and_replaced() -> None:
    train = Counter()
    path = cache_path(KEY)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a safetensors file")
    with pytest.warns(UserWarning, match="unreadable"):
        model = cached_model(key=KEY, build=lambda: nn.Linear(3, 2), train=train)
    assert train.calls == 1
    again = cached_model(key=KEY, build=lambda: nn.Linear(3, 2), train=train)
    assert train.calls == 1 and torch.equal(model.weight, again.weight)


def test_a_file_for_another_architecture_is_retrained_with_a_warning() -> None:
    cached_model(key=KEY, build=lambda: nn.Linear(3, 2), train=Counter())
    train = Counter()
    with pytest.warns(UserWarning, match="unreadable"):
        model = cached_model(key=KEY, build=lambda: nn.Linear(4, 2), train=train)
    assert train.calls == 1 and model.weight.shape == (2, 4)


def test_disabled_cache_always_trains_and_writes_nothing(
    monkeypatch: pytest.MonkeyPatch, _cache_dir: Path
) -> None:
    monkeypatch.setenv(cache.CACHE_ENV, "0")
    train = Counter()
    cached_model(key=KEY, build=lambda: nn.Linear(3, 2), train=train)
    cached_model(key=KEY, build=lambda: nn.Linear(3, 2), train=train)
    assert train.calls == 2 and not _cache_dir.exists()


def test_keys_are_canonical_and_include_the_code_version() -> None:
    assert cache_key({"a": 1, "b": (1, 2)}) == cache_key({"b": [1, 2], "a": 1})
    assert f'"cache_version":{cache.CACHE_VERSION}' in cache_key({})
    assert '"__dataclass__":"Settings"' in cache_key(KEY)


def test_keys_with_values_json_cannot_hold_are_rejected() -> None:
    with pytest.raises(TypeError, match="JSON-like"):
        cache_key({"tensor": torch.zeros(1)})


def test_cached_training_returns_the_record_of_the_run_that_made_the_weights() -> None:
    from companion.cache import cached_training

    counter = Counter()

    def train(model: nn.Module) -> dict:
        counter(model)
        return {"loss": [3.0, 2.5], "calls": counter.calls}

    first, record = cached_training(key=KEY, build=lambda: nn.Linear(3, 2), train=train)
    again, cached = cached_training(key=KEY, build=lambda: nn.Linear(3, 2), train=train)
    assert counter.calls == 1 and record == cached == {"loss": [3.0, 2.5], "calls": 1}
    torch.testing.assert_close(first.weight, again.weight)


# A second process asking for a model another process is training: it must wait for
# the lock, then load what the first wrote (its train function writes to a log).
WAITER = """
import sys
from pathlib import Path
from torch import nn
from companion.cache import cached_model

def train(model):
    Path(sys.argv[1]).write_text("trained")

model = cached_model(key={"seed": 0}, build=lambda: nn.Linear(3, 2), train=train)
print(repr(model.weight.sum().item()))
"""


def test_a_process_waits_for_the_one_training_its_key_then_loads_its_weights(
    _cache_dir: Path, tmp_path: Path
) -> None:
    from filelock import FileLock

    from companion.cache import cache_key
    from companion.train import save_checkpoint

    key = {"seed": 0}
    path = cache_path(key)
    log = tmp_path / "trained.log"
    env = {**os.environ, cache.CACHE_DIR_ENV: str(_cache_dir)}
    with FileLock(path.with_suffix(".lock")):  # "another process" is training
        waiter = subprocess.Popen(
            [sys.executable, "-c", WAITER, str(log)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert waiter.stderr is not None
        assert "is training" in waiter.stderr.readline()
        trained = nn.Linear(3, 2)
        meta = {"key": cache_key(key), "code": cache.code_identity(), "record": None}
        save_checkpoint(trained, path, metadata=meta)
    out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, err
    assert not log.exists(), "the waiting process trained the model itself"
    assert float(out) == trained.weight.sum().item()


def test_ranks_that_do_not_write_never_wait_for_the_lock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from companion.cache import cached_training

    class Refused:  # any lock a non-writing rank takes fails the test (never hangs)
        def __init__(self, path: object) -> None:
            raise AssertionError(f"a rank that does not write locked {path}")

    monkeypatch.setattr(cache, "FileLock", Refused)
    train = Counter()
    model, _ = cached_training(
        key=KEY, build=lambda: nn.Linear(3, 2), train=train, write=False
    )
    assert train.calls == 1 and not cache_path(KEY).exists()


def test_a_file_trained_by_other_code_is_retrained_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    train = Counter()
    cached_model(key=KEY, build=lambda: nn.Linear(3, 2), train=train)
    edited = {**cache.code_identity(), "source": "0" * 64}
    monkeypatch.setattr(cache, "code_identity", lambda: edited)
    with pytest.warns(UserWarning, match="trained by other code"):
        cached_model(key=KEY, build=lambda: nn.Linear(3, 2), train=train)
    assert train.calls == 2
    cached_model(key=KEY, build=lambda: nn.Linear(3, 2), train=train)  # rewritten
    assert train.calls == 2


def test_the_source_digest_follows_training_code_and_ignores_presentation(
    tmp_path: Path,
) -> None:
    from companion.cache import source_digest

    root = tmp_path / "pkg"
    (root / "diagrams").mkdir(parents=True)
    for name in ("train.py", "pages.py", "diagrams/figure.py"):
        (root / name).write_text("x = 1\n")
    before = source_digest(root)
    for name in ("pages.py", "diagrams/figure.py"):
        (root / name).write_text("x = 2\n")
    assert source_digest(root) == before
    (root / "train.py").write_text("x = 2\n")
    edited = source_digest(root)
    (root / "new_module.py").write_text("")
    assert len({before, edited, source_digest(root)}) == 3
    assert len(source_digest(tmp_path / "missing")) == 64


def test_the_code_identity_is_the_installed_source_and_torch() -> None:
    identity = cache.code_identity()
    assert identity["torch"] == torch.__version__
    assert identity["source"] == cache.source_digest(Path(cache.__file__).parent)
