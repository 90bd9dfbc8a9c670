"""JAX ports of the models' log joints ln p(z) + ln p(x | z), for the NumPyro backend.

:func:`port` reads a PyTorch model's weights (copied once to JAX arrays) and returns a
:class:`PortedModel`: a pure function ``log_joint(params, z, x)`` for **one** code and
one input, plus the ``params`` it reads,

    z: (z_dim,),   x: the model's event shape, (1, H, W) or (D,)   ->   a scalar,

which ``jax.vmap`` batches over chains. It equals the model's own ``log_joint`` (tests
check this to 1e-5 in float64): the same layers, run in XLA's native NHWC layout, each
transposed convolution written as the convolution of the stride-dilated input with the
flipped kernel and the padding ``k − 1 − padding`` (plus ``output_padding`` at the far
end), as in PyTorch's definition. Convolutions carry a hand-written input gradient
(:func:`_conv_op`): autodiff's version runs 10-30× slower inside XLA CPU loops.

The functions are frozen dataclasses that hold only the architecture (static shapes and
paddings), never the weights: equal architectures compare equal, so a jitted sampler
keyed on them compiles once per architecture and takes the weights as arguments.

Ported: :class:`~companion.models.ConvVAE`, :class:`~companion.models.HierarchicalVAE`
and :class:`~companion.models.LinearGaussian` (subclasses too, unless they override
``log_joint``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from companion.models import ConvVAE, HierarchicalVAE, LinearGaussian
from companion.models.conv import ConvDecoder

os.environ.setdefault(
    "XLA_PYTHON_CLIENT_PREALLOCATE", "false"
)  # torch may share the GPU
try:
    import jax
    import jax.numpy as jnp
except (
    ImportError
) as error:  # pragma: no cover - exercised through companion.hmc.numpyro
    raise ImportError(
        "the NumPyro backend needs JAX and NumPyro: "
        'pip install "vae-robustness-companion[numpyro]"'
    ) from error

__all__ = [
    "PortedModel",
    "port",
    "SUPPORTED_MODELS",
    "ConvVAEJoint",
    "HierarchicalVAEJoint",
    "LinearGaussianJoint",
]

Params = dict[str, Any]
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
# the constants of companion.models.hvae's prior heads
_SOFTPLUS_ONE = 0.5413248546129181
_MIN_STD = 1e-4


class PortedModel(NamedTuple):
    """A model's log joint in JAX.

    Attributes:
        log_joint: ``log_joint(params, z, x)``: z (z_dim,), x one input -> scalar
            ln p(z) + ln p(x | z). Hashable (compares by architecture).
        params: the weights it reads, a pytree of JAX arrays.
        z_dim: the code size.
        event_shape: the shape of one input x.
    """

    log_joint: Any
    params: Params
    z_dim: int
    event_shape: tuple[int, ...]


# --- layers --------------------------------------------------------------------------


def _array(t: torch.Tensor) -> jax.Array:
    """A torch tensor as a JAX array of JAX's default float type
    (float32 unless x64 is on)."""
    return jnp.asarray(t.detach().cpu().numpy())


def _dense_params(layer: nn.Module) -> Params:
    if not isinstance(layer, nn.Linear) or layer.bias is None:
        raise ValueError(f"cannot port {layer}: expected a Linear layer with a bias")
    return {"kernel": _array(layer.weight.T), "bias": _array(layer.bias)}


def _mlp_params(block: nn.Module) -> list[Params]:
    """The two Linear layers of a Linear → SiLU → Linear block (the HVAE's ``_mlp``)."""
    if not isinstance(block, nn.Sequential) or len(block) != 3:
        raise ValueError(f"cannot port {block}: expected Linear → SiLU → Linear")
    return [_dense_params(block[0]), _dense_params(block[2])]


def _dense(p: Params, h: jax.Array) -> jax.Array:
    return h @ p["kernel"] + p["bias"]


def _mlp(ps: list[Params], h: jax.Array) -> jax.Array:
    """Linear → SiLU → Linear, the hierarchical VAE's ``_mlp``."""
    return _dense(ps[1], jax.nn.silu(_dense(ps[0], h)))


def _normal_log_prob(
    value: jax.Array, mean: jax.Array | float, std: jax.Array | float
) -> jax.Array:
    """Σ ln N(value; mean, std²) over the last axis."""
    return jnp.sum(
        -0.5 * ((value - mean) / std) ** 2 - jnp.log(std) - _HALF_LOG_2PI, axis=-1
    )


def _bernoulli_log_prob(x: jax.Array, logits: jax.Array) -> jax.Array:
    """Σ ln Bernoulli(x; logits) = Σ x·l − softplus(l), x in [0, 1] (no support check,
    as in the models)."""
    return jnp.sum(x * logits - jax.nn.softplus(logits))


@dataclass(frozen=True)
class _Conv:
    """One (possibly transposed) stride-1 2-D convolution, NHWC, as
    ``conv_general_dilated`` arguments: a transposed convolution has
    ``lhs_dilation`` = its stride."""

    kernel_size: tuple[int, int]
    lhs_dilation: tuple[int, int]
    padding: tuple[tuple[int, int], tuple[int, int]]
    silu: bool  # a SiLU follows


def _conv_params(
    layer: nn.Conv2d | nn.ConvTranspose2d, silu: bool
) -> tuple[_Conv, Params]:
    if (
        layer.groups != 1
        or layer.dilation != (1, 1)
        or layer.padding_mode != "zeros"
        or (isinstance(layer, nn.Conv2d) and layer.stride != (1, 1))
        or isinstance(layer.padding, str)
        or layer.bias is None
    ):
        raise ValueError(
            f"cannot port {layer}: only plain stride-1 and transposed convolutions "
            "with numeric padding and a bias are supported"
        )
    (kh, kw), (ph, pw) = layer.kernel_size, layer.padding
    if isinstance(layer, nn.ConvTranspose2d):
        # PyTorch's transposed convolution = the convolution of the stride-dilated input
        # with the spatially flipped kernel, in/out channels swapped, padded by k-1-p
        # (plus output_padding at the far end)
        (sh, sw), (oh, ow) = layer.stride, layer.output_padding
        kernel = layer.weight.transpose(0, 1).flip(2, 3)
        spec = _Conv(
            (kh, kw),
            (sh, sw),
            ((kh - 1 - ph, kh - 1 - ph + oh), (kw - 1 - pw, kw - 1 - pw + ow)),
            silu,
        )
    else:
        kernel = layer.weight
        spec = _Conv((kh, kw), (1, 1), ((ph, ph), (pw, pw)), silu)
    hwio = kernel.permute(2, 3, 1, 0)  # OIHW -> HWIO
    # the kernel of the input gradient (flipped, in/out swapped), made once here:
    # see _conv
    return spec, {
        "kernel": _array(hwio),
        "kernel_grad": _array(hwio.flip(0, 1).transpose(2, 3)),
        "bias": _array(layer.bias),
    }


_NHWC = ("NHWC", "HWIO", "NHWC")


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def _conv_op(
    spec: _Conv, y: jax.Array, kernel: jax.Array, kernel_grad: jax.Array
) -> jax.Array:
    """The convolution, with its input gradient written as a plain convolution.

    JAX differentiates a convolution into one with a reversed kernel; inside a loop
    (every sampler's), XLA's CPU backend runs that 10-30× slower than the forward pass
    (measured on JAX 0.10.2). The input gradient of a stride-1 convolution with input
    dilation s and padding (lo, hi) is the convolution of the output cotangent with the
    pre-flipped kernel, stride s, padding (k-1-lo, k-1-hi): written out, it runs at
    forward speed.
    """
    return jax.lax.conv_general_dilated(
        y,
        kernel,
        window_strides=(1, 1),
        padding=spec.padding,
        lhs_dilation=spec.lhs_dilation,
        dimension_numbers=_NHWC,
    )


def _conv_op_fwd(spec, y, kernel, kernel_grad):
    return _conv_op(spec, y, kernel, kernel_grad), (y, kernel, kernel_grad)


def _conv_op_bwd(spec, residuals, cotangent):
    y, kernel, kernel_grad = residuals
    padding = tuple(
        (k - 1 - lo, k - 1 - hi)
        for k, (lo, hi) in zip(spec.kernel_size, spec.padding, strict=True)
    )
    y_bar = jax.lax.conv_general_dilated(
        cotangent,
        kernel_grad,
        window_strides=spec.lhs_dilation,
        padding=padding,
        dimension_numbers=_NHWC,
    )
    # the weights' gradients, by autodiff (unused by the samplers, so jit drops them)
    _, kernel_vjp = jax.vjp(
        lambda k: jax.lax.conv_general_dilated(
            y,
            k,
            window_strides=(1, 1),
            padding=spec.padding,
            lhs_dilation=spec.lhs_dilation,
            dimension_numbers=_NHWC,
        ),
        kernel,
    )
    (kernel_bar,) = kernel_vjp(cotangent)
    return y_bar, kernel_bar, jnp.zeros_like(kernel_grad)


_conv_op.defvjp(_conv_op_fwd, _conv_op_bwd)


def _conv(spec: _Conv, p: Params, y: jax.Array) -> jax.Array:
    y = _conv_op(spec, y, p["kernel"], p["kernel_grad"]) + p["bias"]
    return jax.nn.silu(y) if spec.silu else y


@dataclass(frozen=True)
class _ConvDecoderSpec:
    """The static shape of a :class:`~companion.models.conv.ConvDecoder`."""

    in_features: int
    top: tuple[int, int, int]
    convs: tuple[_Conv, ...]


def _port_conv_decoder(decoder: ConvDecoder) -> tuple[_ConvDecoderSpec, Params]:
    head, act = decoder.head
    layers = list(decoder.net)
    convs, params = [], []
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.SiLU):
            continue
        if not isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)) or not isinstance(
            act, nn.SiLU
        ):
            raise ValueError(f"cannot port decoder layer {layer}")
        conv, p = _conv_params(
            layer, silu=i + 1 < len(layers) and isinstance(layers[i + 1], nn.SiLU)
        )
        convs.append(conv)
        params.append(p)
    spec = _ConvDecoderSpec(decoder.in_features, decoder._top, tuple(convs))
    return spec, {"head": _dense_params(head), "convs": params}


