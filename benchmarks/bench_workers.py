"""Threads and workers: how the book's heavy kernels should share 2 CPU cores, measured
side by side.

``make test`` runs the unit tests, the smoke runs and nbval in pytest-xdist workers.
On a 2-core machine it can run one process of two intra-op threads or two processes of
one thread each; which gets more done depends on how well each kernel splits across
threads. This script measures, for each kernel the book spends its time in:

* **one process, two threads**: the kernel's work twice, in one process with
  ``torch.set_num_threads(2)``;
* **two workers, one thread each**: the same work split across two processes started
  together, each with ``torch.set_num_threads(1)`` (and OpenMP / MKL at one thread);
* **two workers, two threads each, passive**: four threads on two cores, with
  ``OMP_WAIT_POLICY=PASSIVE`` so that OpenMP's idle threads sleep instead of spinning.

The *speed-ups* are the first wall time over each of the others: above 1, that mode
finishes the same work sooner. Worker processes import, build and warm up their kernel
before a start signal, so start-up is not timed; modes are interleaved, ``REPEATS``
times, medians reported.

It also records each heavy kernel's cost against its bare network pass, in one process
with two threads (``--skip-workers`` runs only this part):

* the decoder's value + gradient with respect to z as HMC evaluates it
  (``ConvVAE.log_joint``: prior + Bernoulli likelihood) against the decoder's bare
  forward + backward with respect to z (sum of its logits), batch 64;
* one step of :func:`companion.diffusion.train_ddpm` (noising, L_simple, AdamW,
  warm-up schedule, EMA), measured as (S₂ − S₁ steps) / (S₂ − S₁) to remove set-up,
  against the UNet's bare forward + backward on the same batch (the quick profile's
  UNet, batch 128).

Target: none here is a pass/fail gate; the numbers choose the Makefile's ``WORKERS``
and thread settings and are recorded in ``benchmarks/README.md``. Run with ``make
bench`` or ``python benchmarks/bench_workers.py``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from timing import ONE_THREAD

REPEATS = 3
KERNELS = ("vae train step", "decoder value+grad", "unet train step", "unet sampling")


def build(kernel: str) -> Callable[[], None]:
    """One unit of ``kernel``'s work (about a second on one core), warmed up."""
    import torch

    from companion.objectives import elbo
    from companion.profiles import QUICK
    from timing import book_ddpm, book_vae

    torch.manual_seed(0)
    if kernel in ("vae train step", "decoder value+grad"):
        model, _ = book_vae()
        size = model.config.image_size
        if kernel == "vae train step":
            model.train()
            x = torch.rand(QUICK.vae.batch_size, 1, size, size).round()
            optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)

            def unit() -> None:
                for _ in range(30):
                    loss = -elbo(model=model, x=x).elbo.mean()
                    optimiser.zero_grad(set_to_none=True)
                    loss.backward()
                    optimiser.step()

        else:
            x = torch.rand(64, 1, size, size).round()
            z0 = torch.randn(64, model.config.z_dim)

            def unit() -> None:
                for _ in range(100):
                    z = z0.clone().requires_grad_(True)
                    torch.autograd.grad(model.log_joint(z, x).sum(), z)

    else:
        s = QUICK.diffusion
        ddpm = book_ddpm()
        net = ddpm.net
        x = torch.rand(s.batch_size, 1, s.image_size, s.image_size) * 2 - 1
        if kernel == "unet train step":
            optimiser = torch.optim.AdamW(net.parameters(), lr=1e-4)

            def unit() -> None:
                for _ in range(4):
                    loss = ddpm.loss(x)
                    optimiser.zero_grad(set_to_none=True)
                    loss.backward()
                    optimiser.step()

        else:
            net.eval()
            xs = torch.randn(250, 1, s.image_size, s.image_size)

            def unit() -> None:
                with torch.no_grad():
                    for t in range(4):
                        net(xs, t + 1)

    unit()
    return unit


def worker(kernel: str, threads: int, units: int) -> None:
    """Build ``kernel``, say ``ready``, wait for a line on stdin, run ``units`` units,
    print the seconds they took."""
    import torch

    torch.set_num_threads(threads)
    unit = build(kernel)
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.perf_counter()
    for _ in range(units):
        unit()
    print(time.perf_counter() - start, flush=True)


