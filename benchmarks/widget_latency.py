"""Latency of notebook 01's retrieval explorer: one caption change = embed, search, draw (budget 200 ms).

    python benchmarks/widget_latency.py

Builds the same gallery and CCA space as notebook 01, then times `render` (the work one widget
interaction does, matplotlib drawing to PNG included) over several captions.
"""

from __future__ import annotations

import io
import os
import platform
import statistics
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import mmcourse  # noqa: E402
from mmcourse.cca import fit_cca  # noqa: E402
from mmcourse.data import make_shapes  # noqa: E402
from mmcourse.data.shapes import RGB  # noqa: E402
from mmcourse.models import bag_of_words  # noqa: E402
from mmcourse.widgets.retrieval import RetrievalExplorer  # noqa: E402

CAPTIONS = ["a red square", "a crimson box", "a pink diamond", "a sketch of a green star", "a vermilion square", "a big blue moon"]


def main() -> None:
    mmcourse.start(0, quiet=True)
    model = mmcourse.pretrained.load("attributes_shapes")
    train = make_shapes(2000, seed=1, split="train")
    gallery = make_shapes(1000, seed=6, split="all")
    with torch.no_grad():
        cca = fit_cca(model.features(train.images), bag_of_words(train.captions), dim=16)
        img_emb = cca.transform_x(model.features(gallery.images))
    explorer = RetrievalExplorer(gallery.images, img_emb, lambda t: cca.transform_y(bag_of_words(t)), CAPTIONS,
                                 point_colors=[RGB[c] for c in gallery.colors])
    times = []
    for _ in range(3):
        for caption in CAPTIONS:
            start = time.perf_counter()
            fig = explorer.render(caption)
            fig.savefig(io.BytesIO(), format="png")  # what the front end receives
            plt.close(fig)
            times.append((time.perf_counter() - start) * 1e3)
    times = times[len(CAPTIONS):]  # the first round warms matplotlib up
    table = "\n".join([
        "Notebook 01 retrieval explorer: one caption change (embed + search + draw + PNG), `python benchmarks/widget_latency.py`",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "",
        "| interactions | median | max | budget |",
        "| --- | --- | --- | --- |",
        f"| {len(times)} | {statistics.median(times):.0f} ms | {max(times):.0f} ms | 200 ms |",
    ])
    print(table)
    (Path(__file__).parent / "results" / "widget_latency.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
