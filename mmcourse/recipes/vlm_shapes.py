"""``vlm_shapes``: the course's vision-language model, LLaVA-style: the frozen course CLIP's image tower
(``clip_shapes``, its CNN's 4 x 4 grid of patch features), a two-layer MLP projector, and the frozen course
language model (``lm_shapes``), trained in LLaVA's two stages (notebook 06).

* Stage 1, feature alignment: only the projector trains, on captioning: "describe the image ." answered
  with the scene's description (every object's size, colour, shape and side). The language model already
  answers questions from such a description (its own pretraining), so stage 1 teaches the projector to make
  visual tokens that say what a description says.
* Stage 2, instruction tuning: the projector and LoRA matrices on the LM's query and value projections
  train on chats about the image (count, colour, shape, size, yes/no, position; one in four is the
  captioning turn again), with the loss on the answers only.

Why each setting is what it is: all 16 patch tokens (LLaVA passes every patch; the benchmark pools them to
4 and 1); LoRA of rank 16 (alpha 16) on every linear layer of the LM's blocks, the closest a LoRA comes to
LLaVA's full fine-tuning in stage 2 (q and v alone at rank 4, or the four attention projections at rank 8,
learned little more than each question's likeliest answer in short runs); photo and flat styles only (a linear probe reads which colours and shapes a
multi-object scene holds from the frozen CNN's grid only moderately well, sketches worst); a pool of 4 096
rendered training images whose frozen patch features are computed once (the tower never changes, so the
steps only run the projector and the LM), with a fresh question drawn for each image every time it is used;
step counts and learning rates chosen in short runs, within the time a recipe may take.
"""

from __future__ import annotations

import math
import time
from typing import Iterator

import torch

from mmcourse import pretrained
from mmcourse.data.chat import DESCRIBE, QUESTION_TYPES, describe, questions
from mmcourse.data.shapes import make_shapes
from mmcourse.models import VLM
from mmcourse.peft import disable_lora
from mmcourse.training import fit
from mmcourse.vlm import batch_chats, caption_scores, lm_answers, set_stage, vqa_accuracy

DESCRIPTION = ("LLaVA-style vision-language model: frozen clip_shapes CNN patch tokens -> MLP projector -> frozen "
               "lm_shapes with LoRA, trained in two stages (captioning, then instructions); notebook 06")
INPUTS = {"clip": "clip_shapes", "lm": "lm_shapes"}

SETTINGS: dict = {
    "connector": "mlp",
    "visual_tokens": None,
    "options": {},
    "lora": {"targets": ["q_proj", "k_proj", "v_proj", "out_proj", "mlp.0", "mlp.2"], "r": 16, "alpha": 16},
    "stage1_steps": 300,
    "stage2_steps": 900,
    "batch_size": 32,
    "lr": 3e-3,
    "pool": 4096,
    "describe_share": 0.1,
}
STYLES = ("photo", "flat")  # the cleanest renderings (see the docstring)
EVAL_SEED = 9_100_000  # images no training pool draws (pools use seed 1 000 + seed)


def training_pool(n: int, *, seed: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, list]:
    """``n`` rendered images (1-3 objects, photo and flat styles, train split) and their annotations."""
    data = make_shapes(n, seed=1_000 + seed, split="train", objects=(1, 3), style=STYLES)
    return data.images.to(device), data


