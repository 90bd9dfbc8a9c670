"""The command line: ``python -m companion`` (or ``vae-robustness-companion``).

``train`` fills the model cache the chapters read (:mod:`companion.cache`) with exactly
the models the chapters train, under the same keys, so that a chapter run afterwards
with the same profile, seed, cache directory and device type loads them instead of
training. ``defend`` runs the attack and the HMC defence over many test references and
writes one results file; ``fid`` samples the diffusion models and scores the samples.
All three run in one process, or in several under torchrun (``torchrun
--nproc_per_node=K -m companion ...``), where training is data-parallel
(:mod:`companion.training_run`) and the references and samples are shared out
(:mod:`companion.sharded_defence`, :mod:`companion.sharded_fid`); only rank 0 writes
files. A training run interrupted for any reason resumes from its last checkpoint when
started again with the same arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import torch

from companion import recipes
from companion.cache import CACHE_DIR_ENV, cache_dir, cache_enabled
from companion.data import load_images, stratified_indices
from companion.parallel import World, close_world, init_world
from companion.profiles import (
    PROFILES,
    Profile,
    active_profile,
    get_profile,
    smoke_profile,
)
from companion.progress import PROGRESS_ENV
from companion.training_run import PRECISIONS, TrainingRun

__all__ = ["MODELS", "main", "build_parser"]

PROG = "vae-robustness-companion"

MODELS: dict[str, str] = {
    "vae": "chapter 2's convolutional VAE (chapters 4, 6 and 9 use it too)",
    "hvae": "chapter 3's hierarchical VAE",
    "beta-vae": "chapter 9's β-VAEs (β ≠ 1 of the profile; they start from 'vae')",
    "ddpm": "chapter 7's DDPM (chapter 8 starts from it)",
    "dae": "chapter 8's denoising autoencoders, one per β₁ of the profile",
    "generator": "chapter 8's DAED generators (the β₁ that get their own)",
    "classifier": "the feature classifier of FID and precision / recall (1 process)",
}
"""The models ``train`` knows, in dependency order (``all`` trains them in this
order)."""

_DESCRIPTION = """\
Train the book's models into its model cache, run the attack and the HMC defence
over many test references, or sample and score the diffusion models, in one process
or in several (torchrun).

The chapters of the book train their models when they first need them and keep them in
a disk cache (default ~/.cache/companion/models, or $COMPANION_CACHE_DIR). At the
papers' scale (--profile full) that is hours per chapter. This command trains the very
same models ahead of time, on as many GPUs as you have, resumably; a chapter run
afterwards with the same profile, seed and cache directory on the same kind of device
loads them instead of training.

examples:
  python -m companion train vae --profile quick
  torchrun --nproc_per_node=4 -m companion train all --profile full
  torchrun --nproc_per_node=4 -m companion defend --profile full --out d.safetensors
  torchrun --nproc_per_node=4 -m companion fid --profile full --out fid.safetensors
