"""The chapters' training loops on several processes, resumable, optionally in mixed
precision: what ``python -m companion train`` runs.

:func:`train_vae_sharded` is :func:`companion.train.train_vae` and
:func:`fit_sharded` is :func:`companion.diffusion.ddpm.fit` (the DDPM's, the DAEs' and
the DAED generators' loop), step for step, with three additions:

* **Several processes, one global batch.** Under torchrun every rank holds the same
  model and draws the same random numbers: the data order, the Bernoulli pixels of
  dynamic binarisation, the reparameterisation noise, the diffusion steps t and noise ε
  are drawn for the whole global batch (``batch_size`` of the config, whatever the
  number of processes K), and rank r keeps its contiguous rows
  (:meth:`companion.parallel.World.part`). DistributedDataParallel averages the
  gradients, so each update is the update of one process on the global batch: K ranks
  with batch b reach the weights of one process with batch K·b up to float rounding
  (the order of the gradient sums), not a statistically similar model. Only per-rank
  randomness inside the network (dropout, in the ``gpu`` and ``full`` UNets) is drawn
  from seeds derived per rank (:func:`companion.parallel.rank_seed`); with dropout
  the K-rank model equals the one-process model in distribution, not float for float.
  Validation (the VAE's early stopping) is computed whole on every rank, so every rank
  stops at the same epoch.
* **Resumable.** With a :class:`~companion.training_state.Checkpointing`, the loop saves
  its whole state (weights, optimizer, EMA, step, data order, generator states) every N
  steps or minutes and, started again with the same arguments, resumes from it: the
  resumed run ends with the same weights, bit for bit, as an uninterrupted one.
* **Mixed precision** (``precision="bf16"`` or ``"fp16"``, CUDA only; ``"fp32"`` by
  default): the forward pass runs under ``torch.autocast`` (matrix products and
  convolutions in 16-bit floats, reductions and the loss in float32), with a gradient
  scaler for fp16; weights, optimizer state and EMA stay float32. It changes the
  rounding of every step, so the weights differ from float32 training as another
  GPU's kernels would, not only in the last bits; the chapters' claims are checked in
  float32.

With one process, ``precision="fp32"`` and no checkpointing, both loops draw exactly
the random numbers of their originals in the same order and give the same weights bit
for bit (``tests/test_sharded_training.py`` checks it).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from companion.data import binarize, check_images
from companion.diffusion.daed import DenoisingAutoencoder
from companion.diffusion.ddpm import (
    DDPM,
    DiffusionHistory,
    DiffusionTrainConfig,
    ema_update,
    loss_draws,
    to_model_space,
)
from companion.objectives import elbo
from companion.parallel import World, rank_seed
from companion.progress import progress_bar
from companion.rng import randn
from companion.train import History, TrainConfig, evaluate_elbo
from companion.training_state import (
    Checkpointing,
    load_training_state,
    save_training_state,
)

__all__ = [
    "PRECISIONS",
    "TrainingRun",
    "train_vae_sharded",
    "fit_sharded",
    "train_ddpm_sharded",
    "train_dae_sharded",
]

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class TrainingRun:
    """How the command line trains a model.

    Attributes:
        world: the processes sharing the work (:func:`companion.parallel.init_world`).
        precision: ``fp32`` (default), or ``bf16`` / ``fp16`` mixed precision on CUDA.
        checkpoint_every_steps: save a resumable checkpoint after this many optimizer
            steps (None: not by count).
        checkpoint_every_minutes: and after this many minutes (None: not by time).
        resume: start from the model's checkpoint when there is one.
        after_save: called with the step after each checkpoint (tests stop runs there).
    """

    world: World = World()
    precision: str = "fp32"
    checkpoint_every_steps: int | None = 1_000
    checkpoint_every_minutes: float | None = 15.0
    resume: bool = True
    after_save: Callable[[int], None] | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {PRECISIONS}, got {self.precision!r}"
            )
        if self.precision != "fp32" and self.world.device.type != "cuda":
            raise ValueError(
                f"mixed precision ({self.precision}) runs on CUDA only; on "
                f"{self.world.device.type} train in fp32"
            )

    def checkpointing(self, path) -> Checkpointing:
        """The :class:`Checkpointing` of one model's checkpoint file ``path``."""
        return Checkpointing(
            path=path,
            every_steps=self.checkpoint_every_steps,
            every_minutes=self.checkpoint_every_minutes,
            after_save=self.after_save,
        )

    def autocast(self) -> contextlib.AbstractContextManager:
        """The forward pass's precision context (nothing at all for fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.world.device.type, dtype=dtype)

    def scaler(self) -> torch.amp.GradScaler | None:
        """fp16's gradient scaler (None otherwise)."""
        return torch.amp.GradScaler("cuda") if self.precision == "fp16" else None


