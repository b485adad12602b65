"""A bag-of-words text encoder: the simplest text features (CLIP's seeds compare it with transformers)."""

from __future__ import annotations

from typing import Sequence

import torch

from mmcourse.data.tokenizer import SPECIAL_TOKENS, Tokenizer, default_tokenizer


def bag_of_words(texts: Sequence[str], tokenizer: Tokenizer | None = None) -> torch.Tensor:
    """Word counts (N, vocab_size) for each text, ignoring special tokens; word order is lost."""
    tok = tokenizer or default_tokenizer()
    if isinstance(texts, str):
        texts = [texts]
    out = torch.zeros(len(texts), tok.vocab_size)
    for row, text in enumerate(texts):
        for i in tok.encode(text, add_special=False):
            if i >= len(SPECIAL_TOKENS) or i == tok.unk_id:
                out[row, i] += 1
    return out