"""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        help="settings of every chapter: quick (CPU, minutes), gpu (one GPU, about 10 "
        "minutes a chapter), full (the papers' scale); default $COMPANION_PROFILE, "
        "else gpu with CUDA, else quick",
    )
    parser.add_argument(
        "--seed", type=int, help="the profile's seed (default: the profile's, 0)"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        help=f"the model cache (default ${CACHE_DIR_ENV} or ~/.cache/companion/models);"
        " point the chapters at the same directory with that variable",
    )
    parser.add_argument(
        "--device",
        choices=("cuda", "cpu"),
        help="default: CUDA when available (one GPU per process under torchrun)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="shrink every count to check the whole path in minutes (the results "
        "mean nothing; a chapter finds them only with COMPANION_SMOKE=1)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of :func:`main` (its ``--help`` is the documentation)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    models = "\n".join(f"  {name:<11}{what}" for name, what in MODELS.items())
    train = commands.add_parser(
        "train",
        help="train the chapters' models into the model cache",
        description="Train the chapters' models into the model cache, under the keys "
        "the chapters look up.\n\nmodels:\n"
        + models
        + "\n  all        every one of them, in this order\n\n"
        "Under torchrun the profile's global batch is divided among the processes\n"
        "(it must be divisible by their number); K processes reach the weights one\n"
        "process would, up to float rounding. Checkpoints go to\n"
        "<cache-dir>/checkpoints; run the same command again to resume.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument(
        "models", nargs="+", metavar="MODEL", help="model names (above) or all"
    )
    _common(train)
    train.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="fp32 (default), or bf16 / fp16 mixed precision on CUDA: faster on "
        "tensor-core GPUs, but the weights then differ from float32 training by more "
        "than rounding",
    )
    train.add_argument(
        "--checkpoint-every-steps",
        type=int,
        default=1_000,
        metavar="N",
        help="save a resumable checkpoint every N optimizer steps (default 1000)",
    )
    train.add_argument(
        "--checkpoint-every-minutes",
        type=float,
        default=15.0,
        metavar="M",
        help="and every M minutes (default 15)",
    )
    train.add_argument(
        "--restart",
        action="store_true",
        help="ignore existing checkpoints and train from the start",
    )

    defend = commands.add_parser(
        "defend",
        help="attack test references and run the HMC defence on them",
        description="Attack stratified test references of the profile's data set "
        "(unsupervised SKL attack at the profile's chapter-6 radius, steps and "
        "restarts) and run the HMC defence on the clean and the attacked inputs (the "
        "long chains of chapter 6: the papers' T up to 500 after 250 warm-up "
        "transitions of 20 leapfrog steps in the full profile). Writes one "
        "safetensors file: per reference the adversarial input, and per T the codes "
        "and their MS-SSIM to the clean reconstruction; the header holds the settings "
        "and the mean MS-SSIM per T. Trains the model first if the cache lacks it.",
    )
    _common(defend)
    defend.add_argument(
        "--model", choices=("vae", "hvae"), default="vae", help="default vae"
    )
    defend.add_argument(
        "--per-class",
        type=int,
        help="references per class (default: the profile's long_per_class)",
    )
    defend.add_argument(
        "--batch-size",
        type=int,
        help="references per batch of chains (default: the profile's)",
    )
    defend.add_argument("--out", type=Path, required=True, help="the results file")

    fid = commands.add_parser(
        "fid",
        help="sample the diffusion models and score the samples (FID, precision, "
        "recall)",
        description="Draw samples of chapter 7's DDPM and of DAED at every β₁ of the "
        "profile (chapter 8's denoising autoencoders), all from the same reverse "
        "trajectories, and score each model's samples against the test split: FID "
        "and improved precision / recall in the feature space of the book's "
        "classifier (not Inception's: numbers compare within the book only). Writes "
        "one safetensors file with the samples and the scores in its header; trains "
        "the models first if the cache lacks them.",
    )
    _common(fid)
    fid.add_argument(
        "--samples",
        type=int,
        help="samples per model (default: the profile's n_samples)",
    )
    fid.add_argument(
        "--batch-size",
        type=int,
        default=250,
        help="samples per batch of reverse trajectories (default 250)",
    )
    fid.add_argument("--out", type=Path, required=True, help="the results file")
    return parser


def _fail(message: str) -> SystemExit:
    return SystemExit(f"{PROG}: error: {message}")


def _unwritable(directory: Path) -> str | None:
    """Why files cannot be created in ``directory`` (None: they can)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-test-"):
            pass
    except OSError as err:
        return (
            f"cannot write to {directory} ({err.strerror or err}); pass a writable "
            "directory"
        )
    return None


def _check_writable(world: World, directory: Path) -> None:
    """Fail on every rank, with rank 0's reason, when rank 0 (the writer) cannot
    write to ``directory``."""
    problem = world.gather(_unwritable(directory) if world.is_main else None)[0]
    if problem is not None:
        raise _fail(problem)


def _profile(args: argparse.Namespace) -> Profile:
    profile = get_profile(args.profile) if args.profile else active_profile()
    if args.seed is not None:
        profile = replace(profile, seed=args.seed)
    if args.smoke and not profile.smoke:
        profile = smoke_profile(profile)
    return profile


