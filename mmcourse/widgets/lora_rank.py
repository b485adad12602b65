"""A rank slider over precomputed LoRA results: accuracy, trainable parameters and training memory per rank."""

from __future__ import annotations

from typing import Sequence

import ipywidgets as w
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, NullLocator

from mmcourse.widgets.view import figure_view


def _bytes(v: float, _=None) -> str:
    """Decimal units for a byte count: 100 B, 45 kB, 1.5 MB."""
    for unit, size in (("MB", 1e6), ("kB", 1e3)):
        if v >= size:
            return f"{v / size:.3g} {unit}"
    return f"{v:.0f} B"


class RankExplorer:
    """``summary``: the rows of ``benchmarks/results/lora_sweep.json``'s ``"summary"`` (one per configuration,
    with ``method``, ``r``, ``trainable``, ``french``, ``french_sd``, ``gradient_bytes``, ``optimizer_bytes``).
    ``render(r)`` is the pure part: the accuracy-vs-parameters curve with rank ``r`` marked, and a bar chart of
    what training holds in memory at that rank against full fine-tuning."""

    METHODS = ("lora-qv", "lora-all")
    COLORS = {"lora-qv": "tab:blue", "lora-all": "tab:orange"}
    FLOOR = 0.6  # accuracy axis starts here; configurations below it are marked at the floor

    def __init__(self, summary: Sequence[dict]) -> None:
        self.rows = {(e["method"], e["r"]): e for e in summary if e["method"] in self.METHODS}
        self.ranks = sorted({r for _, r in self.rows})
        if not self.ranks:
            raise ValueError("the summary holds no LoRA rows (method 'lora-qv' or 'lora-all')")
        self.others = [e for e in summary if e["method"] not in self.METHODS]
        self.full = next(e for e in summary if e["method"] == "full")
        self._fig = None

    def _draw(self) -> None:
        fig, (ax, bx) = plt.subplots(1, 2, figsize=(10.5, 3.6), gridspec_kw={"width_ratios": [3, 2]},
                                     dpi=80)  # fewer pixels: each move of the slider re-renders the PNG
        for m in self.METHODS:
            rows = [self.rows[(m, r)] for r in self.ranks if (m, r) in self.rows]
            ax.errorbar([e["trainable"] for e in rows], [e["french"] for e in rows], yerr=[e["french_sd"] for e in rows],
                        marker="o", ms=4, capsize=2, color=self.COLORS[m], label=f"LoRA on {m.split('-')[1]}")
        for e in self.others:
            if e["french"] < self.FLOOR:  # far below the others: an arrow at the floor, its value in the label
                ax.plot([e["trainable"]], [self.FLOOR + 0.01], marker="v", ms=6, color="gray")
                ax.annotate(f"{e['config']} ({e['french']:.2f})", (e["trainable"], self.FLOOR + 0.01), fontsize=7,
                            xytext=(5, -3), textcoords="offset points")
                continue
            ax.errorbar([e["trainable"]], [e["french"]], yerr=[e["french_sd"]], marker="s", ms=5, capsize=2, ls="none",
                        color="gray")
            ax.annotate(e["config"], (e["trainable"], e["french"]), fontsize=7, xytext=(4, -10), textcoords="offset points")
        self._marks = {m: ax.scatter([], [], s=140, facecolors="none", edgecolors="black", zorder=4) for m in self.METHODS}
        ax.set_xscale("log")
        # plain tick labels and no minor ticks: a redraw re-renders the whole PNG, so fewer artists answer faster
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_ylim(self.FLOOR, 1.01)
        ax.set_xlabel("trainable parameters (log scale)")
        ax.set_ylabel("64-way accuracy, French prompts")
        ax.legend(fontsize=8, loc="lower right")
        self._bars = bx.bar(["LoRA q,v", "LoRA all", "full"], [1, 1, 1], color=["tab:blue", "tab:orange", "gray"])
        bx.set_yscale("log")
        bx.yaxis.set_major_formatter(FuncFormatter(_bytes))
        bx.yaxis.set_minor_locator(NullLocator())
        bx.set_ylim(1e2, 10 * (self.full["gradient_bytes"] + self.full["optimizer_bytes"]))
        bx.set_ylabel("gradient + AdamW state")
        self._labels = [bx.text(i, 1, "", ha="center", va="bottom", fontsize=8) for i in range(3)]
        fig.tight_layout(rect=(0, 0, 1, 0.92))  # room for the titles set in render
        plt.close(fig)  # kept and redrawn by the widget
        self._fig, self._ax, self._bx = fig, ax, bx

    def render(self, r: int):
        """The figure for rank ``r`` (one of ``self.ranks``)."""
        if r not in self.ranks:
            raise ValueError(f"no results for rank {r}; ranks: {self.ranks}")
        if self._fig is None:
            self._draw()
        values = []
        for m in self.METHODS:
            e = self.rows.get((m, r))
            self._marks[m].set_offsets([[e["trainable"], e["french"]]] if e else [[float("nan"), float("nan")]])
            values.append(e["gradient_bytes"] + e["optimizer_bytes"] if e else 0)
        values.append(self.full["gradient_bytes"] + self.full["optimizer_bytes"])
        for bar, label, v in zip(self._bars, self._labels, values):
            bar.set_height(max(v, 1))
            label.set_position((bar.get_x() + bar.get_width() / 2, max(v, 1)))
            label.set_text(_bytes(v))
        qv, al = self.rows.get(("lora-qv", r)), self.rows.get(("lora-all", r))
        self._ax.set_title(f"r = {r}: q,v {qv['french']:.3f} with {qv['trainable']:,} params; all {al['french']:.3f} "
                           f"with {al['trainable']:,}", fontsize=9)
        self._bx.set_title("memory training adds (counted)", fontsize=9)
        return self._fig

    def widget(self, r: int | None = None):
        """A slider over the ranks above the figure, starting at the rank nearest ``r``."""
        start = self.ranks[len(self.ranks) // 2] if r is None else min(self.ranks, key=lambda k: abs(k - r))
        self.slider = w.SelectionSlider(options=self.ranks, value=start,
                                        description="rank r", continuous_update=False, layout=w.Layout(width="60%"))
        return figure_view(self.slider, self.render)
