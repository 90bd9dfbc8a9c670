"""Check that your own model fits the package before you train, attack or defend it.

Every estimator, attack and defence in ``companion`` talks to a model through the same
few methods (:class:`companion.objectives.LatentVariableModel` plus what the attacks and
the defence read). A model written from scratch in plain PyTorch can use all of them if
it provides, for B inputs ``x`` of shape ``(B, *image_shape)`` and a latent dimension d:

* ``image_shape``: the ``(C, H, W)`` of one input;
* ``encode(x)``: q(z | x), a :class:`torch.distributions.Distribution` with batch shape
  ``(B,)`` and event shape ``(d,)`` (for a diagonal Gaussian,
  ``Independent(Normal(mu, sigma), 1)``);
* ``prior()``: p(z), batch shape ``()`` and event shape ``(d,)``;
* ``decode(z)``: p(x | z) for codes ``(B, d)``, whose ``log_prob(x)`` is ``(B,)``: one
  log-likelihood per input, summed over pixels (``Independent(…, 3)``);
* ``log_joint(z, x)``: ln p(x, z) = ln p(z) + ln p(x | z), shape ``(B,)``,
  differentiable in z (the HMC defence follows its gradient);
* ``reconstruct(x)``: the mean of p(x | z) at the encoder's mean code,
  ``(B, *image_shape)`` (the attack reports score reconstructions with it).

:func:`check_model` calls each of them once on a small batch and raises an error that
names the method, what it returned and what was expected, instead of a shape error deep
inside an attack.
"""

from __future__ import annotations

import torch
from torch.distributions import Distribution

__all__ = ["METHODS", "check_model"]

METHODS = ("encode", "prior", "decode", "log_joint", "reconstruct")


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def check_model(model: object, x: torch.Tensor) -> int:
    """Call every method the package needs on ``x`` and check what comes back.

    Args:
        model: the model to check (left in the mode it was in).
        x: ``(B, *image_shape)`` a few inputs, B >= 2.

    Returns:
        The latent dimension d.

    Raises:
        TypeError: a method or ``image_shape`` is missing, or a method that must
            return a distribution returns something else.
        ValueError: a returned distribution or tensor has the wrong shape, or
            ``log_joint`` is not finite or not differentiable in z.
    """
    name = type(model).__name__
    missing = [m for m in ("image_shape", *METHODS) if not hasattr(model, m)]
    if missing:
        raise TypeError(
            f"{name} lacks {', '.join(missing)}: companion's estimators, attacks and "
            "defence need image_shape, encode(x), prior(), decode(z), log_joint(z, x) "
            "and reconstruct(x) (see companion.model_check)"
        )
    shape = tuple(model.image_shape)  # type: ignore[attr-defined]
    _expect(
        x.dim() == len(shape) + 1 and tuple(x.shape[1:]) == shape and len(x) >= 2,
        f"x must be (B, {', '.join(map(str, shape))}) with B >= 2 (the model's "
        f"image_shape), got {tuple(x.shape)}",
    )
    batch = len(x)
    with torch.no_grad():
        q = model.encode(x)  # type: ignore[attr-defined]
        if not isinstance(q, Distribution):
            raise TypeError(
                f"{name}.encode(x) must return a torch Distribution q(z|x), got "
                f"{type(q).__name__}"
            )
        _expect(
            tuple(q.batch_shape) == (batch,) and len(q.event_shape) == 1,
            f"{name}.encode(x) for B = {batch} inputs returned batch shape "
            f"{tuple(q.batch_shape)} and event shape {tuple(q.event_shape)}; expected "
            f"batch ({batch},) and event (d,): wrap a Normal in Independent(·, 1)",
        )
        d = q.event_shape[0]
        prior = model.prior()  # type: ignore[attr-defined]
        if not isinstance(prior, Distribution):
            raise TypeError(f"{name}.prior() must return a torch Distribution p(z)")
        _expect(
            tuple(prior.batch_shape) == () and tuple(prior.event_shape) == (d,),
            f"{name}.prior() has batch shape {tuple(prior.batch_shape)} and event "
            f"shape {tuple(prior.event_shape)}; expected () and ({d},), like q(z|x)",
        )
        z = q.sample()
        px = model.decode(z)  # type: ignore[attr-defined]
        if not isinstance(px, Distribution):
            raise TypeError(
                f"{name}.decode(z) must return a torch Distribution p(x|z), got "
                f"{type(px).__name__}"
            )
        log_px = px.log_prob(x)
        _expect(
            tuple(log_px.shape) == (batch,),
            f"{name}.decode(z).log_prob(x) has shape {tuple(log_px.shape)}; expected "
            f"({batch},), one log-likelihood per input: sum over the pixels with "
            f"Independent(·, {len(shape)})",
        )
        recon = model.reconstruct(x)  # type: ignore[attr-defined]
        _expect(
            isinstance(recon, torch.Tensor) and tuple(recon.shape) == tuple(x.shape),
            f"{name}.reconstruct(x) must return a tensor shaped like x "
            f"{tuple(x.shape)}, got "
            f"{tuple(recon.shape) if isinstance(recon, torch.Tensor) else type(recon)}",
        )
    z = z.detach().requires_grad_(True)
    log_joint = model.log_joint(z, x)  # type: ignore[attr-defined]
    _expect(
        isinstance(log_joint, torch.Tensor) and tuple(log_joint.shape) == (batch,),
        f"{name}.log_joint(z, x) must return ln p(x, z) of shape ({batch},), got "
        f"{getattr(log_joint, 'shape', type(log_joint).__name__)}",
    )
    _expect(
        bool(torch.isfinite(log_joint).all()),
        f"{name}.log_joint(z, x) is not finite",
    )
    grad = (
        torch.autograd.grad(log_joint.sum(), z, allow_unused=True)[0]
        if log_joint.requires_grad
        else None
    )
    _expect(
        grad is not None and bool(torch.isfinite(grad).all()),
        f"{name}.log_joint(z, x) must be differentiable in z (the HMC defence follows "
        "its gradient)",
    )
    return int(d)
