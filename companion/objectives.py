"""Variational objectives and marginal-likelihood estimators.

* :func:`elbo` — E_q[ln p(x|z)] − β KL[q(z|x) ‖ p(z)] (Kingma & Welling, 2014; β-VAE:
  Higgins et al., 2017), with the analytic KL where one exists.
* :func:`importance_log_marginal` — ln (1/k) Σ_i p(x, z_i) / r(z_i), z_i ~ r: naive
  Monte Carlo when r is the prior, importance sampling otherwise; with r = q(z|x) it is
  the IWAE bound (Burda et al., 2016), a lower bound on ln p(x) in expectation that
  tightens with k.
* :func:`iwae_bound` / :func:`test_nll` — the IWAE bound of an encoder model and the
  test negative log-likelihood estimate reported in the literature (k = 1000 or 5000).

All functions are batched over data points and importance samples: samples form a
(k, B, ...) tensor evaluated about a hundred (CPU) or thousands (GPU) of model
evaluations per pass, with no Python loop over examples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple, Protocol, runtime_checkable

import torch
from torch.distributions import Distribution, kl_divergence

from companion.progress import progress_bar

__all__ = [
    "LatentVariableModel",
    "ELBOTerms",
    "elbo",
    "default_evals_per_pass",
    "log_importance_weights",
    "importance_log_marginal",
    "iwae_from_weights",
    "iwae_bound",
    "iwae_curve",
    "test_nll",
]


class LatentVariableModel(Protocol):
    """What the estimators need from a model (see :mod:`companion.models`).

    ``prior()`` returns p(z) with event shape ``(d,)``; ``decode(z)`` returns p(x | z)
    for codes ``(B, d)``, whose ``log_prob(x)`` is ``(B,)``; ``log_joint(z, x)`` returns
    ln p(x, z), ``(B,)``. Encoder models add ``encode(x)`` -> q(z | x) with batch shape
    ``(B,)`` and event shape ``(d,)``. :func:`companion.model_check.check_model` checks
    all of this, plus what the attacks and the defence read, on a model of your own.
    """

    def prior(self) -> Distribution: ...

    def decode(self, z: torch.Tensor) -> Distribution: ...

    def log_joint(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class _Encoder(Protocol):
    def encode(self, x: torch.Tensor) -> Distribution: ...


class ELBOTerms(NamedTuple):
    """Per-example ELBO and its terms, each of shape (B,), in nats.

    ``elbo = log_likelihood - beta * kl`` for the β the ELBO was computed with, and
    ``kl = sum(kl_groups)``: one entry per latent group (one for a single-layer VAE).
    """

    elbo: torch.Tensor
    log_likelihood: torch.Tensor
    kl: torch.Tensor
    kl_groups: tuple[torch.Tensor, ...]


def _kl_groups(model, q: Distribution, z: torch.Tensor) -> list[torch.Tensor]:
    """Per-group KL[q ‖ p] averaged over the S samples z (S, B, d): a list of
    (B,) tensors.

    Models with latent groups report them (``model.kl_groups``); otherwise KL[q ‖ p(z)]
    is analytic when torch knows it, else estimated from the samples.
    """
    if hasattr(model, "kl_groups"):
        return [kl.mean(0) for kl in model.kl_groups(q, z)]
    prior = model.prior()
    try:
        return [kl_divergence(q, prior)]
    except NotImplementedError:
        return [(q.log_prob(z) - prior.log_prob(z)).mean(0)]


def elbo(
    *,
    model: LatentVariableModel,
    x: torch.Tensor,
    posterior: Distribution | None = None,
    beta: float = 1.0,
    n_samples: int = 1,
    z: torch.Tensor | None = None,
) -> ELBOTerms:
    """The (β-)ELBO of each x with reparameterised samples (differentiable).

    Args:
        model: a model with ``decode``, and ``prior`` or ``kl_groups`` (and ``encode``
            if ``posterior`` is None).
        x: data, shape (B, ...) as the model expects.
        posterior: q(z | x) with batch shape (B,); default ``model.encode(x)``.
        beta: weight of the KL term (β = 1 is the ELBO proper, a bound on ln p(x)).
        n_samples: Monte Carlo samples of the reconstruction term.
        z: (S, B, d) reparameterised samples of the posterior to evaluate the ELBO at,
            drawn by the caller (:func:`companion.train.train_vae` draws the noise of a
            whole global batch and hands every process its rows); default
            ``posterior.rsample((n_samples,))``.

    Returns:
        :class:`ELBOTerms` with tensors of shape (B,).
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    if posterior is None:
        if not isinstance(model, _Encoder):
            raise AttributeError(
                f"{type(model).__name__} has no encode: pass posterior=q(z | x)"
            )
        posterior = model.encode(x)
    q = posterior
    if z is None:
        z = q.rsample((n_samples,))  # (S, B, d)
    log_lik = model.decode(z).log_prob(x).mean(0)
    groups = _kl_groups(model, q, z)
    kl = torch.stack(groups).sum(0)
    return ELBOTerms(
        elbo=log_lik - beta * kl, log_likelihood=log_lik, kl=kl, kl_groups=tuple(groups)
    )


def default_evals_per_pass(device: torch.device) -> int:
    """Model evaluations per pass of the importance-sampling loops.

    Measured on 2 CPU cores (``benchmarks/bench_iwae.py``): chapter 2's 28×28 conv
    decoder is fastest at 128 evaluations per call, 1.4× slower at 32, 2.1× at 512 and
    2.4× at 4 096 (its activations no longer fit in cache). GPUs want large passes.
    """
    return 16_384 if device.type == "cuda" else 128


