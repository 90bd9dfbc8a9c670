"""Settings for every chapter (one profile per kind of machine), the device choice,
smoke runs and seeding.

Three profiles share one code path:

* ``quick`` (default without CUDA): offline data that ships inside installed packages
  (5 000 real MNIST digits at 28×28 for the VAE chapters, 16×16 for the diffusion
  chapters), small models, every chapter within a few minutes on 2 CPU cores. CI and
  the rendered book use it.
* ``gpu`` (default with CUDA): one Colab-class GPU (a T4, 16 GB). MNIST /
  Fashion-MNIST (downloaded once), the authors' VAE architecture, a smaller UNet than
  theirs at their 32×32, counts sized for about 10 minutes per chapter.
* ``full`` (opt-in): the papers' scale; hours per chapter on one GPU.

``COMPANION_PROFILE=quick|gpu|full`` overrides the default, ``COMPANION_SEED=N`` the
profile's seed (to check that a chapter's claims survive reseeding), and
``COMPANION_SMOKE=1`` shrinks the chosen profile's counts (see :func:`smoke_profile`)
to check its code path end to end in minutes. Chapters read every number they use from
:func:`active_profile`, never from literals of their own.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, replace

import numpy as np
import torch

__all__ = [
    "DataSettings",
    "LatentModelsSettings",
    "VAESettings",
    "HVAESettings",
    "AttackSettings",
    "TVBoundSettings",
    "DefenceSettings",
    "OpenQuestionsSettings",
    "DiffusionSettings",
    "Profile",
    "QUICK",
    "GPU",
    "FULL",
    "PROFILES",
    "active_profile",
    "get_profile",
    "default_device",
    "seed_everything",
    "smoke_profile",
    "SMOKE_UNET_CHANNELS",
]

PROFILE_ENV = "COMPANION_PROFILE"
SEED_ENV = "COMPANION_SEED"
SMOKE_ENV = "COMPANION_SMOKE"


@dataclass(frozen=True)
class DataSettings:
    """Which image data set a profile trains on.

    Attributes:
        name: a name :func:`companion.data.load_images` knows (``mnist_5k``, ``digits``,
            ``mnist``, ``fashion_mnist``).
        image_size: side length in pixels the images are resized to (square, 1 channel).
        binarize: train on Bernoulli-resampled pixels (dynamic binarisation) and
            evaluate on one fixed binarisation, so likelihoods are of binary images.
    """

    name: str
    image_size: int
    binarize: bool = True


@dataclass(frozen=True)
class LatentModelsSettings:
    """Chapter 1: estimating ln p(x) of a linear-Gaussian model.

    Attributes:
        x_dim: observed dimensionality of the synthetic linear-Gaussian model.
        z_dim: latent dimensionality.
        noise_std: observation noise standard deviation σ.
        sample_counts: numbers of Monte Carlo samples k at which estimators are
            compared.
        n_repeats: independent estimates per k (errors are averaged over them).
        n_points: data points drawn for the maximum-likelihood fit.
        mle_steps: gradient steps of the maximum-likelihood fit.
        ppca_z_dim: latent dimensionality of the PPCA model fitted to the digits.
    """

    x_dim: int = 20
    z_dim: int = 4
    noise_std: float = 0.5
    sample_counts: tuple[int, ...] = (1, 10, 100, 1_000, 10_000)
    n_repeats: int = 50
    n_points: int = 2_000
    mle_steps: int = 1_500
    ppca_z_dim: int = 16


@dataclass(frozen=True)
class VAESettings:
    """Chapter 2: the convolutional VAE and its evaluation.

    Attributes:
        z_dim: latent dimensionality.
        channels: output channels of the stride-2 convolutions of the encoder (the
            decoder mirrors them); the authors' MNIST model uses (32, 64, 96, 128).
        epochs: maximum training epochs (early stopping may end sooner).
        batch_size: training batch size.
        lr: Adam learning rate.
        patience: epochs without validation improvement before stopping.
        iwae_ks: importance-sample counts k for the IWAE bound against k.
        nll_k: importance samples of the reported test NLL (the literature uses 1000
            or 5000).
        n_test: test images the IWAE curves are computed on (``None``: all).
        local_steps: Adam steps of per-example variational optimisation used to
            measure the amortisation gap.
        n_local: test images the amortisation gap is measured on.
    """

    z_dim: int = 16
    channels: tuple[int, ...] = (32, 64)
    epochs: int = 150
    batch_size: int = 64
    lr: float = 2e-3
    patience: int = 15
    iwae_ks: tuple[int, ...] = (1, 10, 100, 1_000)
    nll_k: int = 1_000
    n_test: int | None = None
    local_steps: int = 200
    n_local: int = 64


@dataclass(frozen=True)
class HVAESettings:
    """Chapter 3: the hierarchical VAE, trained with the chapter 2 VAE's data and
    budget.

    Attributes:
        z_dims: latent group sizes, top first.
        width: width of the bottom-up features and the top-down state.
        collapse_z_dims: groups of the model used to show posterior collapse (many
            small groups collapse readily).
        collapse_epochs: fixed training length of the collapse study (no early
            stopping).
        free_bits: nats per group for the cure (Kingma et al., 2016).
        kl_floor: a group with test KL above this (nats) counts as active.
        collapsed_below: a group with test KL below this (nats) counts as collapsed.
        temperatures: prior temperatures of the sample grids.
        n_compare: test images of the likelihood comparison with chapter 2's VAE
            (``None``: all); IWAE with k = ``nll_k`` costs k passes of the whole
            top-down path per image.
    """

    z_dims: tuple[int, ...] = (4, 8, 16)
    width: int = 128
    collapse_z_dims: tuple[int, ...] = (4, 4, 4, 4, 4, 4)
    collapse_epochs: int = 40
    free_bits: float = 0.5
    kl_floor: float = 0.25
    collapsed_below: float = 0.1
    temperatures: tuple[float, ...] = (0.5, 0.8, 1.0)
    n_compare: int | None = None


@dataclass(frozen=True)
class AttackSettings:
    """Chapter 4: attacks on the encoders of chapters 2 and 3.

    Attributes:
        radii: L∞ radii δ of the table (pixels in [0, 1]).
        per_class: references per class (stratified), so 10 × this many in all.
        steps: projected-gradient steps per restart.
        restarts: random restarts per reference (the best is kept).
        step_grid: step counts of the steps-and-restarts study.
        restart_grid: restart counts of that study.
        skl_factor: the attack's SKL must exceed random noise's by this factor.
    """

    radii: tuple[float, ...] = (0.05, 0.1, 0.2)
    per_class: int = 10
    steps: int = 50
    restarts: int = 3
    step_grid: tuple[int, ...] = (1, 5, 20, 50)
    restart_grid: tuple[int, ...] = (1, 3)
    skl_factor: float = 3.0


@dataclass(frozen=True)
class TVBoundSettings:
    """Chapter 5: every term of the TV bound on the linear-Gaussian model of chapter 1.

    Attributes:
        many_points: training points of the well-trained encoder.
        few_points: training points of the few-shot encoder (fewer than the input
            dimensions, so it has never seen most input directions vary).
        encoder_steps: Adam steps of each encoder's ELBO fit.
        n_references: references x^r (training points of both encoders, so at most
            ``few_points``).
        radii: L2 attack radii δ.
        radius: the radius of the plots against t.
        steps: T, the largest number of HMC transitions.
        integration_time: τ per transition (leapfrog steps × step size).
        num_leapfrog: leapfrog steps per transition of the sampler checked against the
            exact law.
        check_chains: chains per reference in that check.
        num_samples: Monte Carlo draws per estimate of the left side.
    """

    many_points: int = 2_000
    few_points: int = 5
    encoder_steps: int = 500
    n_references: int = 5
    radii: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
    radius: float = 0.5
    steps: int = 100
    integration_time: float = 0.05
    num_leapfrog: int = 5
    check_chains: int = 1_000
    num_samples: int = 20_000


@dataclass(frozen=True)
class DefenceSettings:
    """Chapter 6: the HMC defence on the attacked references of chapter 4.

    Attributes:
        radius: L∞ attack radius δ (one of ``attack.radii``).
        per_class: attacked test references per class (HMC is the expensive part).
        steps_grid: numbers of HMC transitions T compared.
        num_leapfrog: leapfrog steps per transition.
        num_warmup: step-size adaptation transitions before the T that count.
        step_size: initial leapfrog step size.
        clean_drop: the most clean-input reconstruction MS-SSIM may fall at the
            largest T.
        sweep_radii: L∞ radii of the radius sweep on chapter 2's VAE (``radius`` among
            them).
        batch_size: the most chains per batch
            (:func:`companion.defence.defence_curves`).
        long_per_class: references per class of the long chains (the authors' budget).
        long_steps_grid: T read off the long chains (up to the authors' 500).
        long_leapfrog: leapfrog steps per transition of the long chains (the authors'
            20).
        long_warmup: warm-up transitions of the long chains (the authors' 250).
        posterior_draws: codes per reference taken from the second half of the long
            clean chains as draws from p(z | x^r): half of them aim the posterior and
            encoder attacks, the other half measure every attack's posterior shift.
        encoder_penalties: the λ of the encoder attacks (SKL − λ · posterior shift).
    """

    radius: float = 0.1
    per_class: int = 5
    steps_grid: tuple[int, ...] = (0, 5, 10, 25)
    num_leapfrog: int = 10
    num_warmup: int = 20
    step_size: float = 0.05
    clean_drop: float = 0.05
    sweep_radii: tuple[float, ...] = (0.05, 0.1, 0.2)
    batch_size: int = 64
    long_per_class: int = 3
    long_steps_grid: tuple[int, ...] = (0, 1, 2, 5, 10, 25, 50, 100, 250, 500)
    long_leapfrog: int = 20
    long_warmup: int = 250
    posterior_draws: int = 20
    encoder_penalties: tuple[float, ...] = (10.0, 100.0)

    def __post_init__(self) -> None:
        if self.radius not in self.sweep_radii:
            raise ValueError(
                f"radius {self.radius} must be one of sweep_radii {self.sweep_radii}"
            )
        if self.long_per_class > self.per_class:
            raise ValueError(
                f"long_per_class {self.long_per_class} must be at most per_class "
                f"{self.per_class}: the long chains run on some of the references"
            )
        if not 4 <= self.posterior_draws <= self.long_steps_grid[-1] // 2:
            raise ValueError(
                f"posterior_draws must be between 4 and half the long chains' last T "
                f"({self.long_steps_grid[-1] // 2}), got {self.posterior_draws}"
            )


@dataclass(frozen=True)
class OpenQuestionsSettings:
    """Chapter 9: adaptive attacks, robustness scores, OOD detection, decoder and
    denoiser attacks.

    Attributes:
        radius: L∞ attack radius δ of every section (one of chapter 4's radii).
        per_class: attacked references per class (stratified).
        attack_steps: projected-gradient steps of the encoder attacks compared.
        adaptive_steps_grid: projected-gradient steps of the adaptive attack.
        adaptive_hmc_steps: T of the chain the adaptive attack differentiates through.
        adaptive_leapfrog: leapfrog steps per transition of that chain.
        eot_samples: chain-randomness draws averaged per adaptive-attack step.
        defence_steps_grid: T of the real defence that scores every attack.
        betas: KL weights of the β-VAEs (1 is chapter 2's VAE).
        beta_epochs: epochs each β-VAE trains on the β-ELBO, starting from chapter 2's
            trained VAE.
        gap_k: importance samples of the IWAE bound in the approximation gap.
        gap_elbo_samples: Monte Carlo samples of the ELBO in the approximation gap.
        n_ood: in- and out-of-distribution images scored in the OOD section.
        ood_k: importance samples of the IWAE score.
        ood_hmc_steps: T of the chains behind the HMC scores.
        decoder_step_grid: attack steps at which the SKL and reconstruction attacks
            are compared.
        power_iterations: power iterations of the decoder's Jacobian.
        denoiser_beta_1s: β_1 of the DAED autoencoders attacked in section 5
            (chapter 8's models; the backward diffusion is attacked from the same split
            steps k).
        denoiser_attack_steps: projected-gradient steps of the attacks on the denoisers.
        denoiser_eot: noise draws the expectation-over-transformation attacker averages.
        denoiser_draws: fresh noise draws that score every attacked image.
    """

    radius: float = 0.2
    per_class: int = 5
    attack_steps: int = 50
    # On the quick profile's VAE (seed 0) the adaptive attack after 5 steps leaves the
    # defended reconstructions where 10 and 20 steps leave them (MS-SSIM 0.46-0.48), and
    # the defence after 25 transitions scores every input within 0.02 of 50: the grids
    # stop there, so that chapter 9 runs in its five minutes.
    adaptive_steps_grid: tuple[int, ...] = (2, 5)
    adaptive_hmc_steps: int = 5
    adaptive_leapfrog: int = 5
    eot_samples: int = 2
    defence_steps_grid: tuple[int, ...] = (0, 10, 25)
    betas: tuple[float, ...] = (1.0, 2.0, 5.0)
    beta_epochs: int = 10
    gap_k: int = 500
    gap_elbo_samples: int = 100
    n_ood: int = 200
    ood_k: int = 100
    ood_hmc_steps: int = 20
    decoder_step_grid: tuple[int, ...] = (1, 2, 5, 20)
    power_iterations: int = 20
    denoiser_beta_1s: tuple[float, ...] = (0.001, 0.2)
    # The output shifts after 10 steps are within 3 % of those after 20 (quick profile,
    # seed 0, every denoiser and k): the attack has converged.
    denoiser_attack_steps: int = 10
    denoiser_eot: int = 2
    denoiser_draws: int = 4


GENERATOR_INITS = ("scratch", "ddpm")
# The cumulative noise levels at which Deja et al. (2022, Table 1) split DAED.
PAPER_BETA_1S = (0.2, 0.1, 0.05, 0.025, 0.001)


@dataclass(frozen=True)
class DiffusionSettings:
    """Chapters 7 and 8: the DDPM, DAED's denoising autoencoders and how they are
    measured.

    Attributes:
        data: the data set the diffusion models learn (a
            :func:`companion.data.load_images` name).
        ood_data: the out-of-distribution data set of the transfer experiments.
        image_size: side the images are brought to (28×28 images are zero-padded to
            32; the quick profile's 5 000 MNIST digits are resized to 16×16, where
            1 000 training steps on 2 cores give recognisable samples).
        schedule: β schedule of the models (``linear``: Ho et al.'s, rescaled to T).
        T: diffusion steps.
        channels, channel_mults, res_blocks, attention_resolutions, dropout: the UNet
            (:class:`companion.models.unet.UNetConfig`); the authors' Fashion-MNIST
            model: 64 channels, 3 residual blocks, dropout 0.3.
        train_steps: gradient steps of the DDPM.
        dae_steps: gradient steps of each denoising autoencoder.
        batch_size: images per step.
        lr: AdamW learning rate.
        ema_decay: decay of the weights' moving average the trained models keep.
        beta_1s: DAED's cumulative noise levels β_1 (one autoencoder each): all of the
            paper's in the full profile; the quick profile keeps 0.2, 0.1 and 0.001
            (the largest, the one that replaces a tenth of the steps, and the smallest)
            to keep chapters 7 and 8 within 8 minutes on 2 cores.
        n_samples: generated images per model for FID and precision / recall.
        classifier_steps: training steps of the FID feature classifier.
        snr_threshold: SNR above which a step counts as "signal still strong"
            (observation 1).
        noise_fractions: fractions t / T of the steps to which observation 2 noises
            images.
        n_denoise: images per data set in the denoising experiments.
        fid_margin: the most FID may rise when DAED replaces up to about 10 % of the
            steps (quick profile, 16×16: β₁ = 0.1 raised it by 1.6, 1.4 and 1.7 at seeds
            0, 1 and 2 with the DDPM as generator, by 0.7, 2.1 and 2.4 with its own).
        generator_beta_1s: β_1 whose DAED also gets its own generator, a diffusion
            trained only on the steps after k (each must be one of ``beta_1s``).
        generator_init: ``scratch`` (a fresh network, as Deja et al. train it) or
            ``ddpm`` (start from chapter 7's DDPM and train on the steps after k only:
            the quick profile's budget cannot train another diffusion from scratch).
        generator_steps: gradient steps of each such generator.
        dae_init: where each denoising autoencoder's training starts: ``scratch`` (as
            Deja et al.) or ``ddpm`` (chapter 7's DDPM's network: the autoencoder
            starts as the DDPM's one-step estimate of x from z_k; at 16×16, 300 steps
            from scratch left visible noise in the quick profile's outputs).
    """

    data: str = "mnist_5k"
    ood_data: str = "glyphs"
    image_size: int = 16
    schedule: str = "linear"
    T: int = 200
    channels: int = 24
    channel_mults: tuple[int, ...] = (1, 2, 2)
    res_blocks: int = 1
    attention_resolutions: tuple[int, ...] = (4,)
    dropout: float = 0.0
    train_steps: int = 1_000
    dae_steps: int = 150
    batch_size: int = 128
    lr: float = 2e-3
    ema_decay: float = 0.995
    beta_1s: tuple[float, ...] = (0.2, 0.1, 0.001)
    n_samples: int = 500
    classifier_steps: int = 600
    snr_threshold: float = 3.0
    noise_fractions: tuple[float, ...] = (0.025, 0.05, 0.1, 0.2, 0.3)
    n_denoise: int = 250
    fid_margin: float = 3.0
    generator_beta_1s: tuple[float, ...] = (0.1,)
    generator_init: str = "ddpm"
    generator_steps: int = 150
    dae_init: str = "ddpm"

    def __post_init__(self) -> None:
        for name in ("generator_init", "dae_init"):
            if getattr(self, name) not in GENERATOR_INITS:
                raise ValueError(
                    f"{name} must be one of {GENERATOR_INITS}, "
                    f"got {getattr(self, name)!r}"
                )
        if not set(self.generator_beta_1s) <= set(self.beta_1s):
            raise ValueError(
                f"generator_beta_1s {self.generator_beta_1s} "
                f"must be among beta_1s {self.beta_1s}: "
                "each generator is paired with that β_1's autoencoder"
            )


@dataclass(frozen=True)
class Profile:
    """All settings of one profile.

    Attributes:
        name: ``quick``, ``gpu`` or ``full``.
        seed: the seed every chapter starts from.
        data: the image data set.
        latent_models: chapter 1 settings.
        vae: chapter 2 settings (the conv architecture and training budget that
            chapter 3 gives its hierarchical VAE too).
        hvae: chapter 3 settings.
        attack: chapter 4 settings.
        tv_bound: chapter 5 settings.
        defence: chapter 6 settings.
        open_questions: chapter 9 settings.
        diffusion: chapters 7 and 8 settings.
        smoke: the counts were shrunk by :func:`smoke_profile`: the code path runs,
            the chapters' claims do not apply.
    """

    name: str
    seed: int
    data: DataSettings
    latent_models: LatentModelsSettings
    vae: VAESettings
    hvae: HVAESettings
    attack: AttackSettings
    tv_bound: TVBoundSettings
    defence: DefenceSettings
    open_questions: OpenQuestionsSettings
    diffusion: DiffusionSettings = DiffusionSettings()
    smoke: bool = False


QUICK = Profile(
    name="quick",
    seed=0,
    # 5 000 real MNIST digits at the papers' 28×28; models sized for 2 CPU cores: one
    # epoch of the VAE or the hierarchical VAE over the 4 000 training digits takes
    # about 3.5 s.
    data=DataSettings(name="mnist_5k", image_size=28),
    latent_models=LatentModelsSettings(),
    vae=VAESettings(z_dim=32, channels=(32, 64, 64), epochs=40, n_test=250, n_local=32),
    hvae=HVAESettings(z_dims=(8, 16, 32), collapse_epochs=15, n_compare=100),
    attack=AttackSettings(),
    tv_bound=TVBoundSettings(),
    defence=DefenceSettings(),
    # one β-VAE besides chapter 2's (its 10 epochs from chapter 2's VAE take about 25 s)
    open_questions=OpenQuestionsSettings(betas=(1.0, 5.0), n_ood=100),
)

FULL = Profile(
    name="full",
    seed=0,
    data=DataSettings(name="mnist", image_size=28),
    latent_models=LatentModelsSettings(
        n_repeats=200, sample_counts=(1, 10, 100, 1_000, 10_000, 100_000)
    ),
    vae=VAESettings(
        z_dim=64,
        channels=(32, 64, 96, 128),
        epochs=200,
        batch_size=128,
        lr=1e-3,
        patience=15,
        iwae_ks=(1, 10, 100, 1_000, 5_000),
        nll_k=1_000,
        local_steps=500,
        n_local=200,
    ),
    hvae=HVAESettings(
        z_dims=(16, 32, 64),
        width=256,
        collapse_z_dims=(8,) * 8,
        collapse_epochs=30,
    ),
    attack=AttackSettings(
        per_class=100,
        steps=100,
        restarts=5,
        step_grid=(1, 5, 20, 50, 100, 200),
        restart_grid=(1, 5, 10),
    ),
    tv_bound=TVBoundSettings(),
    defence=DefenceSettings(
        per_class=20,
        steps_grid=(0, 10, 50, 100, 500),
        num_warmup=100,
        long_per_class=10,
    ),
    open_questions=OpenQuestionsSettings(
        per_class=20,
        attack_steps=100,
        adaptive_steps_grid=(5, 20, 50),
        adaptive_hmc_steps=10,
        eot_samples=4,
        defence_steps_grid=(0, 10, 50, 100),
        betas=(1.0, 2.0, 5.0, 10.0),
        beta_epochs=50,
        gap_k=1_000,
        n_ood=1_000,
        ood_k=1_000,
        ood_hmc_steps=100,
        decoder_step_grid=(1, 2, 5, 20, 100),
        denoiser_attack_steps=50,
        denoiser_eot=4,
        denoiser_draws=8,
    ),
    diffusion=DiffusionSettings(
        data="fashion_mnist",
        ood_data="mnist",
        image_size=32,
        T=500,
        channels=64,
        channel_mults=(1, 2, 2, 2),
        res_blocks=3,
        attention_resolutions=(16,),
        dropout=0.3,
        train_steps=60_000,
        dae_steps=20_000,
        batch_size=128,
        lr=1e-4,
        ema_decay=0.9999,
        n_samples=10_000,
        classifier_steps=5_000,
        n_denoise=1_000,
        beta_1s=PAPER_BETA_1S,
        generator_beta_1s=(0.1, 0.2),
        generator_init="scratch",
        generator_steps=60_000,
        dae_init="scratch",
    ),
)

# One Colab-class GPU (a T4: 16 GB, about 8 TFLOPS in float32): the full profile's data
# and settings with fewer epochs, references, chains and samples. The VAE chapters keep
# the authors' MNIST model (32/64/96/128 channels, z = 64); the diffusion chapters keep
# the authors' 32×32 and T = 500 with a UNet of 32 base channels and 2 residual blocks
# (0.84 GFLOP per forward pass, a fifth of the authors' 4.2), so that training and
# sampling fit the chapter.
GPU = replace(
    FULL,
    name="gpu",
    vae=replace(
        FULL.vae,
        epochs=30,
        patience=10,
        iwae_ks=(1, 10, 100, 1_000),
        n_test=1_000,
        local_steps=300,
        n_local=100,
    ),
    hvae=replace(FULL.hvae, collapse_epochs=10, n_compare=500),
    attack=replace(
        FULL.attack, per_class=50, step_grid=(1, 5, 20, 50, 100), restart_grid=(1, 5)
    ),
    open_questions=replace(
        FULL.open_questions,
        per_class=10,
        adaptive_steps_grid=(5, 20),
        betas=(1.0, 2.0, 5.0),
        beta_epochs=10,
        n_ood=500,
        ood_hmc_steps=50,
    ),
    diffusion=replace(
        FULL.diffusion,
        channels=32,
        res_blocks=2,
        dropout=0.1,
        train_steps=4_000,
        dae_steps=1_000,
        lr=2e-4,
        ema_decay=0.999,
        beta_1s=(0.2, 0.1, 0.001),
        n_samples=500,
        classifier_steps=2_000,
        n_denoise=500,
        generator_beta_1s=(0.1,),
        generator_init="ddpm",
        generator_steps=1_000,
        dae_init="ddpm",
    ),
)

PROFILES: dict[str, Profile] = {p.name: p for p in (QUICK, GPU, FULL)}


def get_profile(name: str) -> Profile:
    """Return the profile called ``name`` (``quick``, ``gpu`` or ``full``).

    Raises:
        ValueError: for any other name.
    """
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown profile {name!r}; choose one of {sorted(PROFILES)} "
            f"(set {PROFILE_ENV} or pass the name)"
        ) from None


def active_profile() -> Profile:
    """The profile named by ``$COMPANION_PROFILE``, else ``gpu`` with CUDA, else
    ``quick``.

    ``$COMPANION_SEED``, when set, replaces the profile's seed; ``$COMPANION_SMOKE=1``
    shrinks its counts (:func:`smoke_profile`).

    Raises:
        ValueError: an unknown profile name, a seed that is not an integer, or a smoke
            setting other than 0 / 1.
    """
    name = os.environ.get(PROFILE_ENV, "").strip().lower()
    profile = (
        get_profile(name) if name else (GPU if torch.cuda.is_available() else QUICK)
    )
    seed = os.environ.get(SEED_ENV, "").strip()
    if seed:
        try:
            profile = replace(profile, seed=int(seed))
        except ValueError:
            raise ValueError(f"{SEED_ENV} must be an integer, got {seed!r}") from None
    smoke = os.environ.get(SMOKE_ENV, "").strip()
    if smoke not in ("", "0", "1"):
        raise ValueError(f"{SMOKE_ENV} must be 0 or 1, got {smoke!r}")
    return smoke_profile(profile) if smoke == "1" else profile


def _grid(values: tuple[int, ...]) -> tuple[int, ...]:
    """A grid of counts shrunk to 0 / 1, 2, 3, ...: same length, order and zero."""
    start = 0 if values[0] == 0 else 1
    return tuple(range(start, start + len(values)))


SMOKE_UNET_CHANNELS = 8
"""The diffusion UNet's base channels in a smoke run (its group norms take 8 groups)."""


def smoke_profile(profile: Profile) -> Profile:
    """``profile`` with every count shrunk and everything else kept.

    Data sets, image sizes, architectures, noise schedules, radii, β's and the lengths
    of every grid stay as they are, so a chapter takes the profile's code path end to
    end (downloads, padding, model shapes, every table row) in about a minute on a CPU;
    epochs, steps, references, chains, samples and Monte Carlo counts become the
    smallest values that still exercise it. The one width that shrinks is the diffusion
    UNet's base channel count (to :data:`SMOKE_UNET_CHANNELS`; its depth, channel
    multipliers, residual blocks and attention stay): at its real width the ``full``
    UNet made half of all smoke runs' time, and each profile's UNet is built and run at
    its real width by ``tests/models/test_unet.py``. The results mean nothing:
    ``smoke`` is set, and the chapters' checks of the papers' claims do not apply.
    """
    lm, vae, hvae, att = (
        profile.latent_models,
        profile.vae,
        profile.hvae,
        profile.attack,
    )
    tv, dfn, oq, dif = (
        profile.tv_bound,
        profile.defence,
        profile.open_questions,
        profile.diffusion,
    )
    return replace(
        profile,
        smoke=True,
        latent_models=replace(
            lm,
            sample_counts=tuple(10**i for i in range(len(lm.sample_counts))),
            n_repeats=2,
            n_points=200,
            mle_steps=10,
        ),
        vae=replace(
            vae,
            epochs=1,
            patience=1,
            iwae_ks=tuple(2**i for i in range(len(vae.iwae_ks))),
            nll_k=2 ** (len(vae.iwae_ks) - 1),
            n_test=20,
            local_steps=3,
            n_local=4,
        ),
        hvae=replace(hvae, collapse_epochs=1, n_compare=10),
        attack=replace(
            att,
            per_class=1,
            steps=2,
            restarts=1,
            step_grid=_grid(att.step_grid),
            restart_grid=_grid(att.restart_grid),
        ),
        tv_bound=replace(
            tv,
            many_points=50,
            encoder_steps=5,
            n_references=2,
            steps=3,
            check_chains=20,
            num_samples=200,
        ),
        defence=replace(
            dfn,
            per_class=1,
            steps_grid=_grid(dfn.steps_grid),
            num_leapfrog=2,
            num_warmup=2,
            batch_size=7,  # more chains than that: the batched path runs
            long_per_class=1,
            long_steps_grid=_grid(dfn.long_steps_grid),
            long_leapfrog=2,
            long_warmup=2,
            posterior_draws=4,
        ),
        open_questions=replace(
            oq,
            per_class=1,
            attack_steps=2,
            adaptive_steps_grid=_grid(oq.adaptive_steps_grid),
            adaptive_hmc_steps=1,
            adaptive_leapfrog=1,
            eot_samples=min(oq.eot_samples, 2),
            defence_steps_grid=_grid(oq.defence_steps_grid),
            beta_epochs=1,
            gap_k=4,
            gap_elbo_samples=4,
            n_ood=10,
            ood_k=4,
            ood_hmc_steps=2,
            decoder_step_grid=_grid(oq.decoder_step_grid),
            power_iterations=2,
            denoiser_attack_steps=2,
            denoiser_eot=min(oq.denoiser_eot, 2),
            denoiser_draws=2,
        ),
        diffusion=replace(
            dif,
            channels=min(dif.channels, SMOKE_UNET_CHANNELS),
            T=min(dif.T, 21),  # the rescaled linear schedule needs T > 20
            train_steps=2,
            dae_steps=2,
            batch_size=8,
            n_samples=16,
            classifier_steps=2,
            n_denoise=8,
            generator_steps=2,
        ),
    )


def default_device() -> torch.device:
    """CUDA when available, else the CPU (MPS is skipped: some ops used here lack
    it)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices) and return a torch generator seeded
    alike.

    Quick-profile results are reproducible on the same machine from this seed; CUDA
    kernels may still be non-deterministic across runs.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
