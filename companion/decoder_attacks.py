"""Attacks that go through the decoder, and how sensitive a decoder is to its code.

The SKL attack (:mod:`companion.attacks`) moves the encoder's posterior and hopes the
reconstruction follows. Two questions go further, to the decoder:

* how far does the output move per unit of latent change? The largest singular value
  of the decoder's Jacobian J(z) = ∂E[x | z]/∂z, found by power iteration on JᵀJ
  (:func:`latent_sensitivity`), is the worst case ‖Δx̂‖ / ‖Δz‖ for small Δz;
  :func:`decoder_gain` measures any finite step;
* does attacking the reconstruction directly, maximising ‖x̂(x^r + ε) − x̂(x^r)‖² with
  x̂(x) = E[x | z = E_q[z | x]] (:func:`reconstruction_attack`), buy more damage per
  gradient evaluation than the SKL objective? Both use the same projected-gradient loop,
  so one gradient evaluation is one forward and backward pass of the attacked network:
  the encoder for SKL, the encoder and the decoder here.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from companion import rng
from companion.attacks import AttackConfig, AttackResult, pgd
from companion.data import check_images
from companion.frozen import frozen

__all__ = [
    "LatentSensitivity",
    "latent_sensitivity",
    "decoder_gain",
    "reconstruction_attack",
]


class LatentSensitivity(NamedTuple):
    """The decoder's most sensitive latent direction at each code.

    Attributes:
        gain: (B,) the largest singular value of ∂E[x | z]/∂z: pixels (L2) per unit of
            latent L2 change.
        direction: (B, d) the unit right singular vector that attains it.
        gradient_evaluations: Jacobian-vector plus vector-Jacobian products used per
            code.
    """

    gain: torch.Tensor
    direction: torch.Tensor
    gradient_evaluations: int


def _mean_image(model, z: torch.Tensor) -> torch.Tensor:
    return model.decode(z).mean


def _jvp(model, z: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """J(z) v, the change of E[x | z] along v, (B, C, H, W), by the double-vjp trick.

    Jᵀw is linear in w, so J v = ∂(vᵀ Jᵀ w)/∂w. Two reverse passes instead of torch's
    forward mode, whose first use loads TorchScript decompositions and warns.
    """
    with torch.enable_grad():
        zz = z.detach().requires_grad_(True)
        out = _mean_image(model, zz)
        w = torch.zeros_like(out, requires_grad=True)
        (jt_w,) = torch.autograd.grad(out, zz, grad_outputs=w, create_graph=True)
        (jv,) = torch.autograd.grad(jt_w, w, grad_outputs=v)
    return jv


def latent_sensitivity(
    model,
    z: torch.Tensor,
    *,
    iterations: int = 20,
    generator: torch.Generator | None = None,
) -> LatentSensitivity:
    """Power iteration on JᵀJ, J = ∂E[x | z]/∂z, one independent iteration per code.

    Every iteration costs one Jacobian-vector product and one vector-Jacobian product;
    the codes of a batch do not interact, so both are batched.

    Args:
        model: anything with ``decode(z)`` returning a distribution with a ``mean``.
        z: (B, d) codes.
        iterations: power iterations (>= 1); the estimate approaches the largest
            singular value from below, geometrically in the ratio of the top two.
        generator: seeds the random starting directions.

    Raises:
        ValueError: z not (B, d) and finite, or ``iterations`` < 1.
    """
    if z.dim() != 2 or not torch.isfinite(z).all():
        raise ValueError(
            f"codes must be a finite (B, d) tensor, got shape {tuple(z.shape)}"
        )
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    z = z.detach()
    v = rng.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
    v = v / v.norm(dim=-1, keepdim=True)
    with frozen(model):
        for _ in range(iterations):
            jv = _jvp(model, z, v)
            zz = z.clone().requires_grad_(True)
            with torch.enable_grad():
                (jtjv,) = torch.autograd.grad(
                    _mean_image(model, zz), zz, grad_outputs=jv
                )
            v = jtjv / jtjv.norm(dim=-1, keepdim=True).clamp_min(1e-30)
        jv = _jvp(model, z, v)
    return LatentSensitivity(
        gain=jv.flatten(1).norm(dim=-1),
        direction=v,
        gradient_evaluations=2 * iterations + 1,
    )


@torch.no_grad()
def decoder_gain(model, *, z: torch.Tensor, dz: torch.Tensor) -> torch.Tensor:
    """‖E[x | z + dz] − E[x | z]‖₂ / ‖dz‖₂ per code:
    (B,) pixels per unit of latent change.

    Args:
        z, dz: (B, d) codes and non-zero latent steps.
    """
    if z.shape != dz.shape:
        raise ValueError(f"one step per code: z {tuple(z.shape)}, dz {tuple(dz.shape)}")
    size = dz.flatten(1).norm(dim=-1)
    if not bool((size > 0).all()):
        raise ValueError("every latent step dz must be non-zero")
    change = (
        (_mean_image(model, z + dz) - _mean_image(model, z)).flatten(1).norm(dim=-1)
    )
    return change / size


def reconstruction_attack(
    model,
    x_ref: torch.Tensor,
    *,
    config: AttackConfig,
    generator: torch.Generator | None = None,
) -> AttackResult:
    """Maximise ‖x̂(x^r + ε) − x̂(x^r)‖² within the ball, x̂(x) = E[x | z = E_q[z | x]].

    The objective (squared pixel L2, (B,)) goes through the encoder *and* the decoder,
    so a gradient evaluation costs about one encoder and one decoder pass more than the
    SKL attack's; :attr:`~companion.attacks.AttackConfig.gradient_evaluations` counts
    them.

    Raises:
        ValueError: a model without ``encode``/``decode``, or bad images.
    """
    if not hasattr(model, "encode") or not hasattr(model, "decode"):
        raise ValueError(
            f"{type(model).__name__} needs encode and decode for a reconstruction "
            "attack"
        )
    check_images(x_ref, shape=tuple(model.image_shape))
    with torch.no_grad():
        target = _mean_image(model, model.encode(x_ref).mean).repeat(
            config.restarts, *[1] * (x_ref.dim() - 1)
        )
    with frozen(model):
        return pgd(
            lambda x: (
                ((_mean_image(model, model.encode(x).mean) - target) ** 2)
                .flatten(1)
                .sum(-1)
            ),
            x_ref=x_ref,
            config=config,
            generator=generator,
        )
