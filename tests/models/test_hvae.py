"""Tests for companion.models.hvae: shapes for L = 1, 2, 3, the per-group KL, the log
joint against a direct computation, and bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Independent, Normal

from companion.models import HierarchicalVAE, HVAEConfig
from companion.objectives import elbo, iwae_bound

B, S = 5, 3


def _model(z_dims: tuple[int, ...], *, seed: int = 0) -> HierarchicalVAE:
    torch.manual_seed(seed)
    model = HierarchicalVAE(
        HVAEConfig(image_size=8, z_dims=z_dims, channels=(8, 16), width=16)
    )
    with (
        torch.no_grad()
    ):  # larger weights than at initialisation: every term non-trivial
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


def _images(seed: int = 1) -> torch.Tensor:
    return torch.rand(
        B, 1, 8, 8, generator=torch.Generator().manual_seed(seed)
    ).bernoulli()


@pytest.mark.parametrize("z_dims", [(3,), (2, 3), (2, 3, 4)], ids=["L=1", "L=2", "L=3"])
def test_shapes_of_every_method_for_one_to_three_groups(
    z_dims: tuple[int, ...],
) -> None:
    model, x = _model(z_dims), _images()
    total = sum(z_dims)
    q = model.encode(x)
    z = q.rsample((S,))
    assert model.z_dim == total and model.n_groups == len(z_dims)
    assert z.shape == (S, B, total) and q.log_prob(z).shape == (S, B)
    assert q.mean.shape == (B, total)
    assert [g.batch_shape + g.event_shape for g in q.groups] == [
        torch.Size([B, d]) for d in z_dims
    ]
    assert [kl.shape for kl in model.kl_groups(q, z)] == [(S, B)] * len(z_dims)
    assert model.decode(z).batch_shape == (S, B) and model.decode(z).event_shape == (
        1,
        8,
        8,
    )
    assert model.log_joint(z, x).shape == (S, B) and model.log_prior(z).shape == (S, B)
    assert [g.shape[-1] for g in model.split(z)] == list(z_dims)
    assert model.sample(4).shape == (4, 1, 8, 8)
    recon = model.reconstruct(x)
    assert recon.shape == x.shape and ((recon >= 0) & (recon <= 1)).all()


@pytest.mark.parametrize("z_dims", [(3,), (2, 3), (2, 3, 4)], ids=["L=1", "L=2", "L=3"])
def test_per_group_kl_sums_to_the_elbo_kl_term(z_dims: tuple[int, ...]) -> None:
    model, x = _model(z_dims), _images()
    torch.manual_seed(2)
    terms = elbo(model=model, x=x, n_samples=4)
    assert len(terms.kl_groups) == len(z_dims)
    torch.testing.assert_close(torch.stack(terms.kl_groups).sum(0), terms.kl)
    torch.testing.assert_close(terms.elbo, terms.log_likelihood - terms.kl)


def test_per_group_kl_is_an_unbiased_estimate_of_the_joint_kl() -> None:
    # E_q[Σ_l KL_l] = KL[q(z|x) ‖ p(z)] = E_q[ln q(z|x) − ln p(z)]
    model, x = _model((2, 3, 4)), _images()
    torch.manual_seed(3)
    with torch.no_grad():
        q = model.encode(x)
        z = q.sample((20_000,))
        analytic = torch.stack(model.kl_groups(q, z)).sum(0)  # (S, B)
        monte_carlo = q.log_prob(z) - model.log_prior(z)
    diff = analytic - monte_carlo
    se = diff.std(0) / math.sqrt(diff.shape[0])
    assert (diff.mean(0).abs() < 5 * se + 1e-6).all(), (diff.mean(0), se)


def test_log_joint_matches_a_direct_computation_for_two_groups() -> None:
    model, x = _model((2, 3)), _images()
    z = torch.randn(S, B, 5, generator=torch.Generator().manual_seed(4))
    z0, z1 = z[..., :2], z[..., 2:]
    with torch.no_grad():
        state = model.state0 + model.state_updates[0](z0)
        mean, raw = model.prior_heads[0](state).chunk(2, dim=-1)
        prior1 = Independent(
            Normal(mean, F.softplus(raw + 0.5413248546129181) + 1e-4), 1
        )
        logits = model.decoder(z)  # the decoder reads every group
        log_prior = Independent(Normal(torch.zeros(2), 1.0), 1).log_prob(
            z0
        ) + prior1.log_prob(z1)
        log_lik = -F.binary_cross_entropy_with_logits(
            logits, x.expand_as(logits), reduction="none"
        ).sum((-3, -2, -1))
        torch.testing.assert_close(model.log_joint(z, x), log_prior + log_lik)
        torch.testing.assert_close(model.log_prior(z), log_prior)
        torch.testing.assert_close(model.decode(z).log_prob(x), log_lik)


def test_posterior_log_prob_scores_its_own_samples_consistently() -> None:
    # the top-down sampler and log_prob agree: a group-wise Gaussian with the same path
    model, x = _model((2, 3)), _images()
    torch.manual_seed(5)
    q = model.encode(x)
    z = q.sample((S,))
    _, _, posteriors = model.top_down(batch_shape=(S, B), feats=q.feats, z=z)
    direct = sum(p.log_prob(g) for p, g in zip(posteriors, model.split(z), strict=True))
    torch.testing.assert_close(q.log_prob(z), direct)


def test_iwae_bound_of_the_hierarchical_model_tightens_with_k() -> None:
    model, x = _model((2, 3)), _images()
    torch.manual_seed(6)
    bounds = [iwae_bound(model=model, x=x, k=k).mean().item() for k in (1, 10, 200)]
    assert bounds[0] < bounds[1] < bounds[2]


def test_zero_temperature_sampling_is_deterministic() -> None:
    model = _model((2, 3))
    a = model.sample(3, temperature=0.0, generator=torch.Generator().manual_seed(0))
    b = model.sample(3, temperature=0.0, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)


def test_bad_input_is_rejected_with_clear_errors() -> None:
    model = _model((2, 3))
    with pytest.raises(ValueError, match="5 entries"):
        model.decode(torch.zeros(B, 4))
    with pytest.raises(ValueError, match="expected"):
        model.encode(torch.rand(B, 1, 16, 16))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model.encode(torch.full((B, 1, 8, 8), 2.0))
    with pytest.raises(ValueError, match="invalid HVAEConfig"):
        HVAEConfig(z_dims=())
    with pytest.raises(ValueError, match="mode must be"):
        model.top_down(batch_shape=(1,), mode="median")
