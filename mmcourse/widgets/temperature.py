"""A temperature explorer: slide tau and watch one row's softmax sharpen and the batch loss move."""

from __future__ import annotations

from typing import Sequence

import ipywidgets as w
import matplotlib.pyplot as plt
import torch

from mmcourse.losses import check_feature_pairs, clip_loss
from mmcourse.widgets.view import figure_view

Tensor = torch.Tensor


class TemperatureExplorer:
    """One batch of (image, text) pairs, seen through a temperature.

    ``image_emb``/``text_emb``: (N, D) paired embeddings (normalised here). ``row`` picks the image
    whose softmax over the N captions is drawn; ``labels`` names the captions on the bar chart.
    ``render(tau)`` is the pure part; the widget calls it whenever the slider moves.
    """

    def __init__(self, image_emb: Tensor, text_emb: Tensor, labels: Sequence[str], *, row: int = 0,
                 taus: Sequence[float] | None = None) -> None:
        check_feature_pairs(image_emb, text_emb)
        if len(labels) != image_emb.shape[0]:
            raise ValueError(f"{len(labels)} labels for {image_emb.shape[0]} captions")
        if not 0 <= row < image_emb.shape[0]:
            raise ValueError(f"row must be in 0..{image_emb.shape[0] - 1}, got {row}")
        self.image_emb = torch.nn.functional.normalize(image_emb.double(), dim=1)
        self.text_emb = torch.nn.functional.normalize(text_emb.double(), dim=1)
        self.cosines = self.image_emb @ self.text_emb.T  # (N, N)
        self.labels, self.row = list(labels), row
        self.taus = torch.logspace(-2.5, 1, 60, dtype=torch.float64) if taus is None else torch.tensor(taus, dtype=torch.float64)
        self.curve = torch.stack([self.loss(t.item()) for t in self.taus])
        self._widget = None
        self._fig = None

    def probabilities(self, tau: float) -> Tensor:
        """(N,) softmax of the chosen image's cosines divided by tau."""
        return torch.softmax(self.cosines[self.row] / tau, dim=0)

    def loss(self, tau: float) -> Tensor:
        """The symmetric CLIP loss of the whole batch at logit scale 1/tau."""
        return clip_loss(self.image_emb, self.text_emb, 1.0 / tau)

    def render(self, tau: float):
        """The figure for ``tau``: drawn once, then only the bars, the marker and the title change."""
        if not tau > 0:
            raise ValueError(f"the temperature must be positive, got {tau}")
        if self._fig is None:
            self._draw()
        p = self.probabilities(tau)
        for bar, height in zip(self._bars, p.tolist()):
            bar.set_height(height)
        self._marker.set_offsets([[tau, self.loss(tau).item()]])
        self._ax_bar.set_title(f"softmax over the captions for image {self.row} (green: its caption), "
                               f"tau = {tau:.3g}, scale = {1 / tau:.3g}", fontsize=9)
        return self._fig

    def _draw(self) -> None:
        n = self.cosines.shape[0]
        fig, (ax_bar, ax_loss) = plt.subplots(1, 2, figsize=(10, 3.4), gridspec_kw={"width_ratios": [3, 2]})
        colors = ["tab:green" if j == self.row else "tab:gray" for j in range(n)]
        self._bars = ax_bar.bar(range(n), [0.0] * n, color=colors)
        ax_bar.set_xticks(range(n), self.labels, rotation=40, ha="right", fontsize=7)
        ax_bar.set_ylim(0, 1)
        ax_bar.set_ylabel("probability")
        ax_loss.plot(self.taus.numpy(), self.curve.numpy(), color="tab:blue")
        ax_loss.axhline(torch.log(torch.tensor(float(n))).item(), ls=":", color="gray", label="ln N (uniform)")
        self._marker = ax_loss.scatter([0.07], [self.loss(0.07).item()], color="black", zorder=3, label="current tau")
        ax_loss.axvline(0.07, ls="--", color="tab:orange", lw=1, label="CLIP's start, 0.07")
        ax_loss.axvline(0.01, ls="--", color="tab:red", lw=1, label="the clamp, 1/100")
        ax_loss.set_xscale("log")
        ax_loss.set_xlabel("temperature tau")
        ax_loss.set_ylabel("CLIP loss of the batch")
        ax_loss.legend(fontsize=7)
        ax_bar.set_title("softmax over the captions", fontsize=9)
        fig.tight_layout()
        plt.close(fig)  # kept and redrawn by the widget, not shown by pyplot
        self._fig, self._ax_bar = fig, ax_bar

    def widget(self, tau: float = 0.07):
        """The interactive view: a (log-scale) slider for tau above the figure."""
        self.slider = w.FloatLogSlider(value=tau, base=10, min=-2.5, max=1, step=0.05, description="tau",
                                       readout_format=".3f", continuous_update=False, layout=w.Layout(width="60%"))
        self._widget = figure_view(self.slider, self.render)
        return self._widget
