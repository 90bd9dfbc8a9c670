"""One prepared run for a GPU machine: the paper-scale pieces, timed, in one report.

``make gpu-check`` runs this on a machine with CUDA and no network (about 8 minutes on
one datacenter GPU) and writes one markdown report (default ``_build/gpu-check.md``):

1. the machine: GPU name and memory, torch and CUDA versions, JAX's platform;
2. the authors' MNIST VAE (32/64/96/128 channels, z = 64) trained for a few epochs on
   the embedded 5 000 digits (``mnist_5k``): seconds per epoch, test ELBO;
3. the defence at paper scale on that model: an L∞ δ = 0.1 SKL attack on every test
   digit (500 chains), then HMC with T = 500 after 250 warm-up transitions and 20
   leapfrog steps, with the attacked and clean reconstructions' MS-SSIM at T = 0, 100
   and 500, the gain under attack and the time;
4. ``bench_attack.py`` and ``bench_hmc.py`` on CUDA at batch 1 / 64 / 1024 (torch eager
   and compiled, Pyro; NumPyro and BlackJAX on JAX's platform, the CPU unless a CUDA
   build of jaxlib is installed);
5. DDPM training and sampling throughput at 32×32 for the ``gpu`` and ``full``
   profiles' UNets, and what that makes of each profile's chapter 7 training and
   sampling.

``--dry-run`` runs the same code on the CPU with tiny counts (seconds, not minutes), so
that CI keeps it from rotting (``tests/test_gpu_check.py``); its figures mean nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # torch shares the GPU

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_attack  # noqa: E402
import timing  # noqa: E402
from companion import data, profiles, recipes  # noqa: E402
from companion.attacks import AttackConfig, unsupervised_attack  # noqa: E402
from companion.defence import defence_curve  # noqa: E402
from companion.metrics import ms_ssim  # noqa: E402
from companion.models import ConvVAE, VAEConfig  # noqa: E402
from companion.timing import Stopwatch  # noqa: E402
from companion.train import TrainConfig, evaluate_elbo, train_vae  # noqa: E402


@dataclass(frozen=True)
class Counts:
    """What a run does: the real check on a GPU, or a dry run on the CPU."""

    vae_epochs: int
    n_train: int
    chains: int
    attack_steps: int
    attack_restarts: int
    warmup: int
    steps_grid: tuple[int, ...]
    leapfrog: int
    batches: tuple[int, ...]
    bench_repeats: int
    attack_bench_steps: int
    hmc_transitions: int | None  # per batch; None: bench_hmc's own 20 / 10 / 3
    unet_batch: int
    unet_steps: int
    sample_batch: int


GPU_RUN = Counts(
    vae_epochs=5,
    n_train=4_000,
    chains=500,
    attack_steps=50,
    attack_restarts=3,
    warmup=250,
    steps_grid=(0, 100, 500),
    leapfrog=20,
    batches=(1, 64, 1024),
    bench_repeats=3,
    attack_bench_steps=20,
    hmc_transitions=None,
    unet_batch=128,
    unet_steps=20,
    sample_batch=500,
)
DRY_RUN = Counts(
    vae_epochs=1,
    n_train=256,
    chains=4,
    attack_steps=2,
    attack_restarts=1,
    warmup=2,
    steps_grid=(0, 1, 2),
    leapfrog=2,
    batches=(1, 4),
    bench_repeats=1,
    attack_bench_steps=5,
    hmc_transitions=2,
    unet_batch=2,
    unet_steps=2,
    sample_batch=2,
)


def _table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machine(device: torch.device) -> str:
    import jax

    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        gpu = f"{props.name}, {props.total_memory / 2**30:.0f} GiB"
    else:
        gpu = "none (dry run on the CPU)"
    return "\n".join(
        [
            "## Machine",
            "",
            f"- GPU: {gpu}",
            f"- torch {torch.__version__} (CUDA {torch.version.cuda}), "
            f"{torch.get_num_threads()} CPU threads, {platform.processor() or 'cpu'}",
            f"- JAX {jax.__version__} on {jax.devices()[0].platform}",
        ]
    )


def paper_vae(device: torch.device, counts: Counts) -> tuple[ConvVAE, str]:
    """The authors' MNIST VAE trained for a few epochs on the embedded digits."""
    vs = profiles.GPU.vae
    train = data.load_images(name="mnist_5k", split="train")
    valid = data.load_images(name="mnist_5k", split="valid")
    test = data.load_images(name="mnist_5k", split="test")
    profiles.seed_everything(0)
    model = ConvVAE(VAEConfig(image_size=28, z_dim=vs.z_dim, channels=vs.channels))
    model = model.to(device)
    config = TrainConfig(
        epochs=counts.vae_epochs,
        batch_size=vs.batch_size,
        lr=vs.lr,
        patience=counts.vae_epochs,
        progress=False,
    )
    with Stopwatch(device=device) as clock:
        train_vae(
            model=model,
            train_images=train.images[: counts.n_train],
            valid_images=valid.images,
            config=config,
        )
    seconds = clock.seconds
    x = data.binarize(test.images, generator=torch.Generator().manual_seed(0))
    test_elbo = evaluate_elbo(model=model, images=x.to(device)).mean().item()
    channels = "/".join(map(str, vs.channels))
    text = "\n".join(
        [
            "## The authors' MNIST VAE",
            "",
            f"{channels} channels, z = {vs.z_dim}, "
            f"{sum(p.numel() for p in model.parameters()):,} parameters; "
            f"{counts.vae_epochs} epochs on {min(counts.n_train, len(train.images))} "
            f"embedded digits at batch {vs.batch_size}: "
            f"{seconds / counts.vae_epochs:.2f} s per epoch, test ELBO "
            f"{test_elbo:.1f} nats.",
        ]
    )
    return model.eval(), text