def _conv_decoder(spec: _ConvDecoderSpec, p: Params, h: jax.Array) -> jax.Array:
    """Decoder logits for one code h (in_features,) -> (1, H, W)."""
    y = (
        jax.nn.silu(_dense(p["head"], h)).reshape(1, *spec.top).transpose(0, 2, 3, 1)
    )  # NCHW -> NHWC
    for conv, cp in zip(spec.convs, p["convs"], strict=True):
        y = _conv(conv, cp, y)
    return y[0].transpose(2, 0, 1)  # (H, W, 1) -> (1, H, W)


# --- the models' log joints -----------------------------------------------------------


@dataclass(frozen=True)
class ConvVAEJoint:
    """ln N(z; 0, I) + ln Bernoulli(x; decoder(z)) of
    :class:`~companion.models.ConvVAE`."""

    decoder: _ConvDecoderSpec

    def __call__(self, params: Params, z: jax.Array, x: jax.Array) -> jax.Array:
        prior = _normal_log_prob(z, 0.0, 1.0)
        return prior + _bernoulli_log_prob(
            x, _conv_decoder(self.decoder, params["decoder"], z)
        )


@dataclass(frozen=True)
class HierarchicalVAEJoint:
    """Σ_l ln p(z_l | z_{>l}) + ln Bernoulli(x; decoder(z)) of
    :class:`~companion.models.HierarchicalVAE`.

    Groups top first, as the model orders them: group 0 has the N(0, I) prior, group
    l > 0 a Gaussian whose mean and softplus-scale come from the top-down state, which
    each group's code updates residually.
    """

    z_dims: tuple[int, ...]
    decoder: _ConvDecoderSpec

    def __call__(self, params: Params, z: jax.Array, x: jax.Array) -> jax.Array:
        bounds = np.cumsum(self.z_dims)[:-1].tolist()
        groups = jnp.split(z, bounds)
        state = params["state0"]
        log_prior = _normal_log_prob(groups[0], 0.0, 1.0)
        for i in range(1, len(groups)):
            state = state + _mlp(params["state_updates"][i - 1], groups[i - 1])
            mean, raw = jnp.split(_dense(params["prior_heads"][i - 1], state), 2)
            log_prior = log_prior + _normal_log_prob(
                groups[i], mean, jax.nn.softplus(raw + _SOFTPLUS_ONE) + _MIN_STD
            )
        return log_prior + _bernoulli_log_prob(
            x, _conv_decoder(self.decoder, params["decoder"], z)
        )


