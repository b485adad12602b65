"""Quality of the bundled course CLIP on fresh data, for seeds neither training nor its card used.

    python benchmarks/clip_quality.py

64-way zero-shot classification over every colour-shape pair with the prompt "a {colour} {shape}",
on 1 000 fresh single-object images per cell: seen and held-out pairs, photo and sketch style;
plus Recall@1 both ways on a 1 000-image gallery. Writes results/clip_quality.{json,md}.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch

import mmcourse
from mmcourse import pretrained
from mmcourse.data import make_shapes
from mmcourse.recipes.clip_shapes import evaluate_zero_shot
from mmcourse.retrieval import recall_table

SEEDS = (31_337, 4_242_424, 77_777_777)
TARGETS = {"seen_photo": 0.98, "heldout_photo": 0.95, "seen_sketch": 0.90, "heldout_sketch": 0.90}


def main() -> None:
    mmcourse.start(0, quiet=True)
    model = pretrained.load("clip_shapes")
    card = pretrained.card("clip_shapes")
    per_seed = {seed: evaluate_zero_shot(model, seed=seed, n=1000) for seed in SEEDS}
    gallery = make_shapes(1000, seed=SEEDS[0], split="all", style=("photo", "sketch"))
    with torch.no_grad():
        table = recall_table(model.encode_image(gallery.images), model.encode_text(gallery.captions),
                             torch.tensor([[a == b for b in gallery.combos] for a in gallery.combos]), ks=(1,))
    result = {
        "checkpoint_sha256": card["sha256"],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}",
        "zero_shot": {str(s): m for s, m in per_seed.items()},
        "recall_at_1": {k: v[1] for k, v in table.items()},
        "rebuild_seconds": card["train"]["seconds"],
        "size_mb": round((pretrained.checkpoint_dir() / "clip_shapes.safetensors").stat().st_size / 1e6, 2),
    }
    lines = [
        "Course CLIP (`clip_shapes`), 64-way zero-shot with \"a {colour} {shape}\", 1 000 fresh images per cell, "
        "`python benchmarks/clip_quality.py`",
        f"Machine: {result['machine']}; checkpoint {result['size_mb']} MB, rebuilt in {result['rebuild_seconds']:.0f} s "
        f"(`mmcourse train clip_shapes`), sha256 {card['sha256'][:12]}…",
        "",
        "| cell | target | " + " | ".join(f"seed {s}" for s in SEEDS) + " |",
        "| --- | --- | " + " | ".join("---" for _ in SEEDS) + " |",
    ]
    for key, target in TARGETS.items():
        lines.append(f"| {key} | ≥ {target:.2f} | " + " | ".join(f"{per_seed[s][key]['accuracy']:.3f}" for s in SEEDS) + " |")
    lines += ["", "Recall@1 on 1 000 photo and sketch images (a caption is relevant to every image of its colour-shape subject): "
              + ", ".join(f"{k} {v:.3f}" for k, v in result["recall_at_1"].items())]
    out = Path(__file__).parent / "results"
    (out / "clip_quality.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "clip_quality.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
