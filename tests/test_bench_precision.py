"""``benchmarks/bench_precision.py``: both of its kernels run in fp32 and under bf16
autocast, its measuring process reports every (kernel, precision) pair, and its
forward-pass comparison is of a network whose output is not identically zero."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import bench_precision  # noqa: E402


def test_every_kernel_is_timed_in_both_precisions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bench_precision, "REPEATS", 1)
    ms = bench_precision.measure()
    assert set(ms) == {
        f"{kernel}|{bf16}"
        for kernel in bench_precision.KERNELS
        for bf16 in (False, True)
    }
    assert all(t > 0 for t in ms.values())


def test_the_forward_pass_changes_by_a_small_nonzero_fraction() -> None:
    change = bench_precision.relative_change()
    # bf16 keeps 8 bits of mantissa (relative rounding 2^-9 ≈ 2e-3 per value): the
    # network's output moves by about that much, never by nothing, never by 10 %
    assert math.isfinite(change) and 1e-4 < change < 0.1


def test_the_cpu_flags_name_what_the_cpu_lists_and_nothing_else(
    tmp_path: Path,
) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 sse4_2 amx_bf16\n")
    assert bench_precision.cpu_flags(cpuinfo) == "amx_bf16, avx2"
    cpuinfo.write_text("flags\t\t: fpu sse4_2\n")
    assert bench_precision.cpu_flags(cpuinfo).startswith("none of amx_bf16")
    assert bench_precision.cpu_flags(tmp_path / "absent") == "unknown"
