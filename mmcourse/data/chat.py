"""Text for the course's small language model and its vision-language models (notebook 06).

Three kinds of text, all generated from the shapes world, so that nothing is downloaded:

* **captions**, the shapes world's own (``make_shapes(...).captions``);
* a **description** of a scene: every object with its size, colour, shape and side of the image,
  ``"a large red circle on the left and a small blue square in the center"``, a dense caption a
  vision-language model can learn to produce (stage 1) and a language model can answer questions from;
* **questions and answers** about an image: the shapes world's ``.qa`` (count, colour, shape, size,
  yes/no) plus two kinds about position that ``.qa`` does not ask ("where is the red circle?" ->
  left / center / right; "is the red circle to the left of the blue square?" -> yes / no).

They are put in a **chat format** with three roles and a stop token, as instruction-tuned models are::

    <system> answer questions about the image . <user> <image> how many shapes are there ? <assistant> two <stop>

``<image>`` marks where the image goes: a vision-language model puts its visual tokens there; the
text-only corpus that pretrains the language model puts the scene's description there instead.

The role tokens and the stop token are **appended** to the course vocabulary (``chat_tokenizer()``),
never inserted: every existing id keeps its meaning, so the bundled checkpoints that read the course
vocabulary (the course CLIP's text tower) are untouched, and ``vocab.txt`` does not change. They are
written as ids, never parsed from text: the course tokenizer splits ``"<stop>"`` into three marks.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator, Sequence

import torch

from mmcourse.data import shapes as _shapes
from mmcourse.data.shapes import COLORS, COUNT_WORDS, SHAPES, SIZES, ShapeObject, ShapesData
from mmcourse.data.tokenizer import Tokenizer, _course_vocabulary

ROLE_TOKENS: tuple[str, ...] = ("<system>", "<user>", "<assistant>")
STOP_TOKEN = "<stop>"
# words the chat needs that the course vocabulary lacks (appended after the role and stop tokens)
EXTRA_WORDS: tuple[str, ...] = ("where", "answer", "questions", "about", "describe")
SYSTEM_PROMPT = "answer questions about the image ."
DESCRIBE = "describe the image ."
SIDES: tuple[str, ...] = ("left", "center", "right")
QUESTION_TYPES: tuple[str, ...] = ("count", "color", "shape", "size", "yes/no", "position")


class ChatTokenizer(Tokenizer):
    """The course tokenizer with the chat's role tokens, stop token and a few words appended.

    ``system_id``, ``user_id``, ``assistant_id``, ``stop_id`` are the new tokens' ids; every id of the
    course vocabulary is unchanged (``chat_tokenizer().itos[:len(course)] == course``).
    """

    def __init__(self) -> None:
        super().__init__([*_course_vocabulary(), *ROLE_TOKENS, STOP_TOKEN, *EXTRA_WORDS])
        self.system_id, self.user_id, self.assistant_id = (self.stoi[t] for t in ROLE_TOKENS)
        self.stop_id = self.stoi[STOP_TOKEN]

    def words(self, text: str) -> list[int]:
        """Ids of plain text, no framing (unknown words become ``<unk>``)."""
        return self.encode(text, add_special=False)

    def decode_answer(self, ids: Sequence[int] | torch.Tensor) -> str:
        """The text of generated ids up to the first ``<stop>`` (or ``<eos>``), special tokens dropped."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        out = []
        for i in ids:
            if i in (self.stop_id, self.eos_id):
                break
            if i >= len(self.itos):
                raise ValueError(f"id {i} is outside the vocabulary (size {len(self.itos)})")
            if self.itos[i].startswith("<"):
                continue
            out.append(self.itos[i])
        return " ".join(out)

    def render(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Every token of ``ids`` as text, special tokens included (for showing a training example)."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return " ".join(self.itos[i] for i in ids if i != self.pad_id)


@lru_cache(maxsize=1)
def chat_tokenizer() -> ChatTokenizer:
    """The shared chat tokenizer (course vocabulary + roles + stop token + a few words)."""
    return ChatTokenizer()


# ----------------------------------------------------------------------------------- describing scenes


def side_of(obj: ShapeObject) -> str:
    """Which third of the image the object's centre lies in, left to right: left, center or right."""
    return SIDES[min(int(obj.x * 3), 2)]


def describe(objects: Sequence[ShapeObject]) -> str:
    """A dense caption: every object, left to right, with its size, colour, shape and side."""
    parts = []
    for o in sorted(objects, key=lambda o: o.x):
        where = "in the center" if side_of(o) == "center" else f"on the {side_of(o)}"
        parts.append(f"a {o.size} {o.color} {o.shape} {where}")
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


# -------------------------------------------------------------------------------- questions and answers


@dataclass(frozen=True)
class QA:
    question: str
    answer: str
    kind: str  # one of QUESTION_TYPES


def question_type(question: str) -> str:
    """The kind of a question as the shapes world phrases it (one of ``QUESTION_TYPES``)."""
    q = question.strip().lower()
    if q.startswith("how many"):
        return "count"
    if q.startswith("what color"):
        return "color"
    if q.startswith("what shape"):
        return "shape"
    if q.startswith("what size"):
        return "size"
    if q.startswith("where") or " left of " in q:
        return "position"
    if q.startswith("is there"):
        return "yes/no"
    raise ValueError(f"not a question the shapes world asks: {question!r}")


def _position_questions(objs: Sequence[ShapeObject], g: torch.Generator) -> list[tuple[str, str]]:
    pairs = [(o.color, o.shape) for o in objs]
    unique = [o for o in objs if pairs.count((o.color, o.shape)) == 1]
    out = []
    if unique:
        o = unique[int(torch.randint(len(unique), (1,), generator=g))]
        out.append((f"where is the {o.color} {o.shape}?", side_of(o)))
    # left of: two objects whose centres are clearly apart horizontally (a tenth of the image)
    apart = [(a, b) for a in unique for b in unique if a is not b and abs(a.x - b.x) > 0.1]
    if apart:
        a, b = apart[int(torch.randint(len(apart), (1,), generator=g))]
        out.append((f"is the {a.color} {a.shape} to the left of the {b.color} {b.shape}?", "yes" if a.x < b.x else "no"))
    return out


def questions(data: ShapesData, *, seed: int = 0) -> list[list[QA]]:
    """Per image: the shapes world's ``.qa`` and the position questions, each with its kind."""
    out = []
    for i, (objs, qa) in enumerate(zip(data.objects, data.qa)):
        g = torch.Generator().manual_seed(seed * 1_000_003 + i)
        pairs = list(qa) + _position_questions(objs, g)
        out.append([QA(q, a, question_type(q)) for q, a in pairs])
    return out


# --------------------------------------------------------------------------------------- chat format


def chat_prefix(tok: ChatTokenizer | None = None) -> list[int]:
    """The ids before the image: ``<system> answer questions about the image . <user>``."""
    tok = tok or chat_tokenizer()
    return [tok.system_id, *tok.words(SYSTEM_PROMPT), tok.user_id]


def chat_turn(question: str, answer: str | None = None, tok: ChatTokenizer | None = None) -> tuple[list[int], int]:
    """The ids after the image: ``question <assistant> [answer <stop>]``, and where the answer starts.

    Returns ``(ids, start)``: ``ids[start:]`` is the answer with its ``<stop>`` (empty without an answer),
    the part an instruction-tuned model is trained on.
    """
    tok = tok or chat_tokenizer()
    ids = [*tok.words(question), tok.assistant_id]
    start = len(ids)
    if answer is not None:
        ids += [*tok.words(answer), tok.stop_id]
    return ids, start


def chat_text(question: str, answer: str | None = None, context: str = "<image>") -> str:
    """The chat as a person reads it (``context`` is what sits where the image goes)."""
    tail = f" {answer} <stop>" if answer is not None else ""
    return f"<system> {SYSTEM_PROMPT} <user> {context} {question} <assistant>{tail}"


# ------------------------------------------------------------------------------ the language model's text


def lm_text_ids(data: ShapesData, *, seed: int, tok: ChatTokenizer | None = None) -> list[list[int]]:
    """Text-only training sequences for the small language model, one per image of ``data``, in six kinds
    taken in turn: a caption (``<bos> caption <eos>``); "describe the image ." answered with the description;
    three chats in which the scene's description stands where the image would be, followed by one of its
    questions and the answer; and one such question with nothing where the image would be (so the model
    also learns its best guess without an image, the text-only baseline).
    """
    tok = tok or chat_tokenizer()
    qas = questions(data, seed=seed)
    g = torch.Generator().manual_seed(seed)
    out = []
    for i, (objs, caption) in enumerate(zip(data.objects, data.captions)):
        kind = i % 6
        if kind == 0:
            out.append(tok.encode(caption))
            continue
        context = tok.words(describe(objs)) if kind < 5 else []
        if kind == 1:
            turn, _ = chat_turn(DESCRIBE, describe(objs), tok)
        else:
            qa = qas[i][int(torch.randint(len(qas[i]), (1,), generator=g))]
            turn, _ = chat_turn(qa.question, qa.answer, tok)
        out.append([*chat_prefix(tok), *context, *turn])
    return out


def pad(seqs: Sequence[Sequence[int]], value: int = 0) -> torch.Tensor:
    """Right-padded ``(N, longest)`` long tensor."""
    n = max(len(s) for s in seqs)
    out = torch.full((len(seqs), n), value, dtype=torch.long)
    for r, s in enumerate(seqs):
        out[r, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def scenes(n: int, *, seed: int, objects: tuple[int, int] = (1, 3), split: str = "train") -> ShapesData:
    """The annotations of ``make_shapes(n, seed=seed, split=split, objects=objects)`` (objects, captions,
    questions) without rendering a pixel (``images`` is an empty ``(n, 3, 0, 0)`` tensor): text needs none,
    and rendering is most of the shapes world's cost."""
    lo, hi = objects
    g = torch.Generator().manual_seed((seed * len(_shapes.SPLITS) + _shapes.SPLITS.index(split)) % _shapes._SEED_RANGE)
    scene = _shapes._draw_scene(n, lo, hi, _shapes.combos_for(split), 1, g)
    return _shapes._annotate(torch.zeros(n, 3, 0, 0), scene, ("photo",), "varied", seed)


def lm_batches(batch_size: int, *, seed: int, objects: tuple[int, int] = (1, 3)) -> Iterator[torch.Tensor]:
    """Endless padded ``(B, L)`` batches of language-model text from fresh scenes (train split)."""
    tok = chat_tokenizer()
    k = 0
    while True:
        data = scenes(batch_size * 16, seed=seed + k, objects=objects)
        ids = lm_text_ids(data, seed=seed + k, tok=tok)
        k += 1
        for start in range(0, len(ids), batch_size):
            yield pad(ids[start : start + batch_size], tok.pad_id)


__all__ = [
    "COLORS", "COUNT_WORDS", "SHAPES", "SIZES", "QA", "QUESTION_TYPES", "SIDES", "ChatTokenizer", "chat_prefix",
    "chat_text", "chat_tokenizer", "chat_turn", "describe", "lm_batches", "lm_text_ids", "pad", "question_type",
    "questions", "scenes", "side_of",
]
