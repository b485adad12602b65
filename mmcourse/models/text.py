"""A tiny text transformer in CLIP's style: token + position embeddings, pre-norm blocks, and the
hidden state of the end-of-text token as the sentence feature."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mmcourse.data.tokenizer import Tokenizer, default_tokenizer
from mmcourse.models.bow import is_word

Tensor = torch.Tensor


class Block(nn.Module):
    """A pre-norm transformer block: x + attention(norm(x)), then x + MLP(norm(x))."""

    def __init__(self, width: int, heads: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width))

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, attn_mask=attn_mask, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class TextTransformer(nn.Module):
    """Token ids (B, L) -> sentence features (B, width), read off at the ``<eos>`` token.

    The attention is **causal** (each token sees only the tokens before it), as in CLIP's GPT-2-style
    text encoder. Two things follow: the ``<eos>`` token, the last real one, is the only position
    that has seen the whole caption, which is why CLIP pools there; and padding after ``<eos>`` can
    never leak into it, so no padding mask is needed. (CLIP chose a causal model so it could also be
    trained or initialised as a language model; a bidirectional encoder pooled the same way works
    as well for retrieval.)
    """

    def __init__(
        self,
        vocab_size: int | None = None,
        width: int = 64,
        layers: int = 2,
        heads: int = 4,
        context_length: int = 32,
        causal: bool = True,
    ) -> None:
        super().__init__()
        self.tokenizer: Tokenizer = default_tokenizer()
        vocab_size = vocab_size or self.tokenizer.vocab_size
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.position_embedding = nn.Parameter(torch.randn(context_length, width) * 0.01)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.context_length, self.width, self.causal = context_length, width, causal
        mask = torch.full((context_length, context_length), float("-inf")).triu(1) if causal else None
        self.register_buffer("causal_mask", mask, persistent=False)
        self.config = {"vocab_size": vocab_size, "width": width, "layers": layers, "heads": heads,
                       "context_length": context_length, "causal": causal}

    def tokenize(self, texts: str | Sequence[str]) -> Tensor:
        """(B, context_length) ids; ``<bos> words <eos> <pad>...``."""
        return self.tokenizer(texts, context_length=self.context_length)

    def embedding_features(self, x: Tensor) -> Tensor:
        """(B, L, width) token embeddings -> (B, L, width) hidden states after the last block.

        The tower from its input embeddings on: the one path that ids (``token_features``) and learned
        prompt vectors (``mmcourse.prompting``) both take. Position embeddings are added here."""
        length = x.shape[1]
        if length > self.context_length:
            raise ValueError(f"a sequence of {length} tokens is longer than the context ({self.context_length})")
        x = x + self.position_embedding[:length]
        mask = None if self.causal_mask is None else self.causal_mask[:length, :length]
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)

    def features_from_embeddings(self, x: Tensor, eos_index: Tensor) -> Tensor:
        """(B, L, width) token embeddings and (B,) positions of ``<eos>`` -> (B, width) sentence features,
        read at ``<eos>`` exactly as ``forward`` reads them for ids."""
        h = self.embedding_features(x)
        return h[torch.arange(x.shape[0], device=x.device), eos_index]

    def token_features(self, ids: Tensor) -> Tensor:
        """(B, L, width): the hidden state of every token after the last block."""
        return self.embedding_features(self.token_embedding(ids))

    def eos_index(self, ids: Tensor) -> Tensor:
        """(B,) position of the first ``<eos>`` in each row of ``ids``."""
        return (ids == self.tokenizer.eos_id).int().argmax(dim=1)

    def forward(self, ids: Tensor) -> Tensor:
        ids = ids[:, : int((ids != self.tokenizer.pad_id).sum(dim=1).max().clamp(min=1))]  # drop all-padding columns
        return self.features_from_embeddings(self.token_embedding(ids), self.eos_index(ids))


class BagOfWordsEncoder(nn.Module):
    """The simplest text encoder CLIP compared: the mean of word embeddings (order is lost).

    The bag holds the caption's vocabulary words only, as every bag of words in the course does
    (special tokens and ``<unk>`` are dropped; :mod:`mmcourse.models.bow` says why).
    """

    def __init__(self, vocab_size: int | None = None, width: int = 64) -> None:
        super().__init__()
        self.tokenizer: Tokenizer = default_tokenizer()
        vocab_size = vocab_size or self.tokenizer.vocab_size
        self.embedding = nn.EmbeddingBag(vocab_size, width, mode="mean", padding_idx=self.tokenizer.pad_id)
        self.width, self.context_length = width, 32
        self.config = {"vocab_size": vocab_size, "width": width}

    def tokenize(self, texts: str | Sequence[str]) -> Tensor:
        return self.tokenizer(texts, context_length=self.context_length)

    def forward(self, ids: Tensor) -> Tensor:
        words = ids.masked_fill(~is_word(ids), self.tokenizer.pad_id)  # (B, L); padding_idx: left out of the mean
        return self.embedding(words)
