"""Mixed precision on the CPU: bf16 autocast against fp32 for the diffusion chapters'
UNet, side by side, on this CPU's best instruction set and with oneDNN capped lower.

Half of nbval is the quick UNet (chapters 7, 8 and 9e: training, sampling, attacks), so
``torch.autocast("cpu", dtype=torch.bfloat16)`` is the one large speed-up left on the
table. Whether it is one depends on the CPU: oneDNN runs bf16 convolutions on AMX
tiles or AVX-512 BF16 instructions where the CPU has them and converts to and from fp32
around fp32 kernels where it does not. This script measures, for each instruction-set
cap (``ONEDNN_MAX_CPU_ISA``; a cap above what the CPU has changes nothing, so the
default row is the CPU's own best):

* a DDPM training step (:meth:`companion.diffusion.DDPM.loss` forward under autocast,
  backward, AdamW; the quick UNet, batch 128);
* a UNet sampling pass (one reverse-step evaluation of the network, batch 250, no
  gradient);

each in fp32 and under bf16 autocast, in one process per cap (oneDNN reads the cap
once) at one thread, as nbval's workers run; the two precisions interleaved,
``REPEATS`` times, medians. It also reports the relative change of one forward pass,
‖f_bf16 − f_fp32‖ / ‖f_fp32‖, at the CPU's own best.

Target: none; the numbers decide whether the book autocasts on the CPU (it does not:
``benchmarks/README.md``). Run with ``make bench`` or ``python
benchmarks/bench_precision.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from timing import ONE_THREAD

REPEATS = 3
# the CPU's own best, then oneDNN capped: AVX-512 with BF16 instructions but no AMX,
# AVX-512 without BF16, AVX2 (most laptops, many cloud CPUs)
ISAS = ("DEFAULT", "AVX512_CORE_BF16", "AVX512_CORE", "AVX2")
KERNELS = ("DDPM training step", "UNet sampling pass")


def units() -> dict[str, Callable[[bool], None]]:
    """Each kernel as one step in fp32 (``False``) or under bf16 autocast (``True``)."""
    import torch

    from companion.profiles import QUICK
    from timing import book_ddpm

    torch.manual_seed(0)
    s = QUICK.diffusion
    ddpm = book_ddpm()
    x = torch.rand(s.batch_size, 1, s.image_size, s.image_size) * 2 - 1
    xs = torch.randn(250, 1, s.image_size, s.image_size)
    optimiser = torch.optim.AdamW(ddpm.net.parameters(), lr=1e-4)

    def train_step(bf16: bool) -> None:
        ddpm.train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = ddpm.loss(x)
        optimiser.zero_grad(set_to_none=True)
        loss.float().backward()
        optimiser.step()

    def sampling_pass(bf16: bool) -> None:
        ddpm.eval()
        with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            ddpm.net(xs, s.T // 2)

    return {KERNELS[0]: train_step, KERNELS[1]: sampling_pass}


def relative_change() -> float:
    """‖f_bf16 − f_fp32‖ / ‖f_fp32‖ of one UNet forward pass (batch 250, t = T / 2)."""
    import torch

    from companion.profiles import QUICK
    from timing import book_ddpm

    torch.manual_seed(0)
    s = QUICK.diffusion
    net = book_ddpm().net.eval()
    with torch.no_grad():  # the output layer starts at zero: give it weights
        for p in net.parameters():
            if not p.any():
                p.normal_(std=0.05)
    xs = torch.randn(250, 1, s.image_size, s.image_size)
    with torch.no_grad():
        exact = net(xs, s.T // 2)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = net(xs, s.T // 2).float()
    return ((mixed - exact).norm() / exact.norm()).item()


def measure() -> dict:
    """Milliseconds per kernel and precision (medians of interleaved repeats), in this
    process's oneDNN cap."""
    import torch

    torch.set_num_threads(1)
    times: dict[str, list[float]] = {}
    for kernel, unit in units().items():
        for bf16 in (False, True):
            unit(bf16)  # warm-up: oneDNN builds its kernels on the first call
        for _ in range(REPEATS):
            for bf16 in (False, True):
                start = time.perf_counter()
                unit(bf16)
                times.setdefault(f"{kernel}|{bf16}", []).append(
                    time.perf_counter() - start
                )
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's bf16-relevant flags, as Linux lists them in ``cpuinfo`` ("unknown"
    where there is no such file)."""
    if not cpuinfo.exists():
        return "unknown"
    flags = next(
        (
            ln.split(":", 1)[1].split()
            for ln in cpuinfo.read_text().splitlines()
            if ln.startswith("flags")
        ),
        [],
    )
    wanted = ("amx_bf16", "avx512_bf16", "avx512f", "avx2")
    return ", ".join(f for f in wanted if f in flags) or "none of " + ", ".join(wanted)


def table() -> list[str]:
    """One row per (cap, kernel): fp32 and bf16 ms and bf16's speed-up."""
    here = os.path.dirname(os.path.abspath(__file__))
    rows = [
        f"CPU flags: {cpu_flags()}; one thread; medians of {REPEATS}",
        "",
        "| oneDNN cap | kernel | fp32 (ms) | bf16 autocast (ms) | bf16 speed-up |",
        "|---|---|---:|---:|---:|",
    ]
    for isa in ISAS:
        env = {**os.environ, **ONE_THREAD}
        env["PYTHONPATH"] = os.pathsep.join([here, env.get("PYTHONPATH", "")])
        if isa != "DEFAULT":
            env["ONEDNN_MAX_CPU_ISA"] = isa
        out = subprocess.run(
            [sys.executable, __file__, "--measure"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=1200,
        ).stdout
        ms = json.loads(out.strip().splitlines()[-1])
        for kernel in KERNELS:
            fp32, bf16 = ms[f"{kernel}|False"], ms[f"{kernel}|True"]
            rows.append(
                f"| {isa.lower()} | {kernel} | {fp32:.0f} | {bf16:.0f} | "
                f"{fp32 / bf16:.2f}× |"
            )
            print(rows[-1], flush=True)
    rows += ["", f"relative change of one forward pass: {relative_change():.1e}"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure()))
        return
    print("\n".join(table()))


if __name__ == "__main__":
    main()