class _Objective(nn.Module):
    """``model`` with a loss as its forward pass, which is what
    DistributedDataParallel needs to synchronise the gradients of ``encode`` /
    ``decode`` / ``loss`` calls."""

    def __init__(self, model: nn.Module, compute: Callable[..., Any]) -> None:
        super().__init__()
        self.model = model
        self._compute = compute

    def forward(self, *args: torch.Tensor) -> Any:
        return self._compute(self.model, *args)


def _wrapped(model: nn.Module, compute: Callable[..., Any], world: World) -> nn.Module:
    objective = _Objective(model, compute)
    if not world.distributed:
        return objective
    return DistributedDataParallel(
        objective,
        device_ids=[world.device] if world.device.type == "cuda" else None,
    )


def _check_batch(batch_size: int, world: World) -> None:
    if batch_size % world.size:
        raise ValueError(
            f"the global batch of {batch_size} does not divide into {world.size} "
            f"processes; run a number of processes that divides {batch_size}"
        )


def _rng_states(device: torch.device) -> dict[str, torch.Tensor]:
    states = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def _set_rng_states(states: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(states["cpu"])
    if device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"], device)


# --- VAEs ---------------------------------------------------------------------------


def _posterior_noise(model: Any, batch: int, like: torch.Tensor) -> list:
    """The reparameterisation noise of one ELBO sample for a batch, drawn from the
    global generator exactly as the model's ``rsample`` draws it: one (1, B, d_l)
    tensor per latent group, top first (hierarchical VAEs, ``z_dims``), or one
    (1, B, z_dim) tensor."""
    if hasattr(model, "z_dims"):
        return [
            randn((1, batch, d), dtype=like.dtype, device=like.device)
            for d in model.z_dims
        ]
    shape = (1, batch, model.z_dim)
    return [torch.empty(shape, dtype=like.dtype, device=like.device).normal_()]


def _elbo_terms(model: Any, x: torch.Tensor, *noise: torch.Tensor):
    """The ELBO of images x at the reparameterised sample made of ``noise``."""
    q = model.encode(x)
    if hasattr(q, "feats"):  # a hierarchical posterior draws group by group
        z = q.rsample((1,), noise=list(noise))
    else:  # what Normal.rsample computes: loc + eps · scale
        z = q.base_dist.loc + noise[0] * q.base_dist.scale
    return elbo(model=model, x=x, posterior=q, z=z)


def train_vae_sharded(
    *,
    model: nn.Module,
    train_images: torch.Tensor,
    valid_images: torch.Tensor,
    config: TrainConfig,
    run: TrainingRun,
    checkpoint: Checkpointing | None = None,
) -> History:
    """:func:`companion.train.train_vae` on ``run.world``'s processes, resumable.

    Args:
        model: a VAE on ``run.world.device``, built identically on every rank.
        train_images: (N, 1, H, W) in [0, 1], the whole training set on every rank.
        valid_images: (M, 1, H, W) in [0, 1].
        config: :class:`~companion.train.TrainConfig`; ``batch_size`` is the global
            batch, divided among the processes.
        run: processes and precision.
        checkpoint: where and how often to save; None: no checkpoints, no resuming.

    Returns:
        The :class:`~companion.train.History` of the whole run (resumed runs included);
        ``model`` holds the best validation epoch's weights.

    Raises:
        ValueError: the global batch does not divide into the processes, the last
            batch of an epoch has fewer images than there are processes, or free bits
            with several processes (the per-group clamp acts on the global batch's mean
            KL, which no rank sees).
    """
    world = run.world
    _check_batch(config.batch_size, world)
    if world.distributed and config.free_bits > 0:
        raise ValueError("free bits train in one process only (free_bits > 0)")
    tail = len(train_images) % config.batch_size
    if 0 < tail < world.size:
        raise ValueError(
            f"the last batch of every epoch holds {tail} of the {len(train_images)} "
            f"images, fewer than the {world.size} processes; run fewer processes"
        )
    shape = tuple(getattr(model, "image_shape", train_images.shape[1:]))
    check_images(train_images, shape=shape)
    check_images(valid_images, shape=shape)
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)  # reparameterisation noise uses the global generator
    valid = (
        binarize(valid_images, generator=gen) if config.binarize else valid_images
    ).to(device)
    train_images = train_images.to(device)

    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    scaler = run.scaler()
    objective = _wrapped(model, _elbo_terms, world)
    history = History()
    best_state: dict | None = None
    best_loss, waited, first_epoch, step, seconds_before = math.inf, 0, 0, 0, 0.0
    saved = load_training_state(checkpoint.path) if checkpoint and run.resume else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimiser.load_state_dict(saved["optimiser"])
        if scaler is not None and saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
        history = History(**saved["history"])
        best_state, best_loss, waited = (
            saved["best_state"],
            saved["best_loss"],
            saved["waited"],
        )
        first_epoch, step, seconds_before = (
            saved["epoch"],
            saved["step"],
            history.seconds,
        )
        gen.set_state(saved["data_generator"])
        _set_rng_states(saved["rng"], device)
        if checkpoint is not None:
            checkpoint.resumed(step)
    start = time.perf_counter()
    bar = progress_bar(
        range(first_epoch, config.epochs),
        desc="training",
        enabled=config.progress if world.is_main else False,
    )
    steps_per_epoch = -(-len(train_images) // config.batch_size)
    warmup_steps = config.kl_warmup_epochs * steps_per_epoch
    for epoch in bar:
        model.train()
        order = torch.randperm(len(train_images), generator=gen).to(device)
        total = torch.zeros((), device=device)
        kl_total: torch.Tensor | None = None
        n_batches = 0
        for i in range(0, len(order), config.batch_size):
            x = train_images[order[i : i + config.batch_size]]
            if config.binarize:
                x = torch.bernoulli(x)
            noise = _posterior_noise(model, len(x), x)
            part = world.part(len(x))
            # the share of the global batch's mean this rank's mean stands for, times
            # K (DDP averages over ranks); exactly 1 in one process
            share = (part.stop - part.start) * world.size / len(x)
            with run.autocast():
                terms = objective(x[part], *(n[:, part] for n in noise))
            # (L,) batch-averaged KL per group
            kl = torch.stack(terms.kl_groups).mean(1)
            kl_penalty = (
                kl.clamp(min=config.free_bits).sum()
                if config.free_bits > 0
                else kl.sum()
            )
            weight = (
                config.beta * min(1.0, (step + 1) / warmup_steps)
                if warmup_steps
                else config.beta
            )
            loss = -terms.log_likelihood.mean() + weight * kl_penalty
            if share != 1:
                loss = loss * share
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"training loss became {loss.item()} at epoch {epoch}; lower the "
                    "learning rate"
                )
            optimiser.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
            else:
                scaler.scale(loss).backward()
                scaler.unscale_(optimiser)
            if config.skip_grad_norm is not None:
                norm = torch.nn.utils.clip_grad_norm_(
                    model.parameters(), max_norm=math.inf
                )
                if not norm <= config.skip_grad_norm:  # also skips a non-finite norm
                    history.skipped_steps += 1
                    step += 1
                    if scaler is not None:
                        scaler.update()
                    continue
            if scaler is None:
                optimiser.step()
            else:
                scaler.step(optimiser)
                scaler.update()
            step += 1
            batch_loss = (
                -terms.log_likelihood.mean() + config.beta * kl.sum()
            ).detach()
            if world.distributed:  # this rank's part of the global batch's means
                batch_loss, kl = (
                    batch_loss * share / world.size,
                    kl * share / world.size,
                )
            total += batch_loss
            kl_total = kl.detach() if kl_total is None else kl_total + kl.detach()
            n_batches += 1
        if kl_total is None:  # n_batches == 0
            raise FloatingPointError(
                f"every update of epoch {epoch} was skipped (gradient norm above "
                f"{config.skip_grad_norm}); raise skip_grad_norm or lower the "
                "learning rate"
            )
        if world.distributed:
            sums = torch.cat([total.reshape(1), kl_total])
            dist.all_reduce(sums)
            total, kl_total = sums[0], sums[1:]
        history.train_loss.append(float(total) / n_batches)
        history.kl_groups.append((kl_total / n_batches).tolist())
        history.valid_loss.append(
            float(-evaluate_elbo(model=model, images=valid, beta=config.beta).mean())
        )
        bar.set_postfix(
            train=f"{history.train_loss[-1]:.2f}", valid=f"{history.valid_loss[-1]:.2f}"
        )
        if not math.isfinite(history.valid_loss[-1]):
            raise FloatingPointError(
                f"validation loss became {history.valid_loss[-1]} at epoch {epoch}; "
                "lower the learning rate"
            )
        stop = False
        if epoch >= config.kl_warmup_epochs:
            # (earlier epochs: the objective is still changing, neither kept nor
            # counted)
            if history.valid_loss[-1] < best_loss:
                best_loss, best_state, waited = (
                    history.valid_loss[-1],
                    copy.deepcopy(model.state_dict()),
                    0,
                )
                history.best_epoch = epoch
            else:
                waited += 1
                stop = waited >= config.patience
        if stop:
            break
        if (
            checkpoint is not None
            and epoch + 1 < config.epochs
            and world.agree(checkpoint.due(step))
        ):
            if world.is_main:
                history.seconds = seconds_before + time.perf_counter() - start
                save_training_state(
                    checkpoint.path,
                    {
                        "kind": "vae",
                        "epoch": epoch + 1,
                        "step": step,
                        "model": model.state_dict(),
                        "optimiser": optimiser.state_dict(),
                        "scaler": scaler.state_dict() if scaler is not None else None,
                        "history": dataclasses.asdict(history),
                        "best_state": best_state,
                        "best_loss": best_loss,
                        "waited": waited,
                        "data_generator": gen.get_state(),
                        "rng": _rng_states(device),
                    },
                )
            world.barrier()
            checkpoint.saved(step)
    # kl_warmup_epochs < epochs, and an epoch with a non-finite loss raises: at least
    # one epoch after the warm-up was kept
    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval()
    history.seconds = seconds_before + time.perf_counter() - start
    return history


