"""Training and measuring a vision-language model (notebook 06): what the loss sees, the two stages of
LLaVA, and how answers are scored.

* ``answer_mask``: in a chat, only the assistant's answers (and the stop token that ends each of them)
  are trained on; the system prompt, the user's question and the image are context, never targets.
* ``chat_loss``: next-token cross-entropy on the masked positions only.
* ``set_stage``: stage 1 trains the connector alone (vision encoder and LM frozen) on captioning;
  stage 2 trains the connector and the LM's LoRA matrices on instructions.
* ``vqa_accuracy`` / ``caption_scores``: exact-match accuracy per question type, and a caption's exact
  match and recall of the words that matter (colours, shapes, sizes, sides).
* ``text_only_answers``: the same language model answering from the question alone (the baseline a
  vision-language model must beat by a wide margin, or it is not looking at the image).

Models are passed in; nothing here builds or loads one.
"""

from __future__ import annotations

import time
import warnings
from collections import defaultdict
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mmcourse.data.chat import (
    COLORS, QA, SHAPES, SIDES, SIZES, ChatTokenizer, chat_prefix, chat_tokenizer, chat_turn, pad,
)

Tensor = torch.Tensor
IGNORE = -100  # the label cross-entropy skips


def answer_mask(ids: Tensor, assistant_id: int, stop_id: int) -> Tensor:
    """Bool ``(B, L)``: True at every token the assistant says, i.e. after each ``<assistant>`` token up to
    and including the ``<stop>`` that ends its turn; False for everything else (system prompt, user turns,
    the ``<assistant>`` token itself, padding)."""
    inside = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
    mask = torch.zeros_like(ids, dtype=torch.bool)
    for t in range(ids.shape[1]):
        tok = ids[:, t]
        mask[:, t] = inside
        inside = torch.where(tok == assistant_id, torch.ones_like(inside), inside)
        inside = torch.where(tok == stop_id, torch.zeros_like(inside), inside)
    return mask


def chat_loss(logits: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """Mean cross-entropy of ``logits`` (B, L, V), position t predicting ``targets[:, t]`` (B, L), over the
    positions where ``mask`` (B, L) is True."""
    labels = targets.masked_fill(~mask, IGNORE)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE)


def lm_loss(lm: nn.Module, ids: Tensor, pad_id: int = 0) -> Tensor:
    """Plain language-model loss on padded text ``(B, L)``: every real token predicts the next one."""
    logits = lm(ids[:, :-1])
    return chat_loss(logits, ids[:, 1:], ids[:, 1:] != pad_id)


# ------------------------------------------------------------------------------------------- the stages


def set_stage(model: nn.Module, stage: int) -> list[str]:
    """Freeze and unfreeze for LLaVA's stage 1 (the connector alone) or stage 2 (connector + LoRA).

    ``model`` has ``connector_parameters()`` and ``lora_parameters()``; everything else is frozen.
    Returns the names of the trainable parameters.
    """
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 (connector alone) or 2 (connector + LoRA), got {stage!r}")
    model.requires_grad_(False)
    for p in model.connector_parameters():
        p.requires_grad_(True)
    if stage == 2:
        lora = list(model.lora_parameters())
        if not lora:
            raise ValueError("stage 2 trains LoRA matrices, but the model has none (build it with lora=...)")
        for p in lora:
            p.requires_grad_(True)
    return [n for n, p in model.named_parameters() if p.requires_grad]


# ------------------------------------------------------------------------------------------- measuring


def vqa_accuracy(predicted: Sequence[str], items: Sequence[QA]) -> dict[str, float]:
    """Exact-match accuracy per question type, and ``"all"`` over every question."""
    right: dict[str, list[bool]] = defaultdict(list)
    for p, qa in zip(predicted, items, strict=True):
        ok = p.strip() == qa.answer
        right[qa.kind].append(ok)
        right["all"].append(ok)
    return {k: sum(v) / len(v) for k, v in right.items()}


