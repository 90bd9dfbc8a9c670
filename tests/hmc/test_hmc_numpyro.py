"""Tests for companion.hmc.numpyro and its JAX model ports (companion.hmc.jax_models):
the ports equal the PyTorch log joints, the chains sample the exact linear-Gaussian
posterior, the HMC kernel takes exactly the leapfrog steps asked for, every chain adapts
its own step size, seeded runs repeat, compiled programs are reused, and bad input fails
clearly."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

pytest.importorskip(
    "numpyro",
    reason='the NumPyro backend needs pip install "vae-robustness-companion[numpyro]"',
)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from companion.hmc import numpyro as hmc_numpyro  # noqa: E402
from companion.hmc.jax_models import SUPPORTED_MODELS, port  # noqa: E402
from companion.models import (
    ConvVAE,
    HierarchicalVAE,
    HVAEConfig,
    LinearGaussian,
    VAEConfig,
)  # noqa: E402
from gaussian_checks import assert_matches_gaussian  # noqa: E402


def _models(dtype: torch.dtype) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    models = {
        "vae-16": ConvVAE(VAEConfig(image_size=16, z_dim=16, channels=(32, 64))),
        # odd sizes: every transposed convolution needs a different output_padding
        "vae-13": ConvVAE(VAEConfig(image_size=13, z_dim=5, channels=(8, 16, 4))),
        "hvae": HierarchicalVAE(
            HVAEConfig(image_size=8, z_dims=(2, 3, 4), channels=(8, 16), width=16)
        ),
        "linear-gaussian": LinearGaussian.random(
            x_dim=7, z_dim=3, noise_std=0.5, dtype=dtype
        ),
    }
    for model in models.values():
        # move the weights off their initial values, so every layer matters
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.3 * torch.randn_like(p))
    return {name: m.to(dtype).requires_grad_(False) for name, m in models.items()}


def _torch_value_and_grad(
    model, z: torch.Tensor, x: torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    z = z.clone().requires_grad_(True)
    value = model.log_joint(z, x)
    (grad,) = torch.autograd.grad(value.sum(), z)
    return value.detach().numpy(), grad.numpy()


def _jax_value_and_grad(
    model, z: torch.Tensor, x: torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    ported = port(model)
    f = jax.jit(
        jax.vmap(jax.value_and_grad(ported.log_joint, argnums=1), in_axes=(None, 0, 0))
    )
    value, grad = f(ported.params, jnp.asarray(z.numpy()), jnp.asarray(x.numpy()))
    return np.asarray(value), np.asarray(grad)


@pytest.mark.parametrize("name", ["vae-16", "vae-13", "hvae", "linear-gaussian"])
def test_the_jax_port_equals_the_torch_log_joint_and_its_gradient(name: str) -> None:
    g = torch.Generator().manual_seed(1)
    # float64: the two programs agree to rounding (1e-5 is ~10⁹ ulps of float64)
    with jax.enable_x64(True):
        model = _models(torch.float64)[name]
        ported = port(model)
        z = torch.randn(6, ported.z_dim, generator=g, dtype=torch.float64)
        x = torch.rand(6, *ported.event_shape, generator=g, dtype=torch.float64)
        (v_t, g_t), (v_j, g_j) = (
            _torch_value_and_grad(model, z, x),
            _jax_value_and_grad(model, z, x),
        )
    assert np.abs(v_j - v_t).max() < 1e-5 and np.abs(g_j - g_t).max() < 1e-5, (
        np.abs(v_j - v_t).max(),
        np.abs(g_j - g_t).max(),
    )
    # float32, what the sampler runs: the same to float32 rounding of sums of ~100 nats
    model = _models(torch.float32)[name]
    (v_t, g_t), (v_j, g_j) = (
        _torch_value_and_grad(model, z.float(), x.float()),
        _jax_value_and_grad(model, z.float(), x.float()),
    )
    np.testing.assert_allclose(v_j, v_t, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(g_j, g_t, rtol=1e-4, atol=1e-4)


def test_equal_architectures_give_equal_ports_so_compiled_samplers_are_shared() -> None:
    a, b = (
        _models(torch.float32)["vae-16"],
        ConvVAE(VAEConfig(image_size=16, z_dim=16, channels=(32, 64))),
    )
    assert port(a).log_joint == port(b).log_joint and hash(port(a).log_joint) == hash(
        port(b).log_joint
    )
    assert port(a).log_joint != port(_models(torch.float32)["vae-13"]).log_joint


def _linear_gaussian_setup(chains: int):
    g = torch.Generator().manual_seed(0)
    model = LinearGaussian.random(
        x_dim=12, z_dim=3, noise_std=0.5, generator=g
    ).requires_grad_(False)
    x, _ = model.sample(1, generator=g)
    start = torch.randn(chains, 3, dtype=torch.float64, generator=g)
    return model, x, start


@pytest.mark.parametrize("algorithm", ["hmc", "nuts"])
def test_chains_sample_the_exact_linear_gaussian_posterior(algorithm: str) -> None:
    chains = 3000 if algorithm == "hmc" else 1000
    model, x, start = _linear_gaussian_setup(chains)
    result = hmc_numpyro.run_model_chains(
        model,
        x.expand(chains, -1),
        start,
        seed=0,
        num_warmup=60,
        num_transitions=60,
        num_steps=8,
        algorithm=algorithm,
    )
    posterior = model.posterior(x)
    assert_matches_gaussian(
        np.asarray(result.position, dtype=np.float64),
        posterior.mean[0].numpy(),
        posterior.covariance_matrix[0].numpy(),
    )
    assert not np.asarray(result.info.divergent).any()
    if algorithm == "hmc":
        # exactly the leapfrog steps asked for, at the adapted step size (NumPyro would
        # derive the count from, or rescale the step size to, a trajectory length if it
        # had one)
        assert (np.asarray(result.info.num_steps) == 8).all()
        # adapted up from the initial 0.1
        assert (np.asarray(result.step_size) > 0.1).all()


def _scaled_gaussian(params, z: jax.Array, scale: jax.Array) -> jax.Array:
    """ln N(z; 0, scale² I), the chain's scale passed as its "input"."""
    return -0.5 * jnp.sum((z / scale) ** 2)


