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
        names = self.predicted(shots, method)
        if self._fig is None:
            self._fig = plt.figure(figsize=(11, 3.6))
        fig = self._fig
        fig.clear()
        grid = fig.add_gridspec(2, 1 + len(names) // 2, width_ratios=[2.2] + [1] * (len(names) // 2))
        ax = fig.add_subplot(grid[:, 0])
        for m in self.methods:
            means = [self.point(k, m)[0] * 100 for k in self.shots]
            ax.plot(self.shots, means, "o-" if m == method else ".-", lw=2.5 if m == method else 1, label=m,
                    alpha=1 if m == method else 0.5)
        ax.axhline(100 * self.hand, color="black", ls="--", lw=1, label="best hand prompt")
        mean, sd = self.point(shots, method)
        ax.errorbar([shots], [100 * mean], yerr=[100 * sd], fmt="*", ms=14, color="tab:red", zorder=5)
        ax.set_xscale("log", base=2)
        ax.set_xticks(self.shots, [str(k) for k in self.shots])
        ax.set_xlabel("labelled images per class")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{method}, {shots} shots: {100 * mean:.1f} ± {100 * sd:.1f} %", fontsize=9)
        ax.legend(fontsize=6, loc="lower right")
        for i, name in enumerate(names):
            sub = fig.add_subplot(grid[i // (len(names) // 2), 1 + i % (len(names) // 2)])
            sub.imshow(image_grid(self.images[i]), interpolation="nearest")
            right = name == self.classnames[self.labels[i]]
            sub.set_title(name, fontsize=7, color="tab:green" if right else "tab:red")
            sub.axis("off")
        fig.tight_layout()
        return fig

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