_CONTENT = frozenset((*COLORS, *SHAPES, *SIZES, *SIDES))


def caption_scores(predicted: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """``exact``: share of captions equal to the reference; ``recall``: share of the reference's content
    words (colours, shapes, sizes, sides, counted with multiplicity) that the caption also holds."""
    exact, found, total = 0, 0, 0
    for p, r in zip(predicted, references, strict=True):
        exact += p.strip() == r.strip()
        have = [w for w in p.split() if w in _CONTENT]
        for w in (w for w in r.split() if w in _CONTENT):
            total += 1
            if w in have:
                have.remove(w)
                found += 1
    return {"exact": exact / len(references), "recall": found / max(total, 1)}


def check_questions(questions: Sequence[str], tok: ChatTokenizer | None = None) -> list[str]:
    """Questions as a list of non-empty strings; a warning names words the tokenizer does not know."""
    tok = tok or chat_tokenizer()
    if isinstance(questions, str):
        raise TypeError("questions must be a list of strings, one per image (got a single string)")
    questions = list(questions)
    for i, q in enumerate(questions):
        if not isinstance(q, str):
            raise TypeError(f"question {i} must be a string, got {type(q).__name__}")
        if not tok.split(q):
            raise ValueError(f"question {i} is empty")
        unknown = tok.unknown_words(q)
        if unknown:
            warnings.warn(f"question {i} ({q!r}) has words the model does not know, read as <unk>: "
                          f"{', '.join(sorted(set(unknown)))}", stacklevel=3)
    return questions


def greedy(next_logits: Callable[[Tensor], Tensor], ids: Tensor, max_new_tokens: int, stop_id: int) -> Tensor:
    """Greedy decoding without a cache: ``next_logits(ids)`` gives (B, V) for the next token; rows that
    said ``stop_id`` keep saying it. Returns the new tokens (B, max_new_tokens)."""
    out = []
    done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
    for _ in range(max_new_tokens):
        nxt = next_logits(ids).argmax(-1)
        nxt = torch.where(done, torch.full_like(nxt, stop_id), nxt)
        done |= nxt == stop_id
        out.append(nxt)
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        if done.all():
            break
    return torch.stack(out, dim=1)


@torch.no_grad()
def lm_answers(lm: nn.Module, questions: Sequence[str], contexts: Sequence[str] | None = None, *,
               max_new_tokens: int = 4) -> list[str]:
    """The language model alone answering each question, with ``contexts[i]`` (text, e.g. a scene's
    description) where the image would be, or with nothing there (``contexts=None``: the text-only
    baseline). Greedy; questions of one length are answered together."""
    tok = chat_tokenizer()
    questions = check_questions(questions, tok)
    device = next(lm.parameters()).device
    rows = [chat_prefix(tok) + (tok.words(contexts[i]) if contexts is not None else []) + chat_turn(q, None, tok)[0]
            for i, q in enumerate(questions)]
    answers = [""] * len(rows)
    for length in sorted({len(r) for r in rows}):
        which = [i for i, r in enumerate(rows) if len(r) == length]
        ids = torch.tensor([rows[i] for i in which], device=device)
        new = lm.generate(ids, max_new_tokens, stop_id=tok.stop_id)[:, length:]
        for i, n in zip(which, new):
            answers[i] = tok.decode_answer(n)
    return answers


def batch_chats(items: Sequence[tuple[str, str]], tok: ChatTokenizer | None = None) -> tuple[Tensor, Tensor]:
    """Padded ids ``(B, L)`` of ``question <assistant> answer <stop>`` turns and their answer mask."""
    tok = tok or chat_tokenizer()
    ids = pad([chat_turn(q, a, tok)[0] for q, a in items], tok.pad_id)
    return ids, answer_mask(ids, tok.assistant_id, tok.stop_id)


def seconds_per_call(fn: Callable[[], object], *, repeat: int = 5) -> float:
    """Median wall time of ``fn()`` over ``repeat`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]