def test_every_chain_adapts_its_own_step_size_towards_the_target_acceptance() -> None:
    scales = jnp.repeat(jnp.array([0.1, 1.0, 10.0]), 64)[:, None]
    position = scales * jax.random.normal(jax.random.key(0), (192, 10))
    result = hmc_numpyro.run_chains(
        _scaled_gaussian,
        {},
        scales,
        position,
        rng_key=jax.random.key(1),
        num_warmup=150,
        num_transitions=50,
        num_steps=5,
        initial_step_size=1e-3,
    )
    per_scale = np.median(np.asarray(result.step_size).reshape(3, 64), axis=1)
    assert (
        per_scale[0] < per_scale[1] < per_scale[2] and per_scale[2] / per_scale[0] > 30
    )  # ideal 100
    assert abs(float(np.asarray(result.info.acceptance_rate).mean()) - 0.65) < 0.15


def test_no_warm_up_keeps_the_step_size_and_reports_every_energy_error() -> None:
    result = hmc_numpyro.run_chains(
        _scaled_gaussian,
        {},
        jnp.ones((256, 1)),
        jax.random.normal(jax.random.key(0), (256, 5)),
        rng_key=jax.random.key(1),
        num_warmup=0,
        num_transitions=4,
        num_steps=3,
        initial_step_size=0.7,
    )
    np.testing.assert_allclose(np.asarray(result.step_size), 0.7, rtol=1e-6)
    info = result.info
    assert info.acceptance_rate.shape == (4, 256)
    acceptance, error = np.asarray(info.acceptance_rate), np.asarray(info.energy_error)
    assert (acceptance < 0.9).mean() > 0.1 and (
        error < 0
    ).mean() > 0.1  # both kinds of proposal occur
    # α = min(1, e^−ΔH) for every proposal, accepted or not, and ΔH of a leapfrog
    # trajectory of a Gaussian is O(ε²) small: no spurious zeros or infinities
    np.testing.assert_allclose(
        np.minimum(1, np.exp(-error)), acceptance, rtol=1e-4, atol=1e-6
    )
    assert np.isfinite(error).all() and np.abs(error).max() < 5


