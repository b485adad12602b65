"""A retrieval explorer: type or pick a caption, see the nearest images and where they sit in the space."""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from mmcourse.retrieval import cosine_similarity

Tensor = torch.Tensor


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
        self._widget = None

    def search(self, text: str) -> tuple[list[int], list[float], Tensor]:
        """Indices and cosine scores of the top-k images for ``text``, and the query's 2-D position."""
        q = self.embed_text([text]).double()
        sim = cosine_similarity(q, self.image_emb)[0]
        top = sim.topk(self.k)
        xy = (torch.nn.functional.normalize(q, dim=1) - self._mean) @ self._basis
        return top.indices.tolist(), top.values.tolist(), xy[0]

    def render(self, text: str):
        import matplotlib.pyplot as plt

        idx, scores, qxy = self.search(text)
        self.last_indices = idx
        fig = plt.figure(figsize=(10, 3.6), layout="constrained")
        grid = fig.add_gridspec(2, self.k // 2 + 3)
        for j, (i, s) in enumerate(zip(idx, scores)):
            ax = fig.add_subplot(grid[j // (self.k // 2), j % (self.k // 2)])
            ax.imshow(self.images[i].permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_title(f"#{j + 1}  cos {s:.2f}", fontsize=8)
            ax.axis("off")
        ax = fig.add_subplot(grid[:, self.k // 2 :])
        xy = self._xy.numpy()
        ax.scatter(xy[:, 0], xy[:, 1], s=8, c=self.point_colors, alpha=0.35, linewidths=0)
        ax.scatter(xy[idx, 0], xy[idx, 1], s=40, facecolors="none", edgecolors="black", label=f"top {self.k}")
        ax.scatter([qxy[0].item()], [qxy[1].item()], marker="*", s=250, c="black", label="the caption")
        ax.set_title(f"image embeddings, first two principal components\nquery: {text!r}", fontsize=9)
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        ax.legend(loc="best", fontsize=8)
        return fig

    def widget(self):
        """The interactive view: a caption box (with examples) above the rendered results."""
        import ipywidgets as w
        import matplotlib.pyplot as plt
        from IPython.display import display

        box = w.Combobox(value=self.examples[0], options=self.examples, description="caption", ensure_option=False,
                         layout=w.Layout(width="60%"), continuous_update=False)
        out = w.Output()

        def update(change=None):
            with out:
                out.clear_output(wait=True)
                fig = self.render(box.value)
                display(fig)
                plt.close(fig)

        box.observe(update, names="value")
        update()
        self._widget = w.VBox([box, out])
        self.query_box = box
        return self._widget
