"""What every benchmark here shares: the median wall-clock time of a call."""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch

from companion.timing import Stopwatch

# What the Makefile's THREADS gives each process beside another worker: one intra-op
# thread for torch (OpenMP, MKL) and for XLA.
ONE_THREAD = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
}


def median_time(
    fn: Callable[[], object], repeats: int = 1, *, device: torch.device | None = None
) -> float:
    """Median seconds of ``repeats`` calls of ``fn``
    (the median shrugs off one slow run).

    On a CUDA ``device`` the clock stops only once the GPU has finished the call's
    kernels (:class:`companion.timing.Stopwatch`), not when Python has queued them.
    """
    times = []
    for _ in range(repeats):
        with Stopwatch(device=device) as clock:
            fn()
        times.append(clock.seconds)
    return statistics.median(times)


def book_vae():
    """Chapter 2's conv VAE at the quick profile's size and architecture (untrained:
    speed does not depend on the weights), in eval mode, and a label for the tables."""
    from companion.models import ConvVAE, VAEConfig
    from companion.profiles import QUICK

    size, vs = QUICK.data.image_size, QUICK.vae
    model = ConvVAE(
        VAEConfig(image_size=size, z_dim=vs.z_dim, channels=vs.channels)
    ).eval()
    channels = "/".join(map(str, vs.channels))
    return model, f"{size}×{size} conv VAE ({channels}, z = {vs.z_dim})"


def book_ddpm():
    """The diffusion chapters' DDPM (the quick profile's UNet and schedule; untrained:
    speed does not depend on the weights), in train mode."""
    from companion.diffusion import DDPM, make_schedule
    from companion.models.unet import UNet
    from companion.profiles import QUICK
    from companion.recipes import diffusion_unet_config

    s = QUICK.diffusion
    return DDPM(UNet(diffusion_unet_config(QUICK)), make_schedule(s.schedule, s.T))
