"""Tests for companion.ood: the OOD transformations, the AUROC convention (including
scores far outside [0, 1]), every score on single-layer and hierarchical VAEs,
and bad input."""

from __future__ import annotations

import pytest
import torch

from companion.models import ConvVAE, HierarchicalVAE, HVAEConfig, VAEConfig
from companion.ood import auroc, invert, ood_scores, rotate


def _images(n: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_inversion_is_an_involution_that_keeps_pixels_in_range() -> None:
    x = _images()
    torch.testing.assert_close(invert(invert(x)), x)
    assert invert(torch.zeros(1, 1, 8, 8)).min() == 1.0


def test_four_quarter_turns_give_the_images_back_and_one_turn_moves_a_corner() -> None:
    x = torch.zeros(1, 1, 8, 8)
    x[..., 0, 0] = 1.0  # top-left
    once = rotate(x)
    assert (
        once[..., 7, 0] == 1.0 and once.sum() == 1.0
    )  # counter-clockwise: to bottom-left
    torch.testing.assert_close(rotate(rotate(rotate(once))), x)


def test_rotation_refuses_no_op_turns_and_non_square_images() -> None:
    with pytest.raises(ValueError, match="unchanged"):
        rotate(_images(), quarter_turns=4)
    with pytest.raises(ValueError, match="square"):
        rotate(torch.rand(2, 1, 8, 6))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        invert(_images() * 2)


def test_auroc_is_one_for_separated_scores_zero_reversed_and_a_half_for_ties() -> None:
    low, high = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([4.0, 5.0])
    assert auroc(low, high) == 1.0 and auroc(high, low) == 0.0
    assert auroc(torch.ones(4), torch.ones(3)) == 0.5
    torch.testing.assert_close(
        auroc(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 4.0])), torch.tensor(0.75)
    )


def test_auroc_separates_scores_that_a_sigmoid_would_saturate() -> None:
    inlier = 1_000.0 + torch.arange(5.0)  # nats: large and close together
    outlier = 1_000.0 + torch.arange(5.0) + 0.5
    torch.testing.assert_close(auroc(inlier, outlier), torch.tensor(15 / 25))


@pytest.mark.parametrize(
    ("inlier", "outlier"),
    [
        (torch.tensor([]), torch.ones(2)),
        (torch.tensor([1.0, float("nan")]), torch.ones(2)),
        (torch.ones(2, 2), torch.ones(2)),
    ],
)
def test_auroc_rejects_empty_non_finite_or_non_vector_scores(
    inlier: torch.Tensor, outlier: torch.Tensor
) -> None:
    with pytest.raises(ValueError, match="non-empty finite 1-D"):
        auroc(inlier, outlier)


@pytest.mark.parametrize("kind", ["vae", "hvae"])
def test_every_score_is_finite_per_image_and_the_iwae_tightens_the_elbo(
    kind: str,
) -> None:
    torch.manual_seed(0)
    model = (
        ConvVAE(VAEConfig(image_size=8, z_dim=3, channels=(4,)))
        if kind == "vae"
        else HierarchicalVAE(
            HVAEConfig(image_size=8, z_dims=(2, 3), channels=(4,), width=8)
        )
    ).eval()
    x = _images(8)
    scores = ood_scores(
        model,
        x,
        k=200,
        hmc_steps=3,
        num_leapfrog=3,
        elbo_samples=200,
        generator=torch.Generator().manual_seed(0),
    )
    for name, value in scores._asdict().items():
        assert value.shape == (8,) and torch.isfinite(value).all(), name
    assert (
        scores.neg_iwae.mean() <= scores.neg_elbo.mean() + 0.05
    )  # L_k >= ELBO, in expectation
    assert (scores.chain_distance >= 0).all() and scores.chain_distance.max() > 0


def test_scores_refuse_bad_counts_and_images_of_the_wrong_shape() -> None:
    torch.manual_seed(0)
    model = ConvVAE(VAEConfig(image_size=8, z_dim=3, channels=(4,))).eval()
    with pytest.raises(ValueError, match="must be >= 1"):
        ood_scores(model, _images(), k=0, hmc_steps=1)
    with pytest.raises(ValueError, match="expected"):
        ood_scores(model, torch.rand(2, 1, 16, 16), k=1, hmc_steps=1)
