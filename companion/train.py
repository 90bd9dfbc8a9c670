"""VAE training with early stopping (on one process or several, resumable:
:mod:`companion.training_run`), and checkpoints as safetensors ``state_dict`` files.

Checkpoints hold tensors only (no pickled objects), so loading one never runs code.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from companion.data import binarize, check_images
from companion.objectives import LatentVariableModel, elbo
from companion.progress import progress_bar
from companion.rng import randn
from companion.training_run import (
    TrainingRun,
    check_global_batch,
    rng_states,
    set_rng_states,
    wrap_objective,
)
from companion.training_state import Checkpointing

__all__ = [
    "TrainConfig",
    "History",
    "train_vae",
    "evaluate_elbo",
    "save_checkpoint",
    "load_checkpoint",
]


@dataclass(frozen=True)
class TrainConfig:
    """Settings of :func:`train_vae`.

    Attributes:
        epochs: maximum number of passes over the training images.
        batch_size: images per gradient step.
        lr: Adam learning rate.
        patience: stop after this many epochs without a better validation loss (the
            best weights are restored at the end).
        beta: KL weight of the objective (1 is the ELBO).
        kl_warmup_epochs: raise the KL weight linearly from 0 to ``beta`` over this many
            epochs (Bowman et al., 2016; Sønderby et al., 2016), so that the decoder
            learns to use the latents before the KL term pushes them to the prior.
            0: off.
        free_bits: nats per latent group below which the (batch-averaged) KL of that
            group is not penalised (Kingma et al., 2016): a group cannot profit from
            collapsing to the prior. 0: off.
        skip_grad_norm: skip updates whose gradient norm exceeds this (Child, 2021):
            rare spikes of deep VAEs otherwise derail training. None: off.
        binarize: train on fresh Bernoulli draws of the pixels each step (dynamic
            binarisation) and validate on one fixed draw.
        seed: seed of the data order, the binarisation and the reparameterisation noise.
        progress: show a progress bar (None: see :mod:`companion.progress`).
    """

    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    patience: int = 10
    beta: float = 1.0
    kl_warmup_epochs: int = 0
    free_bits: float = 0.0
    skip_grad_norm: float | None = None
    binarize: bool = True
    seed: int = 0
    progress: bool | None = None

    def __post_init__(self) -> None:
        if (
            self.epochs < 1
            or self.batch_size < 1
            or self.patience < 1
            or not self.lr > 0
        ):
            raise ValueError(
                f"invalid TrainConfig {self}: epochs, batch_size, patience >= 1 and "
                "lr > 0"
            )
        if self.kl_warmup_epochs >= self.epochs:
            raise ValueError(
                f"invalid TrainConfig {self}: kl_warmup_epochs must be below epochs"
            )
        if (
            self.kl_warmup_epochs < 0
            or self.free_bits < 0
            or (self.skip_grad_norm is not None and self.skip_grad_norm <= 0)
        ):
            raise ValueError(
                f"invalid TrainConfig {self}: kl_warmup_epochs and free_bits must "
                "be >= 0, skip_grad_norm > 0 or None"
            )


@dataclass
class History:
    """What happened during training; losses are mean −ELBO per image in nats (with the
    configured β, without warm-up or free bits, so epochs compare).

    Attributes:
        train_loss: per epoch, averaged over the epoch's batches.
        valid_loss: per epoch, on the (fixed) validation images.
        kl_groups: per epoch, the training batches' mean KL of every latent group
            (nats).
        skipped_steps: updates skipped for a gradient norm above ``skip_grad_norm``.
        best_epoch: index of the epoch whose weights were kept.
        seconds: wall-clock training time.
    """

    train_loss: list[float] = field(default_factory=list)
    valid_loss: list[float] = field(default_factory=list)
    kl_groups: list[list[float]] = field(default_factory=list)
    skipped_steps: int = 0
    best_epoch: int = -1
    seconds: float = 0.0

    @property
    def stopped_early(self) -> bool:
        return len(self.valid_loss) > 0 and self.best_epoch < len(self.valid_loss) - 1


def _latent_model(model: nn.Module) -> LatentVariableModel:
    """``model`` as what :func:`~companion.objectives.elbo` reads: nn.Module's
    ``__getattr__`` hides a VAE's ``encode`` / ``decode`` / ``kl_groups`` from mypy."""
    return cast(LatentVariableModel, model)


