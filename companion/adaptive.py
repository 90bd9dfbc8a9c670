"""An attacker who knows the defence: attacking through a short HMC chain.

The HMC defence (:mod:`companion.defence`) decodes z^(T), the code after T transitions
started at z⁰ ~ q(z | x^a), instead of the encoder's code. An attacker who knows this
should maximise what the defended code does, not what the encoder does. Athalye, Carlini
& Wagner (2018) list the two tools for randomised, iterative defences:

* differentiate through the defence: every leapfrog step is differentiable in x^a (the
  encoder sets the start z⁰ = μ(x^a) + σ(x^a) ⊙ ε, the target ln p(z) + ln p(x^a | z)
  sets every gradient step), so one backward pass through T·L leapfrog steps gives the
  gradient of the defended code with respect to the input (double backpropagation:
  each leapfrog gradient is itself built with ``create_graph=True``);
* expectation over transformation (EOT): the chain's randomness (ε, the momenta, the
  accept decisions) is drawn once per EOT sample and held fixed over the attack's steps;
  the objective is averaged over ``eot_samples`` such draws.

The Metropolis accept/reject step is not differentiable. ``accept="soft"`` replaces it
by the mixture z ← a z' + (1 − a) z with a = min(1, e^(−ΔH)), which is differentiable in
a; ``accept="hold"`` draws the decision with fixed uniforms, as the sampler does, and
differentiates through the branch taken.

The objective is the squared pixel distance between the decoded defended code and the
clean reconstruction, ‖E[x | z^(T)(x^a)] − x̂(x^r)‖², averaged over EOT samples: the
quantity the reconstruction MS-SSIM of chapters 4 and 6 measures. Attacking T = 5
transitions is a surrogate for the defender's longer chains; the result must be scored
with the real defence (fresh randomness, more transitions), as the book does.
"""

from __future__ import annotations

import torch

from companion import rng
from companion.attacks import AttackConfig, AttackResult, diagonal_gaussians, pgd
from companion.data import check_images
from companion.frozen import frozen

__all__ = ["ACCEPT_RULES", "adaptive_attack", "adaptive_gradient_evaluations"]

ACCEPT_RULES = ("soft", "hold")


def adaptive_gradient_evaluations(
    *,
    config: AttackConfig,
    hmc_steps: int,
    num_leapfrog: int,
    eot_samples: int,
    accept: str = "soft",
) -> int:
    """Gradients of ln p(x, z) per reference that :func:`adaptive_attack` builds.

    Every attack step runs ``eot_samples`` chains of T transitions for every restart;
    a transition costs L leapfrog gradients, plus one at the mixed point for ``soft``
    (and every chain starts with one). Each of them is then differentiated once more in
    the attack's backward pass, so the wall-clock cost is a few times this count.
    """
    per_chain = 1 + hmc_steps * (num_leapfrog + (accept == "soft"))
    return config.steps * config.restarts * eot_samples * per_chain


