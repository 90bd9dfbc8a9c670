"""Adversarial attacks on VAE encoders (Kuzina, Welling & Tomczak, 2022, section 3).

An attack looks for x^a = x^r + ε with ‖ε‖ ≤ δ and x^a in [0, 1] that the encoder
perceives differently from the reference x^r:

* unsupervised: maximise SKL[q(z | x^r + ε), q(z | x^r)];
* supervised: minimise SKL[q(z | x^r + ε), q(z | x^t)] for a chosen target x^t;
* downstream: maximise the cross-entropy of a classifier reading the latent mean;
* posterior: maximise KL[p(z | x^r) ‖ p(z | x^r + ε)], the shift of the model's own
  posterior (:func:`posterior_shift`), which no sampler of p(z | x^a) can undo;
* encoder-only: the unsupervised objective minus λ times that posterior shift, so that
  the attack moves q(z | x) while holding the model's posterior where it was.

The last two separate what the HMC defence can take back (the encoder's excess) from
what it cannot (the posterior's own shift). All of them are projected gradient ascent
(:func:`pgd`) on one objective, batched over references × random restarts in a single
tensor: sign steps for L∞ balls, normalised steps for L2 balls, or Adam on ε, each
followed by the projection onto the ball and the pixel box. The best restart of every
reference is kept.

SKL is the symmetric KL, in closed form for diagonal Gaussians and summed over the
latent groups of a hierarchical model. Symmetric because an attack should count both
codes that q(z|x^a) puts where q(z|x^r) has none, and the reverse.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch.distributions import Independent, Normal

from companion import rng
from companion.data import check_images
from companion.frozen import frozen

__all__ = [
    "AttackConfig",
    "AttackResult",
    "diagonal_gaussians",
    "symmetric_kl",
    "project",
    "random_start",
    "pgd",
    "unsupervised_attack",
    "supervised_attack",
    "classifier_attack",
    "posterior_shift",
    "posterior_attack",
    "encoder_attack",
    "random_noise",
]

NORMS = ("linf", "l2")


@dataclass(frozen=True)
class AttackConfig:
    """Settings of a projected-gradient attack.

    Attributes:
        radius: δ, the largest allowed ‖ε‖ (pixels in [0, 1]); the papers use 0.1 and
            0.2 for L∞.
        norm: ``linf`` or ``l2``.
        steps: gradient steps per restart.
        step_size: α per step; default 2.5 δ / steps (Madry et al., 2018).
        restarts: independent random starts per reference; the best is kept.
        optimizer: ``sign`` (sign steps for L∞, normalised gradient steps for L2) or
            ``adam`` (Adam on ε with learning rate ``step_size``).
    """

    radius: float
    norm: str = "linf"
    steps: int = 100
    step_size: float | None = None
    restarts: int = 5
    optimizer: str = "sign"

    def __post_init__(self) -> None:
        if not self.radius > 0:
            raise ValueError(f"radius δ must be positive, got {self.radius}")
        if self.norm not in NORMS:
            raise ValueError(f"unknown norm {self.norm!r}; choose one of {NORMS}")
        if self.optimizer not in ("sign", "adam"):
            raise ValueError(
                f"unknown optimizer {self.optimizer!r}; choose 'sign' or 'adam'"
            )
        if self.steps < 0 or self.restarts < 1:
            raise ValueError(
                f"steps must be >= 0 and restarts >= 1, got {self.steps} and "
                f"{self.restarts}"
            )
        if self.step_size is not None and not self.step_size > 0:
            raise ValueError(f"step_size must be positive, got {self.step_size}")

    @property
    def alpha(self) -> float:
        """The step size per iteration, in pixel units (``step_size``, or by default
        2.5 δ / steps, so that the steps can cross the ball)."""
        return (
            self.step_size
            if self.step_size is not None
            else 2.5 * self.radius / max(self.steps, 1)
        )

    @property
    def gradient_evaluations(self) -> int:
        """The attack's cost in gradients of the objective per reference (one per
        step and restart)."""
        return self.steps * self.restarts


class AttackResult(NamedTuple):
    """The best adversarial input per reference.

    Attributes:
        x_adv: (B, C, H, W) in [0, 1], within the ball around its reference.
        objective: (B,) the attack objective at ``x_adv`` (higher is a stronger attack).
        restart_objectives: (restarts, B) the final objective of every restart.
    """

    x_adv: torch.Tensor
    objective: torch.Tensor
    restart_objectives: torch.Tensor


def diagonal_gaussians(q) -> list[Independent]:
    """The diagonal Gaussian(s) of a posterior: one per latent group.

    Accepts an ``Independent(Normal)`` (one group), a list of them, or anything with a
    ``groups`` attribute (:class:`~companion.models.HierarchicalPosterior`).
    """
    groups = q.groups if hasattr(q, "groups") else q
    groups = groups if isinstance(groups, (list, tuple)) else [groups]
    for g in groups:
        if not (isinstance(g, Independent) and isinstance(g.base_dist, Normal)):
            raise ValueError(
                "expected diagonal Gaussians (Independent(Normal)), got "
                f"{type(g).__name__}"
            )
    return list(groups)


def symmetric_kl(q1, q2) -> torch.Tensor:
    """SKL[q1, q2] = KL[q1 ‖ q2] + KL[q2 ‖ q1] per example,
    summed over dimensions and groups.

    For diagonal Gaussians with means μ1, μ2 and variances s1, s2 (per dimension):
    SKL = ½ Σ [(s1 + Δ²) / s2 + (s2 + Δ²) / s1 − 2],  Δ = μ1 − μ2.

    Args:
        q1, q2: posteriors of the same shape (see :func:`diagonal_gaussians`); batch
            shapes must broadcast.

    Returns:
        (batch,) tensor in nats, ≥ 0, zero only when the two are equal.
    """
    g1, g2 = diagonal_gaussians(q1), diagonal_gaussians(q2)
    if len(g1) != len(g2):
        raise ValueError(f"posteriors have {len(g1)} and {len(g2)} groups")
    total: torch.Tensor | float = 0.0
    for a, b in zip(g1, g2, strict=True):
        va, vb = a.variance, b.variance
        sq = (a.mean - b.mean) ** 2
        per_dim = 0.5 * ((va + sq) / vb + (vb + sq) / va - 2.0)
        event_dims = tuple(range(-a.reinterpreted_batch_ndims, 0))
        total = total + (per_dim.sum(event_dims) if event_dims else per_dim)
    return torch.as_tensor(total)  # a tensor already unless there are no groups


def project(
    x: torch.Tensor, *, x_ref: torch.Tensor, radius: float, norm: str
) -> torch.Tensor:
    """Bring x into {x : ‖x − x_ref‖ ≤ radius} ∩ [0, 1]^d, per example.

    The perturbation is first clipped (L∞) or rescaled (L2) into the ball, then pixels
    are clamped to [0, 1]. Clamping moves each pixel towards x_ref's box, so it never
    leaves the ball again: the result is always feasible.

    Args:
        x: (N, ...) candidates; x_ref: (N, ...) references in [0, 1].
    """
    eps = x - x_ref
    if norm == "linf":
        eps = eps.clamp(-radius, radius)
    elif norm == "l2":
        length = eps.flatten(1).norm(dim=1).clamp_min(1e-12)
        eps = eps * (radius / length).clamp(max=1.0).view(-1, *[1] * (eps.dim() - 1))
    else:
        raise ValueError(f"unknown norm {norm!r}; choose one of {NORMS}")
    return (x_ref + eps).clamp(0.0, 1.0)


def random_start(
    x_ref: torch.Tensor,
    *,
    radius: float,
    norm: str,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A uniformly random point of the ball around each reference,
    projected into [0, 1]."""
    noise = rng.rand(
        x_ref.shape, generator=generator, device=x_ref.device, dtype=x_ref.dtype
    )
    if norm == "linf":
        eps = radius * (2 * noise - 1)
    else:  # uniform in the L2 ball: Gaussian direction, radius · U^(1/d)
        direction = rng.randn(
            x_ref.shape, generator=generator, device=x_ref.device, dtype=x_ref.dtype
        )
        direction = direction / direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(
            -1, *[1] * (x_ref.dim() - 1)
        )
        d = x_ref[0].numel()
        scale = radius * noise.flatten(1)[:, :1] ** (1.0 / d)
        eps = direction * scale.view(-1, *[1] * (x_ref.dim() - 1))
    return project(x_ref + eps, x_ref=x_ref, radius=radius, norm=norm)


