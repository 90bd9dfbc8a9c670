"""Per-example variational optimisation, to measure the amortisation gap.

An encoder q_φ(z|x) shares its parameters φ over all x (amortised inference). The best
Gaussian for one x alone, q*_x = argmax_q ELBO(x; q), can only be better. Cremer et al.
(2018) split the gap between ln p(x) and the amortised ELBO in two:

    ln p(x) − ELBO(q_φ)  =  [ln p(x) − ELBO(q*_x)]   +   [ELBO(q*_x) − ELBO(q_φ)]
                             approximation gap           amortisation gap

:func:`fit_local_posteriors` finds q*_x for a batch by gradient ascent, all examples at
once (each has its own mean and scale; their ELBOs are independent, so one summed loss
optimises each).

:func:`posterior_modes` finds where the model's own posterior p(z | x) peaks, per
example, with nothing but ``log_joint``: the encoder-free reference point against which
an encoder's answer (and how far an attack moves it) can be compared, for any model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.distributions import Distribution, Independent, Normal

from companion import rng
from companion.frozen import frozen
from companion.objectives import elbo
from companion.progress import progress_bar

__all__ = ["fit_local_posteriors", "fit_amortised_encoder", "posterior_modes"]


def fit_local_posteriors(
    *,
    model,
    x: torch.Tensor,
    init: Distribution,
    steps: int,
    lr: float = 1e-2,
    n_samples: int = 8,
    progress: bool | None = None,
) -> Distribution:
    """Maximise each example's ELBO over its own diagonal Gaussian q(z) = N(m, diag s²).

    Args:
        model: a model with ``prior`` and ``decode`` (its parameters are not changed).
        x: data, shape (B, ...).
        init: a diagonal Gaussian with batch shape (B,) to start from (usually the
            encoder's output, so the result is at least as good up to noise).
        steps: Adam steps (>= 1).
        lr: Adam learning rate.
        n_samples: reparameterised samples per step for the reconstruction term.
        progress: show a progress bar (default: see :mod:`companion.progress`).

    Returns:
        The fitted q*, an ``Independent(Normal)`` with batch shape (B,), detached.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    mean = init.mean.detach().clone().requires_grad_(True)
    # softplus⁻¹(s) so that softplus keeps the scale positive during optimisation
    raw = torch.log(torch.expm1(init.stddev.detach().clamp_min(1e-6))).requires_grad_(
        True
    )
    optimiser = torch.optim.Adam([mean, raw], lr=lr)
    with frozen(model):
        for _ in progress_bar(range(steps), desc="local ELBO", enabled=progress):
            q = Independent(Normal(mean, F.softplus(raw)), 1)
            loss = -elbo(model=model, x=x, posterior=q, n_samples=n_samples).elbo.sum()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    return Independent(Normal(mean.detach(), F.softplus(raw.detach())), 1)


def fit_amortised_encoder(
    *,
    model,
    encoder: torch.nn.Module,
    x: torch.Tensor,
    steps: int,
    lr: float = 0.05,
    batch_size: int = 256,
    n_samples: int = 8,
    generator: torch.Generator | None = None,
    progress: bool | None = None,
) -> torch.nn.Module:
    """Train an amortised encoder q_φ(z|x) by maximising the ELBO of a fixed model.

    Adam with a cosine learning-rate decay over ``steps`` minibatches drawn with
    replacement from ``x``. The model's parameters are not changed, except those that
    belong to ``encoder`` itself (an encoder may be part of the model, as
    :meth:`companion.models.ConvVAE.inference_network` is); the encoder is trained in
    place and returned.

    Args:
        model: a model with ``prior`` and ``decode``.
        encoder: maps a batch of x to q(z|x) with batch shape (B,).
        x: training data, shape (N, ...).
        steps: Adam steps (>= 1).
        lr: initial learning rate.
        batch_size: examples per step (at most N).
        n_samples: reparameterised samples per example per step.
        generator: torch generator of the minibatches.
        progress: show a progress bar (default: see :mod:`companion.progress`).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    batch_size = min(batch_size, len(x))
    trained = list(encoder.parameters())
    if not trained:
        raise ValueError("the encoder has no parameters to train")
    optimiser = torch.optim.Adam(trained, lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    with frozen(model, keep=trained):
        for _ in progress_bar(range(steps), desc="encoder ELBO", enabled=progress):
            batch = x[
                rng.randint(
                    0, len(x), (batch_size,), generator=generator, device=x.device
                )
            ]
            loss = -elbo(
                model=model, x=batch, posterior=encoder(batch), n_samples=n_samples
            ).elbo.mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            scheduler.step()
    return encoder


def posterior_modes(
    *, model, x: torch.Tensor, init: torch.Tensor, steps: int = 200, lr: float = 0.05
) -> torch.Tensor:
    """The modes of the model's posteriors, argmax_z ln p(z) + ln p(x | z),
    one per example.

    Adam on the summed negative log joint (each row's term depends on its own code only,
    so one loss optimises every row), started at ``init``. The log joint is the log
    posterior up to ln p(x), so its maximiser is the posterior's mode (the MAP code).

    Args:
        model: a model with ``log_joint(z, x) -> (B,)``
            (its parameters are not changed).
        x: data, shape (B, ...) as the model expects.
        init: (B, z_dim) starting codes, usually the encoder's means.
        steps: Adam steps (>= 1); chapter 6's models move less than 1e-4 after 200.
        lr: Adam learning rate, in units of z.

    Returns:
        (B, z_dim) codes, detached.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if init.dim() != 2 or len(init) != len(x):
        raise ValueError(
            f"init must be (B, z_dim) with B = len(x) = {len(x)}, got shape "
            f"{tuple(init.shape)}"
        )
    z = init.detach().clone().requires_grad_(True)
    optimiser = torch.optim.Adam([z], lr=lr)
    with frozen(model):
        for _ in range(steps):
            loss = -model.log_joint(z, x).sum()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    return z.detach()
