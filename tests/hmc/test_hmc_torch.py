"""Tests for companion.hmc.torch: exactness on the linear-Gaussian posterior, the
leapfrog integrator, gradient caching, rejection of divergent proposals,
and step-size adaptation."""

from __future__ import annotations

import math

import pytest
import torch

from companion.hmc.torch import (
    HMCState,
    dual_averaging_init,
    dual_averaging_update,
    init,
    leapfrog,
    run_chains,
    step,
)
from companion.models import LinearGaussian


def _gaussian_logdensity(scale: torch.Tensor):
    """Independent N(0, scale²) per chain: scale (C, 1) or a float."""
    return lambda z: -0.5 * ((z / scale) ** 2).sum(-1)


def test_chains_sample_the_exact_linear_gaussian_posterior() -> None:
    g = torch.Generator().manual_seed(0)
    model = LinearGaussian.random(
        x_dim=12, z_dim=3, noise_std=0.5, generator=g
    ).requires_grad_(False)
    x, _ = model.sample(1, generator=g)
    chains = 3000
    x_rep = x.expand(chains, -1)
    start = torch.randn(chains, 3, dtype=torch.float64, generator=g)
    result = run_chains(
        start,
        logdensity_fn=lambda z: model.log_joint(z, x_rep),
        num_warmup=60,
        num_transitions=60,
        num_steps=8,
        generator=g,
    )
    posterior = model.posterior(x)
    z = result.state.position  # one independent draw per chain
    se = (posterior.covariance_matrix[0].diagonal() / chains).sqrt()
    assert ((z.mean(0) - posterior.mean[0]).abs() < 5 * se).all()
    cov_error = (
        torch.cov(z.T) - posterior.covariance_matrix[0]
    ).norm() / posterior.covariance_matrix[0].norm()
    assert cov_error < 0.15, cov_error
    assert not result.info.divergent.any()


def test_leapfrog_is_reversible() -> None:
    logdensity = _gaussian_logdensity(torch.tensor([[0.5], [2.0]], dtype=torch.float64))
    state = init(
        torch.randn(
            2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
        ),
        logdensity,
    )
    p0 = torch.randn(
        2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2)
    )
    forward, p1 = leapfrog(
        state,
        p0,
        logdensity_fn=logdensity,
        step_size=torch.full((2, 1), 0.1),
        num_steps=7,
    )
    back, p2 = leapfrog(
        forward,
        -p1,
        logdensity_fn=logdensity,
        step_size=torch.full((2, 1), 0.1),
        num_steps=7,
    )
    torch.testing.assert_close(back.position, state.position, atol=1e-12, rtol=0)
    torch.testing.assert_close(-p2, p0, atol=1e-12, rtol=0)


def test_energy_error_vanishes_quadratically_as_the_step_size_shrinks() -> None:
    logdensity = _gaussian_logdensity(1.0)
    state = init(
        torch.randn(
            64, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3)
        ),
        logdensity,
    )
    p0 = torch.randn(
        64, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4)
    )
    errors = []
    for eps in (0.2, 0.1, 0.05):
        steps = round(1.0 / eps)  # the same trajectory length
        end, p = leapfrog(
            state,
            p0,
            logdensity_fn=logdensity,
            step_size=torch.full((64, 1), eps),
            num_steps=steps,
        )
        h0 = -state.log_density + 0.5 * (p0**2).sum(-1)
        h1 = -end.log_density + 0.5 * (p**2).sum(-1)
        errors.append((h1 - h0).abs().max().item())
    assert errors[0] > errors[1] > errors[2]
    assert 3.0 < errors[0] / errors[1] < 5.0 and 3.0 < errors[1] / errors[2] < 5.0, (
        errors
    )