def pgd(
    objective: Callable[[torch.Tensor], torch.Tensor],
    *,
    x_ref: torch.Tensor,
    config: AttackConfig,
    generator: torch.Generator | None = None,
) -> AttackResult:
    """Maximise ``objective`` within the ball around every reference,
    with random restarts.

    Args:
        objective: maps candidates (R·B, C, H, W) to values (R·B,) to maximise. It
            receives the restarts stacked along the batch axis (restart-major:
            index r·B + b).
        x_ref: (B, C, H, W) references in [0, 1].
        config: :class:`AttackConfig`.
        generator: seeds the random starts.

    Returns:
        :class:`AttackResult` with the best restart per reference.
    """
    check_images(x_ref)
    b, r = x_ref.shape[0], config.restarts
    ref = x_ref.detach().repeat(r, *[1] * (x_ref.dim() - 1))  # (R·B, ...)
    x = random_start(ref, radius=config.radius, norm=config.norm, generator=generator)
    adam = None
    if config.optimizer == "adam":
        eps = (x - ref).requires_grad_(True)
        adam = torch.optim.Adam([eps], lr=config.alpha)
    for _ in range(config.steps):
        if adam is not None:
            value = objective(ref + eps)
            adam.zero_grad(set_to_none=True)
            (-value.sum()).backward()
            adam.step()
            with torch.no_grad():
                eps.copy_(
                    project(
                        ref + eps, x_ref=ref, radius=config.radius, norm=config.norm
                    )
                    - ref
                )
            continue
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(objective(x).sum(), x)
        with torch.no_grad():
            if config.norm == "linf":
                step = grad.sign()
            else:
                step = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(
                    -1, *[1] * (grad.dim() - 1)
                )
            x = project(
                x + config.alpha * step,
                x_ref=ref,
                radius=config.radius,
                norm=config.norm,
            )
    if adam is not None:
        x = project(
            ref + eps.detach(), x_ref=ref, radius=config.radius, norm=config.norm
        )
    with torch.no_grad():
        values = objective(x.detach()).reshape(r, b)
    best = values.argmax(0)  # (B,)
    x_best = x.detach().reshape(r, b, *x_ref.shape[1:])[
        best, torch.arange(b, device=best.device)
    ]
    return AttackResult(
        x_adv=x_best, objective=values.max(0).values, restart_objectives=values
    )


