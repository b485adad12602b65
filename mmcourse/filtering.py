"""CLIP filtering, as LAION built its data sets: score every (image, caption) pair of a crawl by the
cosine similarity of its CLIP embeddings and keep the pairs above a threshold.

To measure a filter one needs to know which pairs are bad. ``corrupt_captions`` makes a "web crawl"
with known corruption from clean shapes-world pairs: a caption swapped with another image's, a caption
with one wrong colour or shape word (a near miss), or boilerplate alt-text that describes nothing.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from mmcourse.data.shapes import COLOR_SYNONYMS, COLORS, SHAPE_SYNONYMS, SHAPES

Tensor = torch.Tensor

KINDS: tuple[str, ...] = ("swapped", "wrong word", "boilerplate")
BOILERPLATE: tuple[str, ...] = (
    "img 4821 jpg", "click here to see more", "stock photo", "untitled", "my favourite", "download now",
    "dsc 0031", "image", "home page banner", "product 2 of 9", "best price", "photo 7",
)


def corrupt_captions(captions: Sequence[str], combos: Sequence[tuple[str, str]], *, share: float, seed: int,
                     kinds: Sequence[str] = KINDS) -> tuple[list[str], list[str]]:
    """Corrupt ``round(share * N)`` captions, cycling through ``kinds``; returns (captions, kind per pair),
    with kind ``"clean"`` for untouched pairs. ``combos`` holds each image's (colour, shape) subject.

    ``"swapped"`` takes the caption of an image with a different subject; ``"wrong word"`` replaces the
    subject's colour word (even positions) or shape word (odd) with another colour or shape; ``"boilerplate"``
    uses a caption from ``BOILERPLATE``.
    """
    n = len(captions)
    if len(combos) != n:
        raise ValueError(f"{len(combos)} subjects for {n} captions")
    if not 0 <= share <= 1:
        raise ValueError(f"share must be in [0, 1], got {share}")
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ValueError(f"kinds must be a non-empty list from {KINDS}; unknown: {bad}")
    g = torch.Generator().manual_seed(seed)
    out, kind = list(captions), ["clean"] * n
    chosen = torch.randperm(n, generator=g)[: round(share * n)].tolist()
    for j, i in enumerate(chosen):
        k = kinds[j % len(kinds)]
        if k == "swapped":
            others = [o for o in range(n) if combos[o] != combos[i]]
            if not others:
                raise ValueError("every image has the same subject: no caption to swap in")
            out[i] = captions[others[torch.randint(len(others), (1,), generator=g).item()]]
        elif k == "wrong word":
            color, shape = combos[i]
            words = out[i].split(" ")
            if j % 2 == 0:
                synonyms, choices = COLOR_SYNONYMS[color], [c for c in COLORS if c != color]
            else:
                synonyms, choices = SHAPE_SYNONYMS[shape], [s for s in SHAPES if s != shape]
            at = next((p for p, w in enumerate(words) if w in synonyms), None)
            if at is None:
                raise ValueError(f"caption {out[i]!r} does not name its subject {color} {shape}")
            words[at] = choices[torch.randint(len(choices), (1,), generator=g).item()]
            out[i] = " ".join(words)
        else:
            out[i] = BOILERPLATE[torch.randint(len(BOILERPLATE), (1,), generator=g).item()]
        kind[i] = k
    return out, kind


def clip_scores(model, images: Tensor, captions: Sequence[str], *, batch_size: int = 512) -> Tensor:
    """(N,) cosine similarity of each image with its own caption (the CLIP score LAION filtered on)."""
    if not isinstance(images, Tensor) or images.ndim != 4 or len(images) != len(captions):
        raise ValueError(f"need images (N, 3, H, W) and N captions, got "
                         f"{tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__} and {len(captions)}")
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for s in range(0, len(images), batch_size):
            img = F.normalize(model.encode_image(images[s:s + batch_size].to(device)).float(), dim=-1)
            txt = F.normalize(model.encode_text(list(captions[s:s + batch_size])).float(), dim=-1)
            out.append((img * txt).sum(dim=-1).cpu())
    return torch.cat(out)


def precision_recall(keep: Tensor, clean: Tensor) -> dict[str, float]:
    """How good a filter is: ``precision`` = share of kept pairs that are clean, ``recall`` = share of clean
    pairs kept, ``kept`` = share of all pairs kept (both arguments (N,) bool)."""
    keep, clean = torch.as_tensor(keep, dtype=torch.bool), torch.as_tensor(clean, dtype=torch.bool)
    if keep.shape != clean.shape or keep.ndim != 1:
        raise ValueError(f"keep and clean must be (N,) of equal length, got {tuple(keep.shape)} and {tuple(clean.shape)}")
    both = (keep & clean).sum().item()
    return {
        "precision": both / keep.sum().item() if keep.any() else float("nan"),
        "recall": both / clean.sum().item() if clean.any() else float("nan"),
        "kept": keep.float().mean().item(),
    }


def best_threshold(scores: Tensor, clean: Tensor) -> float:
    """The threshold (one of the scores) whose filter ``scores >= t`` has the highest F1 score for keeping
    clean pairs; choose it on a labelled sample, then apply it to the rest."""
    scores, clean = torch.as_tensor(scores, dtype=torch.float64), torch.as_tensor(clean, dtype=torch.bool)
    if scores.shape != clean.shape or scores.ndim != 1 or not clean.any():
        raise ValueError("need (N,) scores and (N,) clean flags with at least one clean pair")
    order = scores.argsort(descending=True)
    tp = clean[order].double().cumsum(0)  # clean pairs kept when keeping the top k + 1
    kept = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    f1 = 2 * tp / (kept + clean.sum())
    return scores[order][int(f1.argmax())].item()
