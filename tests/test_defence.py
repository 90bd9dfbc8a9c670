"""Tests for companion.defence: the model-agnostic HMC refinement of attacked codes."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Independent, Normal

from companion.data import load_images
from companion.defence import defence_curve, refine_posterior
from companion.models import ConvVAE, HierarchicalVAE, HVAEConfig, LinearGaussian, VAEConfig


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return load_images(name="digits", split="test").images[:16]


def _vae() -> ConvVAE:
    torch.manual_seed(0)
    return ConvVAE(VAEConfig(image_size=8, z_dim=4, channels=(8, 16)))


def test_zero_steps_return_the_encoders_samples(x: torch.Tensor) -> None:
    result = refine_posterior(_vae(), x, steps=0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(result.z, result.z_start)
    assert result.z.shape == (16, 4) and (result.divergences == 0).all()


class _WrongEncoder(torch.nn.Module):
    """The exact linear-Gaussian model on 2×2 "images", with an encoder that is far off."""

    image_shape = (1, 2, 2)

    def __init__(self) -> None:
        super().__init__()
        self.model = LinearGaussian.random(x_dim=4, z_dim=2, noise_std=0.3, generator=torch.Generator().manual_seed(0))
        self.model.requires_grad_(False)

    def encode(self, x: torch.Tensor):
        shift = torch.full((len(x), 2), 4.0, dtype=torch.float64)
        return Independent(Normal(shift, torch.ones_like(shift)), 1)

    def log_joint(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.model.log_joint(z, x.flatten(-3).to(z.dtype))


def test_chains_started_by_a_wrong_encoder_reach_the_exact_posterior() -> None:
    wrapper = _WrongEncoder()
    x = torch.full((2000, 1, 2, 2), 0.5, dtype=torch.float64)
    result = refine_posterior(wrapper, x, steps=40, num_warmup=40, generator=torch.Generator().manual_seed(1))
    posterior = wrapper.model.posterior(x[:1].flatten(1))
    se = (posterior.covariance_matrix[0].diagonal() / len(x)).sqrt()
    assert ((result.z.mean(0) - posterior.mean[0]).abs() < 5 * se).all(), (result.z.mean(0), posterior.mean[0])
    assert ((result.z_start.mean(0) - posterior.mean[0]).abs() > 1.0).all()  # it started far away
    assert ((result.acceptance_rate >= 0) & (result.acceptance_rate <= 1)).all()


def test_a_hierarchical_vae_is_defended_through_its_flat_codes(x: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = HierarchicalVAE(HVAEConfig(image_size=8, z_dims=(2, 3), channels=(8,), width=16))
    result = refine_posterior(model, x, steps=10, num_warmup=10, generator=torch.Generator().manual_seed(1))
    assert result.z.shape == (16, 5) and torch.isfinite(result.z).all()


def test_the_models_parameters_are_left_as_they_were(x: torch.Tensor) -> None:
    model = _vae()
    model.decoder.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    before = [p.clone() for p in model.parameters()]
    refine_posterior(model, x, steps=3)
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(p.grad is None for p in model.parameters())


def test_the_same_generator_seed_gives_the_same_codes(x: torch.Tensor) -> None:
    model = _vae()
    a = refine_posterior(model, x, steps=5, generator=torch.Generator().manual_seed(3)).z
    b = refine_posterior(model, x, steps=5, generator=torch.Generator().manual_seed(3)).z
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [(dict(steps=-1), "steps"), (dict(steps=1, backend="stan"), "unknown backend")],
    ids=["negative-T", "unknown-backend"],
)
def test_bad_settings_are_rejected(x: torch.Tensor, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        refine_posterior(_vae(), x, **kwargs)


def test_bad_inputs_and_models_are_rejected(x: torch.Tensor) -> None:
    bad = x.clone()
    bad[0, 0, 0, 0] = math.nan
    with pytest.raises(ValueError, match="finite"):
        refine_posterior(_vae(), bad, steps=1)
    with pytest.raises(ValueError, match="expected"):
        refine_posterior(_vae(), torch.rand(2, 1, 16, 16), steps=1)
    no_encoder = LinearGaussian.random(x_dim=4, z_dim=2, noise_std=1.0)
    with pytest.raises(ValueError, match="encode and log_joint"):
        refine_posterior(no_encoder, torch.rand(2, 4), steps=1)


def test_the_curve_reads_one_chain_at_every_T_and_matches_separate_runs(x: torch.Tensor) -> None:
    model = _vae()
    curve = defence_curve(model, x, steps_grid=[5, 0, 2], num_warmup=3, generator=torch.Generator().manual_seed(4))
    assert sorted(curve) == [0, 2, 5]
    torch.testing.assert_close(curve[0].z, curve[0].z_start)  # T = 0: the encoder alone
    assert curve[0].acceptance_rate.isnan().all()
    for t in (2, 5):
        alone = refine_posterior(model, x, steps=t, num_warmup=3, generator=torch.Generator().manual_seed(4))
        torch.testing.assert_close(curve[t].z, alone.z)
        torch.testing.assert_close(curve[t].step_size, alone.step_size)
        torch.testing.assert_close(curve[t].acceptance_rate, alone.acceptance_rate)
    assert not torch.equal(curve[2].z, curve[5].z)


def test_the_curve_rejects_what_refine_posterior_rejects(x: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="steps"):
        defence_curve(_vae(), x, steps_grid=[0, -1])
    with pytest.raises(ValueError, match="steps"):
        defence_curve(_vae(), x, steps_grid=[])
    with pytest.raises(ValueError, match="unknown backend"):
        defence_curve(_vae(), x, steps_grid=[1], backend="stan")
