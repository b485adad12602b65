"""The course CLIP's text side as one module that fine-tuning can reach: separate q/k/v projections and
room for new words.

``TextTower.from_clip(clip, new_words)`` computes the same function as ``clip.encode_text`` (token and
position embeddings, causal pre-norm blocks, the hidden state at ``<eos>``, the text projection), with two
changes that do not alter it:

- each block is :class:`mmcourse.models.transformer.Block` (``Block.from_text_block``): the fused
  ``nn.MultiheadAttention`` split into ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``, which LoRA targets
  by name;
- the vocabulary is the course vocabulary followed by ``new_words``, whose embeddings
  (``new_embedding``, one row per word) start as the ``<unk>`` embedding: before any training a new word
  means exactly what the frozen tokenizer made of it.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mmcourse.data.tokenizer import Tokenizer, default_tokenizer
from mmcourse.models.transformer import Block

Tensor = torch.Tensor


class TextTower(nn.Module):
    """Captions (list of str) or ids (B, L) -> text embeddings (B, embed_dim), unnormalised.

    ``token_embedding`` holds the course vocabulary, ``new_embedding`` (len(new_words), width) the words
    appended after it; ``blocks`` are causal pre-norm blocks; ``projection`` is CLIP's text projection.
    """

    def __init__(self, vocab_size: int, width: int = 64, layers: int = 2, heads: int = 4, context_length: int = 32,
                 embed_dim: int = 64, new_words: Sequence[str] = ()) -> None:
        super().__init__()
        base = default_tokenizer()
        if vocab_size != base.vocab_size:
            raise ValueError(f"vocab_size {vocab_size} is not the course vocabulary's ({base.vocab_size})")
        clash = [w for w in new_words if w in base.stoi]
        if clash or len(set(new_words)) != len(new_words):
            raise ValueError(f"new_words must be new and distinct; already known or repeated: {clash or list(new_words)}")
        self.tokenizer = Tokenizer(list(base.itos) + list(new_words))
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.new_embedding = nn.Parameter(torch.zeros(len(new_words), width))
        self.position_embedding = nn.Parameter(torch.zeros(context_length, width))
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.projection = nn.Linear(width, embed_dim, bias=False)
        self.new_words, self.context_length, self.width = tuple(new_words), context_length, width
        self.config = {"vocab_size": vocab_size, "width": width, "layers": layers, "heads": heads,
                       "context_length": context_length, "embed_dim": embed_dim, "new_words": list(new_words)}

    @classmethod
    def from_clip(cls, clip: nn.Module, new_words: Sequence[str] = ()) -> "TextTower":
        """The text side of a course CLIP (a ``TextTransformer`` tower, causal), weights copied, new words added."""
        text = clip.text
        if not getattr(text, "causal", False) or not hasattr(text, "blocks"):
            raise ValueError("from_clip needs a CLIP whose text tower is the causal TextTransformer")
        cfg = text.config
        tower = cls(cfg["vocab_size"], cfg["width"], cfg["layers"], cfg["heads"], cfg["context_length"],
                    clip.text_projection.out_features, new_words)
        tower.to(text.token_embedding.weight.device)
        with torch.no_grad():
            tower.token_embedding.weight.copy_(text.token_embedding.weight)
            tower.new_embedding.copy_(text.token_embedding.weight[text.tokenizer.unk_id].expand_as(tower.new_embedding))
            tower.position_embedding.copy_(text.position_embedding)
            tower.norm.load_state_dict(text.norm.state_dict())
            tower.projection.load_state_dict(clip.text_projection.state_dict())
        tower.blocks = nn.ModuleList(Block.from_text_block(b) for b in text.blocks)
        return tower

    def tokenize(self, texts: str | Sequence[str]) -> Tensor:
        """(B, context_length) ids over the course vocabulary followed by the new words."""
        return self.tokenizer(texts, context_length=self.context_length)

    def embed(self, ids: Tensor) -> Tensor:
        """(B, L, width): rows of ``token_embedding`` for course words, of ``new_embedding`` for new ones."""
        return F.embedding(ids, torch.cat([self.token_embedding.weight, self.new_embedding]))

    def forward(self, texts: Sequence[str] | Tensor) -> Tensor:
        ids = texts if isinstance(texts, Tensor) else self.tokenize(texts)
        ids = ids.to(self.position_embedding.device)
        ids = ids[:, : int((ids != self.tokenizer.pad_id).sum(dim=1).max().clamp(min=1))]  # drop all-padding columns
        x = self.embed(ids) + self.position_embedding[: ids.shape[1]]
        for block in self.blocks:
            x = block(x, causal=True)
        h = self.norm(x)
        eos = (ids == self.tokenizer.eos_id).int().argmax(dim=1)  # first <eos> in each row
        return self.projection(h[torch.arange(ids.shape[0], device=ids.device), eos])
