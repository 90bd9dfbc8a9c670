"""Tests for companion.defence: the model-agnostic HMC refinement of attacked codes,
with either backend."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys

import pytest
import torch
from torch.distributions import Independent, Normal

from companion.data import load_images
from companion.defence import (
    defence_curve,
    defence_curves,
    posterior_samples,
    refine_posterior,
)
from companion.models import (
    ConvVAE,
    HierarchicalVAE,
    HVAEConfig,
    LinearGaussian,
    VAEConfig,
)
from companion.train import TrainConfig, train_vae
from gaussian_checks import assert_matches_gaussian

# CI installs the numpyro extra (Makefile), so these run there;
# a bare install skips them
needs_numpyro = pytest.mark.skipif(
    importlib.util.find_spec("numpyro") is None,
    reason='needs pip install "vae-robustness-companion[numpyro]"',
)
BACKENDS = ["torch", pytest.param("numpyro", marks=needs_numpyro)]


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return load_images(name="digits", split="test").images[:16]


def _vae() -> ConvVAE:
    torch.manual_seed(0)
    return ConvVAE(VAEConfig(image_size=8, z_dim=4, channels=(8, 16)))


def test_zero_steps_return_the_encoders_samples(x: torch.Tensor) -> None:
    result = refine_posterior(
        _vae(), x, steps=0, generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(result.z, result.z_start)
    assert result.z.shape == (16, 4) and (result.divergences == 0).all()


class _WronglyEncoded(LinearGaussian):
    """The exact linear-Gaussian model on 4-pixel "images", with an encoder that is far
    off (its log joint is LinearGaussian's, so the NumPyro backend ports it)."""

    image_shape = (4,)

    def encode(self, x: torch.Tensor):
        shift = torch.full((len(x), 2), 4.0, dtype=x.dtype)
        return Independent(Normal(shift, torch.ones_like(shift)), 1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_chains_started_by_a_wrong_encoder_reach_the_exact_posterior(
    backend: str,
) -> None:
    g = torch.Generator().manual_seed(0)
    model = _WronglyEncoded.random(
        x_dim=4, z_dim=2, noise_std=0.3, generator=g
    ).requires_grad_(False)
    x = torch.full((2000, 4), 0.5, dtype=torch.float64)
    result = refine_posterior(
        model,
        x,
        steps=40,
        num_warmup=40,
        backend=backend,
        generator=torch.Generator().manual_seed(1),
    )
    posterior = model.posterior(x[:1])
    assert_matches_gaussian(
        result.z.numpy(),
        posterior.mean[0].numpy(),
        posterior.covariance_matrix[0].numpy(),
    )
    assert (
        (result.z_start.mean(0) - posterior.mean[0]).abs() > 1.0
    ).all()  # it started far away
    assert ((result.acceptance_rate >= 0) & (result.acceptance_rate <= 1)).all()
    assert result.z.dtype == x.dtype and (result.divergences == 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_hierarchical_vae_is_defended_through_its_flat_codes(
    x: torch.Tensor, backend: str
) -> None:
    torch.manual_seed(0)
    model = HierarchicalVAE(
        HVAEConfig(image_size=8, z_dims=(2, 3), channels=(8,), width=16)
    )
    result = refine_posterior(
        model,
        x,
        steps=10,
        num_warmup=10,
        backend=backend,
        generator=torch.Generator().manual_seed(1),
    )
    assert result.z.shape == (16, 5) and torch.isfinite(result.z).all()
    assert (result.z != result.z_start).any(
        dim=1
    ).float().mean() > 0.5  # most chains moved


def test_the_models_parameters_are_left_as_they_were(x: torch.Tensor) -> None:
    model = _vae()
    model.decoder.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    before = [p.clone() for p in model.parameters()]
    refine_posterior(model, x, steps=3)
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(
        torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True)
    )
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_same_generator_seed_gives_the_same_codes(
    x: torch.Tensor, backend: str
) -> None:
    model = _vae()

    def run(seed: int) -> torch.Tensor:
        return refine_posterior(
            model,
            x,
            steps=5,
            backend=backend,
            generator=torch.Generator().manual_seed(seed),
        ).z

    torch.testing.assert_close(run(3), run(3))
    assert not torch.allclose(run(3), run(4))


@needs_numpyro
def test_both_backends_start_from_the_same_codes_and_return_the_same_kind_of_result(
    x: torch.Tensor,
) -> None:
    model = _vae()
    # the settings of the test above, so that JAX reuses its compiled program
    results = [
        refine_posterior(
            model,
            x,
            steps=5,
            backend=backend,
            generator=torch.Generator().manual_seed(5),
        )
        for backend in ("torch", "numpyro")
    ]
    torch.testing.assert_close(results[0].z_start, results[1].z_start)
    for a, b in zip(*results, strict=True):
        assert (type(a), a.shape, a.dtype, a.device) == (
            type(b),
            b.shape,
            b.dtype,
            b.device,
        )


@pytest.fixture(scope="session")
def trained_vae() -> ConvVAE:
    """A VAE trained for a few seconds: a posterior with real structure,
    unlike random weights'."""
    torch.manual_seed(0)
    model = ConvVAE(VAEConfig(image_size=8, z_dim=4, channels=(8, 16)))
    train, test = (
        load_images(name="digits", split="train"),
        load_images(name="digits", split="test"),
    )
    config = TrainConfig(epochs=10, batch_size=64, lr=3e-3, progress=False)
    train_vae(
        model=model,
        train_images=train.images,
        valid_images=test.images[:50],
        config=config,
    )
    return model.requires_grad_(False)


def energy_distance_p_value(
    a: torch.Tensor, b: torch.Tensor, *, permutations: int = 500, seed: int = 0
) -> float:
    """Permutation p-value of the energy distance between samples a (n, d) and b (m, d)
    (Székely & Rizzo, 2004): consistent against every difference in distribution."""
    pooled = torch.cat([a, b]).double()
    dist = torch.cdist(pooled, pooled)
    n = len(a)

    def statistic(order: torch.Tensor) -> torch.Tensor:
        d = dist[order][:, order]
        return 2 * d[:n, n:].mean() - d[:n, :n].mean() - d[n:, n:].mean()

    g = torch.Generator().manual_seed(seed)
    observed = statistic(torch.arange(len(pooled)))
    null = torch.stack(
        [
            statistic(torch.randperm(len(pooled), generator=g))
            for _ in range(permutations)
        ]
    )
    return float(((null >= observed).sum() + 1) / (permutations + 1))


@needs_numpyro
def test_both_backends_draw_the_same_distribution_of_codes_for_a_trained_vae(
    trained_vae: ConvVAE,
) -> None:
    x = load_images(name="digits", split="test").images[7:8].expand(300, -1, -1, -1)
    settings = dict(steps=20, num_warmup=10, num_leapfrog=10)
    # different seeds: two independent samples of z^(T) from the same start distribution
    z = {
        backend: refine_posterior(
            trained_vae,
            x,
            backend=backend,
            generator=torch.Generator().manual_seed(seed),
            **settings,
        ).z
        for backend, seed in (("torch", 0), ("numpyro", 1))
    }
    p_value = energy_distance_p_value(z["torch"], z["numpyro"])
    assert p_value > 0.01, p_value
    # negative control: the same test detects a shift of a quarter of a posterior
    # standard deviation
    shifted = z["numpyro"] + 0.25 * z["numpyro"].std(0)
    assert energy_distance_p_value(z["torch"], shifted) < 0.01


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(steps=-1), "steps"),
        (dict(steps=1, backend="stan"), "unknown backend"),
        (dict(steps=1, step_size=0.0), "step_size must be a positive"),
        (dict(steps=1, step_size=-0.1), "step_size must be a positive"),
        (dict(steps=1, step_size=float("nan")), "step_size must be a positive"),
        (dict(steps=1, num_leapfrog=0), "num_leapfrog must be >= 1"),
    ],
    ids=[
        "negative-T",
        "unknown-backend",
        "zero-step",
        "negative-step",
        "nan-step",
        "no-leapfrog",
    ],
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