@dataclass(frozen=True)
class LinearGaussianJoint:
    """ln N(z; 0, I) + ln N(x; W z + μ, σ² I) of
    :class:`~companion.models.LinearGaussian`."""

    def __call__(self, params: Params, z: jax.Array, x: jax.Array) -> jax.Array:
        mean = params["weight"] @ z + params["bias"]
        return _normal_log_prob(z, 0.0, 1.0) + _normal_log_prob(
            x, mean, jnp.exp(params["log_noise_std"])
        )


def _port_vae(model: ConvVAE) -> PortedModel:
    spec, decoder = _port_conv_decoder(model.decoder)
    return PortedModel(
        ConvVAEJoint(spec), {"decoder": decoder}, model.z_dim, tuple(model.image_shape)
    )


def _port_hvae(model: HierarchicalVAE) -> PortedModel:
    spec, decoder = _port_conv_decoder(model.decoder)
    params = {
        "state0": _array(model.state0),
        "prior_heads": [_dense_params(head) for head in model.prior_heads],
        "state_updates": [_mlp_params(m) for m in model.state_updates],
        "decoder": decoder,
    }
    return PortedModel(
        HierarchicalVAEJoint(tuple(model.z_dims), spec),
        params,
        model.z_dim,
        tuple(model.image_shape),
    )


