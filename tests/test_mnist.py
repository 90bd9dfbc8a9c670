"""Tests for companion.mnist: the file registry and load_mnist_like over a loopback
server."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from companion import mnist
from companion.mnist import default_data_dir, load_mnist_like
from idx_writer import write_idx_gz

if TYPE_CHECKING:
    from conftest import LoopbackServer

N_EXAMPLES = {"train": 6, "test": 4}


@pytest.fixture
def server_root(loopback_server: LoopbackServer) -> tuple[Path, str]:
    """The loopback server's served directory and base URL."""
    return loopback_server.root, loopback_server.base_url


@pytest.fixture
def fake_datasets(
    server_root: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """Write small fake IDX files for every dataset and split;
    point the registry at them.

    Files go to ``served/<name>/<filename>``; the checksum registry is monkeypatched to
    their hashes. Returns ``(name, split) -> (images, labels)`` as written.
    """
    root, base = server_root
    rng = np.random.default_rng(0)
    written = {}
    for name in mnist.NAMES:
        (root / name).mkdir()
        for split in mnist.SPLITS:
            n = N_EXAMPLES[split]
            images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
            labels = rng.integers(0, 10, size=n, dtype=np.uint8)
            for filename, array in zip(
                mnist.FILENAMES[split], (images, labels), strict=True
            ):
                data = write_idx_gz(array)
                (root / name / filename).write_bytes(data)
                monkeypatch.setitem(
                    mnist.SHA256[name], filename, hashlib.sha256(data).hexdigest()
                )
            written[(name, split)] = (images, labels)
    return written


def _base_urls(server_root: tuple[Path, str]) -> dict[str, list[str]]:
    """Mirrors for both datasets: a 404 first, then the loopback copy."""
    _, base = server_root
    return {name: [f"{base}/nowhere/", f"{base}/{name}/"] for name in mnist.NAMES}


@pytest.mark.parametrize("split", mnist.SPLITS)
@pytest.mark.parametrize("name", mnist.NAMES)
def test_loads_images_and_labels_end_to_end_through_the_mirrors(
    name: str, split: str, fake_datasets, server_root, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"

    images, labels = load_mnist_like(
        name=name,
        split=split,
        data_dir=data_dir,
        base_urls=_base_urls(server_root),
        progress=False,
    )

    expected_images, expected_labels = fake_datasets[(name, split)]
    assert images.dtype == np.uint8 and images.shape == (N_EXAMPLES[split], 28, 28)
    assert labels.dtype == np.int64 and labels.shape == (N_EXAMPLES[split],)
    np.testing.assert_array_equal(images, expected_images)
    np.testing.assert_array_equal(labels, expected_labels)
    assert sorted(p.name for p in (data_dir / name).iterdir()) == sorted(
        mnist.FILENAMES[split]
    )


def test_second_load_reads_the_cache_even_with_mirrors_gone(
    fake_datasets, server_root, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    first = load_mnist_like(
        name="mnist",
        split="test",
        data_dir=data_dir,
        base_urls=_base_urls(server_root),
        progress=False,
    )
    for served in (server_root[0] / "mnist").iterdir():
        served.unlink()

    second = load_mnist_like(
        name="mnist",
        split="test",
        data_dir=data_dir,
        base_urls=_base_urls(server_root),
        progress=False,
    )

    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


def test_default_cache_directory_comes_from_companion_data_dir(
    fake_datasets, server_root, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMPANION_DATA_DIR", str(tmp_path / "env-cache"))

    load_mnist_like(
        name="fashion_mnist",
        split="test",
        base_urls=_base_urls(server_root),
        progress=False,
    )

    assert (
        tmp_path / "env-cache" / "fashion_mnist" / "t10k-images-idx3-ubyte.gz"
    ).is_file()


def test_default_data_dir_prefers_env_and_falls_back_to_home_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMPANION_DATA_DIR", str(tmp_path / "here"))
    assert default_data_dir() == tmp_path / "here"

    monkeypatch.delenv("COMPANION_DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_dir() == tmp_path / "home" / ".cache" / "companion"
    assert not (tmp_path / "home").exists()  # computing the path creates nothing


def test_unknown_dataset_name_lists_the_valid_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'cifar10'.*mnist, fashion_mnist"):
        load_mnist_like(name="cifar10", split="train", data_dir=tmp_path)


def test_unknown_split_lists_the_valid_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'validation'.*train, test"):
        load_mnist_like(name="mnist", split="validation", data_dir=tmp_path)


def test_base_urls_without_the_requested_dataset_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no mirrors for 'fashion_mnist'"):
        load_mnist_like(
            name="fashion_mnist",
            split="train",
            data_dir=tmp_path,
            base_urls={"mnist": ["http://127.0.0.1:9/"]},
        )


def _serve_pair(
    server_root: tuple[Path, str],
    monkeypatch: pytest.MonkeyPatch,
    images: np.ndarray,
    labels: np.ndarray,
) -> dict[str, list[str]]:
    root, base = server_root
    (root / "mnist").mkdir()
    for filename, array in zip(mnist.FILENAMES["test"], (images, labels), strict=True):
        data = write_idx_gz(array)
        (root / "mnist" / filename).write_bytes(data)
        monkeypatch.setitem(
            mnist.SHA256["mnist"], filename, hashlib.sha256(data).hexdigest()
        )
    return {"mnist": [f"{base}/mnist/"]}


def test_image_and_label_counts_that_disagree_raise(
    server_root, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    urls = _serve_pair(
        server_root, monkeypatch, np.zeros((3, 28, 28), np.uint8), np.zeros(2, np.uint8)
    )
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        load_mnist_like(
            name="mnist",
            split="test",
            data_dir=tmp_path / "d",
            base_urls=urls,
            progress=False,
        )


def test_images_that_are_not_28_by_28_raise(
    server_root, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    urls = _serve_pair(
        server_root, monkeypatch, np.zeros((2, 32, 32), np.uint8), np.zeros(2, np.uint8)
    )
    with pytest.raises(ValueError, match=r"\(N, 28, 28\)"):
        load_mnist_like(
            name="mnist",
            split="test",
            data_dir=tmp_path / "d",
            base_urls=urls,
            progress=False,
        )


def test_registry_has_a_distinct_sha256_for_each_of_the_eight_files() -> None:
    digests = []
    for name in mnist.NAMES:
        assert set(mnist.SHA256[name]) == {
            f for split in mnist.SPLITS for f in mnist.FILENAMES[split]
        }
        for digest in mnist.SHA256[name].values():
            assert len(digest) == 64 and set(digest) <= set("0123456789abcdef")
            digests.append(digest)
    assert len(set(digests)) == 8


def test_registry_keeps_the_published_checksums_and_mirror_order() -> None:
    assert mnist.SHA256["mnist"]["train-images-idx3-ubyte.gz"].startswith(
        "440fcabf73cc546f"
    )
    assert mnist.SHA256["fashion_mnist"]["train-images-idx3-ubyte.gz"].startswith(
        "3aede38d61863908"
    )
    assert mnist.BASE_URLS["mnist"] == (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://yann.lecun.com/exdb/mnist/",
    )
    assert mnist.BASE_URLS["fashion_mnist"][0].startswith(
        "http://fashion-mnist.s3-website."
    )
