"""Samples of the diffusion chapters' models and their scores, the sampling shared among
processes: what ``python -m companion fid`` runs.

As in chapter 8, the DDPM's samples and DAED's at every β₁ come from the same reverse
trajectories (:func:`companion.diffusion.daed.daed_samples`): DAED at β₁ runs the
DDPM from T down to the split step k and hands z_k to that β₁'s denoising
autoencoder, so the scores differ by the models, not by the noise. The n samples are
drawn in chunks of ``batch_size``; chunk c runs on rank c mod K with a generator seeded
from (seed, c) alone (:func:`companion.parallel.map_chunks`), so the samples do not
depend on the number of processes. Rank 0 then scores every model's samples against
the real images: FID and improved precision / recall in the feature classifier's space
(:func:`companion.sample_quality.sample_quality`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from companion.diffusion.daed import DenoisingAutoencoder, daed_samples
from companion.diffusion.ddpm import DDPM
from companion.parallel import World, chunk_generator, map_chunks
from companion.sample_quality import sample_quality
from companion.training_state import save_tensors

__all__ = ["draw_samples", "score_samples", "save_samples"]


def draw_samples(
    ddpm: DDPM,
    daes: dict[float, DenoisingAutoencoder],
    *,
    n: int,
    batch_size: int,
    seed: int,
    world: World | None = None,
    progress: bool | None = None,
) -> dict[str, torch.Tensor] | None:
    """n samples of the DDPM and of DAED at every β₁ of ``daes``, shared among ranks.

    Args:
        ddpm: chapter 7's DDPM, on ``world.device``.
        daes: β₁ -> that β₁'s denoising autoencoder (chapter 8's).
        n: samples per model (>= 1).
        batch_size: samples per chunk (one reverse-process batch).
        seed: the seed every chunk's generator derives from.
        world: the processes (None: this one alone).

    Returns:
        On rank 0, ``{"ddpm": (n, C, H, W), "daed-<β₁>": (n, C, H, W), ...}`` pixels in
        [0, 1] on the CPU; None on the other ranks.
    """
    if n < 1 or batch_size < 1:
        raise ValueError(f"n and batch_size must be >= 1, got {n} and {batch_size}")
    world = world or World(device=ddpm.betas.device)
    sizes = [min(batch_size, n - start) for start in range(0, n, batch_size)]

    def chunk(c: int) -> dict[str, torch.Tensor]:
        drawn = daed_samples(
            ddpm,
            daes,
            sizes[c],
            generator=chunk_generator(seed, c, world.device),
            batch_size=batch_size,
            progress=False,
        )
        return {
            ("ddpm" if beta_1 is None else f"daed-{beta_1:g}"): x
            for beta_1, x in drawn.items()
        }

    return map_chunks(world, len(sizes), chunk, desc="sampling", progress=progress)


def score_samples(
    samples: dict[str, torch.Tensor], *, extractor: nn.Module, real: torch.Tensor
) -> dict[str, dict[str, float]]:
    """FID, precision and recall of every model's samples against ``real`` images
    (N, C, H, W) in [0, 1], in the feature space of ``extractor``."""
    return {
        name: sample_quality(extractor, real=real, fake=fake)._asdict()
        for name, fake in samples.items()
    }


def save_samples(
    path: str | Path,
    samples: dict[str, torch.Tensor],
    *,
    scores: dict[str, dict[str, float]],
    extra: dict | None = None,
) -> Path:
    """Write the samples to one safetensors file, atomically, with the scores (and
    ``extra``) as JSON in its header (``metadata()["fid"]``)."""
    header = {"scores": scores, **(extra or {})}
    return save_tensors(path, samples, metadata={"fid": json.dumps(header)})