def test_a_transition_evaluates_the_gradient_exactly_num_steps_times() -> None:
    calls = []

    def logdensity(z: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return -0.5 * (z**2).sum(-1)

    state = init(torch.zeros(3, 2), logdensity)
    assert len(calls) == 1
    for _ in range(4):
        state, _ = step(state, logdensity_fn=logdensity, step_size=0.1, num_steps=5)
    assert len(calls) == 1 + 4 * 5


def test_non_finite_and_divergent_proposals_are_rejected_never_returned() -> None:
    def logdensity(z: torch.Tensor) -> torch.Tensor:  # a wall: -inf beyond |z| = 1
        inside = z.abs().amax(-1) < 1
        return torch.where(
            inside, -0.5 * (z**2).sum(-1), torch.full_like(z[:, 0], -math.inf)
        )

    g = torch.Generator().manual_seed(5)
    state = init(torch.zeros(200, 2), logdensity)
    seen_divergent = False
    for _ in range(20):
        state, info = step(
            state, logdensity_fn=logdensity, step_size=0.8, num_steps=3, generator=g
        )
        assert (
            torch.isfinite(state.position).all()
            and torch.isfinite(state.log_density).all()
        )
        assert not (info.accepted & info.divergent).any()
        assert (info.acceptance_rate[info.divergent] == 0).all()
        seen_divergent |= bool(info.divergent.any())
    assert seen_divergent and (state.position.abs() < 1).all()


def test_dual_averaging_reaches_the_target_acceptance_from_a_bad_step_size() -> None:
    g = torch.Generator().manual_seed(6)
    logdensity = _gaussian_logdensity(1.0)
    for initial in (3.0, 1e-3):
        result = run_chains(
            torch.randn(256, 10, generator=g),
            logdensity_fn=logdensity,
            num_warmup=150,
            num_transitions=50,
            num_steps=5,
            initial_step_size=initial,
            target_acceptance=0.65,
            generator=g,
        )
        assert abs(result.info.acceptance_rate.mean().item() - 0.65) < 0.15, (
            initial,
            result.info.acceptance_rate.mean(),
        )


def test_every_chain_adapts_its_own_step_size() -> None:
    scales = torch.tensor([[0.1], [1.0], [10.0]]).repeat_interleave(32, 0)
    g = torch.Generator().manual_seed(7)
    result = run_chains(
        scales * torch.randn(96, 3, generator=g),
        logdensity_fn=_gaussian_logdensity(scales),
        num_warmup=150,
        num_transitions=1,
        num_steps=5,
        generator=g,
    )
    per_scale = result.step_size.reshape(3, 32).median(1).values
    assert per_scale[0] < per_scale[1] < per_scale[2]
    assert (
        per_scale[2] / per_scale[0]
    ) > 30  # step size tracks the scale (ideal ratio 100)


def test_without_warm_up_the_initial_step_size_is_kept() -> None:
    result = run_chains(
        torch.zeros(4, 2),
        logdensity_fn=_gaussian_logdensity(1.0),
        num_warmup=0,
        num_transitions=3,
        num_steps=2,
        initial_step_size=0.3,
    )
    torch.testing.assert_close(result.step_size, torch.full((4,), 0.3))
    assert result.info.accepted.shape == (3, 4)


def test_dual_averaging_lowers_the_step_size_when_acceptance_is_below_target() -> None:
    state = dual_averaging_init(torch.ones(2))
    for _ in range(20):
        state = dual_averaging_update(state, torch.tensor([0.0, 1.0]), target=0.65)
    assert state.step_size[0] < 1.0 < state.step_size[1]


def test_model_parameters_receive_no_gradient() -> None:
    weight = torch.nn.Parameter(torch.ones(3))
    logdensity = lambda z: -0.5 * ((z * weight) ** 2).sum(-1)  # noqa: E731
    state = init(torch.randn(5, 3), logdensity)
    step(state, logdensity_fn=logdensity, step_size=0.1, num_steps=3)
    assert weight.grad is None


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: init(torch.zeros(3), _gaussian_logdensity(1.0)), "chains, dimensions"),
        (
            lambda: init(torch.full((2, 2), math.nan), _gaussian_logdensity(1.0)),
            "finite",
        ),
        (lambda: init(torch.zeros(2, 2), lambda z: z.sum()), "one value per chain"),
        (
            lambda: step(
                HMCState(torch.zeros(1, 1), torch.zeros(1), torch.zeros(1, 1)),
                logdensity_fn=_gaussian_logdensity(1.0),
                step_size=0.1,
                num_steps=0,
            ),
            "num_steps",
        ),
        (
            lambda: run_chains(
                torch.zeros(1, 1),
                logdensity_fn=_gaussian_logdensity(1.0),
                num_warmup=-1,
                num_transitions=1,
                num_steps=1,
            ),
            "num_warmup",
        ),
    ],
    ids=["not-2d", "nan-start", "scalar-density", "zero-steps", "negative-warmup"],
)
def test_bad_input_is_rejected_with_a_clear_message(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