@torch.no_grad()
def evaluate_elbo(
    *, model: nn.Module, images: torch.Tensor, beta: float = 1.0, batch_size: int = 500
) -> torch.Tensor:
    """Per-image ELBO (one reparameterised sample) over a data set:
    (N,) nats on the CPU."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        out = [
            elbo(
                model=_latent_model(model),
                x=images[i : i + batch_size].to(device),
                beta=beta,
            ).elbo.cpu()
            for i in range(0, len(images), batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(out)


def _posterior_noise(model: Any, batch: int, like: torch.Tensor) -> list:
    """The reparameterisation noise of one ELBO sample for a whole global batch, drawn
    from the global generator exactly as the model's ``rsample`` draws it: one
    (1, B, d_l) tensor per latent group, top first (hierarchical VAEs, ``z_dims``), or
    one (1, B, z_dim) tensor. Only several processes need it (each takes its rows); one
    process lets the posterior draw, which accepts any model :func:`elbo` does."""
    if hasattr(model, "z_dims"):
        return [
            randn((1, batch, d), dtype=like.dtype, device=like.device)
            for d in model.z_dims
        ]
    shape = (1, batch, model.z_dim)
    return [torch.empty(shape, dtype=like.dtype, device=like.device).normal_()]


def _elbo_terms(model: Any, x: torch.Tensor, *noise: torch.Tensor):
    """The ELBO of images x at the reparameterised sample made of ``noise`` (none: the
    posterior's own ``rsample``)."""
    if not noise:
        return elbo(model=_latent_model(model), x=x)
    q = model.encode(x)
    if hasattr(q, "feats"):  # a hierarchical posterior draws group by group
        z = q.rsample((1,), noise=list(noise))
    else:  # what Normal.rsample computes: loc + eps · scale
        z = q.base_dist.loc + noise[0] * q.base_dist.scale
    return elbo(model=model, x=x, posterior=q, z=z)


def train_vae(
    *,
    model: nn.Module,
    train_images: torch.Tensor,
    valid_images: torch.Tensor,
    config: TrainConfig,
    run: TrainingRun | None = None,
    checkpoint: Checkpointing | None = None,
) -> History:
    """Fit a VAE by maximising the (β-)ELBO with Adam, with early stopping on
    validation; on one process or several, resumable.

    The loss of a batch is −mean ln p(x|z) + β_t Σ_l max(mean KL_l, free_bits), with β_t
    the warmed-up KL weight; validation uses the plain (β-)ELBO. Early stopping only
    counts epochs after the warm-up.

    Args:
        model: a single-layer or hierarchical VAE (``encode``, ``decode``,
            ``kl_groups``), on the device training should run on; under several
            processes, built identically on every rank.
        train_images: (N, 1, H, W) in [0, 1], on any device (under several
            processes, the whole training set on every rank).
        valid_images: (M, 1, H, W) in [0, 1].
        config: :class:`TrainConfig`; ``batch_size`` is the global batch, divided
            among the processes.
        run: processes and precision (:class:`~companion.training_run.TrainingRun`;
            None: one process, float32).
        checkpoint: where and how often to save; None: no checkpoints, no resuming.

    Returns:
        The :class:`History` of the whole run (resumed runs included); ``model`` holds
        the weights of the best validation epoch.

    Raises:
        ValueError: the global batch does not divide into the processes, the last
            batch of an epoch has fewer images than there are processes, or free bits
            with several processes (the per-group clamp acts on the global batch's mean
            KL, which no rank sees).
    """
    run = run or TrainingRun()
    world = run.world
    check_global_batch(config.batch_size, world)
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
    objective = wrap_objective(model, _elbo_terms, world)
    history = History()
    best_state: dict | None = None
    best_loss, waited, first_epoch, step, seconds_before = math.inf, 0, 0, 0, 0.0
    saved = run.resumed_state(checkpoint)
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimiser.load_state_dict(saved["optimiser"])
        if saved["scaler"]:
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
        set_rng_states(saved["rng"], device)
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
            noise = _posterior_noise(model, len(x), x) if world.distributed else []
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
            # one sync per step: cheap next to the step itself
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"training loss became {loss.item()} at epoch {epoch}; lower the "
                    "learning rate"
                )
            optimiser.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimiser)  # the norm below is of the true gradients
            if config.skip_grad_norm is not None:
                norm = torch.nn.utils.clip_grad_norm_(
                    model.parameters(), max_norm=math.inf
                )
                if not norm <= config.skip_grad_norm:  # also skips a non-finite norm
                    history.skipped_steps += 1
                    step += 1
                    scaler.update()
                    continue
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
                if waited >= config.patience:
                    break
        if (
            checkpoint is not None
            and epoch + 1 < config.epochs
            and run.save_due(checkpoint, step=step)
        ):
            history.seconds = seconds_before + time.perf_counter() - start
            run.save(
                checkpoint,
                {
                    "kind": "vae",
                    "epoch": epoch + 1,
                    "step": step,
                    "model": model.state_dict(),
                    "optimiser": optimiser.state_dict(),
                    "scaler": scaler.state_dict(),
                    "history": dataclasses.asdict(history),
                    "best_state": best_state,
                    "best_loss": best_loss,
                    "waited": waited,
                    "data_generator": gen.get_state(),
                    "rng": rng_states(device),
                },
            )
    # kl_warmup_epochs < epochs, and an epoch with a non-finite loss raises: at least
    # one epoch after the warm-up was kept
    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval()
    history.seconds = seconds_before + time.perf_counter() - start
    return history


