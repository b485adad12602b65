"""``dvae_shapes``: DALL-E's stage 1 on the shapes world, the tokenizer that turns a 32 x 32 image into
an 8 x 8 grid of tokens over 128 codes (notebook 07).

Which quantiser: the bundled tokenizer is the **VQ-VAE** variant (nearest code, commitment 0.25,
straight-through, k-means initialisation and dead-code restarts), not DALL-E's Gumbel-softmax dVAE.
With everything else equal (encoder, decoder, K, data, 600 steps of 32 images), the dVAE reached a
reconstruction MSE of 0.013-0.027 through its argmax codes with a perplexity of 4-20 (most codes
dead, shapes lost), while VQ-VAE reached 0.004 with a perplexity of about 70 and no dead code;
``benchmarks/dalle.py`` measures the comparison, and stage 2 needs a tokenizer that keeps the shapes.
The Gumbel settings (``GUMBEL``) stay here for that comparison and for the notebook's live run.

Why each setting is what it is:

* 128 codes, 8 x 8 grid: DALL-E's 8 192 codes and 32 x 32 grid for 256 x 256 images keep 8 x 8
  pixels per token; ours cover 4 x 4 pixels of a 32 x 32 image, and one flat-coloured object on a
  plain background needs far fewer than 8 192 patch types;
* style "flat", train split: the clean rendering, and the held-out colour-shape pairs never shown, so
  the evaluation on them tests whether the tokenizer composes;
* MSE reconstruction (a Gaussian likelihood of fixed variance) on sigmoid outputs: pixels of flat
  images are mostly exactly 0 or 1, where DALL-E's logit-Laplace needs its epsilon squeeze; MSE is
  the simpler choice;
* dVAE settings (``GUMBEL``): temperature 1 -> 1/16 on DALL-E's cosine curve, beta ramped from 0 over
  the first fifth of the run (the codes first learn to reconstruct, then the KL to the uniform prior
  spreads them).
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from mmcourse.data.shapes import make_shapes, stream_shapes
from mmcourse.dvae import beta_at, codebook_usage, temperature_at
from mmcourse.models import DiscreteVAE
from mmcourse.training import fit

DESCRIPTION = ("DALL-E stage 1: the image tokenizer, a VQ-VAE (nearest code, commitment 0.25, straight-through, "
               "k-means init and dead-code restarts) between 32 x 32 flat shapes images and 8 x 8 grids of 128 codes "
               "(notebook 07)")

SETTINGS: dict = {
    "quantizer": "vq",
    "num_codes": 128,
    "steps": 1200,
    "batch_size": 32,
    "lr": 2e-3,
    "style": "flat",
}
# DALL-E's dVAE with the same encoder, decoder and data (the benchmark's comparison)
GUMBEL: dict = {**SETTINGS, "quantizer": "gumbel", "tau_start": 1.0, "tau_end": 1 / 16, "beta": 0.01,
                "beta_warmup": 240, "hard": False}


def train(*, seed: int = 0, progress: bool = True) -> tuple[DiscreteVAE, dict]:
    """``train_dvae`` with ``SETTINGS``, then ``evaluate`` on fresh images (seen and held-out pairs)."""
    start = time.perf_counter()
    model, metrics = train_dvae(seed=seed, progress=progress, **SETTINGS)
    metrics["train_seconds"] = round(time.perf_counter() - start, 1)
    metrics.update(recipe=dict(SETTINGS), evaluation=evaluate(model, seed=10_000 + seed, style=SETTINGS["style"]))
    return model, metrics


def train_dvae(*, quantizer: str = "gumbel", num_codes: int = 128, seed: int = 0, steps: int = 3000,
               batch_size: int = 64, lr: float = 2e-3, tau_start: float = 1.0, tau_end: float = 1 / 16,
               tau_steps: int | None = None, beta: float = 0.01, beta_warmup: int = 600, hard: bool = False,
               style: str = "flat", vq_remedies: bool = True, progress: bool = True) -> tuple[DiscreteVAE, dict]:
    """Train a ``DiscreteVAE`` on a stream of fresh single-object images of the train split.

    dVAE loss: MSE + beta_t * KL(q || uniform) with tau_t annealed from ``tau_start`` to ``tau_end``
    over ``tau_steps`` (default: the whole run); VQ loss: MSE + codebook + 0.25 commitment. The learning
    rate decays on a cosine to a tenth. ``vq_remedies=False`` turns off VQ's k-means initialisation and
    dead-code restarts (for the comparison in the benchmark)."""
    torch.manual_seed(seed)
    model = DiscreteVAE(num_codes, quantizer=quantizer)
    if quantizer == "vq" and not vq_remedies:
        model.quantizer.initialised.fill_(True)  # keep the random codebook
        model.quantizer.restart_after = 10**9
    g = torch.Generator().manual_seed(seed)
    data = stream_shapes(batch_size, seed=3_000_000 + 1000 * seed, split="train", style=style, size=32)
    batches = (b.images for b in data)
    tau_steps = steps if tau_steps is None else tau_steps
    state = {"step": 0}
    curve: list[tuple[float, float]] = []

    def loss_fn(m: DiscreteVAE, images: torch.Tensor) -> torch.Tensor:
        step = state["step"]
        if quantizer == "gumbel":
            m.quantizer.tau, m.quantizer.hard = temperature_at(step, tau_steps, start=tau_start, end=tau_end), hard
        recon, _, extra = m(images, generator=g)
        mse = F.mse_loss(recon, images)
        weight = beta_at(step, beta_warmup, beta) if quantizer == "gumbel" else 1.0
        curve.append((mse.item(), extra.item()))
        return mse + weight * extra

    def after_step(step: int) -> None:
        state["step"] = step + 1

    schedule = lambda opt: torch.optim.lr_scheduler.LambdaLR(  # noqa: E731
        opt, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s / steps, 1.0))))
    fit(model, loss_fn, batches, steps=steps, lr=lr, schedule=schedule, after_step=after_step, progress=progress,
        desc=f"dvae ({quantizer})")
    chunk = max(1, steps // 20)
    mse_curve = [[i + chunk, round(sum(c[0] for c in curve[i : i + chunk]) / len(curve[i : i + chunk]), 5)]
                 for i in range(0, steps, chunk)]
    metrics = {"steps": steps, "batch_size": batch_size, "mse_curve": mse_curve, "final_mse": mse_curve[-1][1]}
    if quantizer == "vq":
        metrics["restarts"] = model.quantizer.restarts
    return model.eval(), metrics


@torch.no_grad()
def evaluate(model: DiscreteVAE, *, n: int = 2048, seed: int = 10_000, style: str = "flat") -> dict:
    """Reconstruction MSE through the codes (encode then decode, as stage 2 will use them) and codebook
    usage over the whole set, for fresh images of seen pairs and of the held-out pairs."""
    out = {}
    for split in ("train", "heldout"):
        images = make_shapes(n if split == "train" else n // 4, seed=seed, split=split, style=style, size=32).images
        codes = torch.cat([model.encode(images[i : i + 256]) for i in range(0, len(images), 256)])
        recon = torch.cat([model.decode(codes[i : i + 256]) for i in range(0, len(codes), 256)])
        usage = codebook_usage(codes, model.num_codes)
        out["seen" if split == "train" else "heldout"] = {
            "images": len(images), "mse": round(F.mse_loss(recon, images).item(), 5), **usage,
            "perplexity_over_K": round(usage["perplexity"] / model.num_codes, 3)}
    return out
