"""mmcourse.plots: image grids for imshow (torchvision's make_grid) and titled rows of images."""

from __future__ import annotations

import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from mmcourse.plots import image_grid, show_images  # noqa: E402


def _images(n, h=4, w=5, seed=0):
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_grid_without_padding_tiles_the_images_exactly():
    x = _images(6)
    grid = image_grid(x, nrow=3)
    assert isinstance(grid, np.ndarray) and grid.dtype == np.float32 and grid.shape == (2 * 4, 3 * 5, 3)
    # what the notebooks used to write by hand: rows of images concatenated along the width, then the rows stacked
    by_hand = torch.cat([torch.cat(list(x[r * 3 : (r + 1) * 3]), dim=2) for r in range(2)], dim=1).permute(1, 2, 0)
    np.testing.assert_array_equal(grid, by_hand.numpy())
    np.testing.assert_array_equal(image_grid(x), torch.cat(list(x), dim=2).permute(1, 2, 0).numpy())  # one row


def test_padding_separates_the_images_with_pad_value():
    x = torch.zeros(4, 3, 4, 5)
    grid = image_grid(x, nrow=2, padding=2, pad_value=1.0)
    assert grid.shape == (2 * (4 + 2) + 2, 2 * (5 + 2) + 2, 3)
    assert (grid[:2] == 1).all() and (grid[:, :2] == 1).all() and (grid[6:8] == 1).all()  # frame and gutter
    assert (grid[2:6, 2:7] == 0).all() and (grid[8:12, 9:14] == 0).all()  # first and last image


def test_an_incomplete_last_row_is_filled_with_pad_value():
    grid = image_grid(torch.zeros(3, 3, 2, 2), nrow=2, pad_value=1.0)
    assert grid.shape == (4, 4, 3) and (grid[2:, 2:] == 1).all() and (grid[2:, :2] == 0).all()


def test_one_image_and_grey_images():
    x = _images(1)[0]
    np.testing.assert_array_equal(image_grid(x), x.permute(1, 2, 0).numpy())
    grey = torch.rand(2, 1, 3, 3)
    grid = image_grid(grey)
    assert grid.shape == (3, 6, 3)
    np.testing.assert_array_equal(grid[..., 0], grid[..., 2])
    np.testing.assert_array_equal(grid[:, :3, 1], grey[0, 0].numpy())


def test_values_are_clipped_and_gradients_ignored():
    x = (torch.linspace(-1, 2, 3 * 2 * 2).view(1, 3, 2, 2)).requires_grad_()
    grid = image_grid(x.double())
    assert grid.dtype == np.float32 and grid.min() == 0.0 and grid.max() == 1.0


@pytest.mark.parametrize("bad", [torch.zeros(4, 4), torch.zeros(2, 2, 4, 4), torch.zeros(1, 2, 3, 4, 4), [[0.0]], torch.zeros(0, 3, 4, 4)])
def test_bad_images_are_explained(bad):
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)|at least one"):
        image_grid(bad)


def test_show_images_draws_one_titled_axes_per_image():
    import matplotlib.pyplot as plt

    show_images(_images(5), [f"image {i}" for i in range(5)], ncols=3, title="five images")
    fig = plt.gcf()
    drawn = [ax for ax in fig.axes if ax.images]
    assert len(fig.axes) == 6 and len(drawn) == 5
    assert [ax.get_title() for ax in drawn] == [f"image {i}" for i in range(5)]
    np.testing.assert_array_equal(drawn[4].images[0].get_array(), image_grid(_images(5)[4]))
    assert fig._suptitle.get_text() == "five images"
    plt.close(fig)
    with pytest.raises(ValueError, match="2 titles for 5 images"):
        show_images(_images(5), ["a", "b"])


def test_importing_the_module_does_not_import_torchvision():
    code = "import sys, mmcourse.plots; print('torchvision' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
