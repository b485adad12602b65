"""``dalle_shapes``: DALL-E's stage 2 on the shapes world, a small decoder-only transformer over
[12 text tokens ; 64 image tokens of the frozen ``dvae_shapes``] (notebook 07).

Why each setting is what it is (chosen in short runs on one or two cores):

* text budget 12 tokens: every caption of the shapes world (at most 11 tokens with ``<bos>`` and
  ``<eos>``) fits, so nothing is truncated in training;
* width 64, 4 layers, 4 heads, 2 400 steps of 16 captioned images: the sequence has 76 tokens, and
  this is what fits the course's budget of minutes on two CPU cores (width 128 cost four times as
  much per step); its samples are often wrong, which is what re-ranking is for;
* loss weights 1/8 (text) and 7/8 (image), DALL-E's;
* the dVAE frozen (stage 2 updates the prior only), the stream never shows a held-out colour-shape
  pair, and captions come in many wordings, so "a red triangle" must be composed from words seen
  in other pairs.
"""

from __future__ import annotations

import math
import time

import torch

from mmcourse import pretrained
from mmcourse.dalle import joint_loss
from mmcourse.data.shapes import make_shapes, stream_shapes
from mmcourse.models import DALLE
from mmcourse.training import fit

DESCRIPTION = ("DALL-E stage 2: a decoder-only transformer over [text tokens ; 8 x 8 image tokens of the frozen "
               "dvae_shapes], loss weighted 1/8 text, 7/8 image (notebook 07)")
INPUTS = {"dvae": "dvae_shapes"}

SETTINGS: dict = {
    "steps": 2400,
    "batch_size": 16,
    "lr": 2e-3,
    "text_length": 12,
    "width": 64,
    "layers": 4,
    "heads": 4,
    "style": "flat",
}


def train(*, seed: int = 0, progress: bool = True, steps: int | None = None,
          batch_size: int | None = None) -> tuple[DALLE, dict]:
    """``train_dalle`` with ``SETTINGS`` (``steps``, ``batch_size`` overridable from the command line) on
    the bundled ``dvae_shapes``, then the cross-entropies on fresh images of seen and held-out pairs."""
    settings = {**SETTINGS, **{k: v for k, v in (("steps", steps), ("batch_size", batch_size)) if v is not None}}
    model, metrics = train_dalle(pretrained.load(INPUTS["dvae"]), seed=seed, progress=progress, **settings)
    metrics.update(recipe=settings, evaluation=evaluate(model, seed=10_000 + seed, style=settings["style"]))
    return model, metrics


def train_dalle(dvae, *, seed: int = 0, steps: int = 3000, batch_size: int = 32, lr: float = 1e-3, text_length: int = 12,
                width: int = 128, layers: int = 4, heads: int = 4, style: str = "flat",
                progress: bool = True) -> tuple[DALLE, dict]:
    """Train the prior on a stream of fresh captioned images of the train split, encoded by the frozen
    ``dvae``; the learning rate warms up over 100 steps and decays on a cosine to a tenth."""
    torch.manual_seed(seed)
    model = DALLE(dvae, text_length=text_length, width=width, layers=layers, heads=heads)
    data = stream_shapes(batch_size, seed=4_000_000 + 1000 * seed, split="train", style=style, size=32)
    batches = ((model.tokenize(b.captions), dvae.encode(b.images)) for b in data)
    parts: list[tuple[float, float]] = []

    def loss_fn(m: DALLE, batch) -> torch.Tensor:
        loss, text_ce, image_ce = joint_loss(m, *batch)
        parts.append((text_ce.item(), image_ce.item()))
        return loss

    def lr_at(s: int) -> float:
        return min(1.0, (s + 1) / 100) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s / steps, 1.0))))

    start = time.perf_counter()
    fit(model, loss_fn, batches, steps=steps, lr=lr, weight_decay=0.01,
        schedule=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lr_at), progress=progress, desc="dalle_shapes")
    chunk = max(1, steps // 20)
    curve = [[i + chunk, round(sum(p[0] for p in parts[i : i + chunk]) / len(parts[i : i + chunk]), 4),
              round(sum(p[1] for p in parts[i : i + chunk]) / len(parts[i : i + chunk]), 4)] for i in range(0, steps, chunk)]
    return model.eval(), {"steps": steps, "batch_size": batch_size, "train_seconds": round(time.perf_counter() - start, 1),
                          "loss_curve (step, text CE, image CE)": curve}


@torch.no_grad()
def evaluate(model: DALLE, *, n: int = 512, seed: int = 10_000, style: str = "flat") -> dict:
    """Text and image cross-entropy (nats per token) and image-token perplexity on fresh images."""
    out = {}
    for split in ("train", "heldout"):
        data = make_shapes(n, seed=seed, split=split, style=style, size=32)
        _, text_ce, image_ce = joint_loss(model, model.tokenize(data.captions), model.dvae.encode(data.images))
        out["seen" if split == "train" else "heldout"] = {
            "images": n, "text_ce": round(text_ce.item(), 4), "image_ce": round(image_ce.item(), 4),
            "image_perplexity": round(math.exp(image_ce.item()), 2)}
    return out