def test_the_curve_reads_one_chain_at_every_T_and_matches_separate_runs(
    x: torch.Tensor,
) -> None:
    model = _vae()
    curve = defence_curve(
        model,
        x,
        steps_grid=[5, 0, 2],
        num_warmup=3,
        generator=torch.Generator().manual_seed(4),
    )
    assert sorted(curve) == [0, 2, 5]
    torch.testing.assert_close(curve[0].z, curve[0].z_start)  # T = 0: the encoder alone
    assert curve[0].acceptance_rate.isnan().all()
    for t in (2, 5):
        alone = refine_posterior(
            model, x, steps=t, num_warmup=3, generator=torch.Generator().manual_seed(4)
        )
        torch.testing.assert_close(curve[t].z, alone.z)
        torch.testing.assert_close(curve[t].step_size, alone.step_size)
        torch.testing.assert_close(curve[t].acceptance_rate, alone.acceptance_rate)
    assert not torch.equal(curve[2].z, curve[5].z)


@pytest.mark.parametrize("model_kind", ["vae", "hierarchical"])
def test_a_compiled_log_joint_gives_the_eager_chains(
    x: torch.Tensor, model_kind: str, monkeypatch
) -> None:
    torch.manual_seed(0)
    model = (
        _vae()
        if model_kind == "vae"
        else HierarchicalVAE(
            HVAEConfig(image_size=8, z_dims=(2, 3), channels=(8,), width=16)
        )
    )
    compiled_fns = []  # what torch.compile was asked to compile: the flag must reach it
    real_compile = torch.compile
    monkeypatch.setattr(
        torch,
        "compile",
        lambda fn, **kw: compiled_fns.append(fn) or real_compile(fn, **kw),
    )

    def run(**kw):
        return defence_curve(
            model, x, steps_grid=[4], generator=torch.Generator().manual_seed(2), **kw
        )

    eager = run()
    assert compiled_fns == []
    compiled = run(torch_compile=True)
    assert compiled_fns == [model.log_joint]
    # fixed step sizes: the same chains up to float rounding
    torch.testing.assert_close(compiled[4].z, eager[4].z, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        compiled[4].acceptance_rate, eager[4].acceptance_rate, rtol=1e-4, atol=1e-4
    )
    # dual averaging feeds on exp(-ΔH), where rounding shows: adapted steps agree to 1 %
    adapted = [
        refine_posterior(
            model,
            x,
            steps=4,
            num_warmup=3,
            torch_compile=flag,
            generator=torch.Generator().manual_seed(2),
        ).step_size
        for flag in (False, True)
    ]
    assert len(compiled_fns) == 2
    torch.testing.assert_close(adapted[1], adapted[0], rtol=0.01, atol=0.0)


