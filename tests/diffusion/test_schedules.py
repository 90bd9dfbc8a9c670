"""Tests for companion.diffusion.schedules: β schedules, ᾱ, SNR, the split step,
q(z_t | x)."""

from __future__ import annotations

import math

import pytest
import torch

from companion.diffusion.schedules import (
    Schedule,
    cosine_betas,
    linear_betas,
    make_schedule,
    q_sample,
    scaled_linear_betas,
    split_step,
)


def test_linear_schedule_has_ho_et_al_endpoints_at_t_1000() -> None:
    b = linear_betas(1000)
    assert b.dtype == torch.float64 and b.shape == (1000,)
    assert b[0].item() == pytest.approx(1e-4) and b[-1].item() == pytest.approx(0.02)
    assert bool((b.diff() > 0).all())


def test_scaled_linear_equals_ho_et_al_at_1000_and_keeps_total_noise_at_other_t() -> (
    None
):
    assert torch.allclose(scaled_linear_betas(1000), linear_betas(1000))
    for T in (100, 200, 500):
        assert scaled_linear_betas(T).sum().item() == pytest.approx(
            linear_betas(1000).sum().item(), rel=0.01
        )


@pytest.mark.parametrize(
    ("name", "T"),
    [
        ("linear", 21),
        ("linear", 200),
        ("linear", 1000),
        ("cosine", 2),
        ("cosine", 200),
        ("cosine", 1000),
    ],
)
def test_alpha_bar_and_snr_fall_monotonically_and_are_float32(
    name: str, T: int
) -> None:
    s = make_schedule(name, T)
    assert (
        s.T == T
        and s.alpha_bars.dtype == torch.float32
        and s.snr.dtype == torch.float32
    )
    assert bool((s.alpha_bars.diff() < 0).all()) and bool((s.snr.diff() < 0).all())
    assert 0 < s.alpha_bars[-1] < s.alpha_bars[0] < 1


def test_snr_equals_the_closed_form_at_listed_steps() -> None:
    s = make_schedule("linear", 1000)
    for t in (1, 10, 100, 500, 1000):
        a = math.prod(
            1 - (1e-4 + (s_ - 1) * (0.02 - 1e-4) / 999) for s_ in range(1, t + 1)
        )
        assert s.alpha_bars[t - 1].item() == pytest.approx(a, rel=1e-5)
        assert s.snr[t - 1].item() == pytest.approx(a / (1 - a), rel=1e-4)
    # Step 1 of Ho et al.'s schedule: ᾱ_1 = 1 − 10⁻⁴, SNR = 9999.
    assert s.snr[0].item() == pytest.approx(9999, rel=1e-4)


def test_cosine_alpha_bar_follows_nichol_and_dhariwal_closed_form() -> None:
    T, eps = 1000, 0.008
    s = make_schedule("cosine", T)
    f = lambda t: math.cos((t / T + eps) / (1 + eps) * math.pi / 2) ** 2  # noqa: E731
    for t in (1, 250, 500, 900):
        assert s.alpha_bars[t - 1].item() == pytest.approx(f(t) / f(0), rel=1e-4)
    assert cosine_betas(T).max().item() <= 0.999


@pytest.mark.parametrize("T", [0, 1, -5, 2.5, True])
def test_fewer_than_two_steps_is_rejected(T) -> None:
    with pytest.raises(ValueError, match="at least T = 2"):
        make_schedule("cosine", T)


def test_rescaled_linear_schedule_rejects_t_at_or_below_20() -> None:
    with pytest.raises(ValueError, match="T > 20"):
        scaled_linear_betas(20)


def test_unknown_schedule_name_is_rejected_naming_the_choices() -> None:
    with pytest.raises(ValueError, match=r"\['cosine', 'linear'\]"):
        make_schedule("quadratic", 100)


def test_betas_outside_zero_one_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        Schedule.from_betas(torch.tensor([0.1, 1.0, 0.2]))


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("beta_1", [0.2, 0.1, 0.05, 0.025, 0.001])
def test_split_step_is_the_first_step_whose_cumulative_noise_reaches_beta_1(
    name: str, beta_1: float
) -> None:
    s = make_schedule(name, 1000)
    k = split_step(s, beta_1)
    noise = 1 - s.alpha_bars.double()
    assert noise[k - 1] >= beta_1
    assert k == 1 or noise[k - 2] < beta_1


def test_split_steps_of_the_linear_schedule_at_t_1000() -> None:
    s = make_schedule("linear", 1000)
    ks = [split_step(s, b) for b in (0.2, 0.1, 0.05, 0.025, 0.001)]
    assert ks == sorted(ks, reverse=True)
    assert 95 <= ks[1] <= 105  # β_1 = 0.1 replaces about 10 % of the steps


@pytest.mark.parametrize("beta_1", [0.0, 1.0, -0.1, 1.5, float("nan"), "0.1"])
def test_split_step_rejects_beta_1_outside_the_open_unit_interval(beta_1) -> None:
    with pytest.raises(ValueError, match=r"open interval \(0, 1\)"):
        split_step(make_schedule("linear", 100), beta_1)


def test_split_step_rejects_a_level_the_schedule_never_reaches() -> None:
    s = Schedule.from_betas(torch.full((5,), 1e-3))
    with pytest.raises(ValueError, match="reaches only"):
        split_step(s, 0.5)


def test_q_sample_has_the_closed_form_moments() -> None:
    s = make_schedule("linear", 100)
    g = torch.Generator().manual_seed(0)
    x = torch.full((20_000, 1, 2, 2), 0.5)
    for t in (1, 30, 100):
        z = q_sample(s, x, t, generator=g)
        a = s.alpha_bars[t - 1].item()
        assert z.mean().item() == pytest.approx(math.sqrt(a) * 0.5, abs=0.01)
        assert z.var().item() == pytest.approx(1 - a, rel=0.03, abs=1e-4)


def test_q_sample_takes_one_step_per_example_and_uses_the_given_noise() -> None:
    s = make_schedule("cosine", 10)
    x, noise = torch.zeros(3, 1, 2, 2), torch.ones(3, 1, 2, 2)
    z = q_sample(s, x, torch.tensor([1, 5, 10]), noise=noise)
    assert torch.allclose(z[:, 0, 0, 0], (1 - s.alpha_bars[[0, 4, 9]]).sqrt())


@pytest.mark.parametrize("t", [0, 11, torch.tensor([1, 2])])
def test_q_sample_rejects_steps_outside_1_to_T_and_wrong_shapes(t) -> None:
    with pytest.raises(ValueError):
        q_sample(make_schedule("cosine", 10), torch.zeros(3, 1, 2, 2), t)