def _start(kernel: str, threads: int, units: int, env: dict) -> subprocess.Popen:
    env = {**os.environ, **env}
    here = os.path.dirname(os.path.abspath(__file__))
    env["PYTHONPATH"] = os.pathsep.join([here, env.get("PYTHONPATH", "")])
    cmd = [sys.executable, __file__, "--worker", kernel, str(threads), str(units)]
    process = subprocess.Popen(
        cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        raise RuntimeError(f"worker for {kernel!r} did not start")
    return process


# (processes, threads each, units each, environment): the same work in every mode
MODES = {
    "one process, 2 threads": (1, 2, 2, {}),
    "two workers, 1 thread": (2, 1, 1, ONE_THREAD),
    # four threads on two cores, OpenMP's idle threads asleep rather than spinning
    "two workers, 2 threads, passive": (2, 2, 1, {"OMP_WAIT_POLICY": "PASSIVE"}),
}


def wall_seconds(kernel: str, mode: str) -> float:
    """Seconds from the start signal until every process of ``mode`` has run its
    units."""
    processes, threads, units, env = MODES[mode]
    workers = [_start(kernel, threads, units, env) for _ in range(processes)]
    start = time.perf_counter()
    for w in workers:
        assert w.stdin is not None
        w.stdin.write("go\n")
        w.stdin.flush()
    for w in workers:
        w.communicate(timeout=600)
    return time.perf_counter() - start


def workers_table() -> list[str]:
    """Seconds per mode (median of ``REPEATS``, interleaved) and each mode's speed-up
    over one process of two threads."""
    rows = [
        "| kernel | " + " | ".join(f"{m} (s)" for m in MODES) + " | speed-ups |",
        "|---|" + "---:|" * (len(MODES) + 1),
    ]
    for kernel in KERNELS:
        times: dict[str, list[float]] = {m: [] for m in MODES}
        for _ in range(REPEATS):
            for mode in MODES:
                times[mode].append(wall_seconds(kernel, mode))
        medians = [statistics.median(times[m]) for m in MODES]
        ups = " / ".join(f"{medians[0] / t:.2f}×" for t in medians[1:])
        cells = " | ".join(f"{t:.2f}" for t in medians)
        rows.append(f"| {kernel} | {cells} | {ups} |")
        print(rows[-1], flush=True)
    return rows


def kernel_ratios() -> list[str]:
    """Each heavy kernel against its bare forward + backward (2 threads)."""
    import torch

    from companion.diffusion import DiffusionTrainConfig, train_ddpm
    from companion.profiles import QUICK
    from timing import book_ddpm, book_vae, median_time

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model, label = book_vae()
    size, batch = model.config.image_size, 64
    x = torch.rand(batch, 1, size, size).round()
    z0 = torch.randn(batch, model.config.z_dim)

    def value_grad() -> None:
        z = z0.clone().requires_grad_(True)
        torch.autograd.grad(model.log_joint(z, x).sum(), z)

    def bare_decoder() -> None:
        z = z0.clone().requires_grad_(True)
        torch.autograd.grad(model.decoder(z).sum(), z)

    s = QUICK.diffusion
    # trained on by every run below: speed does not need fresh weights
    ddpm = book_ddpm()
    net = ddpm.net
    images = torch.rand(512, 1, s.image_size, s.image_size)
    xt = images[: s.batch_size] * 2 - 1
    t = torch.randint(1, s.T + 1, (s.batch_size,))

    def train(steps: int) -> Callable[[], None]:
        def run() -> None:
            config = DiffusionTrainConfig(
                steps=steps, batch_size=s.batch_size, progress=False
            )
            train_ddpm(ddpm, images=images, config=config)

        return run

    def bare_unet() -> None:
        net.train()
        net(xt, t).square().mean().backward()

    few, many = 2, 12
    times: dict[str, list[float]] = {k: [] for k in ("vg", "dec", "few", "many", "u")}
    for fn in (value_grad, bare_decoder, train(few), bare_unet):
        fn()  # warm-up
    for _ in range(5):
        times["vg"].append(median_time(value_grad, 20))
        times["dec"].append(median_time(bare_decoder, 20))
        times["few"].append(median_time(train(few)))
        times["many"].append(median_time(train(many)))
        times["u"].append(median_time(bare_unet, 3))
    m = {k: statistics.median(v) for k, v in times.items()}
    step = (m["many"] - m["few"]) / (many - few)
    return [
        "| kernel | ms | its bare network pass (ms) | ratio |",
        "|---|---:|---:|---:|",
        f"| decoder value + gradient (`log_joint`, batch {batch}; {label}) | "
        f"{m['vg'] * 1e3:.2f} | {m['dec'] * 1e3:.2f} | {m['vg'] / m['dec']:.2f}× |",
        f"| `train_ddpm` step (quick UNet, batch {s.batch_size}) | "
        f"{step * 1e3:.1f} | {m['u'] * 1e3:.1f} | {step / m['u']:.2f}× |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", nargs=3, metavar=("KERNEL", "THREADS", "UNITS"))
    parser.add_argument("--skip-workers", action="store_true")
    args = parser.parse_args()
    if args.worker:
        kernel, threads, units = args.worker
        worker(kernel, int(threads), int(units))
        return
    print("\n".join(kernel_ratios()), flush=True)
    if not args.skip_workers:
        print("\n".join(workers_table()))


if __name__ == "__main__":
    main()