def test_torch_compile_is_refused_for_the_numpyro_backend(x: torch.Tensor) -> None:
    # the check comes before any import of JAX, so this runs without the numpyro extra
    for call in (
        lambda: refine_posterior(
            _vae(), x, steps=1, backend="numpyro", torch_compile=True
        ),
        lambda: defence_curve(
            _vae(), x, steps_grid=[1], backend="numpyro", torch_compile=True
        ),
    ):
        with pytest.raises(
            ValueError, match="torch_compile applies to backend='torch'"
        ):
            call()


def test_the_curve_rejects_what_refine_posterior_rejects(x: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="steps"):
        defence_curve(_vae(), x, steps_grid=[0, -1])
    with pytest.raises(ValueError, match="steps"):
        defence_curve(_vae(), x, steps_grid=[])
    with pytest.raises(ValueError, match="unknown backend"):
        defence_curve(_vae(), x, steps_grid=[1], backend="stan")
    with pytest.raises(ValueError, match="step_size must be a positive.*never moves"):
        defence_curve(_vae(), x, steps_grid=[1], step_size=0)


class _Unported(torch.nn.Module):
    """A model the NumPyro backend has no JAX port of."""

    image_shape = (2,)

    def encode(self, x: torch.Tensor):
        return Independent(Normal(torch.zeros_like(x), torch.ones_like(x)), 1)

    def log_joint(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return -0.5 * ((z - x) ** 2).sum(-1)


@needs_numpyro
def test_the_numpyro_backend_names_the_models_it_supports() -> None:
    with pytest.raises(TypeError, match="ConvVAE, HierarchicalVAE, LinearGaussian"):
        refine_posterior(_Unported(), torch.rand(3, 2), steps=1, backend="numpyro")
    refine_posterior(
        _Unported(), torch.rand(3, 2), steps=1, backend="torch"
    )  # the torch backend takes any


def test_without_the_numpyro_extra_the_error_says_what_to_install(
    x: torch.Tensor, monkeypatch
) -> None:
    import companion.hmc

    monkeypatch.delattr(companion.hmc, "numpyro", raising=False)
    for name in ("companion.hmc.numpyro", "companion.hmc.jax_models"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    for name in ("jax", "numpyro", "numpyro.infer.hmc", "numpyro.infer.hmc_util"):
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    with pytest.raises(
        ImportError, match=r'pip install "vae-robustness-companion\[numpyro\]"'
    ):
        refine_posterior(_vae(), x, steps=1, backend="numpyro")


def test_importing_the_defence_does_not_import_jax() -> None:
    code = (
        "import sys, companion, companion.defence, companion.hmc, "
        "companion.hmc.torch, companion.models; sys.exit('jax' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_a_seeded_hierarchical_defence_repeats_its_start_codes(x: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = HierarchicalVAE(
        HVAEConfig(image_size=8, z_dims=(2, 3), channels=(8,), width=16)
    )
    runs = [
        refine_posterior(model, x, steps=0, generator=torch.Generator().manual_seed(5))
        for _ in range(2)
    ]
    torch.random.manual_seed(123)  # the global generator must not matter
    third = refine_posterior(
        model, x, steps=0, generator=torch.Generator().manual_seed(5)
    )
    torch.testing.assert_close(runs[0].z_start, runs[1].z_start)
    torch.testing.assert_close(runs[0].z_start, third.z_start)


def test_named_input_sets_get_exactly_their_rows_of_one_joint_batch_of_chains(
    x: torch.Tensor,
) -> None:
    model = _vae()
    settings = dict(steps_grid=[0, 2, 4], num_leapfrog=3, num_warmup=2)
    sets = {"attacked": x[:3], "clean": x[3:]}
    split = defence_curves(
        model, sets, generator=torch.Generator().manual_seed(0), **settings
    )
    joint = defence_curve(
        model, x, generator=torch.Generator().manual_seed(0), **settings
    )
    assert list(split) == ["attacked", "clean"]
    for t, result in joint.items():
        for field, a, b in zip(
            result._fields, result, split["attacked"][t], strict=True
        ):
            torch.testing.assert_close(b, a[:3], equal_nan=True, msg=field)
        assert len(split["clean"][t].z) == len(x) - 3
        torch.testing.assert_close(split["clean"][t].z, result.z[3:])
    with pytest.raises(ValueError, match="at least one set"):
        defence_curves(model, {}, steps_grid=[1])


def test_batched_input_sets_equal_running_each_batch_alone(x: torch.Tensor) -> None:
    model = _vae()
    settings = dict(steps_grid=[0, 2], num_leapfrog=3, num_warmup=2)
    sets = {"attacked": x[:3], "clean": x[3:]}
    batched = defence_curves(
        model,
        sets,
        batch_size=2,
        generator=torch.Generator().manual_seed(0),
        **settings,
    )
    g = torch.Generator().manual_seed(0)
    alone = [defence_curve(model, part, generator=g, **settings) for part in x.split(2)]
    for t in (0, 2):
        z = torch.cat([batched["attacked"][t].z, batched["clean"][t].z])
        torch.testing.assert_close(z, torch.cat([a[t].z for a in alone]))
        assert len(batched["clean"][t].step_size) == len(x) - 3
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        defence_curves(model, sets, steps_grid=[1], batch_size=0)


def test_posterior_samples_are_n_draws_per_input_from_the_exact_posterior() -> None:
    g = torch.Generator().manual_seed(0)
    model = _WronglyEncoded.random(
        x_dim=4, z_dim=2, noise_std=0.3, generator=g
    ).requires_grad_(False)
    x = torch.tensor([[0.5] * 4, [0.2, 0.9, 0.4, 0.1]], dtype=torch.float64)

    codes = posterior_samples(
        model,
        x,
        n=1500,
        steps=40,
        num_warmup=40,
        generator=torch.Generator().manual_seed(1),
    )

    assert codes.shape == (1500, 2, 2)
    posterior = model.posterior(x)
    for b in range(2):  # column b holds input b's draws
        assert_matches_gaussian(
            codes[:, b].numpy(),
            posterior.mean[b].numpy(),
            posterior.covariance_matrix[b].numpy(),
        )
    with pytest.raises(ValueError, match="n must be >= 1"):
        posterior_samples(model, x, n=0, steps=1)