def _port_linear_gaussian(model: LinearGaussian) -> PortedModel:
    params = {
        "weight": _array(model.weight),
        "bias": _array(model.bias),
        "log_noise_std": _array(model.log_noise_std),
    }
    return PortedModel(LinearGaussianJoint(), params, model.z_dim, (model.x_dim,))


_PORTS: dict[
    type[ConvVAE] | type[HierarchicalVAE] | type[LinearGaussian],
    Callable[[Any], PortedModel],
] = {
    ConvVAE: _port_vae,
    HierarchicalVAE: _port_hvae,
    LinearGaussian: _port_linear_gaussian,
}
SUPPORTED_MODELS: tuple[str, ...] = tuple(cls.__name__ for cls in _PORTS)


def port(model: nn.Module) -> PortedModel:
    """The JAX twin of ``model.log_joint``, with the model's current weights copied.

    Raises:
        TypeError: the model is not one of :data:`SUPPORTED_MODELS`, or a subclass of
            one that overrides ``log_joint``
            (the port would silently compute the base's).
    """
    for cls, make in _PORTS.items():
        if isinstance(model, cls) and type(model).log_joint is cls.log_joint:
            with torch.no_grad():
                return make(model)
    raise TypeError(
        f"the NumPyro backend has no JAX port of {type(model).__name__}; it supports "
        f"{', '.join(SUPPORTED_MODELS)} (use backend='torch' for any other model)"
    )