def _check_model_input(model, x: torch.Tensor) -> None:
    if not hasattr(model, "encode"):
        raise ValueError(
            f"{type(model).__name__} has no encoder (encode); attacks need q(z | x)"
        )
    check_images(x, shape=tuple(model.image_shape))


def _repeat(q, times: int):
    """A posterior with batch (B,) repeated restart-major to (times·B,)."""
    out = []
    for g in diagonal_gaussians(q):
        reps = (times, *[1] * (g.mean.dim() - 1))
        out.append(
            Independent(
                Normal(g.mean.repeat(reps), g.stddev.repeat(reps)),
                g.reinterpreted_batch_ndims,
            )
        )
    return out


def unsupervised_attack(
    model,
    x_ref: torch.Tensor,
    *,
    config: AttackConfig,
    generator: torch.Generator | None = None,
) -> AttackResult:
    """Maximise SKL[q(z | x^r + ε), q(z | x^r)] within the ball (objective: that SKL,
    nats)."""
    _check_model_input(model, x_ref)
    with torch.no_grad():
        q_ref = _repeat(model.encode(x_ref), config.restarts)
    with frozen(model):
        return pgd(
            lambda x: symmetric_kl(model.encode(x), q_ref),
            x_ref=x_ref,
            config=config,
            generator=generator,
        )


def supervised_attack(
    model,
    x_ref: torch.Tensor,
    x_target: torch.Tensor,
    *,
    config: AttackConfig,
    generator: torch.Generator | None = None,
) -> AttackResult:
    """Minimise SKL[q(z | x^r + ε), q(z | x^t)] within the ball (objective:
    minus that SKL)."""
    _check_model_input(model, x_ref)
    _check_model_input(model, x_target)
    if x_target.shape != x_ref.shape:
        raise ValueError(
            f"one target per reference: shapes {tuple(x_target.shape)} and "
            f"{tuple(x_ref.shape)}"
        )
    with torch.no_grad():
        q_target = _repeat(model.encode(x_target), config.restarts)
    with frozen(model):
        return pgd(
            lambda x: -symmetric_kl(model.encode(x), q_target),
            x_ref=x_ref,
            config=config,
            generator=generator,
        )


def classifier_attack(
    model,
    classifier: torch.nn.Module,
    x_ref: torch.Tensor,
    labels: torch.Tensor,
    *,
    config: AttackConfig,
    generator: torch.Generator | None = None,
) -> AttackResult:
    """Maximise the cross-entropy of ``classifier(E_q[z | x])`` against the true
    ``labels``."""
    _check_model_input(model, x_ref)
    if labels.shape != x_ref.shape[:1]:
        raise ValueError(
            f"one label per reference: labels {tuple(labels.shape)} for "
            f"{x_ref.shape[0]} references"
        )
    y = labels.repeat(config.restarts)
    loss = torch.nn.CrossEntropyLoss(reduction="none")
    with frozen(model, classifier):
        return pgd(
            lambda x: loss(classifier(model.encode(x).mean), y),
            x_ref=x_ref,
            config=config,
            generator=generator,
        )


