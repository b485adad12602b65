"""Latency of the course widgets: one interaction = compute + draw + PNG (budget 200 ms).

    python benchmarks/widget_latency.py

* notebook 01's retrieval explorer: the same gallery and CCA space as the notebook, several captions;
* notebook 02's temperature explorer: the same eight pairs as the notebook, several values of tau;
* notebook 03's prompt playground: the notebook's six images, several templates and class lists;
* notebook 08's guidance slider: the notebook's four captions x 4 samples at seven weights, with the
  fidelity/diversity curve (the samples are drawn once, up front; an interaction only draws).

Each times `render` (the work one widget interaction does, matplotlib drawing to PNG included).
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
from mmcourse.widgets.guidance import GuidanceExplorer  # noqa: E402
from mmcourse.widgets.prompts import PromptPlayground  # noqa: E402
from mmcourse.widgets.retrieval import RetrievalExplorer  # noqa: E402
from mmcourse.widgets.temperature import TemperatureExplorer  # noqa: E402

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
    rows = [("01 retrieval explorer (caption change)", _time(explorer.render, CAPTIONS))]
    clip = mmcourse.pretrained.load("clip_shapes")
    demo = make_shapes(8, seed=21, split="train", style=("photo", "sketch", "flat", "cartoon"))
    with torch.no_grad():
        img, txt = clip.encode_image(demo.images), clip.encode_text(demo.captions)
    temperature = TemperatureExplorer(img, txt, [c[:28] for c in demo.captions])
    rows.append(("02 temperature explorer (slider move)", _time(temperature.render, [0.003, 0.01, 0.07, 0.3, 1.0, 5.0])))
    play = make_shapes(6, seed=3081, split="all", style=("photo", "sketch", "flat", "cartoon"))
    playground = PromptPlayground(clip, play.images, ["circle", "square", "triangle", "diamond", "star", "cross", "heart",
                                                      "crescent"], template="a {}")
    edits = [("a {}", None, 0), ("a sketch of a {}", None, 1), ("a photo of a blue {}", None, 2),
             ("a {}", "wedge, disc, box, a shape with three corners, vermilion moon", 3),
             ("a {} on a grey background", ", ".join(f"{c} square" for c in ("red", "blue", "green", "pink")), 4)]
    rows.append(("03 prompt playground (template, classes or image change)", _time(lambda e: playground.render(*e), edits, playground)))
    weights = [0.0, 0.5, 1.5, 2.5, 3.5, 5.0, 6.5]
    guidance = GuidanceExplorer.from_model(mmcourse.pretrained.load("diffusion_shapes"),
                                           ["a red star", "a blue crescent", "a yellow heart", "a green cross"], weights,
                                           per_caption=4, steps=50, seed=5)
    guidance.metrics = {w: {"fidelity": 0.5 + w / 20, "diversity": 0.3 - w / 100} for w in weights}  # the curve's cost
    rows.append(("08 guidance slider (slider move)", _time(guidance.render, weights, guidance)))
    table = "\n".join([
        "Widget latency: one interaction (compute + draw + PNG), `python benchmarks/widget_latency.py`",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "",
        "| widget | interactions | median | max | budget |",
        "| --- | --- | --- | --- | --- |",
        *[f"| {name} | {len(t)} | {statistics.median(t):.0f} ms | {max(t):.0f} ms | 200 ms |" for name, t in rows],
    ])
    print(table)
    (Path(__file__).parent / "results" / "widget_latency.md").write_text(table + "\n")


def _time(render, inputs, owner=None) -> list[float]:
    times = []
    for _ in range(3):
        for value in inputs:
            start = time.perf_counter()
            fig = render(value)
            fig.savefig(io.BytesIO(), format="png")  # what the front end receives
            if fig is not getattr(owner or render.__self__, "_fig", None):  # figures a widget keeps are redrawn, not closed
                plt.close(fig)
            times.append((time.perf_counter() - start) * 1e3)
    return times[len(inputs):]  # the first round warms matplotlib up


if __name__ == "__main__":
    main()
