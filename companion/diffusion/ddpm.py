"""A DDPM: ε-prediction trained with L_simple, EMA weights, ancestral sampling.

Ho et al. (2020) train a network ε_θ(z_t, t) to predict the noise that made z_t from x,
L_simple = E_{t, x, ε} ‖ε − ε_θ(√ᾱ_t x + √(1 − ᾱ_t) ε, t)‖² (their eq. 14), and sample
by running the learned reverse process p_θ(z_{t−1} | z_t) from z_T ~ N(0, I) down to
z_0. We use the posterior-mean form of the reverse step with the prediction of x clipped
to [−1, 1] and the posterior variance β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t) (their §3.2).

Images enter as pixels in [0, 1] and are scaled to [−1, 1] inside
(:func:`to_model_space`).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

import torch
import torch.distributed as dist
from torch import nn

from companion import rng
from companion.data import check_images
from companion.diffusion.schedules import Schedule, q_sample
from companion.parallel import rank_seed
from companion.progress import progress_bar
from companion.training_run import (
    TrainingRun,
    check_global_batch,
    rng_states,
    set_rng_states,
    wrap_objective,
)
from companion.training_state import Checkpointing

__all__ = [
    "to_model_space",
    "to_pixels",
    "loss_draws",
    "DDPM",
    "DiffusionTrainConfig",
    "DiffusionHistory",
    "train_ddpm",
    "ema_update",
]


def to_model_space(images: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1] → the diffusion's data space [−1, 1]."""
    return images * 2 - 1


def _image_shape(net: nn.Module) -> tuple[int, ...]:
    """The (C, H, W) a network exposes as ``image_shape``."""
    # nn.Module.__getattr__ is typed for submodules and tensors only; image_shape is a
    # plain attribute or property of the network (the UNet's is a property)
    return tuple(cast("Sequence[int]", net.image_shape))


def loss_draws(
    x: torch.Tensor, *, t_min: int, T: int, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The random numbers of one L_simple batch: steps t (B,) uniform on t_min..T,
    then noise ε of x's shape, in that order from ``generator`` (on x's device)."""
    t = rng.randint(t_min, T + 1, (x.shape[0],), device=x.device, generator=generator)
    noise = rng.randn(x.shape, device=x.device, generator=generator)
    return t, noise


def to_pixels(x: torch.Tensor) -> torch.Tensor:
    """The diffusion's data space → pixels, clipped to [0, 1]."""
    return ((x + 1) / 2).clamp(0, 1)


