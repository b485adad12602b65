"""Robustness under distribution shift: a supervised baseline and effective robustness.

The supervised baseline (``supervised_shapes``, a ``mmcourse.models.PhotoClassifier``) is what the
CLIP paper compared against: a network trained with labels on one distribution only. Ours is a small CNN trained on *photos* of the 56 seen
colour-shape pairs (the train split) and never shown a sketch. Snapshots taken during its training
give a family of baselines of increasing photo accuracy, from which effective robustness is measured
(Taori et al. 2020): fit ``logit(ood) = a * logit(id) + b`` over the baselines, and report how far a
model's out-of-distribution accuracy lies above that line at its own in-distribution accuracy.
"""

from __future__ import annotations

from typing import Sequence

import torch

Tensor = torch.Tensor

_CLIP_EPS = 1e-4  # accuracies are clipped to [eps, 1 - eps] before the logit, so 0 and 1 stay finite


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
