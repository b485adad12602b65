"""DALL-E's stage 2: a decoder-only transformer over one sequence, [text tokens ; image tokens].

    <bos> a red circle <eos> <pad> ... | i_0 i_1 ... i_63
    \\________ text_length _________/   \\_ 8 x 8 codes of the frozen dVAE, row by row _/

Text and image tokens come from two vocabularies, so each modality has its own token embedding,
its own position embedding and its own output head; the blocks in between (the course's shared
``Block``, pre-norm, causal) are one stack over the whole sequence. Position p predicts token p + 1:
the text head predicts the caption (DALL-E kept that term, weighted 1/8), the image head the image
tokens (weighted 7/8), the first of them from the caption's last position.

The dVAE that turns codes back into pixels is frozen and belongs to another checkpoint: it is kept
outside the module tree (not in this model's state dict), as the diffusion model keeps its text
encoder.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import torch
from torch import nn

from mmcourse.data.tokenizer import default_tokenizer
from mmcourse.models.transformer import Block, KVCache

Tensor = torch.Tensor


class DALLE(nn.Module):
    """``dvae``: the frozen stage-1 model (``.num_codes``, ``.grid``, ``.decode``); ``text_length``: the
    text budget in tokens (``<bos>`` and ``<eos>`` included; longer captions are truncated, with a warning)."""

    def __init__(self, dvae: nn.Module, *, text_length: int = 12, width: int = 128, layers: int = 4, heads: int = 4):
        super().__init__()
        self.__dict__["dvae"] = dvae.eval().requires_grad_(False)  # frozen, outside the module tree
        self.tokenizer = default_tokenizer()
        self.text_length, self.num_codes, self.grid = text_length, int(dvae.num_codes), int(dvae.grid)
        self.image_length = self.grid * self.grid
        self.config = {"text_length": text_length, "width": width, "layers": layers, "heads": heads}
        self.text_embedding = nn.Embedding(self.tokenizer.vocab_size, width)
        self.text_position = nn.Embedding(text_length, width)
        self.image_embedding = nn.Embedding(self.num_codes, width)
        self.image_position = nn.Embedding(self.image_length, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        for i, block in enumerate(self.blocks):
            block.attn.slot = i  # its place in a KVCache
        self.norm = nn.LayerNorm(width)
        self.text_head = nn.Linear(width, self.tokenizer.vocab_size, bias=False)
        self.image_head = nn.Linear(width, self.num_codes, bias=False)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------ the sequence

    def tokenize(self, captions: Sequence[str] | str) -> Tensor:
        """captions -> (N, text_length) ids, padded; a caption longer than the budget keeps its first
        ``text_length - 2`` words and its ``<eos>`` (a warning names it)."""
        if isinstance(captions, str):
            captions = [captions]
        if not captions:
            raise ValueError("need at least one caption")
        for c in captions:
            if len(self.tokenizer.encode(c)) > self.text_length:
                warnings.warn(f"caption {c!r} is longer than the text budget of {self.text_length} tokens "
                              f"(<bos> and <eos> included): truncated to its first {self.text_length - 2} words",
                              stacklevel=3)
        return self.tokenizer(list(captions), context_length=self.text_length).to(self.text_head.weight.device)

    def embed_text(self, ids: Tensor) -> Tensor:
        """(N, T) text ids -> (N, T, width): text token + text position."""
        pos = torch.arange(ids.shape[1], device=ids.device)
        return self.text_embedding(ids) + self.text_position(pos)

    def embed_image(self, codes: Tensor, start: int = 0) -> Tensor:
        """(N, L) image codes at image positions start .. start + L - 1 -> (N, L, width)."""
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.num_codes):
            raise ValueError(f"image codes must lie in [0, {self.num_codes})")
        if start + codes.shape[1] > self.image_length:
            raise ValueError(f"at most {self.image_length} image tokens, got positions up to {start + codes.shape[1]}")
        pos = torch.arange(start, start + codes.shape[1], device=codes.device)
        return self.image_embedding(codes) + self.image_position(pos)

    def new_cache(self) -> KVCache:
        """An empty key-value cache for ``transformer(..., cache=)``."""
        return KVCache()

    def transformer(self, x: Tensor, *, cache: KVCache | None = None) -> Tensor:
        """(N, L, width) embedded tokens (following those in ``cache``, if given) -> (N, L, width) after the final norm."""
        for block in self.blocks:
            x = block(x, causal=True, cache=cache)
        if cache is not None:
            cache.length += x.shape[1]
        return self.norm(x)

    def forward(self, text_ids: Tensor, codes: Tensor) -> tuple[Tensor, Tensor]:
        """text ids (N, T) and image codes (N, h, w) or (N, h*w) -> (text logits (N, T-1, V) for text
        tokens 1..T-1, image logits (N, h*w, K) for image tokens 0..h*w-1)."""
        codes = codes.flatten(1)
        x = torch.cat([self.embed_text(text_ids), self.embed_image(codes[:, :-1])], dim=1)  # (N, T + hw - 1, W)
        h = self.transformer(x)
        t = text_ids.shape[1]
        return self.text_head(h[:, : t - 1]), self.image_head(h[:, t - 1 :])

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        """(N, h, w) codes -> images (N, 3, 4h, 4w) in [0, 1], by the frozen dVAE (on its own device)."""
        dev = next(self.dvae.parameters()).device
        return self.dvae.decode(codes.to(dev))