def _models(names: Sequence[str]) -> list[str]:
    unknown = [n for n in names if n != "all" and n not in MODELS]
    if unknown:
        raise _fail(
            f"unknown model {', '.join(map(repr, unknown))}; choose from "
            f"{', '.join(MODELS)} or all"
        )
    wanted = set(MODELS) if "all" in names else set(names)
    return [name for name in MODELS if name in wanted]


def _vae_data(profile: Profile):
    size = profile.data.image_size
    return tuple(
        load_images(name=profile.data.name, split=split, image_size=size)
        for split in ("train", "valid")
    )


def _trainers(profile: Profile, run: TrainingRun) -> dict[str, Callable[[], object]]:
    device = run.world.device
    d = profile.diffusion

    def vae() -> object:
        train, valid = _vae_data(profile)
        return recipes.chapter2_vae(
            profile, train=train, valid=valid, device=device, run=run
        )

    def hvae() -> object:
        train, valid = _vae_data(profile)
        return recipes.chapter3_hvae(
            profile, train=train, valid=valid, device=device, run=run
        )

    def beta_vae() -> object:
        train, valid = _vae_data(profile)
        return [
            recipes.beta_vae(
                profile, beta=b, train=train, valid=valid, device=device, run=run
            )
            for b in profile.open_questions.betas
            if b != 1
        ]

    def classifier() -> object:
        # small: rank 0 trains it in one process, the others wait and load it
        if run.world.is_main:
            recipes.feature_classifier(profile, device=device)
        run.world.barrier()
        return recipes.feature_classifier(profile, device=device)

    return {
        "vae": vae,
        "hvae": hvae,
        "beta-vae": beta_vae,
        "ddpm": lambda: recipes.chapter7_ddpm(profile, device=device, run=run),
        "dae": lambda: [
            recipes.chapter8_dae(profile, beta_1=b, device=device, run=run)
            for b in d.beta_1s
        ],
        "generator": lambda: [
            recipes.chapter8_generator(profile, beta_1=b, device=device, run=run)
            for b in d.generator_beta_1s
        ],
        "classifier": classifier,
    }


def _batch_sizes(profile: Profile) -> dict[str, int]:
    diffusion = profile.diffusion.batch_size
    vae = profile.vae.batch_size
    return {
        "vae": vae,
        "hvae": vae,
        "beta-vae": vae,
        "ddpm": diffusion,
        "dae": diffusion,
        "generator": diffusion,
    }


def _say(world: World, message: str) -> None:
    if world.is_main:
        print(message, flush=True)


def _train(args: argparse.Namespace, world: World, profile: Profile) -> None:
    names = _models(args.models)
    sizes = _batch_sizes(profile)
    odd = {n: sizes[n] for n in names if n in sizes and sizes[n] % world.size}
    if odd:
        raise _fail(
            f"the global batch of {', '.join(f'{n} ({b})' for n, b in odd.items())} "
            f"does not divide into {world.size} processes; run a number of processes "
            "that divides it"
        )
    run = TrainingRun(
        world=world,
        precision=args.precision,
        checkpoint_every_steps=args.checkpoint_every_steps,
        checkpoint_every_minutes=args.checkpoint_every_minutes,
        resume=not args.restart,
    )
    trainers = _trainers(profile, run)
    for name in names:
        start = time.perf_counter()
        trainers[name]()
        _say(
            world,
            f"{name}: in the cache after {time.perf_counter() - start:.1f} s "
            f"({profile.name} profile, seed {profile.seed}, {world.size} "
            f"process{'es' if world.size > 1 else ''})",
        )
    _say(world, f"model cache: {cache_dir()}")


