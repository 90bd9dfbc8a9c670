"""Tests for companion.plotting: grid arithmetic, padding, input checks,
and figure helpers."""

from __future__ import annotations

from collections.abc import Iterator

import matplotlib

matplotlib.use("Agg")  # before pyplot is imported anywhere in this process

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from companion.plotting import image_grid, show_images, training_curves  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures() -> Iterator[None]:
    yield
    plt.close("all")


@pytest.mark.parametrize(
    ("n", "ncol", "pad", "shape"),
    [
        (10, 10, 1, (4, 49)),  # one full row
        (12, 5, 1, (14, 24)),  # three rows, the last one partial
        (3, 10, 1, (4, 14)),  # fewer images than columns: the grid shrinks to 3 columns
        (6, 3, 0, (8, 12)),  # no padding
        (1, 4, 2, (4, 4)),
    ],
)
def test_grid_shape_is_rows_and_columns_of_images_plus_padding(
    n, ncol, pad, shape
) -> None:
    grid = image_grid(torch.rand(n, 1, 4, 4), ncol=ncol, pad=pad)
    assert grid.shape == shape
    assert grid.dtype == np.float32


def test_grid_places_images_row_major_with_padding_between_and_in_empty_cells() -> None:
    images = (
        torch.arange(5, dtype=torch.float32).reshape(5, 1, 1, 1).expand(5, 1, 2, 3) / 10
    )
    grid = image_grid(images, ncol=3, pad=1, pad_value=0.5)
    assert grid.shape == (2 * 3 - 1, 3 * 4 - 1)
    for i in range(5):
        r, c = divmod(i, 3)
        np.testing.assert_array_equal(
            grid[r * 3 : r * 3 + 2, c * 4 : c * 4 + 3], images[i, 0].numpy()
        )
    mask = np.ones_like(grid, dtype=bool)
    for i in range(5):
        r, c = divmod(i, 3)
        mask[r * 3 : r * 3 + 2, c * 4 : c * 4 + 3] = False
    assert (grid[mask] == 0.5).all()  # gaps and the sixth, empty cell


def test_grid_accepts_images_without_a_channel_axis_and_on_autograd_tensors() -> None:
    x = torch.rand(4, 3, 3, requires_grad=True)
    np.testing.assert_array_equal(
        image_grid(x, ncol=2), image_grid(x.detach().unsqueeze(1), ncol=2)
    )


@pytest.mark.parametrize(
    "images",
    [
        torch.rand(2, 3, 4, 4),
        torch.rand(4, 4),
        torch.rand(2, 1, 1, 4, 4),
        torch.rand(0, 1, 4, 4),
    ],
    ids=["rgb", "single-image", "five-dims", "empty"],
)
def test_grid_rejects_anything_but_a_non_empty_single_channel_batch(
    images: torch.Tensor,
) -> None:
    with pytest.raises(ValueError, match="expected"):
        image_grid(images)


def test_show_images_draws_the_grid_in_grey_on_new_or_given_axes() -> None:
    images = torch.rand(7, 1, 4, 4)
    ax = show_images(images, ncol=4, title="samples")
    assert isinstance(ax, plt.Axes)
    assert ax.get_title() == "samples"
    (shown,) = ax.get_images()
    np.testing.assert_array_equal(shown.get_array(), image_grid(images, ncol=4))
    assert shown.get_clim() == (0, 1)

    _, given = plt.subplots()
    assert show_images(images, ax=given) is given


def test_training_curves_plot_one_line_per_curve_and_mark_the_kept_epoch() -> None:
    ax = training_curves(
        {"train": [3.0, 2.0, 1.5], "valid": [3.5, 2.5, 2.6]}, best_epoch=1
    )
    assert isinstance(ax, plt.Axes)
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["train", "valid", "kept"]
    np.testing.assert_array_equal(
        lines[0].get_xdata(), [1, 2, 3]
    )  # epochs count from 1
    np.testing.assert_array_equal(
        lines[2].get_xdata(), [2, 2]
    )  # best_epoch 1 is epoch 2


@pytest.mark.parametrize("best_epoch", [None, -1])
def test_training_curves_without_a_kept_epoch_draw_no_marker(best_epoch) -> None:
    ax = training_curves({"train": [1.0, 0.5]}, best_epoch=best_epoch)
    assert [line.get_label() for line in ax.get_lines()] == ["train"]


def test_show_images_keeps_a_new_figure_within_the_text_column() -> None:
    from companion.style import MAX_FIGURE_WIDTH

    narrow = show_images(torch.zeros(4, 1, 8, 8), ncol=4).figure
    wide = show_images(torch.zeros(40, 1, 8, 8), ncol=20).figure
    assert narrow.get_size_inches()[0] == pytest.approx(4 * 0.6)
    assert wide.get_size_inches()[0] == pytest.approx(MAX_FIGURE_WIDTH)
    plt.close("all")