def paper_defence(model: ConvVAE, device: torch.device, counts: Counts) -> str:
    """The defence at paper scale on the attacked test digits, one chain each."""
    model.requires_grad_(False)
    test = data.load_images(name="mnist_5k", split="test")
    x = test.images[: counts.chains].to(device)
    gen = torch.Generator().manual_seed(0)
    with Stopwatch(device=device) as clock:
        attacked = unsupervised_attack(
            model,
            x,
            config=AttackConfig(
                radius=0.1, steps=counts.attack_steps, restarts=counts.attack_restarts
            ),
            generator=gen,
        ).x_adv
    attack_s = clock.seconds
    with torch.no_grad():
        clean_rec = model.reconstruct(x)
    rows, seconds = [], {}
    scores: dict[str, dict[int, float]] = {}
    for name, inputs in (("attacked", attacked), ("clean", x)):
        with Stopwatch(device=device) as clock:
            curve = defence_curve(
                model,
                inputs,
                steps_grid=counts.steps_grid,
                num_leapfrog=counts.leapfrog,
                num_warmup=counts.warmup,
                generator=gen,
            )
        seconds[name] = clock.seconds
        with torch.no_grad():
            scores[name] = {
                t: ms_ssim(torch.sigmoid(model.decoder_logits(r.z)), clean_rec)
                .mean()
                .item()
                for t, r in curve.items()
            }
        acceptance = curve[max(counts.steps_grid)].acceptance_rate.mean().item()
        rows.append(
            [name]
            + [f"{scores[name][t]:.3f}" for t in counts.steps_grid]
            + [f"{acceptance:.2f}", f"{seconds[name]:.1f}"]
        )
    t_max = max(counts.steps_grid)
    gain = scores["attacked"][t_max] - scores["attacked"][0]
    header = (
        ["input"]
        + [f"MS-SSIM, T = {t}" for t in counts.steps_grid]
        + ["acceptance", "seconds"]
    )
    return "\n".join(
        [
            "## The defence at paper scale",
            "",
            f"{len(x)} test digits, one chain each; L∞ δ = 0.1 SKL attack, "
            f"{counts.attack_steps} steps × {counts.attack_restarts} restarts "
            f"({attack_s:.1f} s); HMC after {counts.warmup} warm-up transitions, "
            f"{counts.leapfrog} leapfrog steps. MS-SSIM of the reconstruction against "
            "the clean input's reconstruction.",
            "",
            _table(header, rows),
            "",
            f"Gain under attack at T = {t_max}: {gain:+.3f}.",
        ]
    )


def benchmarks(device: torch.device, counts: Counts) -> str:
    """bench_attack and bench_hmc on ``device``."""
    import bench_hmc  # imports JAX with the benchmarks' one-core XLA flags

    model, label = timing.book_vae()
    model.requires_grad_(False)
    attack_rows = bench_attack.measure(
        model,
        device=device,
        batches=counts.batches,
        steps=counts.attack_bench_steps,
        repeats=counts.bench_repeats,
    )
    model = model.to(device)
    hmc_rows = bench_hmc.measure(
        model,
        batches=counts.batches,
        transitions=(
            None
            if counts.hmc_transitions is None
            else {b: counts.hmc_transitions for b in counts.batches}
        ),
        repeats=counts.bench_repeats,
    )
    return "\n".join(
        [
            "## Benchmarks on this device",
            "",
            f"{label}. `bench_attack.py`: one attack step against one encoder pass.",
            "",
            _table(
                ["batch", "encoder pass (ms)", "attack step (ms)", "ratio"],
                [
                    [
                        r["batch"],
                        f"{r['encoder_s'] * 1e3:.2f}",
                        f"{r['step_s'] * 1e3:.2f}",
                        f"{r['ratio']:.2f}",
                    ]
                    for r in attack_rows
                ],
            ),
            "",
            "`bench_hmc.py`: µs per leapfrog step per chain; ratio to one torch "
            "value + gradient at that batch, own to the variant's own.",
            "",
            _table(
                ["batch", "variant", "µs/step/chain", "ratio", "own"],
                [
                    [b, name, f"{us:.2f}", f"{ratio:.2f}", f"{own:.2f}"]
                    for b, name, us, ratio, own in hmc_rows
                ],
            ),
        ]
    )


