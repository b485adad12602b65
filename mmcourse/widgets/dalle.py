"""Sample, then re-rank: type a caption, see K samples of the DALL-E model ordered by CLIP's score."""

from __future__ import annotations

import ipywidgets as w
import matplotlib.pyplot as plt
import torch
from IPython.display import display

from mmcourse.dalle import sample_and_rerank
from mmcourse.plots import image_grid

Tensor = torch.Tensor


class RerankExplorer:
    """``model``: a DALL-E model (``mmcourse.models.DALLE``); ``clip``: the re-ranker (``encode_image``,
    ``encode_text``); ``k`` samples per caption, drawn with ``seed`` at ``temperature`` / ``top_k``.
    ``render(caption)`` is the pure part (it samples, scores and draws); the widget calls it on every
    new caption. The figure is drawn once and then updated in place."""

    def __init__(self, model, clip, *, k: int = 8, seed: int = 0, temperature: float = 1.0, top_k: int | None = None):
        if not isinstance(k, int) or not 1 <= k <= 32:
            raise ValueError(f"k must be an int in 1..32, got {k!r}")
        self.model, self.clip, self.k, self.seed = model, clip, k, seed
        self.temperature, self.top_k = temperature, top_k
        self.last_scores: Tensor | None = None
        self.last_images: Tensor | None = None
        self._fig = None

    def sample(self, caption: str) -> tuple[Tensor, Tensor]:
        """(K images best first, K CLIP scores descending) for one caption; ValueError for an empty one."""
        if not isinstance(caption, str) or not caption.strip():
            raise ValueError("type a caption, e.g. 'a red circle'")
        return sample_and_rerank(self.model, self.clip, caption.strip(), self.k, seed=self.seed,
                                 temperature=self.temperature, top_k=self.top_k)

    def render(self, caption: str = "a red circle"):
        images, scores = self.sample(caption)
        self.last_images, self.last_scores = images, scores
        if self._fig is None:
            self._draw()
        for i, (ax, im) in enumerate(zip(self._axes, self._ims)):
            im.set_data(image_grid(images[i]))
            ax.set_title(f"#{i + 1}: {scores[i]:.3f}", fontsize=8, color="tab:green" if i == 0 else "black")
        unknown = self.model.tokenizer.unknown_words(caption)
        note = f"  (unknown words, read as <unk>: {', '.join(unknown)})" if unknown else ""
        self._fig.suptitle(f'"{caption.strip()[:60]}": {self.k} samples, best CLIP score first{note}', fontsize=9)
        return self._fig

    def _draw(self) -> None:
        cols = min(self.k, 8)
        rows = (self.k + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.45 * rows + 0.4), squeeze=False)
        blank = torch.zeros(3, self.model.grid * 4, self.model.grid * 4)
        self._axes = [ax for row in axes for ax in row][: self.k]
        self._ims = [ax.imshow(image_grid(blank), interpolation="nearest") for ax in self._axes]
        for ax in [a for row in axes for a in row]:
            ax.set_xticks([])
            ax.set_yticks([])
        fig.tight_layout()
        plt.close(fig)  # kept and redrawn by the widget, not shown by pyplot
        self._fig = fig

    def widget(self, caption: str = "a red circle"):
        box = w.Text(value=caption, description="caption", continuous_update=False, layout=w.Layout(width="60%"))
        message = w.HTML()
        out = w.Output()

        def update(change=None):
            try:
                fig = self.render(box.value)
            except ValueError as err:  # an empty caption, a bad setting: say so, keep the last figure
                message.value = f"<span style='color:#b00'>{err}</span>"
                return
            message.value = ""
            with out:
                out.clear_output(wait=True)
                display(fig)

        box.observe(update, names="value")
        update()
        self.caption_box = box
        return w.VBox([box, message, out])
