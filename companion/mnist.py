"""MNIST and Fashion-MNIST: where the files live, their checksums, and a loader.

MNIST (LeCun, Bottou, Bengio & Haffner 1998) and Fashion-MNIST (Xiao, Rasul & Vollgraf
2017, arXiv:1708.07747) ship as the same four gzip-compressed IDX files: 28x28 uint8
images and uint8 class labels 0-9, 60,000 for training and 10,000 for testing.
:func:`load_mnist_like` downloads them once (checksum-verified, see
:mod:`companion.download`) into a cache directory and decodes them with
:func:`companion.idx.parse_idx`.

Offline readers use the embedded ``digits`` dataset instead;
nothing here runs at import.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from companion.download import fetch_verified
from companion.idx import parse_idx
from companion.progress import progress_enabled

__all__ = [
    "BASE_URLS",
    "FILENAMES",
    "IMAGE_SIZE",
    "NAMES",
    "NUM_CLASSES",
    "SHA256",
    "SPLITS",
    "default_data_dir",
    "load_mnist_like",
]

NAMES: tuple[str, ...] = ("mnist", "fashion_mnist")
SPLITS: tuple[str, ...] = ("train", "test")
IMAGE_SIZE = 28
NUM_CLASSES = 10

#: split -> (images file, labels file); both datasets use the same names.
FILENAMES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

#: dataset name -> mirror base URLs, tried in order (the file name is appended).
#: Amazon S3 *website* endpoints serve plain HTTP only (AWS S3 user guide, "Website
#: endpoints"), so the Fashion-MNIST bucket is listed with http:// and Zalando's GitHub
#: copy follows as an HTTPS fallback; the SHA-256 check guards both.
BASE_URLS: dict[str, tuple[str, ...]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://yann.lecun.com/exdb/mnist/",
    ),
    "fashion_mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
}

#: dataset name -> file name -> SHA-256 of the .gz file as distributed.
#: Source for all eight: tensorflow/datasets,
#: tensorflow_datasets/url_checksums/mnist.txt and .../fashion_mnist.txt (lines
#: "url  size  sha256"). Each value also appears in independent checksum tables: the
#: MNIST four in a Ruby TorchVision port's MNIST class (same two mirrors as here) and a
#: Nix derivation for tensorflow/haskell's MNIST data; the Fashion-MNIST four in a
#: Julia FashionMNIST loader (S3 mirror) and in projects that fetched the files from
#: Zalando's GitHub copy and recorded their SHA-256.
SHA256: dict[str, dict[str, str]] = {
    "mnist": {
        # 9,912,422 bytes
        "train-images-idx3-ubyte.gz": (
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"
        ),
        # 28,881 bytes
        "train-labels-idx1-ubyte.gz": (
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"
        ),
        # 1,648,877 bytes
        "t10k-images-idx3-ubyte.gz": (
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"
        ),
        # 4,542 bytes
        "t10k-labels-idx1-ubyte.gz": (
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"
        ),
    },
    "fashion_mnist": {
        # 26,421,880 bytes
        "train-images-idx3-ubyte.gz": (
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"
        ),
        # 29,515 bytes
        "train-labels-idx1-ubyte.gz": (
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"
        ),
        # 4,422,102 bytes
        "t10k-images-idx3-ubyte.gz": (
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"
        ),
        # 5,148 bytes
        "t10k-labels-idx1-ubyte.gz": (
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"
        ),
    },
}


def default_data_dir() -> Path:
    """Where downloaded datasets are cached: ``$COMPANION_DATA_DIR``,
    else ``~/.cache/companion``.

    Pure: reads the environment and creates nothing.
    """
    configured = os.environ.get("COMPANION_DATA_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "companion"


def load_mnist_like(
    *,
    name: str,
    split: str,
    data_dir: Path | None = None,
    base_urls: Mapping[str, Sequence[str]] | None = None,
    progress: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of MNIST or Fashion-MNIST,
    downloading and verifying it on first use.

    :param name: ``"mnist"`` or ``"fashion_mnist"``.
    :param split: ``"train"`` (60,000 examples) or ``"test"`` (10,000).
    :param data_dir: cache root; files go to ``data_dir / name``. Defaults to
        :func:`default_data_dir`. Created with its parents if missing.
    :param base_urls: dataset name -> mirror base URLs, replacing :data:`BASE_URLS`
        (tests point this at a loopback server).
    :param progress: show download progress bars; ``None`` follows
        ``$COMPANION_PROGRESS`` (see :func:`companion.progress.progress_enabled`).
    :returns: ``images``: ``(N, 28, 28)`` uint8 in [0, 255]; ``labels``: ``(N,)`` int64
        in [0, 9].
    :raises ValueError: for an unknown ``name`` or ``split``, files whose content is
        not the expected IDX arrays, or image and label counts that disagree.
    :raises ConnectionError: if a file is missing and no mirror can deliver it.
    """
    if name not in NAMES:
        raise ValueError(
            f"unknown dataset name {name!r}; valid choices: {', '.join(NAMES)}"
        )
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid choices: {', '.join(SPLITS)}")
    mirrors = BASE_URLS if base_urls is None else base_urls
    if name not in mirrors:
        raise ValueError(f"base_urls has no mirrors for {name!r}")

    root = (default_data_dir() if data_dir is None else Path(data_dir)) / name
    root.mkdir(parents=True, exist_ok=True)

    arrays = []
    for filename in FILENAMES[split]:
        path = fetch_verified(
            urls=[base.rstrip("/") + "/" + filename for base in mirrors[name]],
            destination=root / filename,
            sha256=SHA256[name][filename],
            progress=progress_enabled(progress),
        )
        arrays.append(parse_idx(path.read_bytes()))
    images, labels = arrays

    expected_image_shape = (IMAGE_SIZE, IMAGE_SIZE)
    if (
        images.dtype != np.uint8
        or images.ndim != 3
        or images.shape[1:] != expected_image_shape
    ):
        raise ValueError(
            f"{name} {split} images: expected uint8 of shape (N, 28, 28), "
            f"got {images.dtype} {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(
            f"{name} {split} labels: expected uint8 of shape (N,), got {labels.dtype} "
            f"{labels.shape}"
        )
    if len(images) != len(labels):
        raise ValueError(
            f"{name} {split}: {len(images)} images but {len(labels)} labels; "
            "the counts must agree"
        )
    if labels.size and labels.max() >= NUM_CLASSES:
        raise ValueError(
            f"{name} {split} labels: expected classes 0-{NUM_CLASSES - 1}, found "
            f"{labels.max()}"
        )
    return images, labels.astype(np.int64)
