"""``supervised_shapes``: the supervised baseline of notebook 03, a CNN classifier of the 56 seen
colour-shape pairs trained on photos only, with snapshots taken during training (the family of
baselines effective robustness is measured against)."""

from __future__ import annotations

import copy
import itertools
import math
from typing import Sequence

import torch
import torch.nn.functional as F

from mmcourse.data.shapes import make_shapes
from mmcourse.models import PhotoClassifier
from mmcourse.models.cnn import ConvEncoder
from mmcourse.models.photo_classifier import SNAPSHOT_STEPS
from mmcourse.training import fit

DESCRIPTION = ("supervised CNN for the 56 seen colour-shape pairs, trained on photos only, with snapshots taken "
               "during training (the robustness baseline of notebook 03)")


def train(*, seed: int = 0, progress: bool = True, width: int = 16, batch_size: int = 128,
          snapshot_steps: Sequence[int] = SNAPSHOT_STEPS, lr: float = 3e-3, evaluate: bool = True) -> tuple[PhotoClassifier, dict]:
    """Cross-entropy on fresh photos of the train split, AdamW with a 50-step warm-up and cosine decay
    to 0, a copy of the network at every step in ``snapshot_steps`` (the last one ends training)."""
    torch.manual_seed(seed)
    model = PhotoClassifier(width=width, snapshot_steps=snapshot_steps)
    net = ConvEncoder(out_dim=len(model.classes), width=width)
    steps = model.snapshot_steps[-1]
    photos = (make_shapes(batch_size, seed=3_000_000 + 10_000 * seed + step, split="train", style="photo")
              for step in itertools.count(1))
    batches = ((data.images, model.labels(data.combos)) for data in photos)

    def snapshot(step: int) -> None:  # step counts from 0; snapshot_steps from 1
        if step + 1 in model.snapshot_steps:
            model.snapshots[model.snapshot_steps.index(step + 1)].load_state_dict(copy.deepcopy(net.state_dict()))

    losses = fit(
        net, lambda m, b: F.cross_entropy(m(b[0]), b[1]), batches, steps=steps, lr=lr, weight_decay=1e-4,
        schedule=lambda opt: torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * s / steps))),
        after_step=snapshot, progress=progress, desc="supervised_shapes",
    )
    model.eval()
    history = [{"step": s, "loss": round(losses[s - 1], 4)} for s in model.snapshot_steps]
    metrics: dict = {"steps": steps, "batch_size": batch_size, "history": history}
    if evaluate:
        metrics["snapshots"] = evaluate_snapshots(model)
    return model, metrics


def evaluate_snapshots(model: PhotoClassifier, *, seed: int = 20_261_203, n: int = 1000) -> list[dict]:
    """Photo and sketch accuracy of every snapshot on the same fresh scenes (seen pairs only)."""
    data = {style: make_shapes(n, seed=seed, split="train", style=style) for style in ("photo", "sketch")}
    model.eval()
    return [
        {"step": step, **{style: round(model.accuracy(d.images, d.combos, k), 4) for style, d in data.items()}}
        for k, step in enumerate(model.snapshot_steps)
    ]
