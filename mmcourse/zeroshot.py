"""Zero-shot classification with a CLIP model: a classifier written in words.

CLIP's recipe: (1) embed the name of every class inside a prompt ("a {} ..."), (2) normalise, so the
C text embeddings are the rows of a linear classifier, (3) embed the image and pick the class whose
text embedding has the highest cosine similarity. With several prompt templates, average each
class's normalised template embeddings and normalise again (prompt ensembling).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

# The course's templates: each has one "{}" for the class name ("red square").
TEMPLATES: tuple[str, ...] = (
    "a {}",
    "a photo of a {}",
    "a sketch of a {}",
    "a drawing of a {}",
    "a small {}",
    "a large {}",
    "there is a {} in the middle",
    "a {} on a grey background",
)


def build_classifier(model, classnames: Sequence[str], templates: Sequence[str] = ("a {}",)) -> Tensor:
    """(C, D) L2-normalised class embeddings: for each class, the mean of its normalised template
    embeddings, renormalised."""
    if isinstance(classnames, str) or not len(classnames):
        raise ValueError("classnames must be a non-empty list of strings")
    if isinstance(templates, str) or not len(templates):
        raise ValueError("templates must be a non-empty list of strings, each with one '{}'")
    bad = [t for t in templates if t.count("{}") != 1]
    if bad:
        raise ValueError(f"every template needs exactly one '{{}}' for the class name; not so: {bad[:3]}")
    texts = [t.format(name) for name in classnames for t in templates]
    with torch.no_grad():
        emb = F.normalize(model.encode_text(texts).float(), dim=-1)
    emb = emb.view(len(classnames), len(templates), -1).mean(dim=1)
    return F.normalize(emb, dim=-1)


def classify(model, images: Tensor, classifier: Tensor, *, batch_size: int = 512) -> Tensor:
    """Zero-shot logits (N, C): cosine similarity of each image to each class embedding, times exp(t)."""
    out = []
    with torch.no_grad():
        scale = model.logit_scale.exp().clamp(max=100).float()
        for start in range(0, images.shape[0], batch_size):
            emb = F.normalize(model.encode_image(images[start : start + batch_size]).float(), dim=-1)
            out.append(scale * emb @ classifier.T)
    return torch.cat(out)


def color_shape_classes() -> list[tuple[str, str]]:
    """The 64 (colour, shape) classes of the shapes world, seen and held-out alike."""
    from mmcourse.data.shapes import combos_for

    return combos_for("all")


def color_shape_accuracy(model, *, style: str = "photo", split: str = "train", n: int = 1000, seed: int = 20_261_122,
                         templates: Sequence[str] = ("a {}",)) -> dict:
    """64-way zero-shot accuracy over all colour-shape classes on fresh single-object images, plus
    how often the colour and the shape of the predicted class are right."""
    from mmcourse.data.shapes import make_shapes

    classes = color_shape_classes()
    classifier = build_classifier(model, [f"{c} {s}" for c, s in classes], templates)
    data = make_shapes(n, seed=seed, split=split, style=style)
    pred = classify(model, data.images, classifier).argmax(dim=1)
    truth = torch.tensor([classes.index(p) for p in data.combos])
    color_right = torch.tensor([classes[p][0] == c for p, c in zip(pred.tolist(), data.colors)])
    shape_right = torch.tensor([classes[p][1] == s for p, s in zip(pred.tolist(), data.shapes)])
    return {
        "accuracy": round((pred == truth).float().mean().item(), 4),
        "color": round(color_right.float().mean().item(), 4),
        "shape": round(shape_right.float().mean().item(), 4),
    }
