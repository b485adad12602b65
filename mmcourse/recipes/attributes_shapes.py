"""``attributes_shapes``: the attribute predictor of notebook 01 (colour and shape, each from its own
evidence), trained on fresh train-split images in the training style mix, never a held-out pair."""

from __future__ import annotations

import torch

from mmcourse.attributes import class_signatures, predict_by_signature
from mmcourse.data.shapes import COLORS, TRAIN_STYLES, combos_for, make_shapes, stream_shapes
from mmcourse.models import AttributePredictor
from mmcourse.training import fit

DESCRIPTION = "CNN predicting colour and shape attributes (notebook 01)"


def train(*, seed: int = 0, progress: bool = True, steps: int = 6000, batch_size: int = 128) -> tuple[AttributePredictor, dict]:
    """Fresh images every step (mixed styles), AdamW at 3e-3; the card reports ``evaluate_attributes``."""
    torch.manual_seed(seed)
    stream = ((b.images, b.color_ids, b.shape_ids) for b in stream_shapes(
        batch_size, seed=1_000_000 + 1000 * seed, split="train", style=TRAIN_STYLES
    ))
    model = AttributePredictor()
    losses = fit(model, lambda m, b: m.loss(m(b[0]), b[1], b[2]), stream, steps=steps, lr=3e-3, progress=progress,
                 desc="attributes_shapes")
    metrics = evaluate_attributes(model)
    metrics["final_loss"] = round(sum(losses[-50:]) / 50, 4)
    metrics["steps"] = steps
    return model, metrics


def evaluate_attributes(model: AttributePredictor, *, seed: int = 12345, n: int = 1000) -> dict:
    """Colour and shape accuracy on fresh images of seen and held-out pairs, photo and sketch style,
    plus attribute-based zero-shot accuracy over all 64 classes."""
    classes = combos_for("all")
    sig = class_signatures(classes)
    metrics = {}
    model.eval()
    for split in ("train", "heldout"):
        for style in ("photo", "sketch"):
            data = make_shapes(n, seed=seed, split=split, style=style)
            with torch.no_grad():
                logits = model(data.images)
            pred = predict_by_signature(model.attribute_probs(logits), sig)
            truth = torch.tensor([classes.index(p) for p in data.combos])
            key = f"{'seen' if split == 'train' else 'heldout'}_{style}"
            metrics[key] = {
                "color": round((logits[:, : len(COLORS)].argmax(1) == data.color_ids).float().mean().item(), 4),
                "shape": round((logits[:, len(COLORS) :].argmax(1) == data.shape_ids).float().mean().item(), 4),
                "zero_shot_64way": round((pred == truth).float().mean().item(), 4),
            }
    return metrics
