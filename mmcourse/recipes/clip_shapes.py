"""``clip_shapes``: the course CLIP, contrastive pre-training on the shapes world.

Web data mixes photos, drawings and clip art under free-form captions; so does this recipe: every
step draws fresh images of the train split (never a held-out colour-shape pair) in the training
style mix, with varied captions, and applies the plain symmetric CLIP loss.

A batch of 256 holds many identical captions. They need no special treatment: identical captions
have identical text embeddings, so the plain loss and caption-level targets
(:func:`mmcourse.losses.clip_loss_grouped` grouped by caption) are the same function of the model's
parameters (notebook 02 shows it). What the plain loss does get wrong are *different* captions of the
same content ("a red square", "a small red square"); the recipe leaves them, as CLIP had to.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Iterator

import torch

from mmcourse import distributed
from mmcourse.data.shapes import TRAIN_STYLES, stream_shapes
from mmcourse.models import CLIP
from mmcourse.training import fit
from mmcourse.zeroshot import color_shape_accuracy

Tensor = torch.Tensor

DESCRIPTION = "the course CLIP: CNN image encoder + text transformer, contrastive (notebooks 02-07)"

DEFAULT_CONFIG = {
    "image": {"kind": "cnn", "out_dim": 128, "width": 32},
    "text": {"kind": "transformer", "width": 64, "layers": 2, "heads": 4, "context_length": 32},
    "embed_dim": 64,
}


def clip_batches(batch_size: int, *, seed: int, objects: int | tuple[int, int] = 1) -> Iterator[tuple[Tensor, list[str]]]:
    """Endless (images, captions) batches of fresh train-split images in the training style mix."""
    for batch in stream_shapes(batch_size, seed=seed, split="train", style=TRAIN_STYLES, objects=objects):
        yield batch.images, batch.captions


def evaluate_zero_shot(model: CLIP, *, seed: int = 20_261_122, n: int = 1000) -> dict:
    """64-way zero-shot accuracy with the prompt "a {colour} {shape}" on fresh single-object images:
    seen and held-out pairs, photo and sketch style (``seed`` must differ from every training seed)."""
    model.eval()
    out = {}
    for split, name in (("train", "seen"), ("heldout", "heldout")):
        for style in ("photo", "sketch"):
            out[f"{name}_{style}"] = color_shape_accuracy(model, style=style, split=split, n=n, seed=seed)
    return out


def train(
    *,
    seed: int = 0,
    progress: bool = True,
    nproc: int = 1,
    steps: int = 2000,
    batch_size: int = 256,
    lr: float = 2e-3,
    config: dict | None = None,
    objects: int | tuple[int, int] = 1,
    log_every: int = 100,
    evaluate: bool = True,
    timeout_s: float = distributed.DEFAULT_TIMEOUT_S,
) -> tuple[CLIP | None, dict]:
    """Deterministic for a given seed on one machine: fresh data from ``seed``, AdamW with a
    one-cycle schedule (no weight decay on biases, norms and the logit scale), the logit scale
    clamped at 100 after every step.

    Data-parallel training: under ``torchrun`` (``WORLD_SIZE`` in the environment) this process is
    one rank of that launch; otherwise ``nproc > 1`` starts that many processes on this machine, which
    go through the same code (:func:`mmcourse.distributed.launch`; gloo on CPU, NCCL with a GPU per
    process). Each rank takes ``batch_size / world_size`` pairs of the same global batch, the features
    are gathered so every image still meets all ``batch_size - 1`` negatives, and DDP averages the
    gradients. Without batch normalisation (e.g. the ViT) this is the single-process training up to
    float rounding; with the CNN, batch statistics are per process (see the README). Rank 0 returns the
    model and the metrics; under torchrun the other ranks return ``(None, metrics)`` with no
    evaluation. A rank that dies makes the others raise :class:`mmcourse.distributed.RankFailure`
    within ``timeout_s``.
    """
    config = dict(config or DEFAULT_CONFIG)
    options = dict(seed=seed, steps=steps, batch_size=batch_size, lr=lr, config=config, objects=objects,
                   progress=progress, log_every=log_every)
    place = distributed.from_environment()
    if place is not None and nproc not in (1, place.world_size):
        raise ValueError(f"started by torchrun as one of {place.world_size} processes: drop --nproc {nproc} "
                         "(torchrun's --nproc-per-node and --nnodes set the processes)")
    world = place.world_size if place is not None else nproc
    if world < 1 or batch_size % world:
        raise ValueError(f"the number of processes must be >= 1 and divide batch_size {batch_size}, got {world} "
                         f"(nproc must divide batch_size)")
    start = time.perf_counter()
    model: CLIP | None = None
    if world == 1:
        model, history = train_rank_loop(rank=0, world_size=1, **options)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            out = f"{tmp}/rank0.pt"
            distributed.launch(_train_rank, world, options, out, timeout_s=timeout_s)
            saved = torch.load(out, weights_only=True) if os.path.exists(out) else None
        history = None
        if saved is not None:  # rank 0 (or the parent of spawned ranks)
            model = CLIP(**config)
            model.load_state_dict(saved["state"])
            history = saved["history"]
    seconds = time.perf_counter() - start
    launcher = "torchrun" if place is not None else ("spawn" if world > 1 else "none")
    metrics = {"history": history, "steps": steps, "batch_size": batch_size, "nproc": world, "launcher": launcher,
               "train_seconds": round(seconds, 1)}
    if model is None:
        return None, metrics
    model.eval()
    return model, {"zero_shot": evaluate_zero_shot(model) if evaluate else None, **metrics}


def _train_rank(rank: int, world_size: int, device: torch.device, options: dict, out: str) -> None:
    """One process of data-parallel training; rank 0 saves the weights and the loss history."""
    place = distributed.from_environment()
    local = place.local_world_size if place is not None else world_size
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
    model, history = train_rank_loop(rank=rank, world_size=world_size, device=device,
                                     **{**options, "progress": options["progress"] and rank == 0})
    if rank == 0:
        torch.save({"state": {k: v.cpu() for k, v in model.state_dict().items()}, "history": history}, out)


def train_rank_loop(*, rank: int, world_size: int, seed: int, steps: int, batch_size: int, lr: float, config: dict,
                    objects, progress: bool, log_every: int, device: torch.device | str = "cpu") -> tuple[CLIP, list[dict]]:
    """One rank's share of training: every rank draws the same global batch and keeps its slice;
    returns the model and the loss history (the global batch's loss every ``log_every`` steps)."""
    torch.manual_seed(seed)  # every rank builds the same initial model
    model = CLIP(**config).to(device)
    groups = [{"params": [p for p in model.parameters() if p.ndim >= 2], "weight_decay": 0.05},
              {"params": [p for p in model.parameters() if p.ndim < 2], "weight_decay": 0.0}]
    local = slice(rank * batch_size // world_size, (rank + 1) * batch_size // world_size)
    batches = ((images[local].to(device), captions[local])
               for images, captions in clip_batches(batch_size, seed=1_000_000 + 1000 * seed, objects=objects))
    logged = [s for s in range(steps) if s % log_every == 0 or s == steps - 1]
    scales: dict[int, float] = {}

    def clamp_and_log(step: int) -> None:
        model.clamp_logit_scale_()
        if step in logged:
            scales[step] = round(model.scale().item(), 2)

    losses = fit(
        model, lambda m, b: distributed.distributed_clip_loss(*m(*b)), batches, steps=steps, lr=lr,
        param_groups=groups,
        schedule=lambda opt: torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05),
        after_step=clamp_and_log, distributed=world_size > 1, progress=progress, desc="clip_shapes",
    )
    return model, [{"step": s, "loss": round(losses[s], 4), "logit_scale": scales[s]} for s in logged]