def _defend(args: argparse.Namespace, world: World, profile: Profile) -> None:
    from companion.sharded_defence import (
        DefendSettings,
        defend_references,
        save_defence,
    )

    _check_writable(world, args.out.expanduser().resolve().parent)
    run = TrainingRun(world=world)
    train, valid = _vae_data(profile)
    recipe = recipes.chapter2_vae if args.model == "vae" else recipes.chapter3_hvae
    model, _ = recipe(profile, train=train, valid=valid, device=world.device, run=run)
    test = load_images(
        name=profile.data.name, split="test", image_size=profile.data.image_size
    )
    dfn = profile.defence
    per_class = args.per_class or dfn.long_per_class
    index = stratified_indices(
        test.labels,
        per_class=per_class,
        generator=torch.Generator().manual_seed(profile.seed),
    )
    settings = DefendSettings(
        radius=dfn.radius,
        attack_steps=profile.attack.steps,
        restarts=profile.attack.restarts,
        steps_grid=dfn.long_steps_grid,
        num_leapfrog=dfn.long_leapfrog,
        num_warmup=dfn.long_warmup,
        step_size=dfn.step_size,
        batch_size=args.batch_size or dfn.batch_size,
        seed=profile.seed,
    )
    start = time.perf_counter()
    results = defend_references(
        model, x_ref=test.images[index], settings=settings, world=world
    )
    if results is not None:
        results = {"index": index, "label": test.labels[index], **results}
        path = save_defence(
            args.out,
            results,
            settings=settings,
            extra={"profile": profile.name, "model": args.model},
        )
        grid = sorted(set(settings.steps_grid))
        _say(
            world,
            f"{len(index)} references in {time.perf_counter() - start:.1f} s -> "
            f"{path}\nmean MS-SSIM attacked at T = {grid[0]}: "
            f"{float(results[f'T{grid[0]}.ms_ssim_attacked'].mean()):.3f}, at T = "
            f"{grid[-1]}: {float(results[f'T{grid[-1]}.ms_ssim_attacked'].mean()):.3f}",
        )


def _fid(args: argparse.Namespace, world: World, profile: Profile) -> None:
    from companion.diffusion.images import load_diffusion_images
    from companion.sharded_fid import draw_samples, save_samples, score_samples

    _check_writable(world, args.out.expanduser().resolve().parent)
    run = TrainingRun(world=world)
    d = profile.diffusion
    ddpm = recipes.chapter7_ddpm(profile, device=world.device, run=run)
    daes = {
        b: recipes.chapter8_dae(profile, beta_1=b, device=world.device, run=run)
        for b in d.beta_1s
    }
    start = time.perf_counter()
    samples = draw_samples(
        ddpm,
        daes,
        n=args.samples or d.n_samples,
        batch_size=args.batch_size,
        seed=profile.seed,
        world=world,
    )
    if samples is None:  # not rank 0
        return
    real = load_diffusion_images(name=d.data, split="test", image_size=d.image_size)
    scores = score_samples(
        samples,
        extractor=recipes.feature_classifier(profile, device=world.device),
        real=real.images,
    )
    path = save_samples(
        args.out,
        samples,
        scores=scores,
        extra={"profile": profile.name, "seed": profile.seed},
    )
    _say(world, f"samples and scores in {time.perf_counter() - start:.1f} s -> {path}")
    for name, score in scores.items():
        _say(
            world,
            f"  {name:<11} FID {score['fid']:7.2f}  precision "
            f"{score['precision']:.3f}  recall {score['recall']:.3f}",
        )


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of a command, then restore them
    (the recipes read the cache directory and the progress setting from there)."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (errors exit with a message).

    The process's environment is left as it was found.
    """
    args = build_parser().parse_args(argv)
    settings = {}
    if args.cache_dir is not None:
        settings[CACHE_DIR_ENV] = str(args.cache_dir.expanduser().resolve())
    if args.no_progress:
        settings[PROGRESS_ENV] = "0"
    with _environment(settings):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    if not cache_enabled():
        raise _fail("the model cache is off (COMPANION_CACHE=0): nothing would be kept")
    try:
        profile = _profile(args)
    except ValueError as err:
        raise _fail(str(err)) from None
    if args.command == "train":
        _models(args.models)  # unknown names fail before any process group forms
    try:
        world = init_world(device=args.device)
    except ValueError as err:
        raise _fail(str(err)) from None
    try:
        _check_writable(world, cache_dir())
        {"train": _train, "defend": _defend, "fid": _fid}[args.command](
            args, world, profile
        )
    finally:
        close_world(world)
    return 0


if __name__ == "__main__":  # pragma: no cover - python -m companion.cli
    sys.exit(main())