def ddpm_throughput(device: torch.device, counts: Counts) -> str:
    """Training and sampling images per second of the GPU-facing profiles' UNets."""
    from companion.diffusion import DDPM, make_schedule
    from companion.models.unet import UNet

    rows = []
    for profile in (profiles.GPU, profiles.FULL):
        s = profile.diffusion
        net = UNet(recipes.diffusion_unet_config(profile))
        ddpm = DDPM(net, make_schedule(s.schedule, s.T)).to(device)
        optimiser = torch.optim.AdamW(ddpm.parameters(), lr=s.lr)
        x = torch.rand(counts.unet_batch, 1, s.image_size, s.image_size).to(device)
        x = 2 * x - 1

        def step(ddpm=ddpm, optimiser=optimiser, x=x) -> None:
            loss = ddpm.loss(x)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()

        step()  # first call: cuDNN autotuning, allocations
        train_s = timing.median_time(
            lambda step=step: [step() for _ in range(counts.unet_steps)],
            device=device,
        ) / (counts.unet_steps * counts.unet_batch)
        z = torch.randn(counts.sample_batch, 1, s.image_size, s.image_size).to(device)
        with torch.no_grad():
            sample_s = timing.median_time(
                lambda ddpm=ddpm, z=z: [
                    ddpm.reverse_step(
                        z, t=t, noise=torch.randn_like(z) if t > 1 else None
                    )
                    for t in range(counts.unet_steps, 0, -1)
                ],
                device=device,
            ) / (counts.unet_steps * counts.sample_batch)
        chapter7 = (s.train_steps * s.batch_size * train_s) / 60
        sampling = (s.n_samples * s.T * sample_s) / 60
        rows.append(
            [
                profile.name,
                f"{s.channels}, ×{s.res_blocks}",
                f"{sum(p.numel() for p in net.parameters()) / 1e6:.1f} M",
                f"{1 / train_s:.0f}",
                f"{1 / sample_s:.0f}",
                f"{chapter7:.1f}",
                f"{sampling:.1f}",
            ]
        )
    return "\n".join(
        [
            "## DDPM throughput at 32×32",
            "",
            f"Training at batch {counts.unet_batch} (AdamW), sampling at batch "
            f"{counts.sample_batch}; images (or reverse steps of one image) per second,"
            " and what that makes of the profile's chapter 7 DDPM training "
            "(train_steps × batch) and of sampling n_samples images over T steps.",
            "",
            _table(
                [
                    "profile",
                    "UNet channels, blocks",
                    "parameters",
                    "train images/s",
                    "reverse steps/s",
                    "DDPM training (min)",
                    "sampling (min)",
                ],
                rows,
            ),
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="tiny counts on the CPU, to check that the script still runs",
    )
    parser.add_argument("--report", type=Path, default=Path("_build/gpu-check.md"))
    args = parser.parse_args(argv)
    if args.dry_run:
        device, counts = torch.device("cpu"), DRY_RUN
    elif torch.cuda.is_available():
        device, counts = torch.device("cuda"), GPU_RUN
    else:
        raise SystemExit(
            "gpu_check.py needs CUDA (torch.cuda.is_available() is False); "
            "run it on a GPU machine, or pass --dry-run to check it on the CPU"
        )
    start = time.perf_counter()
    sections = [
        "# GPU check" + (" (dry run: the figures mean nothing)" if args.dry_run else "")
    ]
    sections.append(machine(device))
    took = []

    def run(title: str, fn, *args):
        print(title, flush=True)
        begin = time.perf_counter()
        out = fn(*args)
        took.append(f"{title} {time.perf_counter() - begin:.0f} s")
        return out

    model, text = run("the authors' VAE", paper_vae, device, counts)
    sections.append(text)
    sections.append(run("the defence", paper_defence, model, device, counts))
    sections.append(run("benchmarks", benchmarks, device, counts))
    sections.append(run("DDPM throughput", ddpm_throughput, device, counts))
    sections.append(f"Total: {time.perf_counter() - start:.0f} s ({'; '.join(took)}).")
    args.report.parent.mkdir(parents=True, exist_ok=True)
    partial = args.report.with_suffix(".part")
    partial.write_text("\n\n".join(sections) + "\n")
    partial.replace(args.report)  # a report is complete or absent, never half-written
    print(f"report: {args.report}")


if __name__ == "__main__":
    main()
