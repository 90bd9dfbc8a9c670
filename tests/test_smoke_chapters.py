"""Every chapter, executed end to end under the GPU-facing profiles at smoke counts.

The ``gpu`` and ``full`` profiles run on MNIST / Fashion-MNIST, which CI cannot
download. This test writes MNIST- and Fashion-MNIST-shaped IDX files (28×28 uint8,
the official file names, fewer images than MNIST's) from the embedded ``mnist_5k``
digits into a temporary data directory, points the kernel's
``companion.mnist`` registry at their checksums (a test-only override in the kernel;
the package's SHA-256 values stay as they are, and the mirrors become a refusing
loopback port, so nothing is ever fetched), and executes every chapter with
``COMPANION_SMOKE=1``: the profile's data shapes, architectures and code path with
shrunk counts (:func:`companion.profiles.smoke_profile`).

A chapter fails on any exception. Its check cell (tag ``check``) runs to its end with
each failed ``assert`` recorded instead of raised (:mod:`check_cells`): at smoke counts
the papers' claims cannot hold, but every statement of the cell must run. Any ``nan``
or ``inf`` printed in an output fails too.
The runs share a model cache in order, as in the book: chapter 2 trains the VAE that
chapters 4, 6 and 9 load. ``full`` runs only the chapters where, at smoke counts, its
settings differ from ``gpu``'s (``FULL_ONLY``).

Run with ``make smoke`` (part of ``make test``); ``pytest -m smoke``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from check_cells import record_failed_asserts
from companion import data as companion_data
from companion import profiles
from companion.mnist import FILENAMES, NAMES
from idx_writer import write_idx_gz

pytestmark = pytest.mark.smoke

BOOK = Path(__file__).resolve().parent.parent / "book"
CHAPTERS = sorted(BOOK.glob("*.ipynb"))
# Every chapter runs under gpu. At smoke counts full differs from gpu only in the
# settings below (test_full_differs_from_gpu_only_in_its_own_chapters keeps that true),
# so full runs only the pages that read the settings with their own code paths: the
# diffusion chapters (the authors' UNet, DAEs from scratch, more split steps) and
# chapter 9's pages on adaptive attacks (a longer grid of chain lengths), on attacks as
# a diagnostic (a fourth β-VAE) and on the diffusion denoisers. Elsewhere full only
# lengthens a grid by one entry (chapters 2 and 4); running those too cost about two
# minutes.
FULL_ONLY = {
    "07_diffusion_snr",
    "08_daed",
    "09a_adaptive_attacks",
    "09b_attacks_as_diagnostic",
    "09e_diffusion_denoisers",
}
FULL_DIFFERS_IN = {
    "name",
    "vae.iwae_ks",
    "vae.nll_k",
    "attack.step_grid",
    "attack.restart_grid",
    "open_questions.adaptive_steps_grid",
    "open_questions.betas",
    *(f"diffusion.{f.name}" for f in fields(profiles.DiffusionSettings)),
}
RUNS = [(chapter, "gpu") for chapter in CHAPTERS] + [
    (chapter, "full") for chapter in CHAPTERS if chapter.stem in FULL_ONLY
]
# companion.data holds out a twelfth of the training file for validation: 1 100 / 100
# here (every class in each; the embedded digits, shuffled), and a test file of 200.
# Small files keep the smoke runs' evaluation passes, which no profile count shrinks
# (validation after every epoch), to seconds.
N_TRAIN, N_TEST = 1_200, 200
# A printed nan / inf: a number, not a word that contains the letters.
NON_FINITE = re.compile(r"(?<![\w.])[-+]?(nan|inf)(?![\w])", re.IGNORECASE)


def _write_idx_files(root: Path) -> dict[str, dict[str, str]]:
    """MNIST-shaped files for both names under ``root / name``; returns their SHA-256.

    Both data sets get the embedded digits (Fashion-MNIST's files only need its shape:
    28×28 uint8 images, labels 0-9).
    """
    images, labels = companion_data._mnist_5k_all()
    order = np.random.default_rng(0).permutation(len(labels))
    images, labels = images[order], labels[order]
    train, test = np.arange(N_TRAIN), np.arange(N_TRAIN, N_TRAIN + N_TEST)
    arrays = {
        FILENAMES["train"]: (images[train], labels[train].astype(np.uint8)),
        FILENAMES["test"]: (images[test], labels[test].astype(np.uint8)),
    }
    checksums: dict[str, dict[str, str]] = {}
    for name in NAMES:
        (root / name).mkdir(parents=True)
        checksums[name] = {}
        for filenames, pair in arrays.items():
            for filename, array in zip(filenames, pair, strict=True):
                blob = write_idx_gz(np.ascontiguousarray(array))
                (root / name / filename).write_bytes(blob)
                checksums[name][filename] = hashlib.sha256(blob).hexdigest()
    return checksums


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("idx")
    return root, _write_idx_files(root)


def _override_cell(checksums: dict, refused_url: str) -> nbformat.NotebookNode:
    source = (
        "import companion.mnist\n"
        f"companion.mnist.SHA256.update({json.dumps(checksums)})\n"
        "companion.mnist.BASE_URLS.update("
        f"{{name: ({refused_url!r},) for name in companion.mnist.NAMES}})\n"
    )
    return nbformat.v4.new_code_cell(source)


def _printed(cell: nbformat.NotebookNode) -> str:
    texts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            texts.append(output["text"])
        for mime in ("text/plain", "text/html"):
            texts.append(output.get("data", {}).get(mime, ""))
    return "".join(texts)


def _flat(profile: profiles.Profile) -> dict[str, object]:
    out: dict[str, object] = {}
    for f in fields(profile):
        value = getattr(profile, f.name)
        if is_dataclass(value):
            out |= {f"{f.name}.{k}": v for k, v in asdict(value).items()}
        else:
            out[f.name] = value
    return out


def test_full_differs_from_gpu_only_in_its_own_chapters() -> None:
    gpu = _flat(profiles.smoke_profile(profiles.GPU))
    full = _flat(profiles.smoke_profile(profiles.FULL))
    new = {k for k in gpu if gpu[k] != full[k]} - FULL_DIFFERS_IN
    assert not new, (
        f"at smoke counts full now differs from gpu in {sorted(new)}: "
        "add the chapters that read them to FULL_ONLY, and the settings to "
        "FULL_DIFFERS_IN"
    )
    assert FULL_ONLY <= {c.stem for c in CHAPTERS}, "FULL_ONLY names a missing page"


@pytest.mark.parametrize(
    ("chapter", "profile"), RUNS, ids=[f"{c.stem}-{p}" for c, p in RUNS]
)
def test_chapter_runs_end_to_end_at_smoke_counts(
    chapter: Path,
    profile: str,
    data_dir: tuple[Path, dict],
    refused_base_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root, checksums = data_dir
    notebook = nbformat.read(chapter, as_version=4)
    notebook.cells.insert(0, _override_cell(checksums, refused_base_url))
    for cell in notebook.cells:
        if "check" in cell.get("metadata", {}).get("tags", []):
            # every statement runs; only a failed claim is forgiven at smoke counts
            cell.source = record_failed_asserts(cell.source)
    env = {
        "COMPANION_PROFILE": profile,
        "COMPANION_SMOKE": "1",
        "COMPANION_PROGRESS": "0",
        "COMPANION_DATA_DIR": str(root),
        # figures are built but not drawn: nbval draws every one in the quick profile,
        # with the same plotting code, and drawing them here cost 5 to 50 % of a
        # chapter's smoke run
        "MPLBACKEND": "agg",
        # one cache for both profiles, as in the book: its keys hold every setting
        # that shapes a model, so the full run reuses the gpu run's smoke-sized VAEs
        # (the same architecture and budget) and trains its own UNets
        "COMPANION_CACHE_DIR": str(root / "cache"),
    }
    previous = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        client = NotebookClient(
            notebook,
            timeout=600,
            kernel_name="python3",
            resources={"metadata": {"path": str(BOOK)}},
        )
        client.execute()
    finally:
        # kept for a look at what ran (pytest's basetemp keeps the last three runs)
        nbformat.write(
            notebook, tmp_path_factory.getbasetemp() / f"{profile}-{chapter.name}"
        )
        for k, v in previous.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code" and "check" not in cell.metadata.get("tags", []):
            match = NON_FINITE.search(_printed(cell))
            assert match is None, (
                f"{chapter.name} ({profile}), cell {index}: printed {match.group()!r}"
            )