# --- Diffusion models ----------------------------------------------------------------


def fit_sharded(
    model: nn.Module,
    *,
    draw: Callable[[torch.Tensor, torch.Generator], tuple[torch.Tensor, ...]],
    loss: Callable[..., torch.Tensor],
    images: torch.Tensor,
    config: DiffusionTrainConfig,
    run: TrainingRun,
    desc: str,
    checkpoint: Checkpointing | None = None,
) -> DiffusionHistory:
    """:func:`companion.diffusion.ddpm.fit` on ``run.world``'s processes, resumable.

    Args:
        model: on ``run.world.device``, built identically on every rank.
        draw: ``draw(x, generator)`` -> the random numbers of a batch x (B, ...) in
            [−1, 1], each with the batch as its first axis, drawn as the model's own
            loss draws them.
        loss: ``loss(model, x, *draws)`` -> the mean loss of a batch.
        images: (N, C, H, W) pixels in [0, 1].
        config: ``batch_size`` is the global batch, divided among the processes.
        run, checkpoint: as for :func:`train_vae_sharded`.

    Returns:
        The loss of every step (global batch means) and the time, resumed runs
        included; ``model`` ends with the EMA weights.

    Raises:
        ValueError: the global batch does not divide into the processes, or a
            checkpoint written by another number of processes.
    """
    world = run.world
    _check_batch(config.batch_size, world)
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(config.seed)
    dev_gen = (
        gen
        if device.type == "cpu"
        else torch.Generator(device=device).manual_seed(config.seed)
    )
    data = to_model_space(images).to(device)
    ema = copy.deepcopy(model).eval()
    ema.requires_grad_(False)
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    warmup = max(config.warmup_steps, 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min(1.0, (s + 1) / warmup)
    )
    scaler = run.scaler()
    objective = _wrapped(model, loss, world)
    if world.rank > 0:  # dropout masks: this rank's own stream
        torch.manual_seed(rank_seed(config.seed, world.rank))
    history = DiffusionHistory()
    model.train()
    order, pos = torch.randperm(len(data), generator=gen), 0
    losses: list[torch.Tensor] = []
    first_step, seconds_before = 0, 0.0
    saved = load_training_state(checkpoint.path) if checkpoint and run.resume else None
    if saved is not None:
        if saved["world_size"] != world.size:
            where = checkpoint.path if checkpoint else ""
            raise ValueError(
                f"the checkpoint {where} was written by {saved['world_size']} "
                "processes; resume it with as many, or delete it to start over"
            )
        model.load_state_dict(saved["model"])
        ema.load_state_dict(saved["ema"])
        optimiser.load_state_dict(saved["optimiser"])
        scheduler.load_state_dict(saved["scheduler"])
        if scaler is not None and saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
        order, pos, first_step = saved["order"], saved["pos"], saved["step"]
        losses = list(saved["losses"].to(device).unbind())
        seconds_before = saved["seconds"]
        gen.set_state(saved["data_generator"])
        if dev_gen is not gen:
            dev_gen.set_state(saved["draw_generator"])
        _set_rng_states(saved["rng"][world.rank], device)
        if checkpoint is not None:
            checkpoint.resumed(first_step)
    start = time.perf_counter()
    bar = progress_bar(
        range(first_step, config.steps),
        desc=desc,
        enabled=config.progress if world.is_main else False,
    )
    for step in bar:
        if pos + config.batch_size > len(order):
            order, pos = torch.randperm(len(data), generator=gen), 0
        x = data[order[pos : pos + config.batch_size].to(device)]
        pos += config.batch_size
        draws = draw(x, dev_gen)
        part = world.part(len(x))
        with run.autocast():
            value = objective(x[part], *(d[part] for d in draws))
        optimiser.zero_grad(set_to_none=True)
        if scaler is None:
            value.backward()
            optimiser.step()
        else:
            scaler.scale(value).backward()
            scaler.step(optimiser)
            scaler.update()
        scheduler.step()
        ema_update(ema, model, config.ema_decay)
        losses.append(value.detach())
        if (step + 1) % 100 == 0 or step + 1 == config.steps:
            recent = torch.stack(losses[-100:]).mean().item()  # one sync per 100 steps
            if not math.isfinite(recent):
                raise FloatingPointError(
                    f"the training loss became {recent} near step {step}; lower the "
                    "learning rate"
                )
            bar.set_postfix(loss=f"{recent:.4f}")
        if (
            checkpoint is not None
            and step + 1 < config.steps
            and world.agree(checkpoint.due(step + 1))
        ):
            rng = world.gather(_rng_states(device))
            if world.is_main:
                save_training_state(
                    checkpoint.path,
                    {
                        "kind": "diffusion",
                        "world_size": world.size,
                        "step": step + 1,
                        "model": model.state_dict(),
                        "ema": ema.state_dict(),
                        "optimiser": optimiser.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict() if scaler is not None else None,
                        "order": order,
                        "pos": pos,
                        "losses": torch.stack(losses),
                        "seconds": seconds_before + time.perf_counter() - start,
                        "data_generator": gen.get_state(),
                        "draw_generator": dev_gen.get_state(),
                        "rng": rng,
                    },
                )
            world.barrier()
            checkpoint.saved(step + 1)
    stacked = torch.stack(losses)
    if world.distributed:  # every rank's mean over equal parts: the global mean
        dist.all_reduce(stacked)
        stacked = stacked / world.size
    history.loss = stacked.tolist()
    model.load_state_dict(ema.state_dict())
    model.eval()
    history.seconds = seconds_before + time.perf_counter() - start
    return history


