"""A retrieval explorer: type or pick a caption, see the nearest images and where they sit in the space."""

from __future__ import annotations

from typing import Callable, Sequence

import ipywidgets as w
import matplotlib.pyplot as plt
import torch

from mmcourse.plots import image_grid
from mmcourse.retrieval import cosine_similarity
from mmcourse.widgets.view import figure_view

Tensor = torch.Tensor

THUMB_PADDING = 2  # white pixels between the thumbnails


def pca_2d(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Mean (D,), top-2 principal directions (D, 2) and the projected rows (N, 2) of ``x`` (N, D)."""
    x = x.double()
    mean = x.mean(0)
    _, _, v = torch.linalg.svd(x - mean, full_matrices=False)
    basis = v[:2].T
    return mean, basis, (x - mean) @ basis


class RetrievalExplorer:
    """Text-to-image retrieval over a gallery, shown as the top-k images and a 2-D map of the space.

    ``embed_text`` maps a list of captions to (N, D) embeddings in the same space as ``image_emb``
    (N_gallery, D). ``render(text)`` is the pure part (returns a matplotlib figure and the indices
    retrieved); the widget calls it on every change of the caption box.
    """

    def __init__(
        self,
        images: Tensor,
        image_emb: Tensor,
        embed_text: Callable[[list[str]], Tensor],
        examples: Sequence[str],
        *,
        point_colors: Sequence[str] | None = None,
        k: int = 8,
    ) -> None:
        if images.shape[0] != image_emb.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {image_emb.shape[0]} embeddings")
        if not examples:
            raise ValueError("give at least one example caption")
        self.images, self.image_emb, self.embed_text, self.k = images, image_emb.double(), embed_text, k
        self.point_colors = list(point_colors) if point_colors is not None else ["tab:blue"] * images.shape[0]
        unit = torch.nn.functional.normalize(self.image_emb, dim=1)
        self._mean, self._basis, self._xy = pca_2d(unit)
        self.examples = list(examples)
        self.last_indices: list[int] = []
        self._fig = None
        self._widget = None

    def search(self, text: str) -> tuple[list[int], list[float], Tensor]:
        """Indices and cosine scores of the top-k images for ``text``, and the query's 2-D position."""
        q = self.embed_text([text]).double()
        sim = cosine_similarity(q, self.image_emb)[0]
        top = sim.topk(self.k)
        xy = (torch.nn.functional.normalize(q, dim=1) - self._mean) @ self._basis
        return top.indices.tolist(), top.values.tolist(), xy[0]

    def render(self, text: str):
        """A figure: the top-k images in two rows (with their cosine scores) and the 2-D map.

        Drawn once; later calls only swap the thumbnails, scores, circles, star and title."""
        idx, scores, qxy = self.search(text)
        self.last_indices = idx
        if self._fig is None:
            self._draw()
        self._grid.set_data(self._thumbnails(self.images[idx]))
        for j, label in enumerate(self._scores):
            label.set_text(f"{j + 1}: {scores[j]:.2f}" if j < len(scores) else "")
        self._top.set_offsets(self._xy.numpy()[idx])
        self._query.set_offsets([[qxy[0].item(), qxy[1].item()]])
        self._ax_map.set_title(f"image embeddings, first two principal components\nquery: {text!r}", fontsize=9)
        return self._fig

    def _thumbnails(self, images: Tensor):
        """The top-k images in two rows, with white lines between them: (H', W', 3) for ``imshow``."""
        return image_grid(images, nrow=(self.k + 1) // 2, padding=THUMB_PADDING)

    def _draw(self) -> None:
        cols = (self.k + 1) // 2
        h, w = self.images.shape[2] + THUMB_PADDING, self.images.shape[3] + THUMB_PADDING  # a thumbnail's cell
        fig, (ax_img, ax_map) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [cols, 3]})
        self._grid = ax_img.imshow(self._thumbnails(torch.ones(self.k, *self.images.shape[1:])), interpolation="nearest")
        self._scores = [ax_img.text((j % cols) * w + 3, (j // cols) * h + 1, "", fontsize=7, va="top",
                                    bbox={"facecolor": "white", "alpha": 0.7, "pad": 1, "linewidth": 0})
                        for j in range(self.k)]
        ax_img.set_title(f"top {self.k} images (rank: cosine)", fontsize=9)
        ax_img.axis("off")
        xy = self._xy.numpy()
        ax_map.scatter(xy[:, 0], xy[:, 1], s=8, c=self.point_colors, alpha=0.35, linewidths=0)
        self._top = ax_map.scatter(xy[: self.k, 0], xy[: self.k, 1], s=40, facecolors="none", edgecolors="black",
                                   label=f"top {self.k}")
        self._query = ax_map.scatter([0.0], [0.0], marker="*", s=250, c="black", label="the caption")
        ax_map.set_title("image embeddings, first two principal components\nquery", fontsize=9)
        ax_map.set_xlabel("PC 1")
        ax_map.set_ylabel("PC 2")
        ax_map.legend(loc="upper right", fontsize=8)  # a fixed place: "best" searches all points on every draw
        fig.tight_layout()
        plt.close(fig)  # kept and redrawn by the widget, not shown by pyplot
        self._fig, self._ax_map = fig, ax_map

    def widget(self):
        """The interactive view: a caption box (with examples) above the rendered results."""
        box = w.Combobox(value=self.examples[0], options=self.examples, description="caption", ensure_option=False,
                         layout=w.Layout(width="60%"), continuous_update=False)
        self.query_box = box
        self._widget = figure_view(box, self.render)
        return self._widget