def save_checkpoint(
    model: nn.Module, path: str | Path, *, metadata: dict | None = None
) -> Path:
    """Write ``model.state_dict()`` to a safetensors file, atomically.

    Args:
        model: any module.
        path: destination (parent directories are created).
        metadata: JSON-serialisable details stored in the file's header (for instance
            the config and the metrics it should reproduce).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()
    }
    header = {"companion": json.dumps(metadata or {})}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=header)
        os.chmod(
            tmp, 0o666 & ~_umask()
        )  # mkstemp makes owner-only files; give it ordinary modes
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _umask() -> int:
    """The process's file-creation mask (reading it requires setting it;
    restored at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def load_checkpoint(model: nn.Module, path: str | Path) -> dict:
    """Load a safetensors ``state_dict`` into ``model`` (strictly) and return its
    metadata.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a readable safetensors file, or its tensors do not
            fit ``model`` (missing / unexpected keys or shapes are named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path}; train the model first "
            "(companion.train.train_vae) and save it with "
            "companion.train.save_checkpoint"
        )
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(
            f"{path} is not a valid safetensors checkpoint ({err}); delete it and "
            "retrain"
        ) from err
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    wrong = sorted(
        k for k in set(own) & set(tensors) if own[k].shape != tensors[k].shape
    )
    if missing or unexpected or wrong:
        raise ValueError(
            f"checkpoint {path} does not fit {type(model).__name__}: missing "
            f"{missing[:5]}, unexpected {unexpected[:5]}, wrong shapes {wrong[:5]}; "
            "build the model with the config it was trained with"
        )
    model.load_state_dict(tensors)
    try:
        return json.loads(meta.get("companion", "{}"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} has unreadable metadata ({err})") from err