def log_importance_weights(
    *,
    model: LatentVariableModel,
    x: torch.Tensor,
    proposal: Distribution,
    k: int,
    evals_per_pass: int | None = None,
) -> torch.Tensor:
    """ln w_i = ln p(x, z_i) − ln r(z_i) for k samples z_i ~ r(z | x): shape (k, B).

    Args:
        model: provides ``log_joint(z, x)``.
        x: data, shape (B, ...).
        proposal: r(z | x) with batch shape (B,), or () to share one proposal (for
            instance the prior) across the batch.
        k: number of importance samples (>= 1).
        evals_per_pass: model evaluations (samples × data points) per pass; default
            :func:`default_evals_per_pass` for x's device. Memory grows linearly with
            it.
    """
    batch = x.shape[0]
    if evals_per_pass is None:
        evals_per_pass = default_evals_per_pass(x.device)
    if k < 1 or evals_per_pass < 1:
        raise ValueError(
            f"k and evals_per_pass must be >= 1, got k={k}, "
            f"evals_per_pass={evals_per_pass}"
        )
    chunk = max(1, evals_per_pass // max(batch, 1))
    parts = []
    with torch.no_grad():
        for start in range(0, k, chunk):
            n = min(chunk, k - start)
            z = proposal.sample((n,))
            if (
                z.dim() == 2
            ):  # a proposal without batch shape: share samples over the batch
                z = z.unsqueeze(1).expand(n, batch, z.shape[-1])
            parts.append(model.log_joint(z, x) - proposal.log_prob(z))
    return torch.cat(parts, dim=0)


def importance_log_marginal(
    *,
    model: LatentVariableModel,
    x: torch.Tensor,
    proposal: Distribution,
    k: int,
    evals_per_pass: int | None = None,
) -> torch.Tensor:
    """Importance-sampling estimate of ln p(x) with k samples from ``proposal``.

    ln p̂(x) = logsumexp_i [ln p(x, z_i) − ln r(z_i)] − ln k,  z_i ~ r(z | x).
    Arguments as in :func:`log_importance_weights`.

    Returns:
        (B,) estimates in nats. exp(·) is unbiased for p(x), so the estimate is a lower
        bound on ln p(x) in expectation (Jensen), consistent as k → ∞.
    """
    log_w = log_importance_weights(
        model=model, x=x, proposal=proposal, k=k, evals_per_pass=evals_per_pass
    )
    return torch.logsumexp(log_w, dim=0) - math.log(k)


def iwae_from_weights(log_w: torch.Tensor, *, ks: Sequence[int]) -> torch.Tensor:
    """E[L_k] for several k from one set of log-weights, shape (len(ks), B).

    The K = ``log_w.shape[0]`` weights are split into K // k disjoint groups of k; L_k
    of each group is computed and the groups are averaged. Every k must divide K. This
    gives the whole curve L_1 ≤ L_10 ≤ … ≤ L_K
    (in expectation) for the price of K samples.
    """
    n = log_w.shape[0]
    rows = []
    for k in ks:
        if k < 1 or n % k:
            raise ValueError(
                f"every k must divide the number of weights {n}; got k={k}"
            )
        groups = log_w.reshape(n // k, k, *log_w.shape[1:])
        rows.append((torch.logsumexp(groups, dim=1) - math.log(k)).mean(0))
    return torch.stack(rows)


def iwae_bound(
    *, model, x: torch.Tensor, k: int, evals_per_pass: int | None = None
) -> torch.Tensor:
    """The IWAE bound L_k(x) with the model's encoder as proposal: (B,) nats
    (Burda et al., 2016)."""
    with torch.no_grad():
        q = model.encode(x)
    return importance_log_marginal(
        model=model, x=x, proposal=q, k=k, evals_per_pass=evals_per_pass
    )


def iwae_curve(
    *,
    model,
    images: torch.Tensor,
    ks: Sequence[int],
    batch_size: int = 100,
    evals_per_pass: int | None = None,
    progress: bool | None = None,
) -> torch.Tensor:
    """IWAE bounds L_k for every k in ``ks`` over a data set,
    from max(ks) samples per image.

    Args:
        model: an encoder model (``encode``, ``log_joint``), already on its device.
        images: (N, ...) evaluation images (binarised once for a binary likelihood).
        ks: importance-sample counts; each must divide max(ks).
        batch_size: images per batch.
        evals_per_pass: decoder evaluations per pass (see
            :func:`log_importance_weights`).
        progress: show a progress bar (default: see :mod:`companion.progress`).

    Returns:
        (len(ks), N) tensor of bounds in nats, on the CPU. ``-curve[-1].mean()`` is the
        test NLL estimate the literature reports with k = max(ks).
    """
    device = next(model.parameters()).device
    k_max = max(ks)
    out = []
    was_training = model.training
    model.eval()
    try:
        for start in progress_bar(
            range(0, len(images), batch_size),
            desc=f"IWAE (k={k_max})",
            enabled=progress,
        ):
            x = images[start : start + batch_size].to(device)
            with torch.no_grad():
                q = model.encode(x)
            log_w = log_importance_weights(
                model=model, x=x, proposal=q, k=k_max, evals_per_pass=evals_per_pass
            )
            out.append(iwae_from_weights(log_w, ks=ks).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out, dim=1)


def test_nll(*, model, images: torch.Tensor, k: int, **kwargs) -> torch.Tensor:
    """Per-image negative log-likelihood estimates −L_k(x), (N,) nats;
    options as :func:`iwae_curve`."""
    return -iwae_curve(model=model, images=images, ks=(k,), **kwargs)[0]


# not a pytest test despite its name; mypy does not know function attributes
test_nll.__test__ = False  # type: ignore[attr-defined]