def test_the_same_seed_repeats_the_chains_and_another_seed_does_not() -> None:
    model, x, start = _linear_gaussian_setup(16)

    def run(seed: int) -> np.ndarray:
        return np.asarray(
            hmc_numpyro.run_model_chains(
                model,
                x.expand(16, -1),
                start,
                seed=seed,
                num_warmup=5,
                num_transitions=5,
                num_steps=3,
            ).position
        )

    np.testing.assert_array_equal(run(3), run(3))
    assert not np.allclose(run(3), run(4))


def test_new_weights_inputs_and_step_sizes_reuse_the_compiled_program() -> None:
    model, x, start = _linear_gaussian_setup(16)
    settings = dict(
        num_warmup=5, num_transitions=5, num_steps=3
    )  # as in the test above: compiled once
    hmc_numpyro.run_model_chains(model, x.expand(16, -1), start, seed=0, **settings)
    compiled = hmc_numpyro._run._cache_size()
    other = LinearGaussian.random(x_dim=12, z_dim=3, noise_std=0.1).requires_grad_(
        False
    )
    hmc_numpyro.run_model_chains(
        other,
        torch.rand(16, 12),
        start + 1,
        seed=1,
        initial_step_size=0.02,
        target_acceptance=0.8,
        **settings,
    )
    assert hmc_numpyro._run._cache_size() == compiled


def test_a_model_without_a_port_is_rejected_with_the_supported_ones_listed() -> None:
    class Custom(LinearGaussian):
        def log_joint(
            self, z, x
        ):  # a different density: porting LinearGaussian's would be wrong
            return super().log_joint(z, x) + 1.0

    for model in (
        torch.nn.Linear(2, 2),
        Custom(weight=torch.ones(3, 2), bias=torch.zeros(3), noise_std=1.0),
    ):
        with pytest.raises(TypeError, match="ConvVAE, HierarchicalVAE, LinearGaussian"):
            port(model)
    assert SUPPORTED_MODELS == ("ConvVAE", "HierarchicalVAE", "LinearGaussian")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(algorithm="mala"), "unknown algorithm"),
        (dict(num_steps=0), "num_steps"),
        (dict(num_warmup=-1), "num_warmup"),
        (dict(x=jnp.ones((3, 1))), "one input per chain"),
    ],
    ids=["algorithm", "zero-steps", "negative-warmup", "inputs-per-chain"],
)
def test_bad_settings_are_rejected_with_a_clear_message(
    kwargs: dict, message: str
) -> None:
    call = (
        dict(
            log_joint=_scaled_gaussian,
            params={},
            x=jnp.ones((4, 1)),
            position=jnp.zeros((4, 2)),
            rng_key=jax.random.key(0),
            num_warmup=1,
            num_transitions=1,
            num_steps=1,
        )
        | kwargs
    )
    with pytest.raises(ValueError, match=message):
        hmc_numpyro.run_chains(**call)


def test_without_jax_and_numpyro_the_error_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("companion.hmc.numpyro", "companion.hmc.jax_models"):
        monkeypatch.delitem(sys.modules, name)
    for name in ("jax", "numpyro", "numpyro.infer.hmc", "numpyro.infer.hmc_util"):
        monkeypatch.setitem(
            sys.modules, name, None
        )  # "import <name>" now raises ImportError
    with pytest.raises(
        ImportError, match=r'pip install "vae-robustness-companion\[numpyro\]"'
    ):
        import companion.hmc.numpyro  # noqa: F401
