"""``lm_shapes``: the course's small causal language model, pretrained on the shapes world's text and then
frozen (notebook 06 connects images to it).

What it reads (:mod:`mmcourse.data.chat`): the shapes world's captions (one sequence in six), and chats
in which a scene's *description* stands where an image would go, followed by a question and its answer
(count, colour, shape, size, yes/no, position) or by "describe the image ." and the description, and
(one in six) a question with nothing where the image would go, so that its answer without an image is
its best guess, the fair text-only baseline. So the
language model learns the words of the world, the chat format with its stop token, and to answer from a
text about a scene; it never sees an image. A vision-language model built on it has to make its visual
tokens say what such a description says.

Why each setting is what it is: width 96 and 4 layers keep the weights under 2 MB (the vision-language
checkpoint stores them again) and a step cheap on a CPU; a context of 64 tokens holds the longest chat
(a three-object description and its question); 600 steps of 64 sequences, fresh text every step
(half of them questions read from a description); a linear warm-up over the first 5 % of the steps, then a cosine decay.
"""

from __future__ import annotations

import math

import torch

from mmcourse.data.chat import QUESTION_TYPES, chat_tokenizer, describe, lm_batches, questions, scenes
from mmcourse.models import CausalLM
from mmcourse.training import fit
from mmcourse.vlm import lm_answers, lm_loss, vqa_accuracy

DESCRIPTION = ("the course's small causal language model (word-level, chat format with a stop token), pretrained on "
               "shapes-world captions and question-answer text, frozen in notebook 06")

CONFIG = {"width": 96, "layers": 4, "heads": 4, "context_length": 64}
SETTINGS = {"steps": 600, "batch_size": 64, "lr": 3e-3}
EVAL_SEED = 7_000_000  # scenes no training batch draws (training uses seeds seed*1000 + k, k < 1 000)


def train(*, seed: int = 0, progress: bool = True, steps: int | None = None, evaluate: bool = True) -> tuple[CausalLM, dict]:
    """Deterministic for a seed on one machine: a fresh model, fresh text each step, AdamW with warm-up and cosine decay."""
    settings = dict(SETTINGS, **({"steps": steps} if steps is not None else {}))
    torch.manual_seed(seed)
    model = CausalLM(chat_tokenizer().vocab_size, **CONFIG)
    pad_id = chat_tokenizer().pad_id
    losses = fit(
        model,
        lambda m, ids: lm_loss(m, ids, pad_id),
        lm_batches(settings["batch_size"], seed=seed * 1000),
        steps=settings["steps"],
        lr=settings["lr"],
        weight_decay=0.01,
        schedule=lambda opt: warmup_cosine(opt, settings["steps"]),
        progress=progress,
        desc="lm_shapes",
    )
    chunk = max(1, len(losses) // 20)
    curve = [[i + chunk, round(sum(losses[i:i + chunk]) / len(losses[i:i + chunk]), 4)] for i in range(0, len(losses), chunk)]
    metrics = {"steps": settings["steps"], "batch_size": settings["batch_size"], "loss_curve": curve,
               "final_loss": curve[-1][1]}
    if evaluate:
        metrics.update(evaluate_lm(model))
    return model, metrics


def warmup_cosine(opt: torch.optim.Optimizer, steps: int, warmup: float = 0.05) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over the first ``warmup`` share of the steps, then a cosine decay to 0."""
    ramp = max(1, int(warmup * steps))
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: (t + 1) / ramp if t < ramp else 0.5 * (1 + math.cos(math.pi * (t - ramp) / max(1, steps - ramp))))


def evaluate_lm(model: CausalLM, *, n: int = 300, seed: int = EVAL_SEED) -> dict:
    """Held-out text loss, and exact-match accuracy per question type on fresh scenes: reading the scene's
    description (what a perfect vision encoder would tell it) and with nothing in its place (guessing)."""
    model.eval()
    with torch.no_grad():
        held_out = sum(lm_loss(model, next(lm_batches(64, seed=seed + k))).item() for k in range(4)) / 4
    data = scenes(n, seed=seed)
    g = torch.Generator().manual_seed(seed)
    items, contexts = [], []
    for objs, qas in zip(data.objects, questions(data, seed=seed)):
        for qa in qas:
            if int(torch.randint(3, (1,), generator=g)) == 0:  # a third of the questions, all kinds
                items.append(qa)
                contexts.append(describe(objs))
    qs = [qa.question for qa in items]
    reading = vqa_accuracy(lm_answers(model, qs, contexts), items)
    guessing = vqa_accuracy(lm_answers(model, qs), items)
    order = ["all", *QUESTION_TYPES]
    return {"held_out_loss": round(held_out, 4), "questions": len(items),
            "accuracy_reading_description": {k: round(reading[k], 4) for k in order if k in reading},
            "accuracy_text_only": {k: round(guessing[k], 4) for k in order if k in guessing}}
