"""Few-shot explorer: pick a number of shots and a method, see its point on the measured curves and what it
predicts for a handful of test images (all read from the committed benchmark, so it answers at once)."""

from __future__ import annotations

from typing import Sequence

import ipywidgets as w
import matplotlib.pyplot as plt
import torch
from IPython.display import display

from mmcourse.plots import image_grid

Tensor = torch.Tensor


class FewShotExplorer:
    """``results``: the benchmark's json (``curves``, ``predictions``, ``shots``, ``hand``); ``images``: the first
    test images (N, 3, H, W) the predictions were made for, as shown to the model; ``labels`` (N,);
    ``classnames``. ``render(shots, method)`` is the pure part; the widget calls it on every change."""

    def __init__(self, results: dict, images: Tensor, labels: Sequence[int], classnames: Sequence[str]) -> None:
        self.curves = results["curves"]
        self.predictions = results["predictions"]
        self.shots = [int(k) for k in results["shots"]]
        self.hand = max(results["hand"].values())
        self.methods = list(self.curves)
        n = len(next(iter(self.predictions.values())))
        if images.ndim != 4 or len(images) < n:
            raise ValueError(f"need the {n} test images the predictions were made for, got {tuple(images.shape)}")
        self.images, self.labels = images[:n].cpu(), [int(y) for y in labels][:n]
        self.classnames = list(classnames)
        self._fig = None

    def point(self, shots: int, method: str) -> tuple[float, float]:
        """(mean, standard deviation) accuracy of ``method`` at ``shots`` over the benchmark's seeds."""
        if method not in self.curves:
            raise ValueError(f"unknown method {method!r}; choose one of {', '.join(map(repr, self.methods))}")
        if shots not in self.shots:
            raise ValueError(f"shots must be one of {self.shots}, got {shots!r}")
        v = torch.tensor(self.curves[method][str(shots)], dtype=torch.float64)
        return v.mean().item(), (v.std().item() if len(v) > 1 else 0.0)

    def predicted(self, shots: int, method: str) -> list[str]:
        self.point(shots, method)
        return [self.classnames[j] for j in self.predictions[f"{method}|{shots}"]]

    def render(self, shots: int = 16, method: str = "CoOp"):
        """The figure for ``shots`` and ``method``: drawn on the first call, updated in place after that."""
        names = self.predicted(shots, method)
        mean, sd = self.point(shots, method)
        if self._fig is None:
            self._draw(len(names))
        for m, line in self._lines.items():
            line.set_linewidth(2.5 if m == method else 1)
            line.set_alpha(1 if m == method else 0.4)
        self._star.set_data([shots], [100 * mean])
        self._bar.set_data([shots, shots], [100 * (mean - sd), 100 * (mean + sd)])
        self._ax.set_title(f"{method}, {shots} shots: {100 * mean:.1f} ± {100 * sd:.1f} %", fontsize=9)
        for i, name in enumerate(names):
            right = name == self.classnames[self.labels[i]]
            self._titles[i].set_text(name)
            self._titles[i].set_color("tab:green" if right else "tab:red")
        return self._fig

    def _draw(self, n: int) -> None:
        """Two axes only (the curves, and all images as one mosaic with a label under each): a redraw is cheap."""
        half = (n + 1) // 2
        fig, (ax, mosaic) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [1.1, 1.4]})
        self._lines = {}
        for m in self.methods:
            means = [self.point(k, m)[0] * 100 for k in self.shots]
            (self._lines[m],) = ax.plot(self.shots, means, "o-", ms=3, label=m)
        ax.axhline(100 * self.hand, color="black", ls="--", lw=1, label="best hand prompt")
        (self._bar,) = ax.plot([], [], color="black", lw=2, zorder=5)
        (self._star,) = ax.plot([], [], "*", ms=14, color="black", zorder=6)
        ax.set_title("placeholder", fontsize=9)  # room for the title, kept by tight_layout
        ax.set_xscale("log", base=2)
        ax.set_xticks(self.shots, [str(k) for k in self.shots])
        ax.set_xlabel("labelled images per class")
        ax.set_ylabel("accuracy (%)")
        ax.legend(fontsize=6, loc="lower right")
        size = self.images.shape[-1]
        pad = size // 2  # room for a label under each image
        canvas = torch.ones(3, 2 * (size + pad), half * (size + 4))
        for i in range(n):
            r, c = divmod(i, half)
            canvas[:, r * (size + pad):r * (size + pad) + size, c * (size + 4):c * (size + 4) + size] = self.images[i]
        mosaic.imshow(image_grid(canvas), interpolation="nearest")
        mosaic.axis("off")
        self._titles = [mosaic.text((i % half) * (size + 4) + size / 2, (i // half) * (size + pad) + size + 2, "",
                                    ha="center", va="top", fontsize=7) for i in range(n)]
        fig.tight_layout()
        self._fig, self._ax = fig, ax

    def widget(self, shots: int = 16, method: str = "CoOp"):
        shots_control = w.SelectionSlider(options=self.shots, value=shots, description="shots")
        method_control = w.ToggleButtons(options=self.methods, value=method, style={"button_width": "140px"})
        out = w.Output()

        def update(change=None):
            with out:
                out.clear_output(wait=True)
                display(self.render(shots_control.value, method_control.value))

        shots_control.observe(update, names="value")
        method_control.observe(update, names="value")
        update()
        plt.close(self._fig)  # shown through the output widget; pyplot need not keep it
        return w.VBox([w.HBox([shots_control]), method_control, out])