def adaptive_attack(
    model,
    x_ref: torch.Tensor,
    *,
    config: AttackConfig,
    hmc_steps: int,
    num_leapfrog: int,
    step_size: float,
    eot_samples: int = 1,
    accept: str = "soft",
    generator: torch.Generator | None = None,
) -> AttackResult:
    """Maximise the defended reconstruction's distance from the clean one,
    through T HMC transitions.

    Args:
        model: a VAE with ``encode`` (one diagonal Gaussian group), ``decode`` and
            ``log_joint``; hierarchical encoders sample group by group from the global
            generator, so their start cannot be held fixed and they are refused.
        x_ref: (B, C, H, W) references in [0, 1].
        config: the projected-gradient settings (radius, norm, steps, restarts).
        hmc_steps: T, transitions of the attacked chain (>= 1; small, e.g. 5: memory
            and time grow linearly in T·L).
        num_leapfrog: L, leapfrog steps per transition (>= 1).
        step_size: the leapfrog step size (> 0), fixed (the defender's adapted one is
            the natural choice).
        eot_samples: chain randomness draws averaged in the objective (>= 1).
        accept: ``soft`` or ``hold`` (see the module docstring).
        generator: seeds the fixed chain randomness and the random starts of the attack.

    Returns:
        :class:`~companion.attacks.AttackResult`; ``objective`` is the EOT mean of the
        squared pixel distance (B,) at the best restart.

    Raises:
        ValueError: a model without ``encode``/``log_joint``/``decode``, a hierarchical
            encoder, bad images, or T, L, ``eot_samples`` < 1, a non-positive step size,
            or an unknown ``accept`` rule.
    """
    for name in ("encode", "decode", "log_joint"):
        if not hasattr(model, name):
            raise ValueError(
                f"{type(model).__name__} has no {name}; the adaptive attack needs "
                "encode, decode and log_joint"
            )
    check_images(x_ref, shape=tuple(model.image_shape))
    if hmc_steps < 1 or num_leapfrog < 1 or eot_samples < 1:
        raise ValueError(
            f"hmc_steps, num_leapfrog and eot_samples must be >= 1, got {hmc_steps}, "
            f"{num_leapfrog}, {eot_samples}; T = 0 is the encoder alone: use "
            "companion.attacks.unsupervised_attack"
        )
    if not step_size > 0:
        raise ValueError(f"step_size must be positive, got {step_size}")
    if accept not in ACCEPT_RULES:
        raise ValueError(
            f"unknown accept rule {accept!r}; choose one of {ACCEPT_RULES}"
        )
    with torch.no_grad():
        q = model.encode(x_ref)
        groups = diagonal_gaussians(q)
        if len(groups) != 1:
            raise ValueError(
                "the adaptive attack reparameterises a single Gaussian encoder; this "
                f"one has {len(groups)} latent groups"
            )
        target = model.decode(q.mean).mean.repeat(
            config.restarts, *[1] * (x_ref.dim() - 1)
        )  # (R·B, C, H, W)
    n, d = config.restarts * x_ref.shape[0], q.mean.shape[-1]
    dtype, device = x_ref.dtype, x_ref.device
    start_noise = rng.randn(
        (eot_samples, n, d), generator=generator, dtype=dtype, device=device
    )
    momenta = rng.randn(
        (hmc_steps, eot_samples, n, d), generator=generator, dtype=dtype, device=device
    )
    uniforms = rng.rand(
        (hmc_steps, eot_samples, n), generator=generator, dtype=dtype, device=device
    )

    def objective(x: torch.Tensor) -> torch.Tensor:  # (R·B, C, H, W) -> (R·B,)
        with torch.enable_grad():
            q_x = model.encode(x)
            z = (q_x.mean + q_x.stddev * start_noise).reshape(eot_samples * n, d)
            x_rep = x.repeat(eot_samples, *[1] * (x.dim() - 1))
            z = _chain(
                model,
                z,
                x_rep,
                momenta=momenta.reshape(hmc_steps, eot_samples * n, d),
                uniforms=uniforms.reshape(hmc_steps, eot_samples * n),
                step_size=step_size,
                num_leapfrog=num_leapfrog,
                accept=accept,
            )
            decoded = model.decode(z).mean.reshape(eot_samples, *x.shape)
            return ((decoded - target) ** 2).flatten(2).sum(-1).mean(0)

    with frozen(model):
        return pgd(objective, x_ref=x_ref, config=config, generator=generator)


def _value_and_grad(
    model, z: torch.Tensor, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """ln p(x, z) and its gradient in z, both differentiable further
    (double backprop)."""
    if not z.requires_grad:  # the final, gradient-free evaluation of the attack
        z = z.detach().requires_grad_(True)
    value = model.log_joint(z, x)
    (grad,) = torch.autograd.grad(value.sum(), z, create_graph=True)
    return value, grad


def _chain(
    model,
    z: torch.Tensor,
    x: torch.Tensor,
    *,
    momenta: torch.Tensor,
    uniforms: torch.Tensor,
    step_size: float,
    num_leapfrog: int,
    accept: str,
) -> torch.Tensor:
    """T differentiable HMC transitions with the given momenta (T, N, d) and uniforms
    (T, N)."""
    value, grad = _value_and_grad(model, z, x)
    for p0, u in zip(momenta, uniforms, strict=True):
        z_new, p = z, p0 + 0.5 * step_size * grad
        for i in range(num_leapfrog):
            z_new = z_new + step_size * p
            value_new, grad_new = _value_and_grad(model, z_new, x)
            p = p + (step_size if i < num_leapfrog - 1 else 0.5 * step_size) * grad_new
        energy_error = (-value_new + 0.5 * (p**2).sum(-1)) - (
            -value + 0.5 * (p0**2).sum(-1)
        )
        energy_error = torch.nan_to_num(energy_error, nan=float("inf"))
        a = torch.exp(
            -energy_error.clamp(min=0.0)
        )  # min(1, e^(−ΔH)); 0 for a divergent proposal
        if accept == "soft":
            z = a[:, None] * z_new + (1 - a[:, None]) * z
            value, grad = _value_and_grad(model, z, x)
        else:
            keep = (u < a.detach())[:, None]
            z = torch.where(keep, z_new, z)
            value = torch.where(keep[:, 0], value_new, value)
            grad = torch.where(keep, grad_new, grad)
    return z
