"""The supervised baseline of notebook 03 (bundled as ``supervised_shapes``): a CNN classifier of the
56 seen colour-shape pairs, trained on photos only, with snapshots of its training run."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mmcourse.data.shapes import combos_for
from mmcourse.models.cnn import ConvEncoder

Tensor = torch.Tensor

SNAPSHOT_STEPS: tuple[int, ...] = (100, 200, 350, 500, 750, 1000, 1500, 2500)


class PhotoClassifier(nn.Module):
    """Images (N, 3, 32, 32) in [0, 1] -> logits (N, 56) over ``classes``, the seen (colour, shape) pairs.

    Holds one small CNN per snapshot of its training run (``snapshot_steps``); ``forward`` uses the
    last, fully trained one unless ``snapshot`` picks another (an index into ``snapshot_steps``).
    """

    def __init__(self, width: int = 16, snapshot_steps: Sequence[int] = SNAPSHOT_STEPS) -> None:
        super().__init__()
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
