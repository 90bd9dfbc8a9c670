"""``benchmarks/gpu_check.py`` in its CPU dry-run form, so that the prepared GPU command
cannot rot between the rare runs on a GPU machine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.smoke

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"


def test_the_dry_run_writes_a_report_with_every_section(tmp_path: Path) -> None:
    report = tmp_path / "report.md"
    subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--report", str(report)],
        check=True,
        timeout=600,
    )
    text = report.read_text()
    for heading in (
        "# GPU check (dry run",
        "## Machine",
        "## The authors' MNIST VAE",
        "## The defence at paper scale",
        "## Benchmarks on this device",
        "## DDPM throughput at 32×32",
    ):
        assert heading in text, heading
    assert "nan" not in text.lower().split()
    assert not report.with_suffix(".part").exists()


def test_without_cuda_and_without_dry_run_it_refuses_with_what_to_do(
    tmp_path: Path,
) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the real check would run")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--report", str(tmp_path / "r.md")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "needs CUDA" in done.stderr and "--dry-run" in done.stderr
    assert not (tmp_path / "r.md").exists()