class DDPM(nn.Module):
    """A diffusion model: an ε-prediction network and its forward process.

    Args:
        net: ``net(z_t, t) -> ε̂`` for z_t (B, C, H, W) and steps t (B,); it must expose
            ``image_shape`` (C, H, W).
        schedule: the forward process (its tensors become buffers, so ``.to(device)``
            moves them).
    """

    # buffers registered in __init__ (T,), float32
    betas: torch.Tensor
    alpha_bars: torch.Tensor
    coef_x: torch.Tensor
    coef_z: torch.Tensor
    post_std: torch.Tensor

    def __init__(self, net: nn.Module, schedule: Schedule) -> None:
        super().__init__()
        self.net = net
        self.schedule = schedule
        b = schedule.betas.double()
        a_bar = schedule.alpha_bars.double()
        a_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), a_bar[:-1]])
        # Posterior q(z_{t−1} | z_t, x) = N(c_x x + c_z z_t, β̃_t I)
        # (Ho et al., eq. 6–7).
        self.register_buffer("betas", b.float(), persistent=False)
        self.register_buffer("alpha_bars", a_bar.float(), persistent=False)
        self.register_buffer(
            "coef_x", (b * a_bar_prev.sqrt() / (1 - a_bar)).float(), persistent=False
        )
        self.register_buffer(
            "coef_z",
            ((1 - a_bar_prev) * (1 - b).sqrt() / (1 - a_bar)).float(),
            persistent=False,
        )
        self.register_buffer(
            "post_std",
            (b * (1 - a_bar_prev) / (1 - a_bar)).sqrt().float(),
            persistent=False,
        )

    @property
    def T(self) -> int:
        return self.schedule.T

    @property
    def image_shape(self) -> tuple[int, ...]:
        return _image_shape(self.net)

    def loss(
        self,
        x: torch.Tensor,
        *,
        t_min: int = 1,
        generator: torch.Generator | None = None,
        t: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """L_simple of a batch in data space [−1, 1]: mean over pixels and examples.

        Args:
            x: (B, C, H, W) clean data in [−1, 1].
            t_min: smallest step drawn (steps are uniform on t_min..T); DAED's generator
                uses t_min = k + 1.
            t, noise: the steps (B,) and the standard normal draws (shape of x) to use
                instead of drawing them here (both or neither; they are drawn as
                :func:`loss_draws` draws them).
        """
        if (t is None) != (noise is None):
            raise ValueError("pass both t and noise, or neither")
        if t is None or noise is None:
            t, noise = loss_draws(x, t_min=t_min, T=self.T, generator=generator)
        z = q_sample(self.schedule, x, t, noise=noise)
        return (self.net(z, t) - noise).pow(2).mean()

    def predict_x(self, z: torch.Tensor, t: int) -> torch.Tensor:
        """x̂ = (z_t − √(1 − ᾱ_t) ε̂) / √ᾱ_t, clipped to [−1, 1]; z (B, C, H, W),
        one step t."""
        a = self.alpha_bars[t - 1]
        eps = self.net(z, torch.full((z.shape[0],), t, device=z.device))
        return ((z - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)

    def reverse_step(
        self, z: torch.Tensor, *, t: int, noise: torch.Tensor | None
    ) -> torch.Tensor:
        """One ancestral step z_t → z_{t−1} ~ p_θ(z_{t−1} | z_t), differentiable in z.

        Args:
            z: (B, C, H, W) states at step t (1..T).
            noise: the standard normal draw of the step (shape of z); ``None`` only at
                t = 1, whose step returns the posterior mean
                (Ho et al. add no noise there).

        Returns:
            z_{t−1} (B, C, H, W): the posterior mean at the predicted x̂ plus
            β̃_t^½ · noise.
        """
        if (noise is None) != (t == 1):
            raise ValueError(f"step t = {t} needs {'no' if t == 1 else 'a'} noise draw")
        mean = self.coef_x[t - 1] * self.predict_x(z, t) + self.coef_z[t - 1] * z
        return mean if noise is None else mean + self.post_std[t - 1] * noise

    @torch.no_grad()
    def reverse(
        self,
        z: torch.Tensor,
        *,
        t_start: int,
        t_stop: int = 0,
        record_at: tuple[int, ...] = (),
        generator: torch.Generator | None = None,
        progress: bool | None = None,
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Run the reverse process from z_{t_start} down to z_{t_stop}
        (ancestral sampling).

        Args:
            z: (B, C, H, W) states at step ``t_start``.
            t_start: the step z is at (1..T).
            t_stop: where to stop (0: the data, giving x̂ in [−1, 1]).
            record_at: steps k (t_stop ≤ k < t_start) whose states z_k are also
                returned.
            generator: generator of the reverse steps' noise (on z's device).

        Returns:
            z_{t_stop} and a dict {k: z_k} of the recorded states.
        """
        self._check(z)
        if not 0 <= t_stop < t_start <= self.T:
            raise ValueError(
                f"need 0 <= t_stop < t_start <= T = {self.T}, got t_start={t_start}, "
                f"t_stop={t_stop}"
            )
        if any(not t_stop <= k < t_start for k in record_at):
            raise ValueError(
                f"record_at steps must lie in [{t_stop}, {t_start}), got {record_at}"
            )
        was_training = self.training
        self.eval()
        recorded = {}
        try:
            for t in progress_bar(
                range(t_start, t_stop, -1), desc="sampling", enabled=progress
            ):
                noise = (
                    rng.randn(z.shape, device=z.device, generator=generator)
                    if t > 1
                    else None
                )
                z = self.reverse_step(z, t=t, noise=noise)
                if t - 1 in record_at:
                    recorded[t - 1] = z
        finally:
            self.train(was_training)
        return z, recorded

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        record_at: tuple[int, ...] = (),
        batch_size: int = 1_000,
        progress: bool | None = None,
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Draw n samples: z_T ~ N(0, I), then the reverse process to z_0.

        Returns:
            (n, C, H, W) samples as pixels in [0, 1], and {k: z_k} for ``record_at``
            (data space, on the CPU) — the states DAED hands to its denoising
            autoencoders.
        """
        if n < 1:
            raise ValueError(f"n must be positive, got {n}")
        device = self.betas.device
        outs: list[torch.Tensor] = []
        recs: dict[int, list[torch.Tensor]] = {k: [] for k in record_at}
        for start in range(0, n, batch_size):
            m = min(batch_size, n - start)
            z = rng.randn((m, *self.image_shape), device=device, generator=generator)
            x, rec = self.reverse(
                z,
                t_start=self.T,
                record_at=record_at,
                generator=generator,
                progress=progress,
            )
            outs.append(to_pixels(x).cpu())
            for k in record_at:
                recs[k].append(rec[k].cpu())
        return torch.cat(outs), {k: torch.cat(v) for k, v in recs.items()}

    @torch.no_grad()
    def denoise(
        self,
        images: torch.Tensor,
        *,
        t: int,
        generator: torch.Generator | None = None,
        progress: bool | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Noise pixel images to step t with q(z_t | x),
        then run the reverse process to 0.

        This is observation 2 of Deja et al. (2022): does the backward process bring the
        image back, also for images unlike the training data?

        Args:
            images: (B, C, H, W) pixels in [0, 1].
            t: the step to noise to (1..T).

        Returns:
            z_t (data space) and the denoised images (pixels in [0, 1]).
        """
        check_images(images, shape=self.image_shape)
        device = self.betas.device
        x = to_model_space(images.to(device))
        z = q_sample(self.schedule, x, t, generator=generator)
        out, _ = self.reverse(z, t_start=t, generator=generator, progress=progress)
        return z, to_pixels(out)

    def _check(self, z: torch.Tensor) -> None:
        if z.dim() != 4 or tuple(z.shape[1:]) != self.image_shape:
            raise ValueError(
                "expected states of shape (B, "
                f"{', '.join(map(str, self.image_shape))}), got {tuple(z.shape)}"
            )


@dataclass(frozen=True)
class DiffusionTrainConfig:
    """Settings of :func:`train_ddpm` and :func:`companion.diffusion.daed.train_dae`.

    Attributes:
        steps: gradient steps.
        batch_size: images per step (drawn with replacement-free shuffles,
            epoch by epoch).
        lr: AdamW learning rate (the authors: 1e-4 at batch 128 on Fashion-MNIST).
        weight_decay: AdamW weight decay.
        ema_decay: decay of the exponential moving average of the weights that the
            trained model ends up holding (the authors: 0.9999).
        warmup_steps: linear learning-rate warm-up.
        seed: seed of the data order, the steps and the noise.
        progress: show a progress bar (None: see :mod:`companion.progress`).
    """

    steps: int = 2_000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    warmup_steps: int = 100
    seed: int = 0
    progress: bool | None = None

    def __post_init__(self) -> None:
        if (
            self.steps < 1
            or self.batch_size < 1
            or not self.lr > 0
            or not 0 <= self.ema_decay < 1
        ):
            raise ValueError(
                f"invalid DiffusionTrainConfig {self}: steps, batch_size >= 1, "
                "lr > 0, 0 <= ema_decay < 1"
            )
        if self.warmup_steps < 0 or self.weight_decay < 0:
            raise ValueError(
                f"invalid DiffusionTrainConfig {self}: warmup_steps and weight_decay "
                "must be >= 0"
            )


@dataclass
class DiffusionHistory:
    """Training record: the loss of every step (of the raw, not the EMA, weights)
    and the time."""

    loss: list[float] = field(default_factory=list)
    seconds: float = 0.0


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema ← decay · ema + (1 − decay) · model, parameter by parameter
    (buffers copied)."""
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p, 1 - decay)
    for buffer, source in zip(ema.buffers(), model.buffers(), strict=True):
        buffer.copy_(source)


def fit(
    model: nn.Module,
    *,
    draw: Callable[[torch.Tensor, torch.Generator], tuple[torch.Tensor, ...]],
    loss: Callable[..., torch.Tensor],
    images: torch.Tensor,
    config: DiffusionTrainConfig,
    desc: str,
    run: TrainingRun | None = None,
    checkpoint: Checkpointing | None = None,
) -> DiffusionHistory:
    """The training loop DDPMs and DAEs share: AdamW, warm-up, EMA; ``model`` ends with
    the EMA weights. On one process or several, resumable.

    Args:
        model: on the device training should run on; under several processes, built
            identically on every rank.
        draw: ``draw(x, generator)`` -> the random numbers of a batch x (B, ...) in
            [−1, 1], each with the batch as its first axis, drawn as the model's own
            loss draws them.
        loss: ``loss(model, x, *draws)`` -> the mean loss of a batch.
        images: (N, C, H, W) pixels in [0, 1].
        config: ``batch_size`` is the global batch, divided among the processes.
        desc: the progress bar's label.
        run: processes and precision (:class:`~companion.training_run.TrainingRun`;
            None: one process, float32).
        checkpoint: where and how often to save; None: no checkpoints, no resuming.

    Returns:
        The loss of every step (global batch means) and the time, resumed runs
        included.

    Raises:
        ValueError: the global batch does not divide into the processes, or a
            checkpoint written by another number of processes.
    """
    run = run or TrainingRun()
    world = run.world
    check_global_batch(config.batch_size, world)
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
    objective = wrap_objective(model, loss, world)
    if world.rank > 0:  # dropout masks: this rank's own stream
        torch.manual_seed(rank_seed(config.seed, world.rank))
    history = DiffusionHistory()
    model.train()
    order, pos = torch.randperm(len(data), generator=gen), 0
    losses: list[torch.Tensor] = []
    first_step, seconds_before = 0, 0.0
    saved = run.resumed_state(checkpoint)
    if saved is not None:
        model.load_state_dict(saved["model"])
        ema.load_state_dict(saved["ema"])
        optimiser.load_state_dict(saved["optimiser"])
        scheduler.load_state_dict(saved["scheduler"])
        if saved["scaler"]:
            scaler.load_state_dict(saved["scaler"])
        order, pos, first_step = saved["order"], saved["pos"], saved["step"]
        losses = list(saved["losses"].to(device).unbind())
        seconds_before = saved["seconds"]
        gen.set_state(saved["data_generator"])
        if dev_gen is not gen:
            dev_gen.set_state(saved["draw_generator"])
        set_rng_states(saved["rng"][world.rank], device)
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
            and run.save_due(checkpoint, step=step + 1)
        ):
            run.save(
                checkpoint,
                {
                    "kind": "diffusion",
                    "world_size": world.size,
                    "step": step + 1,
                    "model": model.state_dict(),
                    "ema": ema.state_dict(),
                    "optimiser": optimiser.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "order": order,
                    "pos": pos,
                    "losses": torch.stack(losses),
                    "seconds": seconds_before + time.perf_counter() - start,
                    "data_generator": gen.get_state(),
                    "draw_generator": dev_gen.get_state(),
                    "rng": world.gather(rng_states(device)),  # every rank's own
                },
            )
    stacked = torch.stack(losses)
    if world.distributed:  # every rank's mean over equal parts: the global mean
        dist.all_reduce(stacked)
        stacked = stacked / world.size
    history.loss = stacked.tolist()
    model.load_state_dict(ema.state_dict())
    model.eval()
    history.seconds = seconds_before + time.perf_counter() - start
    return history


def train_ddpm(
    ddpm: DDPM,
    *,
    images: torch.Tensor,
    config: DiffusionTrainConfig,
    t_min: int = 1,
    run: TrainingRun | None = None,
    checkpoint: Checkpointing | None = None,
) -> DiffusionHistory:
    """Train a DDPM with L_simple on ``images`` (pixels in [0, 1]);
    it ends with EMA weights.

    Args:
        ddpm: the model, on the device training should run on.
        images: (N, C, H, W) pixels in [0, 1] of the model's image shape.
        config: :class:`DiffusionTrainConfig`.
        t_min: train on steps t_min..T only (DAED's generator: t_min = k + 1).
        run, checkpoint: several processes, precision, checkpoints (:func:`fit`).
    """
    check_images(images, shape=ddpm.image_shape)
    if not 1 <= t_min <= ddpm.T:
        raise ValueError(f"t_min must lie in 1..T = {ddpm.T}, got {t_min}")
    return fit(
        ddpm,
        draw=lambda x, g: loss_draws(x, t_min=t_min, T=ddpm.T, generator=g),
        loss=lambda m, x, t, noise: m.loss(x, t=t, noise=noise),
        images=images,
        config=config,
        desc="training DDPM",
        run=run,
        checkpoint=checkpoint,
    )
