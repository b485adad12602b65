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