def _reference_codes(q, *, n: int, generator: torch.Generator | None) -> torch.Tensor:
    """n codes z_k ~ q(z | x^r) per reference, (n, B, d), drawn with ``generator``
    (diagonal Gaussians here; a hierarchical posterior samples itself)."""
    if hasattr(q, "base_dist"):
        shape = (n, *q.mean.shape)
        noise = rng.randn(
            shape, generator=generator, dtype=q.mean.dtype, device=q.mean.device
        )
        return q.mean + q.stddev * noise
    return q.sample((n,), generator=generator)


def _posterior_shift_fn(
    model,
    x_ref: torch.Tensor,
    *,
    codes: torch.Tensor | None,
    n_codes: int,
    repeats: int,
    generator: torch.Generator | None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """x (repeats·B, C, H, W) -> (repeats·B,) estimates of KL[p(z | x^r) ‖ p(z | x)]
    from one fixed set of codes per reference (so the estimate is a smooth function of
    x that gradient ascent can follow)."""
    with torch.no_grad():
        if codes is None:
            if n_codes < 2:
                raise ValueError(
                    f"n_codes must be >= 2 to estimate a KL, got {n_codes}"
                )
            q = model.encode(x_ref)
            z = _reference_codes(q, n=n_codes, generator=generator)  # (K, B, d)
            # self-normalised importance weights of the codes towards p(z | x^r)
            log_w = torch.log_softmax(model.log_joint(z, x_ref) - q.log_prob(z), dim=0)
        else:
            if codes.dim() != 3 or codes.shape[1] != len(x_ref) or len(codes) < 2:
                raise ValueError(
                    "codes must be (K >= 2, B, z_dim) draws from p(z | x^r), one "
                    f"column per reference; got {tuple(codes.shape)} for {len(x_ref)} "
                    "references"
                )
            z = codes
            log_w = z.new_full(z.shape[:2], -math.log(len(z)))
        log_w = log_w.repeat(1, repeats)  # (K, R·B)
        z = z.repeat(1, repeats, 1)
        likelihood = model.decode(z)  # p(x | z_k): the decoder runs once, here
        ref = likelihood.log_prob(x_ref.repeat(repeats, *[1] * (x_ref.dim() - 1)))

    def shift(x: torch.Tensor) -> torch.Tensor:
        delta = (
            likelihood.log_prob(x) - ref
        )  # (K, R·B): ln p(x | z_k) − ln p(x^r | z_k)
        return torch.logsumexp(log_w + delta, dim=0) - (log_w.exp() * delta).sum(0)

    return shift


def posterior_shift(
    model,
    x: torch.Tensor,
    *,
    x_ref: torch.Tensor,
    codes: torch.Tensor | None = None,
    n_codes: int = 256,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """KL[p(z | x^r) ‖ p(z | x)]: how far an input moves the model's own posterior.

    Since p(z | x) ∝ p(z | x^r) exp Δ(z) with Δ(z) = ln p(x | z) − ln p(x^r | z) (the
    prior cancels), the KL is ln E[exp Δ] − E[Δ] under p(z | x^r). Both expectations are
    averages over ``codes``, draws from p(z | x^r) (for instance the last states of HMC
    chains on x^r: :func:`companion.defence.posterior_samples`). Without them,
    ``n_codes`` draws from the encoder q(z | x^r) are self-normalised towards
    p(z | x^r) by importance weights p(x^r, z) / q(z | x^r): exact on the
    linear-Gaussian model, but
    a VAE's posterior on 28×28 digits is so much narrower than its encoder that a few
    codes carry all the weight (an effective sample size of about 2 of 32 on chapter
    2's VAE), so pass posterior draws there. The estimate is ≥ 0 (Jensen), 0 at
    x = x^r, and about ½ Var[Δ] for small shifts. It measures the part of an attack
    that no sampler of p(z | x^a) can undo.

    Args:
        model: ``encode``, ``decode`` and ``log_joint`` (any model of the package).
        x: (B, C, H, W) inputs in [0, 1] (for instance attacked references).
        x_ref: (B, C, H, W) their references.
        codes: (K, B, z_dim) draws from p(z | x^r), K >= 2; None: importance sampling.
        n_codes: importance samples per reference (without ``codes``).
        generator: seeds the importance samples.

    Returns:
        (B,) nats.
    """
    _check_model_input(model, x_ref)
    check_images(x, shape=tuple(model.image_shape))
    if x.shape != x_ref.shape:
        raise ValueError(
            f"one reference per input: shapes {tuple(x.shape)} and {tuple(x_ref.shape)}"
        )
    shift = _posterior_shift_fn(
        model, x_ref, codes=codes, n_codes=n_codes, repeats=1, generator=generator
    )
    with torch.no_grad():
        return shift(x)


def posterior_attack(
    model,
    x_ref: torch.Tensor,
    *,
    config: AttackConfig,
    codes: torch.Tensor | None = None,
    n_codes: int = 32,
    generator: torch.Generator | None = None,
) -> AttackResult:
    """Maximise the model's own posterior shift, KL[p(z | x^r) ‖ p(z | x^r + ε)]
    (:func:`posterior_shift` on fixed ``codes``, or ``n_codes`` importance samples;
    objective: that KL, nats).

    The attack an HMC defence cannot take back: it aims at p(z | x^a) itself, which
    the defence's chains sample.
    """
    return _shift_attack(
        model,
        x_ref,
        objective=lambda x, shift: shift(x),
        config=config,
        codes=codes,
        n_codes=n_codes,
        generator=generator,
    )


def encoder_attack(
    model,
    x_ref: torch.Tensor,
    *,
    config: AttackConfig,
    penalty: float,
    codes: torch.Tensor | None = None,
    n_codes: int = 32,
    generator: torch.Generator | None = None,
) -> AttackResult:
    """Move the encoder, hold the model's posterior: maximise
    SKL[q(z | x^r + ε), q(z | x^r)] − λ KL[p(z | x^r) ‖ p(z | x^r + ε)].

    With λ = ``penalty`` large enough, x^a fools q(z | x) while p(z | x^a) stays close
    to p(z | x^r), so what the attack wins is the encoder's excess alone: the part an
    HMC defence should take back. λ = 0 is :func:`unsupervised_attack`. ``codes`` and
    ``n_codes`` are those of :func:`posterior_shift`.

    Returns:
        :class:`AttackResult` whose objective is the penalised one (nats).

    Raises:
        ValueError: a negative ``penalty``.
    """
    if penalty < 0:
        raise ValueError(f"penalty λ must be >= 0, got {penalty}")
    _check_model_input(model, x_ref)
    with torch.no_grad():
        q_ref = _repeat(model.encode(x_ref), config.restarts)
    return _shift_attack(
        model,
        x_ref,
        objective=lambda x, shift: (
            symmetric_kl(model.encode(x), q_ref) - penalty * shift(x)
        ),
        config=config,
        codes=codes,
        n_codes=n_codes,
        generator=generator,
    )


def _shift_attack(
    model,
    x_ref: torch.Tensor,
    *,
    objective: Callable[
        [torch.Tensor, Callable[[torch.Tensor], torch.Tensor]], torch.Tensor
    ],
    config: AttackConfig,
    codes: torch.Tensor | None,
    n_codes: int,
    generator: torch.Generator | None,
) -> AttackResult:
    """:func:`pgd` on ``objective(x, shift)``, where ``shift`` is the posterior shift
    of candidates x on one fixed set of codes (the posterior and encoder attacks)."""
    _check_model_input(model, x_ref)
    with frozen(model):
        shift = _posterior_shift_fn(
            model,
            x_ref,
            codes=codes,
            n_codes=n_codes,
            repeats=config.restarts,
            generator=generator,
        )
        return pgd(
            lambda x: objective(x, shift),
            x_ref=x_ref,
            config=config,
            generator=generator,
        )


def random_noise(
    x_ref: torch.Tensor,
    *,
    like: torch.Tensor,
    norm: str,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The baseline: random perturbations with the same norm as ``like − x_ref``,
    per example.

    L∞: uniform random signs times the attack's L∞ norm; L2: a uniform random direction
    scaled to the attack's L2 norm. Then clamped to [0, 1] (which can only shrink them).
    """
    eps = like - x_ref
    shape = (-1, *[1] * (x_ref.dim() - 1))
    if norm == "linf":
        size = eps.flatten(1).abs().amax(1).view(shape)
        signs = (
            rng.randint(0, 2, x_ref.shape, generator=generator, device=x_ref.device).to(
                x_ref.dtype
            )
            * 2
            - 1
        )
        noise = size * signs
    elif norm == "l2":
        size = eps.flatten(1).norm(dim=1).view(shape)
        direction = rng.randn(
            x_ref.shape, generator=generator, device=x_ref.device, dtype=x_ref.dtype
        )
        noise = (
            size
            * direction
            / direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(shape)
        )
    else:
        raise ValueError(f"unknown norm {norm!r}; choose one of {NORMS}")
    return (x_ref + noise).clamp(0.0, 1.0)
