"""Bag of words: a text as the multiset of its words, order lost (the CLIP paper compares it with transformers).

One rule for every bag of words in the course (the counts here, ``BagOfWordsEncoder``'s mean of word
embeddings): **a bag holds the text's vocabulary words and nothing else.** Special tokens (``<bos>``,
``<eos>``, ``<pad>``, ...) are framing, not words. ``<unk>`` is dropped too, because it is not one word
but every word the vocabulary lacks: counting it would give "a vermilion square" and "a chartreuse
square" a shared feature that says nothing about either colour, and hand a learned encoder an
embedding no training caption ever updated (the shapes world's captions use only vocabulary words),
which would drag the mean of the known words towards noise. Which words were lost is reported where
it matters instead (``Tokenizer.unknown_words``, ``mmcourse.zeroshot.unknown_words``).
"""

from __future__ import annotations

from typing import Sequence

import torch

from mmcourse.data.tokenizer import SPECIAL_TOKENS, Tokenizer, default_tokenizer

Tensor = torch.Tensor


def is_word(ids: Tensor) -> Tensor:
    """Bool mask, same shape as ``ids``: True for vocabulary words, False for special tokens and ``<unk>``
    (a vocabulary starts with the special tokens, ``<unk>`` among them; see ``mmcourse.data.tokenizer``)."""
    return ids >= len(SPECIAL_TOKENS)


def bag_of_words(texts: Sequence[str] | str, tokenizer: Tokenizer | None = None) -> Tensor:
    """Word counts (N, vocab_size) for each text: how often each vocabulary word occurs, nothing else.

    Special tokens and unknown words are not counted (the module's rule), so a text of unknown words
    only is a row of zeros. The whole text counts (no context length).
    """
    tok = tokenizer or default_tokenizer()
    if isinstance(texts, str):
        texts = [texts]
    rows: list[int] = []
    ids: list[int] = []
    for row, text in enumerate(texts):
        encoded = tok.encode(text, add_special=False)
        ids.extend(encoded)
        rows.extend([row] * len(encoded))
    ids_t, rows_t = torch.tensor(ids, dtype=torch.long), torch.tensor(rows, dtype=torch.long)
    keep = is_word(ids_t)
    out = torch.zeros(len(texts), tok.vocab_size)
    return out.index_put_((rows_t[keep], ids_t[keep]), torch.ones(int(keep.sum())), accumulate=True)