def train_ddpm_sharded(
    ddpm: DDPM,
    *,
    images: torch.Tensor,
    config: DiffusionTrainConfig,
    run: TrainingRun,
    t_min: int = 1,
    checkpoint: Checkpointing | None = None,
) -> DiffusionHistory:
    """:func:`companion.diffusion.ddpm.train_ddpm` through :func:`fit_sharded`."""
    check_images(images, shape=ddpm.image_shape)
    if not 1 <= t_min <= ddpm.T:
        raise ValueError(f"t_min must lie in 1..T = {ddpm.T}, got {t_min}")
    return fit_sharded(
        ddpm,
        draw=lambda x, g: loss_draws(x, t_min=t_min, T=ddpm.T, generator=g),
        loss=lambda m, x, t, noise: m.loss(x, t=t, noise=noise),
        images=images,
        config=config,
        run=run,
        desc="training DDPM",
        checkpoint=checkpoint,
    )


def train_dae_sharded(
    dae: DenoisingAutoencoder,
    *,
    images: torch.Tensor,
    config: DiffusionTrainConfig,
    run: TrainingRun,
    checkpoint: Checkpointing | None = None,
) -> DiffusionHistory:
    """:func:`companion.diffusion.daed.train_dae` through :func:`fit_sharded`."""
    check_images(images, shape=dae.image_shape)
    return fit_sharded(
        dae,
        # the draw of q_sample(schedule, x, k, generator=g) inside DAE.loss
        draw=lambda x, g: (
            randn(x.shape, generator=g, device=x.device, dtype=x.dtype),
        ),
        loss=lambda m, x, noise: m.loss(x, noise=noise),
        images=images,
        config=config,
        run=run,
        desc=f"training DAE (β₁ = {dae.beta_1})",
        checkpoint=checkpoint,
    )
