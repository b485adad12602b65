"""Pictures of image tensors, for notebooks and widgets.

Image tensors are ``(N, 3, H, W)`` (channels first, values in [0, 1]); matplotlib's ``imshow`` wants
``(H, W, 3)``. ``image_grid`` lays a batch out as one picture with ``torchvision.utils.make_grid``
and hands back what ``imshow`` (or an image's ``set_data``) takes; ``show_images`` draws a batch
with a title over each image.

torchvision is imported on first use: importing it takes about 1.5 s, which ``import mmcourse``
should not pay.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

Tensor = torch.Tensor


def image_grid(images: Tensor, *, nrow: int | None = None, padding: int = 0, pad_value: float = 1.0) -> np.ndarray:
    """One picture of a batch: a float32 array (H', W', 3) in [0, 1], ready for ``plt.imshow``.

    ``images``: (N, C, H, W) with C = 3 (or 1, drawn grey), values in [0, 1] (clipped), on any device;
    one image (C, H, W) is drawn as it is. ``nrow``: images per row (default: all in one row).
    ``padding``: pixels of ``pad_value`` (1 = white) between and around the images; with the default 0,
    image k of a row spans columns ``k * W ... (k + 1) * W - 1``, so tick labels can be placed by hand.
    """
    from torchvision.utils import make_grid  # lazy: see the module docstring

    if not isinstance(images, Tensor) or images.ndim not in (3, 4) or images.shape[-3] not in (1, 3):
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"expected images (N, 3, H, W) or one image (3, H, W) in [0, 1], got {shape}")
    x = images.detach().float().cpu().clamp(0, 1)
    if x.ndim == 3:
        x = x[None]
    if len(x) == 0:
        raise ValueError("expected at least one image, got an empty batch")
    grid = make_grid(x, nrow=nrow or len(x), padding=padding, pad_value=pad_value)  # (3, H', W')
    return grid.permute(1, 2, 0).numpy()


def show_images(images: Tensor, titles: Sequence[str] | None = None, *, ncols: int | None = None,
                size: float = 1.3, title: str | None = None, fontsize: int = 7) -> None:
    """Draw images (N, 3, H, W) in [0, 1] side by side, ``ncols`` per row (default: one row), with
    ``titles[i]`` over image i and ``title`` over the figure; shows the figure (``plt.show()``).

    Each image gets its own axes (so each can carry a title), ``size`` inches wide.
    """
    import matplotlib.pyplot as plt

    if titles is not None and len(titles) != len(images):
        raise ValueError(f"{len(titles)} titles for {len(images)} images")
    ncols = ncols or len(images)
    nrows = -(-len(images) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * 1.25 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            ax.imshow(image_grid(images[i]), interpolation="nearest")
            if titles is not None:
                ax.set_title(titles[i], fontsize=fontsize)
    if title:
        fig.suptitle(title, fontsize=10)
    plt.tight_layout()
    plt.show()
