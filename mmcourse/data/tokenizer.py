"""A word-level tokenizer shared by every notebook that reads text.

The vocabulary is a committed file (``vocab.txt``, one token per line, ids are line numbers), so
ids never change under a trained checkpoint; new words are only ever appended. Text is lowercased
and split into words, single digits and punctuation marks. A word that is not in the vocabulary
becomes ``<unk>``: the tokenizer never fails on unusual text, and ``unknown_words`` tells you which
words were lost, so a prompt such as "a photo of a vermilion square" is still encoded (as
"a photo of a <unk> square") rather than rejected.

Sequences are framed as ``<bos> w1 ... wk <eos>`` and padded with ``<pad>`` (id 0). When a text is
longer than ``context_length`` it is truncated but keeps its ``<eos>``, because models that pool
at the end-of-text position (as CLIP does) need it.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources
from typing import Iterable, Sequence

import torch

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<unk>", "<bos>", "<eos>", "<sep>", "<mask>", "<image>")
_TOKEN = re.compile(r"[a-z]+|[0-9]|[^\sa-z0-9]")


class Tokenizer:
    """Maps text to integer ids and back. ``Tokenizer()`` loads the course vocabulary."""

    def __init__(self, vocabulary: Sequence[str] | None = None) -> None:
        words = list(vocabulary) if vocabulary is not None else _course_vocabulary()
        if list(words[: len(SPECIAL_TOKENS)]) != list(SPECIAL_TOKENS):
            raise ValueError(f"a vocabulary must start with the special tokens {SPECIAL_TOKENS}")
        if len(set(words)) != len(words):
            raise ValueError("the vocabulary has duplicate tokens")
        self.itos: list[str] = words
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(words)}
        self.pad_id, self.unk_id, self.bos_id, self.eos_id, self.sep_id, self.mask_id, self.image_id = range(
            len(SPECIAL_TOKENS)
        )

    def __len__(self) -> int:
        return len(self.itos)

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def split(self, text: str) -> list[str]:
        """The words of ``text`` as the tokenizer sees them (lowercased; punctuation separate)."""
        return _TOKEN.findall(_as_text(text).lower())

    def unknown_words(self, text: str) -> list[str]:
        """Words of ``text`` that would become ``<unk>``."""
        return [w for w in self.split(text) if w not in self.stoi]

    def encode(self, text: str, *, add_special: bool = True) -> list[int]:
        """Ids of one text, framed by ``<bos>``/``<eos>`` unless ``add_special=False``."""
        ids = [self.stoi.get(w, self.unk_id) for w in self.split(text)]
        return [self.bos_id, *ids, self.eos_id] if add_special else ids

    def decode(self, ids: Iterable[int] | torch.Tensor, *, skip_special: bool = True) -> str:
        """Text for ``ids``; stops at ``<eos>`` and drops special tokens unless ``skip_special=False``."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        words = []
        for i in ids:
            if not 0 <= int(i) < len(self.itos):
                raise ValueError(f"id {i} is outside the vocabulary (size {len(self.itos)})")
            if skip_special and int(i) == self.eos_id:
                break
            if skip_special and int(i) < len(SPECIAL_TOKENS):
                continue
            words.append(self.itos[int(i)])
        return " ".join(words)

    def __call__(self, texts: str | Sequence[str], context_length: int = 32) -> torch.Tensor:
        """A padded ``(N, context_length)`` long tensor of ids for a text or a list of texts."""
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, (list, tuple)):
            raise TypeError(f"the tokenizer expects a string or a list of strings, got {type(texts).__name__}")
        if context_length < 2:
            raise ValueError(f"context_length must be >= 2 (room for <bos> and <eos>), got {context_length}")
        out = torch.full((len(texts), context_length), self.pad_id, dtype=torch.long)
        for row, text in enumerate(texts):
            try:
                ids = self.encode(text)
            except TypeError as err:
                raise TypeError(f"text {row}: {err}") from None
            if len(ids) > context_length:
                ids = ids[: context_length - 1] + [self.eos_id]
            out[row, : len(ids)] = torch.tensor(ids)
        return out


def _as_text(text: object) -> str:
    if not isinstance(text, str):
        raise TypeError(f"the tokenizer expects text (str), got {type(text).__name__} ({text!r:.40})")
    return text


@lru_cache(maxsize=1)
def _course_vocabulary() -> list[str]:
    lines = resources.files("mmcourse.data").joinpath("vocab.txt").read_text(encoding="utf-8").splitlines()
    return [w for w in lines if w]


@lru_cache(maxsize=1)
def default_tokenizer() -> Tokenizer:
    """The course tokenizer (one shared instance)."""
    return Tokenizer()
