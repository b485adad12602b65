"""A guidance slider: move w and watch the samples of a few captions go from varied to uniform.

Sampling a diffusion model takes seconds on a CPU, far too slow for a slider, so the explorer
samples every w of its grid once, up front (the same starting noise for every w, so a column shows
one x_T guided more and more), and the slider only picks among the stored images: an interaction
draws one figure and never runs the model.
"""

from __future__ import annotations

from typing import Callable, Sequence

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch

from mmcourse.diffusion import sample
from mmcourse.plots import image_grid
from mmcourse.widgets.view import figure_view

Tensor = torch.Tensor


class GuidanceExplorer:
    """Samples of ``P`` captions, ``K`` each, at every guidance weight of a grid.

    ``samples`` maps each w to images (P, K, 3, S, S) in [0, 1]; ``captions`` has the P captions.
    ``metrics`` (optional) maps w to a dict with ``"fidelity"`` and ``"diversity"`` numbers, drawn as
    the curve beside the images with the current w marked. ``render(w)`` is the pure part (it snaps
    w to the nearest stored weight); ``widget()`` wraps it in a slider.
    """

    def __init__(self, samples: dict[float, Tensor], captions: Sequence[str],
                 metrics: dict[float, dict[str, float]] | None = None) -> None:
        if not samples:
            raise ValueError("need samples for at least one guidance weight")
        self.weights = sorted(float(w) for w in samples)
        self.samples = {float(w): x.detach().cpu() for w, x in samples.items()}
        shapes = {tuple(x.shape) for x in self.samples.values()}
        if len(shapes) != 1:
            raise ValueError(f"every w needs images of the same shape (P, K, 3, S, S), got {sorted(shapes)}")
        shape = shapes.pop()
        if len(shape) != 5 or shape[2] != 3:
            raise ValueError(f"samples must be (P captions, K samples, 3, S, S) tensors, got {shape}")
        if len(captions) != shape[0]:
            raise ValueError(f"{len(captions)} captions for samples of {shape[0]} captions")
        self.captions = list(captions)
        self.metrics = {float(w): m for w, m in (metrics or {}).items()}
        self.last_w: float | None = None
        self._fig = None
        self._widget = None

    @classmethod
    def from_model(cls, model, captions: Sequence[str], weights: Sequence[float], *, per_caption: int = 4,
                   steps: int = 25, seed: int = 0,
                   metric_fn: Callable[[Tensor, Sequence[str]], dict[str, float]] | None = None) -> "GuidanceExplorer":
        """Sample ``per_caption`` images of each caption at every w (``mmcourse.diffusion.sample``'s
        default sampler, ``steps`` steps, one seed for all w).

        ``metric_fn(images (P, K, 3, S, S), captions)``, if given, scores each w for the curve.
        """
        flat = [c for c in captions for _ in range(per_caption)]
        samples, metrics = {}, {}
        for w in weights:
            x = sample(model, flat, guidance_scale=float(w), steps=steps, seed=seed).cpu()
            samples[float(w)] = x.view(len(captions), per_caption, *x.shape[1:])
            if metric_fn is not None:
                metrics[float(w)] = metric_fn(samples[float(w)], captions)
        return cls(samples, captions, metrics or None)

    def nearest(self, w: float) -> float:
        """The stored guidance weight closest to ``w``."""
        return min(self.weights, key=lambda v: abs(v - float(w)))

    def grid(self, w: float) -> np.ndarray:
        """(P*S, K*S, 3) picture for ``imshow``: one row per caption, its K samples side by side."""
        x = self.samples[self.nearest(w)]  # (P, K, 3, S, S)
        return image_grid(x.flatten(0, 1), nrow=x.shape[1])

    def render(self, w: float):
        """The figure for ``w`` (snapped to the nearest stored weight): drawn once, then only the
        image, the title and the marker of the current w change."""
        w = self.nearest(w)
        self.last_w = w
        if self._fig is None:
            self._draw()
        self._image.set_data(self.grid(w))
        self._ax_img.set_title(f"w = {w:g}  (diffusers' guidance_scale {1 + w:g})", fontsize=10)
        if self._marker is not None:
            self._marker.set_xdata([w, w])
        return self._fig

    def _draw(self) -> None:
        first = self.weights[0]
        size = self.samples[first].shape[-1]
        with_curve = bool(self.metrics)
        fig, axes = plt.subplots(1, 2 if with_curve else 1, figsize=(10 if with_curve else 6, 4.2),
                                 gridspec_kw={"width_ratios": [3, 2]} if with_curve else None)
        ax_img = axes[0] if with_curve else axes
        self._image = ax_img.imshow(self.grid(first), interpolation="nearest")
        ax_img.set_yticks([size * (i + 0.5) for i in range(len(self.captions))], self.captions, fontsize=8)
        ax_img.set_xticks([])
        self._marker = None
        if with_curve:
            ax = axes[1]
            ws = sorted(self.metrics)
            ax.plot(ws, [self.metrics[v]["fidelity"] for v in ws], "o-", color="tab:blue")
            ax.set_xlabel("guidance weight w")
            ax.set_ylabel("fidelity (classifier accuracy)", color="tab:blue")
            ax.set_ylim(0, 1.05)
            ax2 = ax.twinx()
            ax2.plot(ws, [self.metrics[v]["diversity"] for v in ws], "s--", color="tab:orange")
            ax2.set_ylabel("diversity (pixel std within a caption)", color="tab:orange")
            self._marker = ax.axvline(first, color="black", lw=1)
            ax.set_title("fidelity vs diversity", fontsize=10)
        ax_img.set_title(" ", fontsize=10)  # room for the title render() writes
        fig.tight_layout()
        plt.close(fig)  # kept and redrawn by the widget, not shown by pyplot
        self._fig, self._ax_img = fig, ax_img

    def widget(self, w: float | None = None):
        """The interactive view: a slider over the stored weights above the figure."""
        self.slider = widgets.SelectionSlider(options=[(f"{v:g}", v) for v in self.weights],
                                              value=self.nearest(self.weights[0] if w is None else w), description="w",
                                              continuous_update=True, layout=widgets.Layout(width="60%"))
        self._widget = figure_view(self.slider, self.render)
        return self._widget
