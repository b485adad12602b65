"""Connectors: the adapter between a frozen vision encoder and a frozen language model (notebook 06).

The lecture's framework is *perception -> adapter -> language*. The vision encoder turns an image into
a grid of patch features ``(B, N, D_v)``; the language model reads token embeddings ``(B, L, D)``; a
connector bridges the two. Four designs, each small enough to read on one screen:

* **LLaVA** (``LinearProjector``, ``MLPProjector``): every patch token, mapped into the LM's embedding
  space by a linear layer (LLaVA) or a two-layer MLP (LLaVA-1.5), then placed in the text like words of
  a foreign language. As many visual tokens as patches (``pool_patches`` averages the grid first when
  fewer are wanted). The MLP has the parameter names of transformers' ``LlavaMultiModalProjector``.
* **Flamingo** (``PerceiverResampler``): R learned latents attend to the patches *and to themselves*
  (keys and values are ``cat(patches, latents)``), so the output has R tokens whatever the number of
  patches. Flamingo feeds them to the LM through ``GatedCrossAttention`` layers inserted between the
  frozen LM's blocks (``FlamingoLM``): ``x = x + tanh(g) * attn(x, visual)``, with the gate ``g`` at 0,
  so at the start the LM computes exactly what it computed alone.
* **BLIP-2** (``QFormer``): Q learned queries that attend to each other (self-attention) and to the
  patches (cross-attention); their outputs, projected, are the visual tokens. (BLIP-2 trains it first
  with contrastive, matching and captioning objectives; the course trains it with captioning only.)

This module imports no model: it takes the vision features and the language model as arguments.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor


# ----------------------------------------------------------------------------------- LLaVA: projectors


class LinearProjector(nn.Module):
    """LLaVA's projector: one linear map W per patch token, ``(B, N, D_v) -> (B, N, D)``."""

    def __init__(self, vision_dim: int, lm_dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(vision_dim, lm_dim)

    def forward(self, patches: Tensor) -> Tensor:
        return self.linear_1(patches)


class MLPProjector(nn.Module):
    """LLaVA-1.5's projector: linear -> GELU -> linear per patch token, ``(B, N, D_v) -> (B, N, D)``.

    The names (``linear_1``, ``act``, ``linear_2``) are those of transformers' ``LlavaMultiModalProjector``,
    so the same state dict loads into both (the tests check they compute the same thing).
    """

    def __init__(self, vision_dim: int, lm_dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(vision_dim, lm_dim)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(lm_dim, lm_dim)

    def forward(self, patches: Tensor) -> Tensor:
        return self.linear_2(self.act(self.linear_1(patches)))


def pool_patches(patches: Tensor, tokens: int) -> Tensor:
    """Average a square grid of ``N`` patch tokens down to ``tokens`` (a square number): ``(B, N, D) ->
    (B, tokens, D)``, in raster order. Fewer visual tokens, less for the LM to read."""
    b, n, d = patches.shape
    side, out = math.isqrt(n), math.isqrt(tokens)
    if side * side != n or out * out != tokens or tokens > n:
        raise ValueError(f"pool_patches needs square numbers with tokens <= patches, got {n} patches -> {tokens}")
    grid = patches.transpose(1, 2).reshape(b, d, side, side)
    return F.adaptive_avg_pool2d(grid, out).flatten(2).transpose(1, 2)


# --------------------------------------------------------------------------- attention, written out once


class Attention(nn.Module):
    """Multi-head attention of ``x`` (B, L, D) over a ``context`` (B, S, D_c): softmax(QK^T / sqrt(d)) V."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        context_dim = context_dim or dim
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(context_dim, dim)
        self.v_proj = nn.Linear(context_dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        b, l, d = x.shape
        h = self.heads
        q = self.q_proj(x).view(b, l, h, d // h).transpose(1, 2)  # (B, h, L, d/h)
        k = self.k_proj(context).view(b, -1, h, d // h).transpose(1, 2)  # (B, h, S, d/h)
        v = self.v_proj(context).view(b, -1, h, d // h).transpose(1, 2)
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // h), dim=-1)  # (B, h, L, S)
        return self.out_proj((weights @ v).transpose(1, 2).reshape(b, l, d))


def feed_forward(dim: int, mult: int = 2) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, mult * dim), nn.GELU(), nn.Linear(mult * dim, dim))


# ------------------------------------------------------------------------------ Flamingo: the resampler


class PerceiverResampler(nn.Module):
    """Flamingo's Perceiver resampler: ``(B, N, D_v)`` patches -> ``(B, num_latents, lm_dim)``, for any N.

    Per layer (the lecture's pseudocode): ``x = x + attention(q=x, kv=concat([x_f, x]))``, then
    ``x = x + ffw(x)``; the latents ``x`` start as learned vectors, ``x_f`` are the patch features.
    """

    def __init__(self, vision_dim: int, lm_dim: int, *, num_latents: int = 16, dim: int = 64, depth: int = 2,
                 heads: int = 4) -> None:
        super().__init__()
        self.latents = nn.Parameter(torch.randn(num_latents, dim) * 0.02)
        self.media_proj = nn.Linear(vision_dim, dim)
        self.layers = nn.ModuleList(
            nn.ModuleDict({"norm_media": nn.LayerNorm(dim), "norm_latents": nn.LayerNorm(dim),
                           "attn": Attention(dim, heads), "ff": feed_forward(dim)})
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, lm_dim)

    def forward(self, patches: Tensor) -> Tensor:
        media = self.media_proj(patches)  # (B, N, dim)
        x = self.latents.expand(patches.shape[0], -1, -1)  # (B, R, dim)
        for layer in self.layers:
            m, lat = layer["norm_media"](media), layer["norm_latents"](x)
            x = x + layer["attn"](lat, torch.cat([m, lat], dim=1))  # keys and values: patches and latents
            x = x + layer["ff"](x)
        return self.out(self.norm(x))  # (B, R, lm_dim)


# ------------------------------------------------------------------------ Flamingo: gated cross-attention


class GatedCrossAttention(nn.Module):
    """A Flamingo block between two frozen LM blocks: text tokens ``x`` (B, L, D) look at the visual
    tokens (B, R, D_v) through cross-attention, then a feed-forward layer, each behind a tanh gate::

        x = x + tanh(attn_gate) * attn(norm(x), visual)
        x = x + tanh(ff_gate) * ffw(x)

    Both gates start at 0, so at initialisation the block is the identity, exactly.
    """

    def __init__(self, dim: int, visual_dim: int, heads: int = 4) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, context_dim=visual_dim)
        self.ff = feed_forward(dim)
        self.attn_gate = nn.Parameter(torch.zeros(()))
        self.ff_gate = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor, visual: Tensor) -> Tensor:
        x = x + torch.tanh(self.attn_gate) * self.attn(self.norm(x), visual)
        return x + torch.tanh(self.ff_gate) * self.ff(x)


class FlamingoLM(nn.Module):
    """A frozen causal LM with a ``GatedCrossAttention`` block before each of its blocks listed in
    ``every`` (by default all): ``forward(ids, visual) -> logits``. The LM is used, not copied; it needs
    ``token_embedding``, ``position_embedding``, ``blocks``, ``norm`` and ``head`` (the course's
    ``CausalLM`` has them)."""

    def __init__(self, lm: nn.Module, visual_dim: int, *, every: int = 1, heads: int = 4) -> None:
        super().__init__()
        self.lm = lm
        width = lm.token_embedding.embedding_dim
        self.where = [i for i in range(len(lm.blocks)) if i % every == 0]
        self.xattn = nn.ModuleList(GatedCrossAttention(width, visual_dim, heads) for _ in self.where)

    def forward(self, ids: Tensor, visual: Tensor) -> Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.lm.token_embedding(ids) + self.lm.position_embedding(positions)  # (B, L, D)
        gates = dict(zip(self.where, self.xattn))
        for i, block in enumerate(self.lm.blocks):
            if i in gates:
                x = gates[i](x, visual)
            x = block(x, causal=True)
        return self.lm.head(self.lm.norm(x))  # (B, L, vocab)


# ----------------------------------------------------------------------------------- BLIP-2: Q-Former


class QFormer(nn.Module):
    """BLIP-2-style querying transformer: ``(B, N, D_v)`` patches -> ``(B, num_queries, lm_dim)``.

    Per layer: the queries attend to each other (self-attention), then to the patches
    (cross-attention), then a feed-forward layer; a linear map projects them into the LM.
    """

    def __init__(self, vision_dim: int, lm_dim: int, *, num_queries: int = 16, dim: int = 64, depth: int = 2,
                 heads: int = 4) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(num_queries, dim) * 0.02)
        self.layers = nn.ModuleList(
            nn.ModuleDict({"norm_self": nn.LayerNorm(dim), "self_attn": Attention(dim, heads),
                           "norm_cross": nn.LayerNorm(dim), "cross_attn": Attention(dim, heads, context_dim=vision_dim),
                           "ff": feed_forward(dim)})
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, lm_dim)

    def forward(self, patches: Tensor) -> Tensor:
        q = self.queries.expand(patches.shape[0], -1, -1)  # (B, Q, dim)
        for layer in self.layers:
            h = layer["norm_self"](q)
            q = q + layer["self_attn"](h, h)
            q = q + layer["cross_attn"](layer["norm_cross"](q), patches)
            q = q + layer["ff"](q)
        return self.out(self.norm(q))  # (B, Q, lm_dim)


CONNECTORS: dict[str, type[nn.Module]] = {
    "linear": LinearProjector, "mlp": MLPProjector, "resampler": PerceiverResampler, "qformer": QFormer,
}


def build_connector(kind: str, vision_dim: int, lm_dim: int, **options) -> nn.Module:
    """A connector by name: ``"linear"``, ``"mlp"`` (LLaVA), ``"resampler"`` (Flamingo), ``"qformer"`` (BLIP-2)."""
    if kind not in CONNECTORS:
        raise ValueError(f"unknown connector {kind!r}; choose one of {', '.join(map(repr, CONNECTORS))}")
    return CONNECTORS[kind](vision_dim, lm_dim, **options)


def count_parameters(module: nn.Module, *, trainable: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)
