"""Tests for companion.attacks: the symmetric KL against torch's KL and a Monte Carlo
estimate, feasibility of the projection and random starts (property tests), projected
gradient ascent on objectives with a known maximiser, the three encoder attacks on tiny
models, the posterior shift against its exact value on a linear-Gaussian model and the
attacks on it or held by it, the random-noise baseline, and input validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch.distributions import (
    Bernoulli,
    Independent,
    Laplace,
    MultivariateNormal,
    Normal,
    kl_divergence,
)

from companion.attacks import (
    AttackConfig,
    classifier_attack,
    diagonal_gaussians,
    encoder_attack,
    pgd,
    posterior_attack,
    posterior_shift,
    project,
    random_noise,
    random_start,
    supervised_attack,
    symmetric_kl,
    unsupervised_attack,
)
from companion.models import (
    ConvVAE,
    HierarchicalVAE,
    HVAEConfig,
    LinearGaussian,
    VAEConfig,
)

NORMS = ("linf", "l2")
TOL = 1e-6


def _gaussian(mean: torch.Tensor, std: torch.Tensor) -> Independent:
    return Independent(Normal(mean, std), 1)


def _random_gaussian(
    batch: int, dim: int, generator: torch.Generator, dtype=torch.float64
) -> Independent:
    mean = torch.randn(batch, dim, generator=generator, dtype=dtype)
    std = 0.3 + 1.5 * torch.rand(batch, dim, generator=generator, dtype=dtype)
    return _gaussian(mean, std)


def _vae(seed: int = 0) -> ConvVAE:
    torch.manual_seed(seed)
    return ConvVAE(VAEConfig(image_size=8, z_dim=4, channels=(8, 16)))


def _hvae(seed: int = 0) -> HierarchicalVAE:
    torch.manual_seed(seed)
    return HierarchicalVAE(
        HVAEConfig(image_size=8, z_dims=(2, 3), channels=(8,), width=16)
    )


def _images(n: int, seed: int, size: int = 8) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


def _linf(delta: torch.Tensor) -> torch.Tensor:
    return delta.flatten(1).abs().amax(1)


def _l2(delta: torch.Tensor) -> torch.Tensor:
    return delta.flatten(1).norm(dim=1)


def _size(delta: torch.Tensor, norm: str) -> torch.Tensor:
    return _linf(delta) if norm == "linf" else _l2(delta)


def _assert_feasible(
    x: torch.Tensor, x_ref: torch.Tensor, *, radius: float, norm: str
) -> None:
    assert bool(torch.isfinite(x).all())
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert bool((_size(x - x_ref, norm) <= radius + TOL).all()), (
        _size(x - x_ref, norm),
        radius,
    )


# --- symmetric KL ---------------------------------------------------------------------


def test_symmetric_kl_equals_the_sum_of_both_torch_kl_divergences() -> None:
    g = torch.Generator().manual_seed(0)
    q1, q2 = _random_gaussian(6, 5, g), _random_gaussian(6, 5, g)

    expected = kl_divergence(q1, q2) + kl_divergence(q2, q1)

    skl = symmetric_kl(q1, q2)
    assert skl.shape == (6,)
    torch.testing.assert_close(skl, expected, rtol=1e-10, atol=1e-12)


def test_symmetric_kl_is_symmetric_in_its_arguments() -> None:
    g = torch.Generator().manual_seed(1)
    q1, q2 = _random_gaussian(5, 4, g), _random_gaussian(5, 4, g)

    torch.testing.assert_close(
        symmetric_kl(q1, q2), symmetric_kl(q2, q1), rtol=1e-12, atol=0.0
    )


def test_symmetric_kl_is_zero_for_identical_posteriors_and_positive_otherwise() -> None:
    g = torch.Generator().manual_seed(2)
    q = _random_gaussian(4, 3, g)
    same = _gaussian(q.mean.clone(), q.stddev.clone())
    # differ in one coordinate only: the mean of row 0, the std of row 1,
    # both in rows 2 and 3
    mean, std = q.mean.clone(), q.stddev.clone()
    mean[0, 1] += 1e-2
    std[1, 2] *= 1.01
    mean[2:, 0] -= 0.5
    std[2:, 0] *= 2.0
    other = _gaussian(mean, std)

    assert torch.equal(symmetric_kl(q, same), torch.zeros(4, dtype=torch.float64))
    assert bool((symmetric_kl(q, other) > 0).all())


def test_symmetric_kl_matches_a_monte_carlo_estimate_within_five_standard_errors() -> (
    None
):
    g = torch.Generator().manual_seed(3)
    q1, q2 = _random_gaussian(4, 3, g), _random_gaussian(4, 3, g)
    n = 200_000
    torch.manual_seed(3)
    z1, z2 = q1.sample((n,)), q2.sample((n,))  # (n, B, d)
    f1 = q1.log_prob(z1) - q2.log_prob(z1)  # (n, B): E_q1 of this is KL[q1 ‖ q2]
    f2 = q2.log_prob(z2) - q1.log_prob(z2)
    estimate = f1.mean(0) + f2.mean(0)
    standard_error = (f1.var(0) / n + f2.var(0) / n).sqrt()

    error = (symmetric_kl(q1, q2) - estimate).abs()

    assert bool((error < 5 * standard_error).all()), (error, standard_error)


def test_symmetric_kl_has_both_directions_for_a_pure_scale_change() -> None:
    # q1 = N(0, I), q2 = N(0, s² I): SKL = ½ (s² + 1/s² − 2) d,
    # which neither KL alone equals
    d, s = 3, 3.0
    q1 = _gaussian(
        torch.zeros(1, d, dtype=torch.float64), torch.ones(1, d, dtype=torch.float64)
    )
    q2 = _gaussian(
        torch.zeros(1, d, dtype=torch.float64),
        torch.full((1, d), s, dtype=torch.float64),
    )
    kl_12 = d * (math.log(s) + 1 / (2 * s**2) - 0.5)
    kl_21 = d * (-math.log(s) + s**2 / 2 - 0.5)
    expected = 0.5 * (s**2 + 1 / s**2 - 2) * d
    assert expected == pytest.approx(
        kl_12 + kl_21
    )  # the closed forms agree with each other

    skl = float(symmetric_kl(q1, q2))

    assert skl == pytest.approx(expected, rel=1e-12)
    assert skl != pytest.approx(kl_12, rel=1e-2)
    assert skl != pytest.approx(kl_21, rel=1e-2)
    assert skl != pytest.approx(0.0, abs=1e-2)


def test_symmetric_kl_of_a_list_of_groups_is_the_sum_of_per_group_skls() -> None:
    g = torch.Generator().manual_seed(4)
    groups1 = [_random_gaussian(3, d, g) for d in (2, 5, 1)]
    groups2 = [_random_gaussian(3, d, g) for d in (2, 5, 1)]

    total = symmetric_kl(groups1, groups2)

    expected = sum(symmetric_kl(a, b) for a, b in zip(groups1, groups2, strict=True))
    torch.testing.assert_close(total, expected, rtol=1e-12, atol=0.0)
    assert symmetric_kl(tuple(groups1), tuple(groups2)).shape == (3,)


def test_symmetric_kl_reads_the_groups_of_a_hierarchical_posterior() -> None:
    model = _hvae()
    x1, x2 = _images(3, seed=5), _images(3, seed=6)
    with torch.no_grad():
        q1, q2 = model.encode(x1), model.encode(x2)
        assert len(q1.groups) == 2

        skl = symmetric_kl(q1, q2)

        expected = sum(
            kl_divergence(a, b) + kl_divergence(b, a)
            for a, b in zip(q1.groups, q2.groups, strict=True)
        )
    assert skl.shape == (3,)
    torch.testing.assert_close(skl, expected, rtol=1e-5, atol=1e-6)
    assert bool((skl > 0).all())
    torch.testing.assert_close(symmetric_kl(q1, q1.groups), torch.zeros(3))


def test_symmetric_kl_sums_over_every_event_dimension_of_a_multi_axis_gaussian() -> (
    None
):
    g = torch.Generator().manual_seed(7)
    shape = (4, 2, 3)
    q1 = Independent(
        Normal(torch.randn(shape, generator=g), 0.5 + torch.rand(shape, generator=g)), 2
    )
    q2 = Independent(
        Normal(torch.randn(shape, generator=g), 0.5 + torch.rand(shape, generator=g)), 2
    )

    skl = symmetric_kl(q1, q2)

    torch.testing.assert_close(skl, kl_divergence(q1, q2) + kl_divergence(q2, q1))


@pytest.mark.parametrize(
    "bad",
    [
        Independent(Laplace(torch.zeros(2, 3), torch.ones(2, 3)), 1),
        Independent(Bernoulli(probs=torch.full((2, 3), 0.5)), 1),
        MultivariateNormal(torch.zeros(2, 3), torch.eye(3)),
        Normal(torch.zeros(2, 3), torch.ones(2, 3)),
        torch.zeros(2, 3),
    ],
    ids=[
        "laplace",
        "bernoulli",
        "full-covariance",
        "normal-without-independent",
        "tensor",
    ],
)
def test_symmetric_kl_rejects_posteriors_that_are_not_diagonal_gaussians(bad) -> None:
    q = _gaussian(torch.zeros(2, 3), torch.ones(2, 3))
    with pytest.raises(ValueError, match="expected diagonal Gaussians"):
        symmetric_kl(q, bad)
    with pytest.raises(ValueError, match="expected diagonal Gaussians"):
        symmetric_kl([q, bad], [q, q])


def test_symmetric_kl_rejects_posteriors_with_different_numbers_of_groups() -> None:
    q = _gaussian(torch.zeros(2, 3), torch.ones(2, 3))
    with pytest.raises(ValueError, match="2 and 1 groups"):
        symmetric_kl([q, q], q)


def test_diagonal_gaussians_wraps_a_single_posterior_in_a_list() -> None:
    q = _gaussian(torch.zeros(2, 3), torch.ones(2, 3))
    assert diagonal_gaussians(q) == [q]


# --- projection and random starts (property tests) ------------------------------------

SHAPES = st.tuples(
    st.integers(1, 3), st.integers(1, 2), st.integers(1, 4), st.integers(1, 4)
)
UNIT = st.floats(0.0, 1.0, width=32)
FINITE = st.floats(allow_nan=False, allow_infinity=False, width=32)
NEAR = st.floats(-3.0, 4.0, width=32)
RADII = st.floats(1e-3, 10.0)


@st.composite
def reference_and_candidate(draw, candidate_values=FINITE):
    shape = draw(SHAPES)
    x_ref = draw(hnp.arrays(np.float32, shape, elements=UNIT))
    x = draw(hnp.arrays(np.float32, shape, elements=st.one_of(candidate_values, NEAR)))
    return torch.from_numpy(x_ref), torch.from_numpy(x)


@settings(max_examples=100, deadline=None)
@given(pair=reference_and_candidate(), radius=RADII, norm=st.sampled_from(NORMS))
def test_projection_of_any_finite_candidate_lies_in_the_ball_and_the_pixel_box(
    pair, radius, norm
) -> None:
    x_ref, x = pair
    projected = project(x, x_ref=x_ref, radius=radius, norm=norm)
    assert projected.shape == x.shape
    _assert_feasible(projected, x_ref, radius=radius, norm=norm)


@settings(max_examples=100, deadline=None)
@given(pair=reference_and_candidate(), radius=RADII, norm=st.sampled_from(NORMS))
def test_projection_is_idempotent(pair, radius, norm) -> None:
    x_ref, x = pair
    once = project(x, x_ref=x_ref, radius=radius, norm=norm)
    twice = project(once, x_ref=x_ref, radius=radius, norm=norm)
    torch.testing.assert_close(twice, once, rtol=0.0, atol=TOL)


@settings(max_examples=100, deadline=None)
@given(
    pair=reference_and_candidate(candidate_values=st.floats(-1.0, 1.0, width=32)),
    radius=RADII,
    norm=st.sampled_from(NORMS),
)
def test_projection_leaves_a_feasible_point_unchanged(pair, radius, norm) -> None:
    x_ref, direction = pair  # direction in [-1, 1] (with some larger entries from NEAR)
    # a feasible point: a perturbation strictly inside the ball, then clamped to the box
    # (clamping moves pixels towards x_ref, so it stays in the ball)
    size = (
        _size(direction, norm).clamp_min(1e-12).view(-1, *[1] * (direction.dim() - 1))
    )
    eps = 0.999 * radius * direction / size
    feasible = (x_ref + eps).clamp(0.0, 1.0)

    projected = project(feasible, x_ref=x_ref, radius=radius, norm=norm)

    torch.testing.assert_close(projected, feasible, rtol=0.0, atol=TOL)


@settings(max_examples=100, deadline=None)
@given(
    x_ref=SHAPES.flatmap(lambda shape: hnp.arrays(np.float32, shape, elements=UNIT)),
    radius=RADII,
    norm=st.sampled_from(NORMS),
    seed=st.integers(0, 2**31 - 1),
)
def test_random_starts_lie_in_the_ball_and_the_pixel_box(
    x_ref, radius, norm, seed
) -> None:
    x_ref = torch.from_numpy(x_ref)
    start = random_start(
        x_ref, radius=radius, norm=norm, generator=torch.Generator().manual_seed(seed)
    )
    assert start.shape == x_ref.shape
    _assert_feasible(start, x_ref, radius=radius, norm=norm)


def test_random_starts_are_uniform_in_the_ball() -> None:
    # references mid-range and a small radius, so the pixel box never clips the start
    n, d, radius = 4000, 4, 0.2
    x_ref = torch.full((n, 1, 2, 2), 0.5)
    five_se = 5 * math.sqrt(
        1 / 12 / n
    )  # a uniform [0, 1] variable's mean, averaged over n

    linf = random_start(
        x_ref, radius=radius, norm="linf", generator=torch.Generator().manual_seed(0)
    )
    u = ((linf - x_ref) / radius + 1) / 2  # each pixel uniform on [0, 1]
    assert abs(float(u.mean()) - 0.5) < five_se / math.sqrt(d)
    assert abs(float(u.flatten(1)[:, 0].mean()) - 0.5) < five_se

    l2 = random_start(
        x_ref, radius=radius, norm="l2", generator=torch.Generator().manual_seed(0)
    )
    eps = l2 - x_ref
    # uniform in a d-ball: P(‖ε‖ ≤ rδ) = r^d, so (‖ε‖ / δ)^d is uniform on [0, 1]
    assert abs(float(((_l2(eps) / radius) ** d).mean()) - 0.5) < five_se
    # and the direction has no preferred side
    directions = eps.flatten(1) / _l2(eps).view(-1, 1)
    assert bool((directions.mean(0).abs() < 5 / math.sqrt(d * n)).all())


def test_project_rejects_an_unknown_norm() -> None:
    x = torch.full((1, 1, 2, 2), 0.5)
    with pytest.raises(ValueError, match="unknown norm 'l1'"):
        project(x, x_ref=x, radius=0.1, norm="l1")


# --- projected gradient ascent --------------------------------------------------------


def _pixel_sum(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).sum(1)


@pytest.mark.parametrize("optimizer", ["sign", "adam"])
def test_pgd_linf_drives_every_pixel_to_the_top_of_its_box_for_the_pixel_sum(
    optimizer: str,
) -> None:
    x_ref = _images(3, seed=8, size=4)  # some pixels within δ of 1, where the box binds
    radius = 0.2
    config = AttackConfig(
        radius=radius, norm="linf", steps=20, restarts=2, optimizer=optimizer
    )

    result = pgd(
        _pixel_sum,
        x_ref=x_ref,
        config=config,
        generator=torch.Generator().manual_seed(0),
    )

    expected = (x_ref + radius).clamp(max=1.0)
    assert bool(((x_ref + radius) > 1).any())  # the box is active somewhere
    torch.testing.assert_close(result.x_adv, expected, rtol=0.0, atol=TOL)
    _assert_feasible(result.x_adv, x_ref, radius=radius, norm="linf")
    torch.testing.assert_close(
        result.objective, _pixel_sum(expected), rtol=0.0, atol=1e-5
    )


def test_pgd_l2_sign_optimizer_follows_the_normalised_gradient_to_the_optimum() -> None:
    # a linear objective w·x with unequal positive weights; references mid-range so the
    # box stays inactive: the maximiser is x_ref + δ w / ‖w‖
    # (a sign step would end at w ∝ 1)
    x_ref = 0.4 + 0.2 * _images(3, seed=9, size=4)
    weights = torch.linspace(0.1, 2.0, 16).view(1, 1, 4, 4)
    radius = 0.5
    config = AttackConfig(
        radius=radius, norm="l2", steps=60, step_size=0.5 * radius, restarts=2
    )

    result = pgd(
        lambda x: (weights * x).flatten(1).sum(1),
        x_ref=x_ref,
        config=config,
        generator=torch.Generator().manual_seed(0),
    )

    expected = x_ref + radius * weights / weights.norm()
    torch.testing.assert_close(result.x_adv, expected, rtol=0.0, atol=1e-5)
    _assert_feasible(result.x_adv, x_ref, radius=radius, norm="l2")


def test_pgd_l2_adam_optimizer_reaches_the_maximiser_of_the_pixel_sum() -> None:
    # Adam's per-pixel scaling makes every step ∝ 1, the gradient of the pixel sum, so
    # it ends at x_ref + δ · 1 / √d (box inactive for mid-range references)
    x_ref = 0.4 + 0.2 * _images(3, seed=9, size=4)
    radius, d = 0.5, 16
    config = AttackConfig(
        radius=radius,
        norm="l2",
        steps=50,
        step_size=0.5 * radius,
        restarts=2,
        optimizer="adam",
    )

    result = pgd(
        _pixel_sum,
        x_ref=x_ref,
        config=config,
        generator=torch.Generator().manual_seed(0),
    )

    expected = x_ref + radius / math.sqrt(d)
    torch.testing.assert_close(result.x_adv, expected, rtol=0.0, atol=1e-5)
    _assert_feasible(result.x_adv, x_ref, radius=radius, norm="l2")


@pytest.mark.parametrize("norm", NORMS)
def test_pgd_keeps_the_best_restart_of_every_reference(norm: str) -> None:
    # no steps: each restart is its random start, so the restarts differ and the kept
    # one must be the argmax of the objective over restarts, reference by reference
    x_ref = (
        torch.tensor([0.1, 0.5, 0.9, 0.3])
        .view(4, 1, 1, 1)
        .expand(4, 1, 3, 3)
        .contiguous()
    )
    radius = 0.05 if norm == "linf" else 0.1
    restarts, b = 6, 4
    config = AttackConfig(radius=radius, norm=norm, steps=0, restarts=restarts)

    result = pgd(
        _pixel_sum,
        x_ref=x_ref,
        config=config,
        generator=torch.Generator().manual_seed(1),
    )

    assert result.x_adv.shape == x_ref.shape
    assert result.objective.shape == (b,)
    assert result.restart_objectives.shape == (restarts, b)
    starts = random_start(
        x_ref.repeat(restarts, 1, 1, 1),
        radius=radius,
        norm=norm,
        generator=torch.Generator().manual_seed(1),
    ).reshape(restarts, b, 1, 3, 3)
    values = _pixel_sum(starts.flatten(0, 1)).reshape(restarts, b)
    best = values.argmax(0)
    assert len(set(best.tolist())) > 1  # the best restart differs between references
    torch.testing.assert_close(result.restart_objectives, values)
    torch.testing.assert_close(
        result.objective, result.restart_objectives.max(0).values
    )
    torch.testing.assert_close(result.x_adv, starts[best, torch.arange(b)])
    torch.testing.assert_close(_pixel_sum(result.x_adv), result.objective)
    _assert_feasible(
        result.x_adv, x_ref, radius=radius, norm=norm
    )  # each near its own reference


def test_pgd_passes_restarts_restart_major_to_the_objective() -> None:
    x_ref = torch.tensor([0.1, 0.9]).view(2, 1, 1, 1).expand(2, 1, 2, 2).contiguous()
    seen = []

    def objective(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.detach().clone())
        return _pixel_sum(x)

    pgd(objective, x_ref=x_ref, config=AttackConfig(radius=0.05, steps=2, restarts=3))

    assert all(x.shape == (6, 1, 2, 2) for x in seen)
    ref = x_ref.repeat(3, 1, 1, 1)  # index r·B + b holds reference b
    assert all(bool((_linf(x - ref) <= 0.05 + TOL).all()) for x in seen)


def test_config_counts_one_gradient_per_step_and_restart_as_pgd_computes_them() -> None:
    calls = []

    def objective(x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad:
            calls.append(len(x))
        return _pixel_sum(x)

    config = AttackConfig(radius=0.05, steps=4, restarts=3)
    pgd(objective, x_ref=_images(2, seed=1, size=4), config=config)
    assert (
        sum(calls) == 2 * config.gradient_evaluations == 2 * 4 * 3
    )  # per reference: 12


def test_pgd_with_the_same_seed_gives_the_same_result() -> None:
    x_ref = _images(2, seed=10, size=4)
    config = AttackConfig(radius=0.1, norm="l2", steps=3, restarts=3)

    def objective(x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1) ** 2).sum(1)

    a = pgd(
        objective,
        x_ref=x_ref,
        config=config,
        generator=torch.Generator().manual_seed(5),
    )
    b = pgd(
        objective,
        x_ref=x_ref,
        config=config,
        generator=torch.Generator().manual_seed(5),
    )
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(
        a.restart_objectives, b.restart_objectives
    )


# --- attacks on tiny models -----------------------------------------------------------

ATTACK_CASES = [("linf", 0.2), ("l2", 1.0)]


def _skl_to(model, x: torch.Tensor, x_other: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return symmetric_kl(model.encode(x), model.encode(x_other))


@pytest.mark.parametrize(("norm", "radius"), ATTACK_CASES)
def test_unsupervised_attack_moves_the_posterior_more_than_equal_norm_random_noise(
    norm: str, radius: float
) -> None:
    model = _vae()
    x_ref = _images(4, seed=11)
    config = AttackConfig(radius=radius, norm=norm, steps=20, restarts=2)

    result = unsupervised_attack(
        model, x_ref, config=config, generator=torch.Generator().manual_seed(0)
    )

    _assert_feasible(result.x_adv, x_ref, radius=radius, norm=norm)
    attack_skl = _skl_to(model, result.x_adv, x_ref)
    torch.testing.assert_close(result.objective, attack_skl, rtol=1e-4, atol=1e-6)
    noisy = random_noise(
        x_ref, like=result.x_adv, norm=norm, generator=torch.Generator().manual_seed(0)
    )
    noise_skl = _skl_to(model, noisy, x_ref)
    assert bool((attack_skl > noise_skl).all()), (attack_skl, noise_skl)


def test_unsupervised_attack_works_on_a_hierarchical_vae() -> None:
    model = _hvae()
    x_ref = _images(3, seed=12)
    config = AttackConfig(radius=0.2, steps=10, restarts=2)

    result = unsupervised_attack(
        model, x_ref, config=config, generator=torch.Generator().manual_seed(0)
    )

    _assert_feasible(result.x_adv, x_ref, radius=0.2, norm="linf")
    torch.testing.assert_close(
        result.objective, _skl_to(model, result.x_adv, x_ref), rtol=1e-4, atol=1e-6
    )
    assert bool((result.objective > 0).all())


class _ExactLinearImageModel(torch.nn.Module):
    """A linear-Gaussian model on 2×2 "images", x = W z + c + σ ε, z ~ N(0, I), whose
    encoder is the exact posterior (W's columns are orthogonal, so it is diagonal):
    p(z | x) = N(Σ Wᵀ (x − c) / σ², Σ), Σ = (I + WᵀW / σ²)⁻¹. For two inputs the
    posteriors share Σ, so KL[p(z | x^r) ‖ p(z | x)] = ½ Δμᵀ Σ⁻¹ Δμ exactly."""

    image_shape = (1, 2, 2)

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, -1.0]]) * 0.8
        self.c = torch.full((4,), 0.5)
        self.sigma = 0.3
        self.cov = torch.linalg.inv(torch.eye(2) + self.w.T @ self.w / self.sigma**2)

    def prior(self):
        return _gaussian(torch.zeros(2), torch.ones(2))

    def encode(self, x: torch.Tensor):
        mean = (x.flatten(1) - self.c) @ self.w @ self.cov / self.sigma**2
        return _gaussian(mean, self.cov.diagonal().sqrt().expand_as(mean))

    def decode(self, z: torch.Tensor):
        mean = (z @ self.w.T + self.c).unflatten(-1, self.image_shape)
        return Independent(Normal(mean, self.sigma), 3)

    def log_joint(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.prior().log_prob(z) + self.decode(z).log_prob(x)

    def exact_shift(self, x: torch.Tensor, x_ref: torch.Tensor) -> torch.Tensor:
        d = self.encode(x).mean - self.encode(x_ref).mean
        return 0.5 * ((d @ torch.linalg.inv(self.cov)) * d).sum(-1)


def test_posterior_shift_matches_the_exact_kl_between_linear_gaussian_posteriors() -> (
    None
):
    model = _ExactLinearImageModel()
    x_ref = torch.tensor([0.5, 0.6, 0.4, 0.5]).view(1, 1, 2, 2).repeat(3, 1, 1, 1)
    x = x_ref + torch.tensor([0.0, 0.1, 0.4]).view(3, 1, 1, 1)  # no, small, large move

    shift = posterior_shift(
        model,
        x,
        x_ref=x_ref,
        n_codes=20_000,
        generator=torch.Generator().manual_seed(0),
    )

    exact = model.exact_shift(x, x_ref)
    assert float(exact[2]) > 1.0  # a move the estimate must get right, not just 0
    torch.testing.assert_close(shift, exact, rtol=0.05, atol=1e-5)


@pytest.mark.parametrize("make", [_vae, _hvae], ids=["vae", "hierarchical"])
def test_posterior_shift_is_zero_at_the_reference_and_positive_elsewhere(make) -> None:
    model = make()
    x_ref = _images(3, seed=21)
    x = (x_ref + 0.3 * (_images(3, seed=22) - 0.5)).clamp(0, 1)
    gen = torch.Generator().manual_seed(0)

    at_ref = posterior_shift(model, x_ref, x_ref=x_ref, n_codes=64, generator=gen)
    moved = posterior_shift(model, x, x_ref=x_ref, n_codes=64, generator=gen)

    torch.testing.assert_close(at_ref, torch.zeros(3), atol=1e-5, rtol=0)
    assert bool((moved > 0).all()), moved


def test_the_posterior_attack_moves_the_posterior_and_the_skl_attack_the_encoder() -> (
    None
):
    model = _vae()
    x_ref = _images(4, seed=23)
    config = AttackConfig(radius=0.2, steps=20, restarts=2)

    aimed = posterior_attack(
        model, x_ref, config=config, generator=torch.Generator().manual_seed(0)
    )
    plain = unsupervised_attack(
        model, x_ref, config=config, generator=torch.Generator().manual_seed(0)
    )

    _assert_feasible(aimed.x_adv, x_ref, radius=0.2, norm="linf")

    def shift(x: torch.Tensor) -> torch.Tensor:  # fresh codes: no overfitting to them
        gen = torch.Generator().manual_seed(99)
        return posterior_shift(model, x, x_ref=x_ref, n_codes=512, generator=gen)

    assert bool((shift(aimed.x_adv) > shift(plain.x_adv)).all())
    assert bool(
        (_skl_to(model, plain.x_adv, x_ref) > _skl_to(model, aimed.x_adv, x_ref)).all()
    )


def test_the_encoder_attack_fools_the_encoder_while_holding_the_posterior() -> None:
    model = _vae()
    x_ref = _images(4, seed=24)
    config = AttackConfig(radius=0.2, steps=20, restarts=2)

    held = encoder_attack(
        model,
        x_ref,
        config=config,
        penalty=50.0,
        generator=torch.Generator().manual_seed(0),
    )
    plain = unsupervised_attack(
        model, x_ref, config=config, generator=torch.Generator().manual_seed(0)
    )

    _assert_feasible(held.x_adv, x_ref, radius=0.2, norm="linf")
    gen = torch.Generator().manual_seed(99)
    held_shift = posterior_shift(
        model, held.x_adv, x_ref=x_ref, n_codes=512, generator=gen
    )
    gen = torch.Generator().manual_seed(99)
    plain_shift = posterior_shift(
        model, plain.x_adv, x_ref=x_ref, n_codes=512, generator=gen
    )
    assert bool((held_shift < plain_shift).all()), (held_shift, plain_shift)
    noisy = random_noise(
        x_ref, like=held.x_adv, norm="linf", generator=torch.Generator().manual_seed(0)
    )
    assert bool(
        (_skl_to(model, held.x_adv, x_ref) > _skl_to(model, noisy, x_ref)).all()
    )


def test_posterior_shift_on_posterior_draws_matches_the_exact_kl() -> None:
    model = _ExactLinearImageModel()
    x_ref = torch.tensor([0.5, 0.6, 0.4, 0.5]).view(1, 1, 2, 2).repeat(2, 1, 1, 1)
    x = x_ref + torch.tensor([0.1, 0.4]).view(2, 1, 1, 1)
    q = model.encode(x_ref)  # the exact posterior
    noise = torch.randn(200_000, 2, 2, generator=torch.Generator().manual_seed(0))
    codes = q.mean + q.stddev * noise

    shift = posterior_shift(model, x, x_ref=x_ref, codes=codes)

    torch.testing.assert_close(shift, model.exact_shift(x, x_ref), rtol=0.05, atol=1e-5)


def test_the_posterior_attacks_follow_the_codes_they_are_given() -> None:
    model = _vae()
    x_ref = _images(3, seed=26)
    config = AttackConfig(radius=0.2, steps=10, restarts=2)
    codes = torch.randn(8, 3, 4, generator=torch.Generator().manual_seed(0))

    aimed = posterior_attack(
        model, x_ref, config=config, codes=codes, generator=torch.Generator()
    )

    on_codes = posterior_shift(model, aimed.x_adv, x_ref=x_ref, codes=codes)
    torch.testing.assert_close(aimed.objective, on_codes, rtol=1e-4, atol=1e-6)


def test_posterior_shift_and_its_attacks_reject_bad_settings() -> None:
    model = _vae()
    x_ref = _images(2, seed=25)
    config = AttackConfig(radius=0.1, steps=1, restarts=1)
    with pytest.raises(ValueError, match="penalty"):
        encoder_attack(model, x_ref, config=config, penalty=-1.0)
    with pytest.raises(ValueError, match="n_codes"):
        posterior_attack(model, x_ref, config=config, n_codes=1)
    with pytest.raises(ValueError, match="one reference per input"):
        posterior_shift(model, x_ref[:1], x_ref=x_ref)
    with pytest.raises(ValueError, match="one column per reference"):
        posterior_shift(model, x_ref, x_ref=x_ref, codes=torch.zeros(8, 3, 4))


class _SpyEncoder(torch.nn.Module):
    """A ConvVAE wrapper recording whether any parameter wanted gradients at each
    encode, and optionally failing on the n-th call."""

    def __init__(self, vae: ConvVAE, *, fail_on_call: int | None = None) -> None:
        super().__init__()
        self.vae = vae
        self.image_shape = vae.image_shape
        self.fail_on_call = fail_on_call
        self.trainable_at_call: list[bool] = []

    def encode(self, x: torch.Tensor):
        self.trainable_at_call.append(any(p.requires_grad for p in self.parameters()))
        if (
            self.fail_on_call is not None
            and len(self.trainable_at_call) == self.fail_on_call
        ):
            raise RuntimeError("encoder failed")
        return self.vae.encode(x)


@pytest.mark.parametrize("optimizer", ["sign", "adam"])
def test_attacks_freeze_the_model_during_the_attack_and_restore_its_flags_after(
    optimizer: str,
) -> None:
    spy = _SpyEncoder(_vae())
    params = list(spy.parameters())
    params[0].requires_grad_(False)  # a mixed pattern that must come back exactly
    flags = [p.requires_grad for p in params]
    classifier = torch.nn.Linear(4, 10)
    x_ref = _images(2, seed=13)
    config = AttackConfig(radius=0.1, steps=3, restarts=2, optimizer=optimizer)

    unsupervised_attack(spy, x_ref, config=config)
    supervised_attack(spy, x_ref, _images(2, seed=14), config=config)
    classifier_attack(spy, classifier, x_ref, torch.tensor([0, 1]), config=config)

    assert spy.trainable_at_call[0] is True  # the reference encoding, before freezing
    assert (
        spy.trainable_at_call.count(True) == 2
    )  # ...and the supervised target's; never during pgd
    assert [p.requires_grad for p in params] == flags
    assert all(p.requires_grad for p in classifier.parameters())
    assert all(p.grad is None for p in (*params, *classifier.parameters()))


def test_attack_restores_the_models_flags_when_the_encoder_fails_midway() -> None:
    spy = _SpyEncoder(_vae(), fail_on_call=3)
    x_ref = _images(2, seed=15)

    with pytest.raises(RuntimeError, match="encoder failed"):
        unsupervised_attack(
            spy, x_ref, config=AttackConfig(radius=0.1, steps=5, restarts=1)
        )

    assert all(p.requires_grad for p in spy.parameters())


@pytest.mark.parametrize(("norm", "radius"), ATTACK_CASES)
def test_supervised_attack_brings_the_posterior_closer_to_the_targets(
    norm: str, radius: float
) -> None:
    model = _vae()
    x_ref, x_target = _images(4, seed=16), _images(4, seed=17)
    config = AttackConfig(radius=radius, norm=norm, steps=20, restarts=2)

    result = supervised_attack(
        model,
        x_ref,
        x_target,
        config=config,
        generator=torch.Generator().manual_seed(0),
    )

    _assert_feasible(result.x_adv, x_ref, radius=radius, norm=norm)
    attacked, clean = (
        _skl_to(model, result.x_adv, x_target),
        _skl_to(model, x_ref, x_target),
    )
    assert bool((attacked < clean).all()), (attacked, clean)
    torch.testing.assert_close(result.objective, -attacked, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("norm", "radius"), ATTACK_CASES)
def test_classifier_attack_raises_the_cross_entropy_of_a_latent_classifier(
    norm: str, radius: float
) -> None:
    model = _vae()
    torch.manual_seed(1)
    classifier = torch.nn.Linear(4, 10)
    x_ref = _images(4, seed=18)
    loss = torch.nn.CrossEntropyLoss(reduction="none")
    labels = torch.tensor(
        [0, 3, 5, 9]
    )  # distinct, so restarts must be matched to their own label
    with torch.no_grad():
        clean = loss(classifier(model.encode(x_ref).mean), labels)
    config = AttackConfig(radius=radius, norm=norm, steps=20, restarts=2)

    result = classifier_attack(
        model,
        classifier,
        x_ref,
        labels,
        config=config,
        generator=torch.Generator().manual_seed(0),
    )

    _assert_feasible(result.x_adv, x_ref, radius=radius, norm=norm)
    with torch.no_grad():
        attacked = loss(classifier(model.encode(result.x_adv).mean), labels)
    assert bool((attacked > clean).all()), (attacked, clean)
    torch.testing.assert_close(result.objective, attacked, rtol=1e-4, atol=1e-6)


# --- random-noise baseline ------------------------------------------------------------


@pytest.mark.parametrize("norm", NORMS)
def test_random_noise_has_the_same_norm_as_the_attack_per_example(norm: str) -> None:
    g = torch.Generator().manual_seed(19)
    x_ref = torch.full((5, 1, 4, 4), 0.5)  # mid-range: no clamping for these sizes
    sizes = torch.tensor([0.0, 0.02, 0.1, 0.2, 0.3])
    direction = torch.randn(x_ref.shape, generator=g)
    eps = direction / _size(direction, norm).view(-1, 1, 1, 1) * sizes.view(-1, 1, 1, 1)
    like = x_ref + eps

    noisy = random_noise(
        x_ref, like=like, norm=norm, generator=torch.Generator().manual_seed(0)
    )

    torch.testing.assert_close(_size(noisy - x_ref, norm), sizes, rtol=0.0, atol=1e-6)
    assert not torch.allclose(
        noisy[1:], like[1:], atol=1e-3
    )  # a new direction, not the attack's
    up = float(((noisy - x_ref)[1:] > 0).float().mean())
    assert (
        0.25 < up < 0.75
    )  # random directions: pixels move both up and down (64 pixels)
    if norm == "linf":  # every pixel moves by the full size, up or down
        torch.testing.assert_close(
            (noisy - x_ref).abs(),
            sizes.view(-1, 1, 1, 1).expand_as(x_ref),
            atol=1e-6,
            rtol=0.0,
        )


@settings(max_examples=50, deadline=None)
@given(
    pair=reference_and_candidate(candidate_values=UNIT),
    norm=st.sampled_from(NORMS),
    seed=st.integers(0, 2**31 - 1),
)
def test_random_noise_stays_in_the_pixel_box_and_within_the_attacks_norm(
    pair, norm, seed
) -> None:
    x_ref, like = pair
    like = like.clamp(0.0, 1.0)

    noisy = random_noise(
        x_ref, like=like, norm=norm, generator=torch.Generator().manual_seed(seed)
    )

    assert float(noisy.min()) >= 0.0 and float(noisy.max()) <= 1.0
    assert bool((_size(noisy - x_ref, norm) <= _size(like - x_ref, norm) + TOL).all())


def test_random_noise_rejects_an_unknown_norm() -> None:
    x = torch.full((1, 1, 2, 2), 0.5)
    with pytest.raises(ValueError, match="unknown norm 'l1'"):
        random_noise(x, like=x, norm="l1")


# --- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"radius": 0.0}, "radius δ must be positive, got 0.0"),
        ({"radius": -0.1}, "radius δ must be positive"),
        ({"radius": float("nan")}, "radius δ must be positive"),
        (
            {"radius": 0.1, "norm": "l1"},
            r"unknown norm 'l1'; choose one of \('linf', 'l2'\)",
        ),
        (
            {"radius": 0.1, "optimizer": "sgd"},
            "unknown optimizer 'sgd'; choose 'sign' or 'adam'",
        ),
        ({"radius": 0.1, "restarts": 0}, "restarts >= 1, got -?\\d+ and 0"),
        ({"radius": 0.1, "steps": -1}, "steps must be >= 0"),
        ({"radius": 0.1, "step_size": 0.0}, "step_size must be positive"),
    ],
)
def test_attack_config_rejects_invalid_settings_with_a_helpful_message(
    kwargs: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        AttackConfig(**kwargs)


def test_attack_config_default_step_size_is_two_and_a_half_radii_over_the_steps() -> (
    None
):
    assert AttackConfig(radius=0.2, steps=50).alpha == pytest.approx(0.01)
    assert AttackConfig(radius=0.2, steps=50, step_size=0.03).alpha == 0.03
    assert AttackConfig(radius=0.2, steps=0).alpha == pytest.approx(0.5)


def _run_attack(kind: str, model, x: torch.Tensor, config: AttackConfig):
    if kind == "unsupervised":
        return unsupervised_attack(model, x, config=config)
    if kind == "supervised":
        return supervised_attack(model, x, x.clone(), config=config)
    return classifier_attack(
        model,
        torch.nn.Linear(4, 10),
        x,
        torch.zeros(x.shape[0], dtype=torch.long),
        config=config,
    )


ATTACKS = ["unsupervised", "supervised", "classifier"]


@pytest.mark.parametrize("kind", ATTACKS)
def test_attacks_reject_images_outside_the_unit_interval(kind: str) -> None:
    x = _images(2, seed=20)
    x[0, 0, 0, 0] = 1.5
    with pytest.raises(ValueError, match=r"images must lie in \[0, 1\]"):
        _run_attack(kind, _vae(), x, AttackConfig(radius=0.1, steps=1, restarts=1))


@pytest.mark.parametrize("kind", ATTACKS)
def test_attacks_reject_images_of_the_wrong_size_for_the_model(kind: str) -> None:
    with pytest.raises(ValueError, match=r"expected \(N, 1, 8, 8\)"):
        _run_attack(
            kind,
            _vae(),
            _images(2, seed=21, size=16),
            AttackConfig(radius=0.1, steps=1, restarts=1),
        )


@pytest.mark.parametrize("kind", ATTACKS)
def test_attacks_reject_a_model_without_an_encoder(kind: str) -> None:
    model = LinearGaussian.random(
        x_dim=64, z_dim=4, noise_std=0.1, generator=torch.Generator().manual_seed(0)
    )
    with pytest.raises(ValueError, match=r"LinearGaussian has no encoder \(encode\)"):
        _run_attack(
            kind,
            model,
            _images(2, seed=22),
            AttackConfig(radius=0.1, steps=1, restarts=1),
        )


def test_supervised_attack_rejects_a_target_batch_of_another_size() -> None:
    with pytest.raises(
        ValueError,
        match=r"one target per reference: shapes \(3, 1, 8, 8\) and \(2, 1, 8, 8\)",
    ):
        supervised_attack(
            _vae(),
            _images(2, seed=23),
            _images(3, seed=24),
            config=AttackConfig(radius=0.1, steps=1),
        )


def test_supervised_attack_rejects_targets_of_the_wrong_image_size() -> None:
    with pytest.raises(ValueError, match=r"expected \(N, 1, 8, 8\)"):
        supervised_attack(
            _vae(),
            _images(2, seed=25),
            _images(2, seed=26, size=16),
            config=AttackConfig(radius=0.1),
        )


def test_pgd_rejects_references_outside_the_unit_interval() -> None:
    with pytest.raises(ValueError, match=r"images must lie in \[0, 1\]"):
        pgd(
            _pixel_sum,
            x_ref=torch.full((1, 1, 2, 2), -0.1),
            config=AttackConfig(radius=0.1),
        )
