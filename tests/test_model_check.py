"""companion.model_check: a hand-written model, checked against what companion needs."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.distributions import Bernoulli, Independent, Normal

from companion.model_check import check_model
from companion.models import ConvVAE, VAEConfig


class TinyVAE(nn.Module):
    """A minimal MLP VAE in plain PyTorch, like the book's "your own model" page."""

    image_shape = (1, 8, 8)

    def __init__(self, z_dim: int = 3) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.enc = nn.Linear(64, 2 * z_dim)
        self.dec = nn.Linear(z_dim, 64)

    def encode(self, x):
        mu, log_sigma = self.enc(x.flatten(1)).chunk(2, dim=-1)
        return Independent(Normal(mu, log_sigma.exp()), 1)

    def prior(self):
        return Independent(Normal(torch.zeros(self.z_dim), torch.ones(self.z_dim)), 1)

    def decode(self, z):
        logits = self.dec(z).unflatten(-1, self.image_shape)
        return Independent(Bernoulli(logits=logits), 3)

    def log_joint(self, z, x):
        return self.prior().log_prob(z) + self.decode(z).log_prob(x)

    def reconstruct(self, x):
        return self.decode(self.encode(x).mean).mean


X = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)).round()


def test_a_complete_model_and_the_packages_vae_pass_and_report_the_latent_size() -> (
    None
):
    assert check_model(TinyVAE(z_dim=3), X) == 3
    conv = ConvVAE(VAEConfig(image_size=8, z_dim=4, channels=(8,)))
    assert check_model(conv, X) == 4


def test_a_missing_method_is_named() -> None:
    class NoReconstruct(TinyVAE):
        def __getattribute__(self, name: str):
            if name == "reconstruct":
                raise AttributeError(name)
            return super().__getattribute__(name)

    with pytest.raises(TypeError, match="NoReconstruct lacks reconstruct"):
        check_model(NoReconstruct(), X)


@pytest.mark.parametrize(
    ("method", "wrong", "message"),
    [
        (
            "encode",
            lambda self, x: Normal(torch.zeros(len(x), 3), 1.0),
            r"Independent\(·, 1\)",
        ),
        (
            "encode",
            lambda self, x: torch.zeros(len(x), 3),
            "must return a torch Distribution",
        ),
        (
            "prior",
            lambda self: Normal(torch.zeros(3), 1.0),
            r"expected \(\) and \(3,\)",
        ),
        (
            "decode",
            lambda self, z: Bernoulli(logits=torch.zeros(len(z), 1, 8, 8)),
            r"one log-likelihood per input",
        ),
        ("log_joint", lambda self, z, x: torch.zeros(len(z), 2), r"of shape \(4,\)"),
        ("log_joint", lambda self, z, x: torch.zeros(len(z)), "differentiable in z"),
        ("reconstruct", lambda self, x: x.flatten(1), "shaped like x"),
    ],
)
def test_a_wrong_return_says_what_came_back_and_what_was_expected(
    method, wrong, message
) -> None:
    broken = type("Broken", (TinyVAE,), {method: wrong})()
    with pytest.raises((TypeError, ValueError), match=message):
        check_model(broken, X)


def test_inputs_must_match_the_models_image_shape() -> None:
    with pytest.raises(ValueError, match=r"x must be \(B, 1, 8, 8\)"):
        check_model(TinyVAE(), torch.rand(4, 1, 16, 16))
