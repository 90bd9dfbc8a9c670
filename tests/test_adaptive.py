"""Tests for companion.adaptive: the differentiable chain reproduces the real sampler,
its gradients are right, the attack is feasible and stronger than its random start, and
bad requests fail clearly."""

from __future__ import annotations

import pytest
import torch

from companion.adaptive import _chain, adaptive_attack, adaptive_gradient_evaluations
from companion.attacks import AttackConfig
from companion.hmc import torch as hmc_torch
from companion.models import ConvVAE, HierarchicalVAE, HVAEConfig, VAEConfig


def _vae(seed: int = 0, dtype=torch.float32) -> ConvVAE:
    torch.manual_seed(seed)
    return ConvVAE(VAEConfig(image_size=8, z_dim=3, channels=(4,))).to(dtype).eval()


def _images(n: int, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    return torch.rand(
        n, 1, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=dtype
    )


def test_held_accept_decisions_reproduce_the_real_sampler_draw_for_draw() -> None:
    model, x = _vae(dtype=torch.float64), _images(6, dtype=torch.float64)
    z0 = torch.randn(
        6, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    steps, leapfrog, eps = 4, 3, 1.2  # large enough that some proposals are rejected
    log_density = lambda z: model.log_joint(z, x)  # noqa: E731
    state, gen = hmc_torch.init(z0, log_density), torch.Generator().manual_seed(2)
    accepted = []
    for _ in range(steps):
        state, info = hmc_torch.step(
            state,
            logdensity_fn=log_density,
            step_size=eps,
            num_steps=leapfrog,
            generator=gen,
        )
        accepted.append(info.accepted)
    gen = torch.Generator().manual_seed(
        2
    )  # the sampler draws momenta, then uniforms, per transition
    draws = [
        (
            torch.randn(6, 3, generator=gen, dtype=torch.float64),
            torch.rand(6, generator=gen, dtype=torch.float64),
        )
        for _ in range(steps)
    ]
    momenta, uniforms = (
        torch.stack([m for m, _ in draws]),
        torch.stack([u for _, u in draws]),
    )
    z = _chain(
        model,
        z0,
        x,
        momenta=momenta,
        uniforms=uniforms,
        step_size=eps,
        num_leapfrog=leapfrog,
        accept="hold",
    )
    torch.testing.assert_close(z.detach(), state.position)
    assert 0 < torch.stack(accepted).float().mean() < 1  # both branches were exercised


@pytest.mark.parametrize("accept", ["soft", "hold"])
def test_the_chains_gradient_in_the_input_matches_finite_differences(
    accept: str,
) -> None:
    model, x = _vae(dtype=torch.float64), _images(2, dtype=torch.float64)
    z0 = torch.randn(
        2, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    gen = torch.Generator().manual_seed(3)
    momenta = torch.randn(3, 2, 3, generator=gen, dtype=torch.float64)
    uniforms = torch.rand(3, 2, generator=gen, dtype=torch.float64)
    direction = torch.randn(x.shape, generator=gen, dtype=torch.float64)

    def f(inputs: torch.Tensor) -> torch.Tensor:
        return _chain(
            model,
            z0,
            inputs,
            momenta=momenta,
            uniforms=uniforms,
            step_size=0.2,
            num_leapfrog=2,
            accept=accept,
        ).sum()

    x_var = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(x_var), x_var)
    h = 1e-5
    with torch.enable_grad():
        numeric = (f(x + h * direction) - f(x - h * direction)) / (2 * h)
    torch.testing.assert_close(
        (grad * direction).sum(), numeric.detach(), rtol=1e-4, atol=1e-7
    )
    assert grad.abs().sum() > 0


def test_the_attack_stays_in_the_ball_and_beats_its_own_random_start() -> None:
    model, x = _vae(), _images(4)
    kwargs = dict(hmc_steps=2, num_leapfrog=2, step_size=0.1, eot_samples=2)
    start = adaptive_attack(
        model,
        x,
        config=AttackConfig(radius=0.2, steps=0, restarts=2),
        generator=torch.Generator().manual_seed(0),
        **kwargs,
    )
    result = adaptive_attack(
        model,
        x,
        config=AttackConfig(radius=0.2, steps=8, restarts=2),
        generator=torch.Generator().manual_seed(0),
        **kwargs,
    )
    assert result.x_adv.shape == x.shape and result.restart_objectives.shape == (2, 4)
    assert (
        (result.x_adv - x).abs().max() <= 0.2 + 1e-6
        and result.x_adv.min() >= 0
        and result.x_adv.max() <= 1
    )
    assert torch.isfinite(result.objective).all()
    assert result.objective.mean() > start.objective.mean()
    assert all(
        p.requires_grad for p in model.parameters()
    )  # the model comes back unfrozen


def test_the_cost_counts_every_leapfrog_gradient_of_every_chain() -> None:
    config = AttackConfig(radius=0.1, steps=10, restarts=2)
    assert adaptive_gradient_evaluations(
        config=config, hmc_steps=5, num_leapfrog=5, eot_samples=3, accept="hold"
    ) == 10 * 2 * 3 * (1 + 5 * 5)
    assert adaptive_gradient_evaluations(
        config=config, hmc_steps=5, num_leapfrog=5, eot_samples=3, accept="soft"
    ) == 10 * 2 * 3 * (1 + 5 * 6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(hmc_steps=0), "hmc_steps, num_leapfrog and eot_samples must be >= 1"),
        (dict(eot_samples=0), "must be >= 1"),
        (dict(step_size=0.0), "step_size must be positive"),
        (dict(accept="metropolis"), "unknown accept rule"),
    ],
)
def test_bad_settings_raise_value_errors_that_say_what_to_change(
    kwargs: dict, message: str
) -> None:
    settings = dict(hmc_steps=2, num_leapfrog=2, step_size=0.1) | kwargs
    with pytest.raises(ValueError, match=message):
        adaptive_attack(
            _vae(),
            _images(2),
            config=AttackConfig(radius=0.1, steps=1, restarts=1),
            **settings,
        )


def test_hierarchical_encoders_and_bad_images_are_refused() -> None:
    torch.manual_seed(0)
    hvae = HierarchicalVAE(
        HVAEConfig(image_size=8, z_dims=(2, 3), channels=(4,), width=8)
    )
    config = AttackConfig(radius=0.1, steps=1, restarts=1)
    with pytest.raises(ValueError, match="2 latent groups"):
        adaptive_attack(
            hvae, _images(2), config=config, hmc_steps=1, num_leapfrog=1, step_size=0.1
        )
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        adaptive_attack(
            _vae(),
            _images(2) + 1,
            config=config,
            hmc_steps=1,
            num_leapfrog=1,
            step_size=0.1,
        )
    with pytest.raises(ValueError, match="Linear has no encode"):
        adaptive_attack(
            torch.nn.Linear(2, 2),
            _images(2),
            config=config,
            hmc_steps=1,
            num_leapfrog=1,
            step_size=0.1,
        )
