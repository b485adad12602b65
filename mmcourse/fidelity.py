"""Fidelity against diversity: how guided samples of a text-to-image model are judged (notebook 08).

* **Fidelity**: how often an independent classifier (the bundled ``attributes_shapes``, trained on
  real images only, never on samples) reads the requested colour, shape, or both in a sample;
* **diversity**: how different the samples of one caption are from each other (the per-pixel
  standard deviation across them).

Guidance trades the second for the first. The same scores of real images give the reference a
model should approach; ``sampling_time`` gives the cost side (guidance doubles the network calls).
"""

from __future__ import annotations

import time
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mmcourse.data.shapes import COLORS, HELDOUT_COMBOS, SHAPES, make_shapes
from mmcourse.diffusion import ddpm_step, sample

Tensor = torch.Tensor


def eval_pairs(heldout: bool = False) -> list[tuple[str, str]]:
    """The (colour, shape) pairs the quality numbers are measured on: every colour and every shape
    once, either the "diagonal" (red circle, orange square, ...; none is held out) or ``HELDOUT_COMBOS``."""
    return list(HELDOUT_COMBOS) if heldout else list(zip(COLORS, SHAPES))


def eval_captions(heldout: bool = False, per_caption: int = 1) -> list[str]:
    """"a {colour} {shape}" for each of ``eval_pairs(heldout)``, each repeated ``per_caption`` times in a row."""
    return [f"a {c} {s}" for c, s in eval_pairs(heldout) for _ in range(per_caption)]


def score_images(images: Tensor, pairs: Sequence[tuple[str, str]], classifier: nn.Module) -> dict[str, float]:
    """Fidelity and diversity of images (P, K, 3, S, S) that should show pair p in row p.

    * ``color``, ``shape``, ``both``: how often ``classifier`` (an attribute predictor such as the
      bundled ``attributes_shapes``: logits (N, 16) = [colour | shape] for 32 x 32 images) reads the
      requested colour, shape, or both in an image;
    * ``diversity``: the per-pixel standard deviation across the K images of a row (unbiased),
      averaged over pixels, channels and rows. Identical images score 0; it shrinks as guidance
      pushes every sample of a caption towards one prototype.
    """
    if images.ndim != 5 or images.shape[0] != len(pairs) or images.shape[1] < 2:
        raise ValueError(f"need images (P={len(pairs)} pairs, K >= 2 per pair, 3, S, S), got {tuple(images.shape)}")
    p, k = images.shape[:2]
    color_ids = torch.tensor([COLORS.index(c) for c, _ in pairs]).repeat_interleave(k)
    shape_ids = torch.tensor([SHAPES.index(s) for _, s in pairs]).repeat_interleave(k)
    flat = images.flatten(0, 1).cpu()
    if flat.shape[-1] != 32:  # the classifier was trained on 32 x 32 images
        flat = F.interpolate(flat, size=(32, 32), mode="bilinear", align_corners=False)
    with torch.no_grad():
        logits = classifier(flat)
    color_ok = logits[:, : len(COLORS)].argmax(1) == color_ids
    shape_ok = logits[:, len(COLORS) :].argmax(1) == shape_ids
    return {
        "color": round(color_ok.float().mean().item(), 4),
        "shape": round(shape_ok.float().mean().item(), 4),
        "both": round((color_ok & shape_ok).float().mean().item(), 4),
        "diversity": round(images.cpu().std(dim=1).mean().item(), 4),
    }


def evaluate_guidance(
    model,
    classifier: nn.Module,
    guidance_scales: Sequence[float] = (0.0, 1.5, 3.5, 6.5),
    *,
    per_caption: int = 4,
    steps: int = 50,
    seed: int = 0,
    heldout: bool = False,
    step=ddpm_step,
) -> dict[float, dict[str, float]]:
    """``score_images`` of samples at each guidance weight w: ``per_caption`` samples of
    "a {colour} {shape}" for each of the eight ``eval_pairs(heldout)``, the same seed for every w."""
    if per_caption < 2:
        raise ValueError("diversity needs at least 2 samples per caption (per_caption >= 2)")
    pairs = eval_pairs(heldout)
    captions = eval_captions(heldout, per_caption)
    results = {}
    for w in guidance_scales:
        images = sample(model, captions, guidance_scale=w, steps=steps, seed=seed, step=step).cpu()
        results[float(w)] = score_images(images.view(len(pairs), per_caption, *images.shape[1:]), pairs, classifier)
    return results


def real_reference(
    classifier: nn.Module, *, per_caption: int = 16, seed: int = 0, style: str = "flat", size: int = 32,
    heldout: bool = False,
) -> dict[str, float]:
    """``score_images`` of real images: ``per_caption`` fresh single-object images of each eval pair,
    drawn as the training images were (style, image size). What a perfect model's samples would
    score, the classifier's own errors included."""
    pairs = eval_pairs(heldout)
    split = "heldout" if heldout else "train"
    # 8 x per_caption images are drawn and the first per_caption kept: the draw the bundled card's
    # reference numbers were measured with (drawing fewer would change which images are kept)
    rows = [make_shapes(8 * per_caption, seed=seed + i, style=style, split=split, size=size, combos=[pair]).images[:per_caption]
            for i, pair in enumerate(pairs)]
    return score_images(torch.stack(rows), pairs, classifier)


def sampling_time(model, *, n: int = 16, steps: int = 50, step=ddpm_step) -> dict[str, float]:
    """Seconds per image for a batch of ``n`` captions (``steps`` reverse steps), unguided and guided."""
    captions = eval_captions() * (n // len(eval_pairs()) + 1)
    out = {"threads": torch.get_num_threads(), "batch": n, "steps": steps, "sampler": step.__name__.replace("_step", "")}
    for key, w in (("w=0", 0.0), ("w=3", 3.0)):
        start = time.perf_counter()
        sample(model, captions[:n], guidance_scale=w, steps=steps, seed=0, step=step)
        out[key] = round((time.perf_counter() - start) / n, 4)
    return out
