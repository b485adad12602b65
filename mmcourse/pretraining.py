"""Contrastive pre-training of the course CLIP on the shapes world.

Web data mixes photos, drawings and clip art under free-form captions; so does this recipe: every
step draws fresh images of the train split (never a held-out colour-shape pair) in mixed styles,
with varied captions, and applies the plain symmetric CLIP loss.

A batch of 256 holds many identical captions. They need no special treatment: identical captions
have identical text embeddings, so the plain loss and caption-level targets
(:func:`mmcourse.losses.clip_loss_grouped` grouped by caption) are the same function of the model's
parameters (notebook 02 shows it). What the plain loss does get wrong are *different* captions of the
same content ("a red square", "a small red square"); the recipe leaves them, as CLIP had to.
"""

from __future__ import annotations

import math
import time
from typing import Iterator

import torch

from mmcourse.losses import clip_loss
from mmcourse.models.clip import CLIP

Tensor = torch.Tensor

TRAIN_STYLES = ("photo", "photo", "flat", "cartoon", "sketch")  # photos are the hardest: twice as many

DEFAULT_CONFIG = {
    "image": {"kind": "cnn", "out_dim": 128, "width": 32},
    "text": {"kind": "transformer", "width": 64, "layers": 2, "heads": 4, "context_length": 32},
    "embed_dim": 64,
}


def clip_batches(batch_size: int, *, seed: int, objects: int | tuple[int, int] = 1) -> Iterator[tuple[Tensor, list[str]]]:
    """Endless (images, captions) batches of fresh train-split images in the training style mix."""
    from mmcourse.data.shapes import stream_shapes

    for batch in stream_shapes(batch_size, seed=seed, split="train", style=TRAIN_STYLES, objects=objects):
        yield batch.images, batch.captions


def contrastive_loss(model: CLIP, images: Tensor, captions: list[str]) -> Tensor:
    """The symmetric CLIP loss of one batch of (image, caption) pairs."""
    image_emb, text_emb, scale = model(images, captions)
    return clip_loss(image_emb, text_emb, scale)


def evaluate_clip(model: CLIP, *, seed: int = 20_261_122, n: int = 1000) -> dict:
    """64-way zero-shot accuracy with the prompt "a {colour} {shape}" on fresh single-object images:
    seen and held-out pairs, photo and sketch style (``seed`` must differ from every training seed)."""
    from mmcourse.zeroshot import color_shape_accuracy

    model.eval()
    out = {}
    for split, name in (("train", "seen"), ("heldout", "heldout")):
        for style in ("photo", "sketch"):
            out[f"{name}_{style}"] = color_shape_accuracy(model, style=style, split=split, n=n, seed=seed)
    return out


def train_clip(
    *,
    seed: int = 0,
    steps: int = 2000,
    batch_size: int = 256,
    lr: float = 2e-3,
    config: dict | None = None,
    objects: int | tuple[int, int] = 1,
    progress: bool = True,
    log_every: int = 100,
    evaluate: bool = True,
    nproc: int = 1,
) -> tuple[CLIP, dict]:
    """The recipe behind the bundled ``clip_shapes`` checkpoint. Deterministic for a given seed on
    one machine (fresh data from ``seed``, AdamW with a one-cycle schedule, the logit scale clamped
    at 100 after every step).

    ``nproc > 1`` trains data-parallel in that many processes (torch.distributed: gloo on CPU, NCCL
    with a GPU per process): each takes ``batch_size / nproc`` pairs of the same global batch, the
    features are gathered so every image still meets all ``batch_size - 1`` negatives, and DDP
    averages the gradients. Without batch normalisation (e.g. the ViT) this is the single-process
    training up to float rounding; with the CNN, batch statistics are per process.
    """
    config = dict(config or DEFAULT_CONFIG)
    options = dict(seed=seed, steps=steps, batch_size=batch_size, lr=lr, config=config, objects=objects,
                   progress=progress, log_every=log_every)
    if nproc < 1 or batch_size % nproc:
        raise ValueError(f"nproc must be >= 1 and divide batch_size {batch_size}, got {nproc}")
    if nproc == 1:
        model, history, seconds = _train_loop(rank=0, world_size=1, **options)
    else:
        import tempfile

        from mmcourse import distributed

        with tempfile.TemporaryDirectory() as tmp:
            out = f"{tmp}/rank0.pt"
            start = time.perf_counter()
            distributed.launch(_train_rank, nproc, options, out)
            seconds = time.perf_counter() - start
            saved = torch.load(out, weights_only=True)
        model = CLIP(**config)
        model.load_state_dict(saved["state"])
        history = saved["history"]
    model.eval()
    metrics = {"zero_shot": evaluate_clip(model) if evaluate else None, "history": history, "steps": steps,
               "batch_size": batch_size, "nproc": nproc, "train_seconds": round(seconds, 1)}
    return model, metrics


def _train_rank(rank: int, world_size: int, device: torch.device, options: dict, out: str) -> None:
    """One process of data-parallel training; rank 0 saves the weights and the loss history."""
    import os

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    model, history, _ = _train_loop(rank=rank, world_size=world_size, device=device,
                                    **{**options, "progress": options["progress"] and rank == 0})
    if rank == 0:
        torch.save({"state": {k: v.cpu() for k, v in model.state_dict().items()}, "history": history}, out)


def _train_loop(*, rank: int, world_size: int, seed: int, steps: int, batch_size: int, lr: float, config: dict,
                objects, progress: bool, log_every: int, device: torch.device | str = "cpu"):
    from tqdm.auto import tqdm

    from mmcourse.distributed import distributed_clip_loss

    torch.manual_seed(seed)  # every rank builds the same initial model
    model = CLIP(**config).to(device)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    forward = model
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(model)
    batches = clip_batches(batch_size, seed=1_000_000 + 1000 * seed, objects=objects)
    local = slice(rank * batch_size // world_size, (rank + 1) * batch_size // world_size)
    history = []
    model.train()
    start = time.perf_counter()
    bar = tqdm(range(steps), desc="clip_shapes", disable=not progress, mininterval=1.0)
    for step in bar:
        images, captions = next(batches)  # every rank draws the global batch and keeps its slice
        image_emb, text_emb, scale = forward(images[local].to(device), captions[local])
        loss = distributed_clip_loss(image_emb, text_emb, scale)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}; try a lower learning rate")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        model.clamp_logit_scale_()
        if step % log_every == 0 or step == steps - 1:
            value = loss.detach().clone()
            if world_size > 1:  # the whole batch's loss is the mean of the ranks' local losses
                torch.distributed.all_reduce(value)
                value /= world_size
            history.append({"step": step, "loss": round(value.item(), 4), "logit_scale": round(model.scale().item(), 2)})
            bar.set_postfix(loss=f"{value.item():.3f}", scale=f"{model.scale().item():.1f}")
    return model, history, time.perf_counter() - start
