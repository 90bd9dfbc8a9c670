"""Tests for companion.metrics: MS-SSIM settings valid for small images,
and accuracy."""

from __future__ import annotations

import pytest
import torch

from companion.data import load_images
from companion.metrics import accuracy, ms_ssim, msssim_scales


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return load_images(name="digits", split="test", image_size=16).images[:12]


@pytest.mark.parametrize(
    ("size", "scales"), [(8, 2), (16, 3), (28, 3), (32, 4), (64, 5), (256, 5)]
)
def test_the_coarsest_scale_keeps_at_least_four_pixels(size: int, scales: int) -> None:
    assert msssim_scales(size) == scales
    assert size / 2 ** (scales - 1) >= 4


@pytest.mark.parametrize("size", [8, 16, 28, 32])
def test_identical_images_score_one_and_other_digits_less(size: int) -> None:
    x = load_images(name="digits", split="test", image_size=size).images[:6]
    torch.testing.assert_close(ms_ssim(x, x), torch.ones(6))
    other = ms_ssim(x, x.roll(1, dims=0))
    assert ((other >= 0) & (other < 0.9)).all(), other


def test_more_noise_means_lower_similarity(digits: torch.Tensor) -> None:
    signs = torch.randn(digits.shape, generator=torch.Generator().manual_seed(0)).sign()
    scores = [
        ms_ssim(digits, (digits + eps * signs).clamp(0, 1)).mean().item()
        for eps in (0.0, 0.05, 0.1, 0.2)
    ]
    assert scores == sorted(scores, reverse=True) and scores[0] == pytest.approx(1.0)


def test_ms_ssim_is_symmetric_and_never_nan(digits: torch.Tensor) -> None:
    noise = torch.rand(digits.shape, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(ms_ssim(digits, noise), ms_ssim(noise, digits))
    assert torch.isfinite(ms_ssim(digits, 1 - digits)).all()


def test_bad_images_are_rejected(digits: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="same shape"):
        ms_ssim(digits, digits[:3])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ms_ssim(digits * 255, digits)
    with pytest.raises(ValueError, match="at least 8"):
        ms_ssim(torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4))


def test_accuracy_counts_arg_max_hits() -> None:
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, -1.0], [0.0, 0.1]])
    assert accuracy(logits, torch.tensor([0, 1, 1, 1])).item() == pytest.approx(0.75)
    with pytest.raises(ValueError, match="4 predictions for 3 labels"):
        accuracy(logits, torch.tensor([0, 1, 1]))


def test_attack_report_is_neutral_for_an_unchanged_input_and_reacts_to_a_change(
    digits: torch.Tensor,
) -> None:
    from companion.metrics import attack_report
    from companion.models import ConvVAE, VAEConfig

    torch.manual_seed(0)
    model = ConvVAE(VAEConfig(image_size=16, z_dim=4, channels=(8, 16)))
    same = attack_report(model, x_ref=digits, x_adv=digits.clone())
    torch.testing.assert_close(same.input_ms_ssim, torch.ones(len(digits)))
    torch.testing.assert_close(same.recon_ms_ssim, torch.ones(len(digits)))
    assert same.skl.abs().max() < 1e-4 and same.latent_distance.max() < 1e-5
    moved = attack_report(model, x_ref=digits, x_adv=digits.roll(1, dims=0))
    assert (moved.skl > 0).all() and (moved.input_ms_ssim < 1).all()


def test_code_report_scores_the_encoders_mean_as_perfect_and_a_wrong_code_lower(
    digits: torch.Tensor,
) -> None:
    from companion.metrics import code_report
    from companion.models import ConvVAE, VAEConfig

    torch.manual_seed(0)
    model = ConvVAE(VAEConfig(image_size=16, z_dim=4, channels=(8, 16)))
    classifier = torch.nn.Linear(4, 10)
    z = model.encode(digits).mean.detach()
    labels = classifier(z).argmax(-1)
    own = code_report(model, classifier, z=z, x_ref=digits, y_ref=labels)
    torch.testing.assert_close(own.recon_ms_ssim, torch.ones(len(digits)))
    assert own.correct.all()
    far = code_report(
        model, classifier, z=z + 5 * torch.randn_like(z), x_ref=digits, y_ref=labels
    )
    assert far.recon_ms_ssim.mean() < 1 and not far.correct.all()
    with pytest.raises(ValueError, match="codes for"):
        code_report(model, classifier, z=z[:3], x_ref=digits, y_ref=labels)


def test_log_posterior_ratio_is_exact_on_the_linear_gaussian_model() -> None:
    from companion.metrics import log_posterior_ratio
    from companion.models import LinearGaussian

    model = LinearGaussian.random(
        x_dim=5, z_dim=2, noise_std=0.5, generator=torch.Generator().manual_seed(0)
    )
    x, _ = model.sample(4, generator=torch.Generator().manual_seed(1))
    z1, z2 = (
        torch.randn(4, 2, dtype=torch.float64),
        torch.randn(4, 2, dtype=torch.float64),
    )
    posterior = model.posterior(x)
    torch.testing.assert_close(
        log_posterior_ratio(model, z1=z1, z2=z2, x=x),
        posterior.log_prob(z1) - posterior.log_prob(z2),
    )


def test_mse_and_psnr_per_image_pair() -> None:
    from companion.metrics import mse, psnr

    x = torch.zeros(2, 1, 4, 4)
    y = torch.stack([torch.full((1, 4, 4), 0.1), torch.full((1, 4, 4), 0.5)])
    assert torch.allclose(mse(x, y), torch.tensor([0.01, 0.25]))
    assert torch.allclose(psnr(x, y), torch.tensor([20.0, 6.0206]), atol=1e-3)
    with pytest.raises(ValueError, match="same shape"):
        mse(x, y[:, :, :2])