def chat_batches(model: VLM, data, patches: torch.Tensor, *, stage: int, batch_size: int, seed: int,
                 describe_share: float = 0.25) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless (patches, ids) batches: stage 1 asks for the description; stage 2 asks one of the image's
    questions (a fresh draw each time), or for the description with probability ``describe_share``."""
    g = torch.Generator().manual_seed(seed)
    qas = questions(data, seed=seed)
    descriptions = [describe(o) for o in data.objects]
    while True:
        idx = torch.randint(len(descriptions), (batch_size,), generator=g).tolist()
        items = []
        for i in idx:
            if stage == 1 or torch.rand((), generator=g).item() < describe_share:
                items.append((DESCRIBE, descriptions[i]))
            else:
                qa = qas[i][int(torch.randint(len(qas[i]), (1,), generator=g))]
                items.append((qa.question, qa.answer))
        ids, _ = batch_chats(items)
        yield patches[idx], ids.to(patches.device)


def warmup_cosine(opt: torch.optim.Optimizer, steps: int, warmup: float = 0.05) -> torch.optim.lr_scheduler.LambdaLR:
    ramp = max(1, int(warmup * steps))
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: (t + 1) / ramp if t < ramp else 0.5 * (1 + math.cos(math.pi * (t - ramp) / max(1, steps - ramp))))


def train_vlm(clip, lm, *, connector: str = "mlp", visual_tokens: int | None = None, options: dict | None = None,
              lora: dict | None = None, stage1_steps: int = 300, stage2_steps: int = 600, batch_size: int = 32,
              lr: float = 2e-3, pool: int = 4096, describe_share: float = 0.25, seed: int = 0, progress: bool = True,
              pool_data: tuple | None = None, after_stage1=None) -> tuple[VLM, dict]:
    """Build a VLM on the frozen ``clip`` and ``lm`` and train it in two stages; returns it and its loss
    curves. ``pool_data``: ``(images, annotations)`` to reuse a rendered pool across runs;
    ``after_stage1(model)``: a measurement taken between the stages (stored as ``stage1_only``)."""
    torch.manual_seed(seed)
    model = VLM(clip, lm, connector=connector, visual_tokens=visual_tokens, options=options, lora=lora)
    images, data = pool_data if pool_data is not None else training_pool(pool, seed=seed)
    with torch.no_grad():
        patches = torch.cat([model.vision(images[i:i + 512]) for i in range(0, len(images), 512)])
    curves, seconds, extra = {}, {}, {}
    for stage, steps in ((1, stage1_steps), (2, stage2_steps if lora is not None else 0)):
        if steps == 0:
            continue
        set_stage(model, stage)
        start = time.perf_counter()
        losses = fit(model, lambda m, b: m.loss(None, b[1], patches=b[0]),
                     chat_batches(model, data, patches, stage=stage, batch_size=batch_size, seed=seed * 10 + stage,
                                  describe_share=describe_share),
                     steps=steps, lr=lr, schedule=lambda opt, s=steps: warmup_cosine(opt, s), progress=progress,
                     desc=f"vlm stage {stage}")
        seconds[f"stage{stage}"] = round(time.perf_counter() - start, 1)
        chunk = max(1, steps // 10)
        curves[f"stage{stage}"] = [[i + chunk, round(sum(losses[i:i + chunk]) / len(losses[i:i + chunk]), 4)]
                                   for i in range(0, steps, chunk)]
        if stage == 1 and after_stage1 is not None:
            extra["stage1_only"] = after_stage1(model.eval())
    model.requires_grad_(False).eval()
    trainable = {"connector": sum(p.numel() for p in model.connector_parameters()),
                 "lora": sum(p.numel() for p in model.lora_parameters())}
    return model, {"loss_curves": curves, "seconds": seconds, "trainable_parameters": trainable,
                   "total_parameters": sum(p.numel() for p in model.parameters()), **extra}


def eval_set(n: int = 300, *, seed: int = EVAL_SEED):
    """Fresh images (never in a training pool) and, per image, every question of ``questions``."""
    data = make_shapes(n, seed=seed, split="train", objects=(1, 3), style=STYLES)
    return data, questions(data, seed=seed)


@torch.no_grad()
def evaluate_vlm(model: VLM, data=None, qas=None, *, n: int = 300, seed: int = EVAL_SEED) -> dict:
    """VQA exact-match accuracy per question type and caption exact match / recall on fresh images."""
    if data is None:
        data, qas = eval_set(n, seed=seed)
    items = [qa for per in qas for qa in per]
    index = [i for i, per in enumerate(qas) for _ in per]
    answers = model.answer(data.images[index], [qa.question for qa in items], max_new_tokens=4)
    acc = vqa_accuracy(answers, items)
    captions = model.caption(data.images)
    order = ["all", *QUESTION_TYPES]
    return {"vqa": {k: round(acc[k], 4) for k in order if k in acc}, "questions": len(items),
            "caption": {k: round(v, 4) for k, v in caption_scores(captions, [describe(o) for o in data.objects]).items()}}


@torch.no_grad()
def text_only_baseline(lm, data=None, qas=None, *, n: int = 300, seed: int = EVAL_SEED) -> dict:
    """The language model answering each evaluation question from the question alone."""
    if data is None:
        data, qas = eval_set(n, seed=seed)
    items = [qa for per in qas for qa in per]
    acc = vqa_accuracy(lm_answers(lm, [qa.question for qa in items]), items)
    return {k: round(acc[k], 4) for k in ["all", *QUESTION_TYPES] if k in acc}


def train(*, seed: int = 0, progress: bool = True, evaluate: bool = True, **overrides) -> tuple[VLM, dict]:
    """The bundled ``vlm_shapes``: ``train_vlm`` with ``SETTINGS`` on the bundled clip_shapes and lm_shapes,
    then its VQA accuracy and captions on fresh images, stage 1 alone, and the text-only baseline."""
    settings = {**SETTINGS, **overrides}
    clip, lm = pretrained.load(INPUTS["clip"]), pretrained.load(INPUTS["lm"])
    data, qas = eval_set() if evaluate else (None, None)
    stage1 = (lambda m: evaluate_vlm(m, data, qas)) if evaluate else None
    model, metrics = train_vlm(clip, lm, seed=seed, progress=progress, after_stage1=stage1, **settings)
    metrics["recipe"] = settings
    if evaluate:
        metrics["evaluation"] = {"images": len(data), "seed": EVAL_SEED, "stage1_only": metrics.pop("stage1_only"),
                                 "stages_1_and_2": evaluate_vlm(model, data, qas)}
        with disable_lora(model.lm):
            metrics["evaluation"]["text_only"] = text_only_baseline(model.lm, data, qas)
    return model, metrics
