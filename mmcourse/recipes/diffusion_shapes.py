"""``diffusion_shapes``: text-to-image diffusion on the shapes world, conditioned on the frozen text
tower of the bundled ``clip_shapes`` and trained with caption dropout for classifier-free guidance.

Why each setting is what it is (each was chosen in short runs, one thread, a few minutes each,
judged by the classifier score of samples):

* image_size 16: on two CPU cores the budget is about ten thousand steps. At 32 x 32 pixels a step
  costs three times as much, and in the same time the model learned colour but drew fragments
  instead of shapes; at 16 x 16 the shapes come out, and the independent classifier still reads
  real 16 x 16 images (upsampled) right 96 % of the time;
* style "flat": one object on a plain background, the shapes world's cleanest rendering (the photo
  style's texture is a second thing to learn in the same budget);
* channels (16, 32, 64) at 16, 8 and 4 pixels, self-attention at 4 x 4: attention keeps an object in
  one piece; wider levels lowered the loss but not the shape errors in the time available;
* snr_gamma 5 (min-SNR weighting): the noisy steps, which decide colour and shape, get the gradient;
  colour and shape were learned two to three times faster than with the plain loss;
* the text model ``clip_shapes``: the frozen course CLIP text tower, as DALL-E 2 and Imagen freeze theirs;
* p_uncond 0.1: one caption in ten is dropped, so the same network learns eps(x_t, t) for guidance.
"""

from __future__ import annotations

import copy
import time
from typing import Sequence

import torch

from mmcourse import pretrained
from mmcourse.data.shapes import stream_shapes
from mmcourse.diffusion import ddim_step_clipped, to_model_space, training_loss
from mmcourse.fidelity import eval_pairs, evaluate_guidance, real_reference, sampling_time
from mmcourse.models import DiffusionModel
from mmcourse.training import fit

DESCRIPTION = ("text-to-image diffusion: a small U-Net conditioned on the frozen clip_shapes text encoder, "
               "trained with caption dropout for classifier-free guidance (notebook 08)")
INPUTS = {"text_model": "clip_shapes"}

SETTINGS: dict = {
    "steps": 8500,
    "batch_size": 32,
    "lr": 2e-3,
    "p_uncond": 0.1,
    "ema_decay": 0.999,
    "schedule": "cosine",
    "channels": (16, 32, 64),
    "emb_dim": 128,
    "attention": True,
    "image_size": 16,
    "style": "flat",
    "captions": "varied",
    "snr_gamma": 5.0,
}
# the guidance weights on the card (w = cfg - 1: 0, 1.5, 3.5, 6.5 are the SD3.5 sweep of the lecture)
CARD_WEIGHTS: tuple[float, ...] = (0.0, 1.0, 1.5, 2.0, 3.0, 3.5, 4.5, 6.5)


def train(*, seed: int = 0, progress: bool = True, eval_per_caption: int = 12) -> tuple[DiffusionModel, dict]:
    """``train_diffusion`` with ``SETTINGS`` on the bundled ``clip_shapes``, then its quality at
    ``CARD_WEIGHTS`` with the default sampler (fresh samples judged by the independent
    ``attributes_shapes`` classifier), DDIM at w = 0 and 3 for comparison, the same scores for real
    images, and the sampling time."""
    model, metrics = train_diffusion(INPUTS["text_model"], seed=seed, progress=progress, **SETTINGS)
    start = time.perf_counter()
    classifier = pretrained.load("attributes_shapes")
    eval_seed = 10_000 + seed  # x_T never used in training (training draws its noise from another generator)
    quality = evaluate_guidance(model, classifier, CARD_WEIGHTS, per_caption=eval_per_caption, steps=50, seed=eval_seed)
    ddim = evaluate_guidance(model, classifier, (0.0, 3.0), per_caption=eval_per_caption, steps=50, seed=eval_seed,
                             step=ddim_step_clipped)
    real = real_reference(classifier, per_caption=eval_per_caption, seed=20_000 + seed, style=SETTINGS["style"],
                          size=model.image_size)
    metrics.update(
        recipe={k: list(v) if isinstance(v, tuple) else v for k, v in SETTINGS.items()},
        evaluation={
            "pairs": [" ".join(p) for p in eval_pairs()],
            "per_caption": eval_per_caption,
            "sampler": "ddpm, 50 steps (the default of mmcourse.diffusion.sample)",
            "seed": eval_seed,
            "classifier": "attributes_shapes (16 x 16 samples upsampled to 32 x 32)",
            "seconds": round(time.perf_counter() - start, 1),
        },
        guidance={f"{w:g}": scores for w, scores in quality.items()},
        guidance_ddim_50={f"{w:g}": scores for w, scores in ddim.items()},
        real_images=real,
        sampling_seconds_per_image=sampling_time(model),
    )
    return model, metrics


def train_diffusion(
    text_model: str | None = None,
    *,
    seed: int = 0,
    steps: int = 5000,
    batch_size: int = 32,
    lr: float = 2e-3,
    p_uncond: float = 0.1,
    ema_decay: float = 0.999,
    schedule: str = "cosine",
    channels: Sequence[int] = (16, 32, 64),
    emb_dim: int = 128,
    attention: bool = False,
    image_size: int = 32,
    style: str = "photo",
    captions: str = "varied",
    snr_gamma: float | None = None,
    progress: bool = True,
) -> tuple[DiffusionModel, dict]:
    """Train a text-to-image model on a stream of fresh single-object images of the train split (never
    a pair of ``HELDOUT_COMBOS``); returns the exponential moving average of its weights and the loss
    curve. ``text_model`` names the bundled checkpoint whose frozen text tower encodes the captions
    (None: word counts).

    The average (decay ``ema_decay``, warmed up over the first steps) is what one samples from:
    the raw weights of a diffusion model jitter from step to step, and the jitter shows in samples.
    """
    torch.manual_seed(seed)  # the text model is built first and draws from the same generator, then the U-Net
    encoder = pretrained.load(text_model) if text_model is not None else None
    model = DiffusionModel(encoder, image_size=image_size, schedule=schedule, channels=channels, emb_dim=emb_dim,
                           attention=attention)
    ema = copy.deepcopy(model).requires_grad_(False)
    g = torch.Generator().manual_seed(seed)
    data = stream_shapes(batch_size, seed=2_000_000 + 1000 * seed, split="train", style=style, size=image_size,
                         captions=captions)
    batches = ((to_model_space(b.images), model.encode(b.captions)) for b in data)

    def update_ema(step: int) -> None:
        decay = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for avg, p in zip(ema.parameters(), model.parameters()):
                avg.lerp_(p, 1 - decay)

    losses = fit(
        model,
        lambda m, b: training_loss(m, b[0], b[1], p_uncond=p_uncond, snr_gamma=snr_gamma, generator=g),
        batches,
        steps=steps,
        lr=lr,
        progress=progress,
        desc="diffusion_shapes",
        after_step=update_ema,
    )
    chunk = max(1, steps // 20)  # the loss curve in 20 points, each the mean over its chunk of steps
    curve = [[i + chunk, round(sum(losses[i : i + chunk]) / len(losses[i : i + chunk]), 4)] for i in range(0, steps, chunk)]
    return ema.eval(), {"final_loss": curve[-1][1], "loss_curve": curve, "steps": steps, "batch_size": batch_size}
