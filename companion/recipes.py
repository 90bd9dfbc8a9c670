"""The book's models, built and trained from a profile, so that every chapter that uses
chapter 2's VAE or chapter 3's hierarchical VAE gets exactly the same model.

Each recipe seeds the global generators itself before building the model, so the result
does not depend on what a chapter computed before calling it (on a given machine it is
the same model, weight for weight). Trained models are kept in the disk cache of
:mod:`companion.cache`, keyed by the settings, the data's content and the device type,
so chapter 4 and later load the models chapters 2 and 3 trained instead of training them
again (``COMPANION_CACHE=0`` retrains every time).

Every recipe that trains takes ``run``: None (the chapters) trains in this process. A
:class:`~companion.training_run.TrainingRun` (the command line, ``python -m companion
train``) trains the same model under the same cache key with the same loops on all the
run's processes, with checkpoints it resumes from, and rank 0 alone writing the cache.
Its model is the one-process model up to float rounding (see
:mod:`companion.training_run`), which is why it takes the same key: a chapter run
afterwards finds it; the file's header records how it was trained (``provenance``).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from typing import TYPE_CHECKING

import torch

from companion.cache import cached_training, checkpoint_path
from companion.data import ImageData
from companion.models import ConvVAE, HierarchicalVAE, HVAEConfig, VAEConfig
from companion.profiles import Profile, seed_everything
from companion.train import History, TrainConfig, train_vae

if TYPE_CHECKING:  # the recipes import these lazily, when a chapter first needs them
    from companion.diffusion import DDPM, DenoisingAutoencoder, DiffusionTrainConfig
    from companion.models.unet import UNetConfig
    from companion.sample_quality import FeatureClassifier
    from companion.training_run import TrainingRun

__all__ = [
    "training_budget",
    "chapter2_vae",
    "beta_vae",
    "chapter3_hvae",
    "diffusion_unet_config",
    "diffusion_train_config",
    "chapter7_ddpm",
    "chapter8_dae",
    "chapter8_generator",
    "feature_classifier",
]


def training_budget(profile: Profile, **overrides) -> TrainConfig:
    """The training settings both VAEs share: chapter 2's epochs, batch, lr, patience,
    seed."""
    vs = profile.vae
    settings = dict(
        epochs=vs.epochs,
        batch_size=vs.batch_size,
        lr=vs.lr,
        patience=vs.patience,
        binarize=profile.data.binarize,
        seed=profile.seed,
    )
    return TrainConfig(**(settings | overrides))


def chapter2_vae(
    profile: Profile,
    *,
    train: ImageData,
    valid: ImageData,
    device: torch.device,
    run: TrainingRun | None = None,
) -> tuple[ConvVAE, History]:
    """Chapter 2's convolutional VAE, trained on ``train`` with early stopping on
    ``valid`` (cached; ``run``: see the module docstring)."""
    return beta_vae(profile, beta=1.0, train=train, valid=valid, device=device, run=run)


def beta_vae(
    profile: Profile,
    *,
    beta: float,
    train: ImageData,
    valid: ImageData,
    device: torch.device,
    run: TrainingRun | None = None,
) -> tuple[ConvVAE, History]:
    """Chapter 2's VAE trained on the β-ELBO (Higgins et al., 2017) (cached).

    β = 1 is chapter 2's VAE itself, weight for weight. For β ≠ 1, chapter 2's trained
    VAE trains on for ``profile.open_questions.beta_epochs`` more epochs with the KL
    weighted by β, which widens the posteriors and shortens the codes; early stopping
    reads the β-ELBO. Every β-VAE thus shares chapter 2's initialisation, data order
    and training run, so what differs from chapter 2's VAE is β and those few more
    epochs, and each β-VAE costs a fraction of a training run (the returned history
    covers those last epochs only).

    Raises:
        ValueError: β not positive.
    """
    if not beta > 0:
        raise ValueError(f"beta must be positive, got {beta}; 1 is the plain ELBO")
    config = VAEConfig(
        image_size=profile.data.image_size,
        z_dim=profile.vae.z_dim,
        channels=profile.vae.channels,
    )
    plain = training_budget(profile)
    vae, history = _trained(
        profile,
        lambda: ConvVAE(config),
        config=config,
        budget=plain,
        train=train,
        valid=valid,
        device=device,
        name="vae",
        run=run,
    )
    if beta == 1:
        return vae, history
    return _trained(
        profile,
        lambda: copy.deepcopy(vae),
        config=config,
        budget=training_budget(
            profile, beta=beta, epochs=profile.open_questions.beta_epochs
        ),
        train=train,
        valid=valid,
        device=device,
        name=f"vae-beta{beta:g}",
        start=dict(recipe="vae", budget=plain),
        run=run,
    )


def chapter3_hvae(
    profile: Profile,
    *,
    train: ImageData,
    valid: ImageData,
    device: torch.device,
    run: TrainingRun | None = None,
) -> tuple[HierarchicalVAE, History]:
    """Chapter 3's hierarchical VAE, with chapter 2's data, split and training budget
    (cached; ``run``: see the module docstring)."""
    config = HVAEConfig(
        image_size=profile.data.image_size,
        z_dims=profile.hvae.z_dims,
        channels=profile.vae.channels,
        width=profile.hvae.width,
    )
    return _trained(
        profile,
        lambda: HierarchicalVAE(config),
        config=config,
        budget=training_budget(profile),
        train=train,
        valid=valid,
        device=device,
        name="hvae",
        run=run,
    )


def _trained(
    profile: Profile,
    make,
    *,
    config,
    budget: TrainConfig,
    train: ImageData,
    valid: ImageData,
    device: torch.device,
    name: str,
    start: dict | None = None,
    run: TrainingRun | None = None,
):
    """Seed, build and train a VAE with ``budget``, through the disk cache.

    ``start`` names the trained model that ``make`` copies, when training continues from
    one (it joins the cache key); None: ``make`` builds a fresh model.
    """
    key = dict(
        recipe=name,
        config=config,
        budget=budget,
        seed=profile.seed,
        device=torch.device(device).type,
        train=_digest(train.images),
        valid=_digest(valid.images),
    )
    if start is not None:
        key["start"] = start

    def build():
        seed_everything(profile.seed)
        return make().to(device)

    def fit(model) -> dict:
        history = train_vae(
            model=model,
            train_images=train.images,
            valid_images=valid.images,
            config=budget,
            run=run,
            checkpoint=_checkpointing(run, key=key, name=name),
        )
        return dataclasses.asdict(history)

    model, record = _cached(run, key=key, build=build, train=fit, name=name)
    return model, History(**record)


def _checkpointing(run: TrainingRun | None, *, key: dict, name: str):
    """Where and how often ``run`` saves its resumable checkpoint of the model under
    ``key`` (None: the chapters' runs keep none)."""
    return None if run is None else run.checkpointing(checkpoint_path(key, name=name))


def _cached(run: TrainingRun | None, *, key: dict, build, train, name: str):
    """:func:`~companion.cache.cached_training` in this process (``run`` None), or for
    a command-line run: every rank trains (or finds the cached model), rank 0 alone
    writes the model and then deletes the run's checkpoint, and no rank goes on before
    the file is in place."""
    if run is None:
        return cached_training(key=key, build=build, train=train, name=name)
    out = cached_training(
        key=key,
        build=build,
        train=train,
        name=name,
        write=run.world.is_main,
        provenance={
            "processes": run.world.size,
            "precision": run.precision,
            "trainer": "companion.training_run",
        },
    )
    if run.world.is_main:
        checkpoint_path(key, name=name).unlink(missing_ok=True)
    run.world.barrier()
    return out


def _digest(images: torch.Tensor) -> str:
    """SHA-256 of a tensor's values: the data's identity in a cache key."""
    return hashlib.sha256(
        images.detach().cpu().contiguous().numpy().tobytes()
    ).hexdigest()


# --- Diffusion models (chapters 7 and 8), shared through the disk cache ---------------


def diffusion_unet_config(profile: Profile) -> UNetConfig:
    """The UNet of the profile's diffusion models (the DDPM and every DAE share it)."""
    from companion.models.unet import UNetConfig

    s = profile.diffusion
    return UNetConfig(
        image_size=s.image_size,
        channels=s.channels,
        channel_mults=s.channel_mults,
        res_blocks=s.res_blocks,
        attention_resolutions=s.attention_resolutions,
        dropout=s.dropout,
    )


def diffusion_train_config(
    profile: Profile, *, steps: int, seed_offset: int = 0
) -> DiffusionTrainConfig:
    """Training settings of the diffusion chapters' models (seeded by the profile)."""
    from companion.diffusion import DiffusionTrainConfig

    s = profile.diffusion
    return DiffusionTrainConfig(
        steps=steps,
        batch_size=s.batch_size,
        lr=s.lr,
        ema_decay=s.ema_decay,
        seed=profile.seed + seed_offset,
    )


def _diffusion_key(
    profile: Profile, *, steps: int, seed_offset: int = 0, **extra
) -> dict:
    """What determines a diffusion chapter model's weights (and nothing else, so that
    changing e.g. the FID sample count keeps the cached models)."""
    s = profile.diffusion
    return {
        "data": s.data,
        "image_size": s.image_size,
        "schedule": s.schedule,
        "T": s.T,
        "unet": diffusion_unet_config(profile),
        "train": diffusion_train_config(profile, steps=steps, seed_offset=seed_offset),
        **extra,
    }


def chapter7_ddpm(
    profile: Profile, *, device: torch.device, run: TrainingRun | None = None
) -> DDPM:
    """Chapter 7's DDPM (ε-prediction, L_simple, EMA weights) on the profile's data set.

    Trained once and cached on disk (:mod:`companion.cache`), so chapter 8 reuses it
    (``run``: see the module docstring).
    """
    from companion.diffusion import DDPM, make_schedule, train_ddpm
    from companion.diffusion.images import load_diffusion_images
    from companion.models.unet import UNet

    s = profile.diffusion

    def build() -> DDPM:
        seed_everything(profile.seed)
        return DDPM(
            UNet(diffusion_unet_config(profile)), make_schedule(s.schedule, s.T)
        ).to(device)

    key = _diffusion_key(profile, steps=s.train_steps, model="ddpm")

    def train(model: DDPM) -> None:
        images = load_diffusion_images(
            name=s.data, split="train", image_size=s.image_size
        ).images
        config = diffusion_train_config(profile, steps=s.train_steps)
        train_ddpm(
            model,
            images=images,
            config=config,
            run=run,
            checkpoint=_checkpointing(run, key=key, name="ddpm"),
        )

    return _cached(run, key=key, build=build, train=train, name="ddpm")[0]


def chapter8_dae(
    profile: Profile,
    *,
    beta_1: float,
    device: torch.device,
    run: TrainingRun | None = None,
) -> DenoisingAutoencoder:
    """Chapter 8's denoising autoencoder for one β_1 (the DDPM's UNet, time held at k),
    cached.

    ``profile.diffusion.dae_init`` says where training starts: ``scratch`` (a fresh
    network, as Deja et al. train it) or ``ddpm`` (chapter 7's DDPM's network, so the
    autoencoder starts as the DDPM's one-step estimate of x from z_k and training at k
    specialises it: at 16×16, 300 steps from scratch left visible noise in its outputs).
    ``run``: see the module docstring.
    """
    from companion.diffusion import DenoisingAutoencoder, make_schedule, train_dae
    from companion.diffusion.images import load_diffusion_images
    from companion.models.unet import UNet

    s = profile.diffusion

    def build() -> DenoisingAutoencoder:
        seed_everything(profile.seed + 1)
        net = UNet(diffusion_unet_config(profile))
        if s.dae_init == "ddpm":
            ddpm = chapter7_ddpm(profile, device=device, run=run)
            net.load_state_dict(ddpm.net.state_dict())
        return DenoisingAutoencoder(
            net, make_schedule(s.schedule, s.T), beta_1=beta_1
        ).to(device)

    def train(model: DenoisingAutoencoder) -> None:
        images = load_diffusion_images(
            name=s.data, split="train", image_size=s.image_size
        ).images
        config = diffusion_train_config(profile, steps=s.dae_steps, seed_offset=1)
        train_dae(
            model,
            images=images,
            config=config,
            run=run,
            checkpoint=_checkpointing(run, key=key, name=name),
        )

    key = _diffusion_key(
        profile,
        steps=s.dae_steps,
        seed_offset=1,
        model="dae",
        beta_1=beta_1,
        output="x from predicted noise",
        init=s.dae_init,
        **({"ddpm_steps": s.train_steps} if s.dae_init == "ddpm" else {}),
    )
    name = f"dae-{beta_1:g}"
    return _cached(run, key=key, build=build, train=train, name=name)[0]


def chapter8_generator(
    profile: Profile,
    *,
    beta_1: float,
    device: torch.device,
    run: TrainingRun | None = None,
) -> DDPM:
    """DAED's own generator for one β_1: a diffusion trained only on the steps after k
    (cached).

    ``profile.diffusion.generator_init`` says where training starts: ``scratch`` (a
    fresh network, as Deja et al. train it) or ``ddpm`` (chapter 7's DDPM, which has
    seen all steps; training it on t > k then specialises it,
    at a fraction of the cost). ``run``: see the module docstring.

    Raises:
        ValueError: β_1 not among ``profile.diffusion.beta_1s``
            (it needs that β_1's autoencoder).
    """
    from companion.diffusion import DDPM, make_schedule, split_step, train_ddpm
    from companion.diffusion.images import load_diffusion_images
    from companion.models.unet import UNet

    s = profile.diffusion
    if beta_1 not in s.beta_1s:
        raise ValueError(
            f"beta_1 = {beta_1} is not one of the profile's beta_1s {s.beta_1s}"
        )
    schedule = make_schedule(s.schedule, s.T)
    k = split_step(schedule, beta_1)

    def build() -> DDPM:
        seed_everything(profile.seed + 2)
        model = DDPM(UNet(diffusion_unet_config(profile)), schedule).to(device)
        if s.generator_init == "ddpm":
            ddpm = chapter7_ddpm(profile, device=device, run=run)
            model.load_state_dict(ddpm.state_dict())
        return model

    def train(model: DDPM) -> None:
        images = load_diffusion_images(
            name=s.data, split="train", image_size=s.image_size
        ).images
        config = diffusion_train_config(profile, steps=s.generator_steps, seed_offset=2)
        train_ddpm(
            model,
            images=images,
            config=config,
            t_min=k + 1,
            run=run,
            checkpoint=_checkpointing(run, key=key, name=name),
        )

    start = {"init": s.generator_init} | (
        {"ddpm_steps": s.train_steps} if s.generator_init == "ddpm" else {}
    )
    key = _diffusion_key(
        profile,
        steps=s.generator_steps,
        seed_offset=2,
        model="daed-generator",
        beta_1=beta_1,
        t_min=k + 1,
        **start,
    )
    name = f"generator-{beta_1:g}"
    return _cached(run, key=key, build=build, train=train, name=name)[0]


def feature_classifier(profile: Profile, *, device: torch.device) -> FeatureClassifier:
    """The classifier whose features FID and precision / recall use, trained on the
    diffusion data set's training split (cached)."""
    from companion.cache import cached_model
    from companion.diffusion.images import load_diffusion_images
    from companion.sample_quality import FeatureClassifier, train_feature_classifier

    s = profile.diffusion

    def build() -> FeatureClassifier:
        seed_everything(profile.seed)
        return FeatureClassifier().to(device)

    def train(model: FeatureClassifier) -> None:
        data = load_diffusion_images(
            name=s.data, split="train", image_size=s.image_size
        )
        train_feature_classifier(
            model,
            images=data.images,
            labels=data.labels,
            steps=s.classifier_steps,
            seed=profile.seed,
        )

    key = {
        "data": s.data,
        "image_size": s.image_size,
        "steps": s.classifier_steps,
        "seed": profile.seed,
        "model": "feature_classifier",
    }
    return cached_model(key=key, build=build, train=train, name="features")
