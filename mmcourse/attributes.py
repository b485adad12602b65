"""Attribute-based zero-shot learning: describe classes by attributes, recognise unseen classes.

Instead of one output per class, a model predicts shared attributes (here: a colour and a shape).
Each class, seen or not, is written down as its attribute signature; at test time the predicted
attributes pick the class with the most similar signature. A class never seen in training is
recognised as long as each of its attributes was seen on other classes.
"""

from __future__ import annotations

from typing import Sequence

import torch

from mmcourse.data.shapes import COLORS, SHAPES
from mmcourse.retrieval import cosine_similarity

Tensor = torch.Tensor

ATTRIBUTE_NAMES: tuple[str, ...] = tuple(f"color:{c}" for c in COLORS) + tuple(f"shape:{s}" for s in SHAPES)


def class_signatures(classes: Sequence[tuple[str, str]]) -> Tensor:
    """The (C, 16) binary signature of each (colour, shape) class: one colour and one shape attribute."""
    sig = torch.zeros(len(classes), len(ATTRIBUTE_NAMES))
    for i, (color, shape) in enumerate(classes):
        sig[i, COLORS.index(color)] = 1
        sig[i, len(COLORS) + SHAPES.index(shape)] = 1
    return sig


def predict_by_signature(attribute_scores: Tensor, signatures: Tensor) -> Tensor:
    """Index (N,) of the class whose signature (C, A) is most cosine-similar to each row of scores (N, A)."""
    return cosine_similarity(attribute_scores, signatures).argmax(dim=1)


class AttributePredictor(torch.nn.Module):
    """Predicts colour (8-way) and shape (8-way) attributes, each from its own evidence.

    * the colour branch sees one pixel at a time (1x1 convolutions, then max- and mean-pooling), so
      it can only use colour;
    * the shape branch sees a contrast-normalised grey image through a small CNN, so it can only
      use form.

    A single shared CNN learns the training set's colour-shape correlations (no red triangles in
    training, so "red" votes against "triangle") and then fails on exactly the unseen pairs that
    attribute-based zero-shot is for; keeping the evidence apart is the classical remedy.
    ``forward`` returns logits (B, 16) = [colour | shape]; ``features`` the (B, 2*dim) representation.
    """

    def __init__(self, dim: int = 64, width: int = 32) -> None:
        super().__init__()
        from mmcourse.models.cnn import ConvEncoder

        self.color_branch = torch.nn.Sequential(  # per pixel of a 2x2-pooled image: colour, not form
            torch.nn.AvgPool2d(2), torch.nn.Conv2d(3, width, 1), torch.nn.ReLU(), torch.nn.Conv2d(width, width, 1), torch.nn.ReLU()
        )
        self.color_proj = torch.nn.Linear(2 * width, dim)
        self.shape_branch = ConvEncoder(out_dim=dim, width=width, in_channels=1)
        self.color_head = torch.nn.Linear(dim, len(COLORS))
        self.shape_head = torch.nn.Linear(dim, len(SHAPES))
        self.config = {"dim": dim, "width": width}

    @staticmethod
    def grey(images: Tensor) -> Tensor:
        """(B, 3, S, S) -> (B, 1, S, S) luminance, normalised to zero mean and unit std per image."""
        g = images.mean(dim=1, keepdim=True)
        return (g - g.mean(dim=(2, 3), keepdim=True)) / (g.std(dim=(2, 3), keepdim=True) + 1e-3)

    def _branches(self, images: Tensor) -> tuple[Tensor, Tensor]:
        c = self.color_branch(images)  # (B, width, S/2, S/2), per pixel
        c = self.color_proj(torch.cat([c.amax(dim=(2, 3)), c.mean(dim=(2, 3))], dim=1))
        s = self.shape_branch(self.grey(images))
        return c, s

    def features(self, images: Tensor) -> Tensor:
        """(B, 2*dim): colour features then shape features."""
        return torch.cat(self._branches(images), dim=1)

    def forward(self, images: Tensor) -> Tensor:
        c, s = self._branches(images)
        return torch.cat([self.color_head(torch.relu(c)), self.shape_head(torch.relu(s))], dim=1)

    @staticmethod
    def attribute_probs(logits: Tensor) -> Tensor:
        """Per-group softmax of (B, 16) logits: colour probabilities then shape probabilities."""
        n = len(COLORS)
        return torch.cat([logits[:, :n].softmax(1), logits[:, n:].softmax(1)], dim=1)

    @staticmethod
    def loss(logits: Tensor, color_ids: Tensor, shape_ids: Tensor) -> Tensor:
        """Cross-entropy of each attribute group, summed."""
        n = len(COLORS)
        return torch.nn.functional.cross_entropy(logits[:, :n], color_ids) + torch.nn.functional.cross_entropy(
            logits[:, n:], shape_ids
        )


TRAIN_STYLES = ("photo", "photo", "flat", "cartoon", "sketch")  # photos are the hardest: twice as many


def evaluate_attributes(model: AttributePredictor, *, seed: int = 12345, n: int = 1000) -> dict:
    """Colour and shape accuracy on fresh images of seen and held-out pairs, photo and sketch style,
    plus attribute-based zero-shot accuracy over all 64 classes."""
    from mmcourse.data.shapes import combos_for, make_shapes

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


def train_attribute_predictor(
    *, seed: int = 0, steps: int = 6000, batch_size: int = 128, progress: bool = True
) -> tuple[AttributePredictor, dict]:
    """The recipe behind the bundled ``attributes_shapes`` checkpoint: fresh train-split images every
    step (mixed styles), never a held-out pair."""
    from mmcourse.data.shapes import stream_shapes
    from mmcourse.training import fit

    torch.manual_seed(seed)
    stream = ((b.images, b.color_ids, b.shape_ids) for b in stream_shapes(
        batch_size, seed=1_000_000 + 1000 * seed, split="train", style=TRAIN_STYLES
    ))
    model = AttributePredictor()
    losses = fit(
        model,
        lambda m, b: m.loss(m(b[0]), b[1], b[2]),
        stream,
        steps=steps,
        lr=3e-3,
        progress=progress,
        desc="attributes_shapes",
    )
    metrics = evaluate_attributes(model)
    metrics["final_loss"] = round(sum(losses[-50:]) / 50, 4)
    metrics["steps"] = steps
    return model, metrics
