"""Tests for companion.models.vae: shapes across image sizes and depths, input
validation, the grey-value Bernoulli likelihood, sampling and reconstruction."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from companion.models import ConvVAE, VAEConfig

SHAPE_CASES = [
    (8, (4,)),
    (8, (4, 8, 8)),
    (16, (8, 16)),
    (16, (4, 4, 8, 8)),
    (28, (8, 16)),
    (28, (4, 8, 8, 16)),
    (28, (4, 4, 8, 8, 8)),
    (32, (8, 16, 16)),
]


def _vae(
    image_size: int = 8,
    channels: tuple[int, ...] = (4, 8),
    z_dim: int = 3,
    seed: int = 0,
) -> ConvVAE:
    torch.manual_seed(seed)
    return ConvVAE(VAEConfig(image_size=image_size, z_dim=z_dim, channels=channels))


@pytest.mark.parametrize(("image_size", "channels"), SHAPE_CASES)
def test_encoder_decoder_and_log_joint_shapes_fit_every_size_and_depth(
    image_size: int, channels: tuple[int, ...]
) -> None:
    model = _vae(image_size, channels, z_dim=5)
    x = torch.rand(3, 1, image_size, image_size)

    q = model.encode(x)
    assert q.batch_shape == (3,) and q.event_shape == (5,)
    z = q.rsample((2,))  # (k, B, z)
    assert model.decoder_logits(z).shape == (2, 3, 1, image_size, image_size)
    p = model.decode(z)
    assert p.batch_shape == (2, 3) and p.event_shape == (1, image_size, image_size)
    assert model.log_joint(z, x).shape == (2, 3)
    assert model.decoder_logits(torch.zeros(5)).shape == (1, image_size, image_size)
    assert model.image_shape == (1, image_size, image_size)


@pytest.mark.parametrize(("image_size", "n_layers"), [(8, 4), (16, 5), (32, 6), (4, 3)])
def test_more_stride_two_layers_than_the_image_size_allows_is_rejected(
    image_size: int, n_layers: int
) -> None:
    with pytest.raises(
        ValueError, match=f"{n_layers} stride-2 convolutions are too many"
    ):
        VAEConfig(image_size=image_size, channels=(4,) * n_layers)


@pytest.mark.parametrize(("image_size", "advised"), [(8, 3), (16, 4), (28, 5), (32, 5)])
def test_error_message_advises_the_largest_depth_that_is_accepted(
    image_size: int, advised: int
) -> None:
    # the advised depth must be accepted, and one layer more rejected with that advice
    ConvVAE(VAEConfig(image_size=image_size, z_dim=2, channels=(2,) * advised))
    with pytest.raises(ValueError, match=f"use at most {advised}$"):
        VAEConfig(image_size=image_size, channels=(2,) * (advised + 1))


@pytest.mark.parametrize(
    "kwargs",
    [dict(image_size=1), dict(z_dim=0), dict(channels=())],
    ids=["size", "z_dim", "channels"],
)
def test_degenerate_config_is_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="invalid VAEConfig|need image_size >= 2"):
        VAEConfig(**kwargs)


@pytest.mark.parametrize(
    "x",
    [torch.rand(2, 1, 16, 16), torch.rand(2, 8, 8), torch.rand(2, 3, 8, 8)],
    ids=["size", "no-channel", "rgb"],
)
def test_encode_rejects_images_of_the_wrong_shape(x: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"expected \(N, 1, 8, 8\)"):
        _vae().encode(x)


@pytest.mark.parametrize("value", [-0.5, 1.01, 255.0, float("nan")])
def test_encode_rejects_pixels_outside_the_unit_interval(value: float) -> None:
    x = torch.rand(2, 1, 8, 8)
    x[1, 0, 3, 3] = value
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        _vae().encode(x)


def test_encoder_scales_are_positive() -> None:
    q = _vae().encode(torch.rand(16, 1, 8, 8))
    assert (q.stddev > 0).all()


def test_grey_image_log_likelihood_is_minus_the_summed_binary_cross_entropy() -> None:
    model = _vae()
    z = torch.randn(2, 4, 3)
    x = torch.rand(4, 1, 8, 8)  # grey values, not 0/1
    x[0] = 0.0
    x[1] = 1.0
    with torch.no_grad():
        logits = model.decoder_logits(z)
        expected = -F.binary_cross_entropy_with_logits(
            logits, x.expand_as(logits), reduction="none"
        ).sum((-3, -2, -1))
        log_lik = model.decode(z).log_prob(x)
    torch.testing.assert_close(log_lik, expected)
    assert log_lik.shape == (2, 4)


def test_log_joint_is_prior_plus_likelihood() -> None:
    model = _vae()
    z = torch.randn(5, 3)
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        expected = model.prior().log_prob(z) + model.decode(z).log_prob(x)
        torch.testing.assert_close(model.log_joint(z, x), expected)


def test_sample_returns_n_mean_images_in_the_unit_interval_reproducibly() -> None:
    model = _vae(16, (4, 8))
    a = model.sample(6, generator=torch.Generator().manual_seed(0))
    b = model.sample(6, generator=torch.Generator().manual_seed(0))
    cold = model.sample(6, temperature=0.0, generator=torch.Generator().manual_seed(1))
    assert a.shape == (6, 1, 16, 16)
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b)
    assert not a.requires_grad
    # at temperature 0 every code is z = 0, so every sample is the same image
    assert torch.allclose(cold, cold[:1].expand_as(cold))


def test_reconstruct_returns_images_of_the_input_shape_in_the_unit_interval() -> None:
    model = _vae(16, (4, 8))
    x = torch.rand(4, 1, 16, 16)
    r = model.reconstruct(x)
    assert r.shape == x.shape
    assert r.min() >= 0 and r.max() <= 1
    with torch.no_grad():
        torch.testing.assert_close(
            r, torch.sigmoid(model.decoder_logits(model.encode(x).mean))
        )


def test_prior_is_a_standard_normal_over_z_dim() -> None:
    p = _vae(z_dim=4).prior()
    assert p.batch_shape == () and p.event_shape == (4,)
    assert torch.equal(p.mean, torch.zeros(4)) and torch.equal(p.stddev, torch.ones(4))


def test_float64_model_samples_in_float64() -> None:
    model = _vae().double()
    assert model.sample(2).dtype == torch.float64
    assert (
        model.encode(torch.rand(2, 1, 8, 8, dtype=torch.float64)).mean.dtype
        == torch.float64
    )


def test_with_new_encoder_keeps_the_decoder_and_draws_a_reproducible_encoder() -> None:
    model = _vae(16, (8, 16), z_dim=4)
    a = model.with_new_encoder(generator=torch.Generator().manual_seed(3))
    b = model.with_new_encoder(generator=torch.Generator().manual_seed(3))
    c = model.with_new_encoder(generator=torch.Generator().manual_seed(4))
    for name, p in model.decoder.state_dict().items():
        assert torch.equal(a.decoder.state_dict()[name], p)
    assert (
        a.decoder.head[0].weight is not model.decoder.head[0].weight
    )  # a copy, not shared
    assert torch.equal(a.encoder_head.weight, b.encoder_head.weight)
    assert not torch.equal(a.encoder_head.weight, c.encoder_head.weight)
    assert not torch.equal(a.encoder_head.weight, model.encoder_head.weight)


def test_inference_network_is_the_encoder_with_the_same_parameters_and_output() -> None:
    model = _vae(16, (8, 16), z_dim=4)
    net = model.inference_network()
    own = {
        id(p)
        for p in list(model.encoder.parameters())
        + list(model.encoder_head.parameters())
    }
    assert {id(p) for p in net.parameters()} == own
    x = torch.rand(5, 1, 16, 16)
    q, r = net(x), model.encode(x)
    assert torch.equal(q.mean, r.mean) and torch.equal(q.stddev, r.stddev)
    with pytest.raises(ValueError, match=r"expected \(N, 1, 16, 16\)"):
        net(torch.rand(5, 1, 8, 8))
