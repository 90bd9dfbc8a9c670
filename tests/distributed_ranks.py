"""What each of two gloo processes runs in tests/test_training_run.py and
tests/test_sharded_defence.py: tiny trainings, a sharded defence and the command line,
with rank 0 saving what the tests compare with one process."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from companion import cli
from companion.data import load_images
from companion.diffusion import (
    DDPM,
    DenoisingAutoencoder,
    DiffusionTrainConfig,
    make_schedule,
)
from companion.diffusion.ddpm import train_ddpm
from companion.models import ConvVAE, HierarchicalVAE, HVAEConfig, VAEConfig
from companion.models.unet import UNet, UNetConfig
from companion.parallel import close_world, init_world
from companion.sharded_defence import DefendSettings, defend_references
from companion.sharded_fid import draw_samples
from companion.train import TrainConfig, train_vae
from companion.training_run import TrainingRun

WORLD_SIZE = 2
VAE = VAEConfig(image_size=8, z_dim=4, channels=(8,))
HVAE = HVAEConfig(image_size=8, z_dims=(2, 3), channels=(8,), width=8)
UNET = UNetConfig(
    image_size=8,
    channels=8,
    channel_mults=(1, 2),
    res_blocks=1,
    attention_resolutions=(),
    dropout=0.0,
)
# the global batches; each of the two ranks gets half
VAE_BUDGET = TrainConfig(epochs=2, batch_size=64, patience=5, seed=3, progress=False)
DIFFUSION_BUDGET = DiffusionTrainConfig(
    steps=5, batch_size=16, lr=1e-3, seed=1, progress=False
)
DEFENCE = DefendSettings(
    radius=0.1,
    attack_steps=3,
    restarts=2,
    steps_grid=(0, 2, 4),
    num_leapfrog=3,
    num_warmup=2,
    step_size=0.05,
    batch_size=6,  # 20 references: chunks of 6, 6, 6, 2 on ranks 0, 1, 0, 1
    seed=5,
)
CLI_ARGS = ["train", "vae", "--profile", "quick", "--smoke", "--no-progress"]


SAMPLING = dict(n=10, batch_size=4, seed=2)  # chunks of 4, 4, 2 on ranks 0, 1, 0


def dae() -> DenoisingAutoencoder:
    """An (untrained) denoising autoencoder for the DDPM of :func:`models`."""
    torch.manual_seed(1)
    return DenoisingAutoencoder(UNet(UNET), make_schedule("linear", 30), beta_1=0.1)


def images() -> tuple[torch.Tensor, torch.Tensor]:
    """211 training digits (the last VAE batch, 19, splits 9 + 10), 64 validation
    digits."""
    train = load_images(name="mnist_5k", split="train", image_size=8).images[:211]
    valid = load_images(name="mnist_5k", split="valid", image_size=8).images[:64]
    return train, valid


def models() -> dict[str, torch.nn.Module]:
    """The untrained models, the same on every process."""
    torch.manual_seed(0)
    return {
        "vae": ConvVAE(VAE),
        "hvae": HierarchicalVAE(HVAE),
        "ddpm": DDPM(UNet(UNET), make_schedule("linear", 30)),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_RESULTS: dict[str, tuple[Path, dict[str, torch.Tensor]]] = {}


def two_rank_results(root: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """Run :func:`rank_main` on two spawned gloo processes once per test session (the
    fixtures of several test modules share it); returns the output directory and rank
    0's saved tensors."""
    if "run" not in _RESULTS:
        out = root / "two-ranks"
        out.mkdir()
        mp.spawn(rank_main, args=(str(out), free_port()), nprocs=WORLD_SIZE, join=True)
        _RESULTS["run"] = out, load_file(str(out / "rank0.safetensors"))
    return _RESULTS["run"]


def rank_main(rank: int, out: str, port: int) -> None:
    """One rank: train the three models, defend 20 references, draw DDPM and DAED
    samples, run ``train vae``."""
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD_SIZE),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    world = init_world(device="cpu")
    run = TrainingRun(world=world)
    train, valid = images()
    nets = models()
    for name in ("vae", "hvae"):
        train_vae(
            model=nets[name],
            train_images=train,
            valid_images=valid,
            config=VAE_BUDGET,
            run=run,
        )
    train_ddpm(nets["ddpm"], images=train, config=DIFFUSION_BUDGET, run=run)
    defended = defend_references(
        nets["vae"], x_ref=valid[:20], settings=DEFENCE, world=world
    )
    sampled = draw_samples(nets["ddpm"], {0.1: dae()}, **SAMPLING, world=world)
    if world.is_main:
        tensors = {
            f"{name}.{k}": v.contiguous()
            for name, net in nets.items()
            for k, v in net.state_dict().items()
        }
        assert defended is not None and sampled is not None
        tensors |= {f"defence.{k}": v for k, v in defended.items()}
        tensors |= {f"samples.{k}": v for k, v in sampled.items()}
        save_file(tensors, str(Path(out) / "rank0.safetensors"))
    cli.main([*CLI_ARGS, "--cache-dir", str(Path(out) / "cache")])
    close_world(world)
