"""Robustness under distribution shift: a supervised baseline and effective robustness.

The supervised baseline (``supervised_shapes``) is what the CLIP paper compared against: a network
trained with labels on one distribution only. Ours is a small CNN trained on *photos* of the 56 seen
colour-shape pairs (the train split) and never shown a sketch. Snapshots taken during its training
give a family of baselines of increasing photo accuracy, from which effective robustness is measured
(Taori et al. 2020): fit ``logit(ood) = a * logit(id) + b`` over the baselines, and report how far a
model's out-of-distribution accuracy lies above that line at its own in-distribution accuracy.
"""

from __future__ import annotations

import copy
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor

SNAPSHOT_STEPS: tuple[int, ...] = (100, 200, 350, 500, 750, 1000, 1500, 2500)
_CLIP_EPS = 1e-4  # accuracies are clipped to [eps, 1 - eps] before the logit, so 0 and 1 stay finite


class PhotoClassifier(nn.Module):
    """Images (N, 3, 32, 32) in [0, 1] -> logits (N, 56) over ``classes``, the seen (colour, shape) pairs.

    Holds one small CNN per snapshot of its training run (``snapshot_steps``); ``forward`` uses the
    last, fully trained one unless ``snapshot`` picks another (an index into ``snapshot_steps``).
    """

    def __init__(self, width: int = 16, snapshot_steps: Sequence[int] = SNAPSHOT_STEPS) -> None:
        super().__init__()
        from mmcourse.data.shapes import combos_for
        from mmcourse.models.cnn import ConvEncoder

        self.classes: list[tuple[str, str]] = combos_for("train")
        self.snapshot_steps = [int(s) for s in snapshot_steps]
        if not self.snapshot_steps or self.snapshot_steps != sorted(set(self.snapshot_steps)):
            raise ValueError(f"snapshot_steps must be increasing and non-empty, got {list(snapshot_steps)}")
        self.snapshots = nn.ModuleList(ConvEncoder(out_dim=len(self.classes), width=width) for _ in self.snapshot_steps)
        self.config = {"width": width, "snapshot_steps": list(self.snapshot_steps)}

    def forward(self, images: Tensor, snapshot: int = -1) -> Tensor:
        if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"expected images (N, 3, H, W), got {shape}")
        return self.snapshots[snapshot](images)

    def labels(self, combos: Sequence[tuple[str, str]]) -> Tensor:
        """(N,) class indices of (colour, shape) pairs; a pair outside ``classes`` is an error."""
        index = {c: i for i, c in enumerate(self.classes)}
        missing = [c for c in combos if c not in index]
        if missing:
            raise ValueError(f"{missing[0]} is not one of the classifier's {len(self.classes)} seen pairs "
                             "(a supervised classifier has no output for a held-out pair)")
        return torch.tensor([index[c] for c in combos])

    @torch.no_grad()
    def accuracy(self, images: Tensor, combos: Sequence[tuple[str, str]], snapshot: int = -1,
                 batch_size: int = 1000) -> float:
        """Top-1 accuracy of one snapshot on labelled images."""
        truth = self.labels(combos)
        pred = torch.cat([self(images[i:i + batch_size], snapshot).argmax(1).cpu() for i in range(0, len(images), batch_size)])
        return (pred == truth).float().mean().item()


def evaluate_photo_classifier(model: PhotoClassifier, *, seed: int = 20_261_203, n: int = 1000) -> list[dict]:
    """Photo and sketch accuracy of every snapshot on the same fresh scenes (seen pairs only)."""
    from mmcourse.data.shapes import make_shapes

    data = {style: make_shapes(n, seed=seed, split="train", style=style) for style in ("photo", "sketch")}
    model.eval()
    return [
        {"step": step, **{style: round(model.accuracy(d.images, d.combos, k), 4) for style, d in data.items()}}
        for k, step in enumerate(model.snapshot_steps)
    ]


def train_photo_classifier(seed: int = 0, progress: bool = True, *, width: int = 16, batch_size: int = 128,
                           snapshot_steps: Sequence[int] = SNAPSHOT_STEPS, lr: float = 3e-3,
                           evaluate: bool = True) -> tuple[PhotoClassifier, dict]:
    """The ``supervised_shapes`` recipe: cross-entropy on fresh photos of the train split, AdamW with a
    cosine schedule, a copy of the network at every step in ``snapshot_steps`` (the last one ends training)."""
    from tqdm.auto import tqdm

    from mmcourse.data.shapes import make_shapes
    from mmcourse.models.cnn import ConvEncoder

    torch.manual_seed(seed)
    model = PhotoClassifier(width=width, snapshot_steps=snapshot_steps)
    net = ConvEncoder(out_dim=len(model.classes), width=width)
    steps = model.snapshot_steps[-1]
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    # a 50-step warm-up, then cosine decay to 0 at the last step
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    history = []
    net.train()
    for step in tqdm(range(1, steps + 1), desc="supervised_shapes", disable=not progress, mininterval=1.0):
        data = make_shapes(batch_size, seed=3_000_000 + 10_000 * seed + step, split="train", style="photo")
        loss = F.cross_entropy(net(data.images), model.labels(data.combos))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step in model.snapshot_steps:
            model.snapshots[model.snapshot_steps.index(step)].load_state_dict(copy.deepcopy(net.state_dict()))
            history.append({"step": step, "loss": round(loss.item(), 4)})
    model.eval()
    metrics: dict = {"steps": steps, "batch_size": batch_size, "history": history}
    if evaluate:
        metrics["snapshots"] = evaluate_photo_classifier(model)
    return model, metrics


# --------------------------------------------------------------------------------------- effective robustness


def logit(p: Tensor | float) -> Tensor:
    """log(p / (1 - p)) of accuracies, clipped to [1e-4, 1 - 1e-4] first."""
    p = torch.as_tensor(p, dtype=torch.float64).clamp(_CLIP_EPS, 1 - _CLIP_EPS)
    return torch.log(p) - torch.log1p(-p)


def robustness_fit(baseline_id: Tensor | Sequence[float], baseline_ood: Tensor | Sequence[float]) -> tuple[float, float]:
    """Least-squares line ``logit(ood) = slope * logit(id) + intercept`` through the baseline models."""
    x, y = logit(torch.as_tensor(baseline_id)), logit(torch.as_tensor(baseline_ood))
    if x.ndim != 1 or x.shape != y.shape or x.numel() < 2:
        raise ValueError(f"need two equally long 1-D lists of baseline accuracies (at least 2), got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    if (x.max() - x.min()).item() < 1e-9:
        raise ValueError("the baselines all have the same in-distribution accuracy: no line can be fitted")
    xm, ym = x.mean(), y.mean()
    slope = ((x - xm) * (y - ym)).sum() / ((x - xm) ** 2).sum()
    return slope.item(), (ym - slope * xm).item()


def predicted_ood(baseline_id, baseline_ood, model_id: float) -> float:
    """The out-of-distribution accuracy the baselines' trend predicts at in-distribution accuracy ``model_id``."""
    slope, intercept = robustness_fit(baseline_id, baseline_ood)
    return torch.sigmoid(slope * logit(model_id) + intercept).item()


def effective_robustness(baseline_id, baseline_ood, model_id: float, model_ood: float) -> float:
    """Out-of-distribution accuracy above the baselines' trend (Taori et al. 2020), as a fraction:
    ``model_ood - sigmoid(slope * logit(model_id) + intercept)``. Positive: more robust than accuracy
    alone predicts; 0: on the line (no effective robustness)."""
    return float(model_ood) - predicted_ood(baseline_id, baseline_ood, model_id)
