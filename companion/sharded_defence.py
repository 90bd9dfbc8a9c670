"""The attack and the HMC defence over many test references, shared among processes:
what ``python -m companion defend`` runs.

The papers' defence is embarrassingly parallel: every reference's attack and chains are
its own. The references are cut into chunks of ``batch_size`` in a fixed order, chunk c
is attacked and defended on rank c mod K with a generator seeded from (seed, c) alone,
and rank 0 collects the chunks in order (:func:`companion.parallel.map_chunks`). So the
result does not depend on the number of processes: K ranks give one process's numbers
chain by chain.

For each reference the result holds the attack (the adversarial input and its SKL) and,
at every T of the grid, the codes of the clean and of the attacked chain and their
MS-SSIM to the model's reconstruction of the reference (:mod:`companion.robustness`'s
yardstick, without the latent classifier).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from companion.attacks import AttackConfig, unsupervised_attack
from companion.defence import defence_curves
from companion.metrics import ms_ssim
from companion.parallel import World, chunk_generator, map_chunks
from companion.training_state import save_tensors

__all__ = ["DefendSettings", "defend_references", "save_defence"]


@dataclass(frozen=True)
class DefendSettings:
    """The attack and the defence run on every reference.

    Attributes:
        radius: L∞ attack radius δ (pixels in [0, 1]).
        attack_steps: projected-gradient steps per restart.
        restarts: random restarts per reference (the strongest is kept).
        steps_grid: the T at which the chains are read (0: the encoder's sample).
        num_leapfrog: leapfrog steps per transition.
        num_warmup: step-size adaptation transitions before the T that count.
        step_size: initial leapfrog step size.
        batch_size: references per chunk (a chunk's chains run as one batch).
        seed: the seed every chunk's generator derives from.
    """

    radius: float
    attack_steps: int
    restarts: int
    steps_grid: tuple[int, ...]
    num_leapfrog: int
    num_warmup: int
    step_size: float
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batch_size < 1 or not self.steps_grid:
            raise ValueError("batch_size must be >= 1 and steps_grid non-empty")


def _defend_chunk(
    model, x: torch.Tensor, settings: DefendSettings, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    attack = unsupervised_attack(
        model,
        x,
        config=AttackConfig(
            radius=settings.radius,
            steps=settings.attack_steps,
            restarts=settings.restarts,
        ),
        generator=generator,
    )
    curves = defence_curves(
        model,
        {"clean": x, "attacked": attack.x_adv},
        steps_grid=settings.steps_grid,
        num_leapfrog=settings.num_leapfrog,
        num_warmup=settings.num_warmup,
        step_size=settings.step_size,
        generator=generator,
    )
    out = {"x_adv": attack.x_adv, "attack_skl": attack.objective}
    with torch.no_grad():
        target = model.reconstruct(x).clamp(0, 1)
        for name, curve in curves.items():
            for t, result in curve.items():
                decoded = model.decode(result.z).mean.clamp(0, 1)
                out[f"T{t}.z_{name}"] = result.z
                out[f"T{t}.ms_ssim_{name}"] = ms_ssim(decoded, target)
                out[f"T{t}.acceptance_{name}"] = result.acceptance_rate
    return {k: v.detach().cpu() for k, v in out.items()}


def defend_references(
    model,
    *,
    x_ref: torch.Tensor,
    settings: DefendSettings,
    world: World | None = None,
    progress: bool | None = None,
) -> dict[str, torch.Tensor] | None:
    """Attack every reference and run the defence on it, the chunks shared among
    ``world``'s ranks.

    Args:
        model: a VAE with ``encode``, ``decode``, ``reconstruct`` and ``log_joint``, on
            ``world.device``.
        x_ref: (N, C, H, W) references in [0, 1], the same on every rank.
        settings: :class:`DefendSettings`.
        world: the processes (None: this one alone).

    Returns:
        On rank 0: ``{name: tensor}`` with N rows each, in the references' order:
        ``x_adv`` (N, C, H, W), ``attack_skl`` (N,), and for every T of the grid
        ``T{T}.z_clean`` / ``T{T}.z_attacked`` (N, z_dim), ``T{T}.ms_ssim_clean`` /
        ``T{T}.ms_ssim_attacked`` (N,) and ``T{T}.acceptance_clean`` /
        ``T{T}.acceptance_attacked`` (N,; NaN at T = 0). None on the other ranks.
    """
    world = world or World(device=x_ref.device)
    chunks = x_ref.split(settings.batch_size)
    return map_chunks(
        world,
        len(chunks),
        lambda c: _defend_chunk(
            model,
            chunks[c].to(world.device),
            settings,
            chunk_generator(settings.seed, c, world.device),
        ),
        desc="defending",
        progress=progress,
    )


def save_defence(
    path: str | Path,
    results: dict[str, torch.Tensor],
    *,
    settings: DefendSettings,
    extra: dict | None = None,
) -> Path:
    """Write the results to one safetensors file, atomically, with the settings and
    the mean MS-SSIM per T (clean and attacked) as JSON in its header
    (``safetensors.safe_open(path, "pt").metadata()["defence"]``)."""
    summary = {
        f"T{t}": {
            name: float(results[f"T{t}.ms_ssim_{name}"].mean())
            for name in ("clean", "attacked")
        }
        for t in sorted(set(settings.steps_grid))
    }
    header = {"settings": asdict(settings), "mean_ms_ssim": summary, **(extra or {})}
    return save_tensors(path, results, metadata={"defence": json.dumps(header)})
