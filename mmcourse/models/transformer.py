"""The transformer pieces the later notebooks share: attention with separate query, key, value and output
projections, a pre-norm block (optionally with cross-attention), a key-value cache, and a small causal
language model (nanoGPT's shape, word-level on the course tokenizer).

Separate ``q_proj``/``k_proj``/``v_proj``/``out_proj`` layers are what LoRA targets by name (notebook 05;
``nn.MultiheadAttention`` fuses the first three into one ``in_proj_weight``); the cache is what makes
generation cost one token's work per step (notebooks 06 and 07); ``embeds=`` lets a vision-language model
put projected image tokens in front of the text (notebook 06).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor


class KVCache:
    """Keys and values of every token seen so far, one ``(k, v)`` pair per self-attention layer.

    ``length`` is the number of cached positions; a model reads it to place new tokens after them.
    """

    def __init__(self) -> None:
        self.layers: dict[int, tuple[Tensor, Tensor]] = {}
        self.length = 0

    def extend(self, slot: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append this step's ``(B, heads, L, d)`` keys and values for layer ``slot``; return all of them."""
        if slot in self.layers:
            k = torch.cat([self.layers[slot][0], k], dim=2)
            v = torch.cat([self.layers[slot][1], v], dim=2)
        self.layers[slot] = (k, v)
        return k, v

    def cached(self, slot: int) -> int:
        """How many positions layer ``slot`` holds (0 before its first call)."""
        return self.layers[slot][0].shape[2] if slot in self.layers else 0


class Attention(nn.Module):
    """Multi-head scaled dot-product attention, softmax(Q Kᵀ / √d) V per head, with the projections apart.

    ``forward(x)`` is self-attention; ``forward(x, context)`` is cross-attention (queries from ``x``, keys
    and values from ``context``, whose width may differ). With ``causal=True`` position i sees positions ≤ i.
    """

    def __init__(self, width: int, heads: int, *, context_width: int | None = None) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        context_width = context_width or width
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(context_width, width)
        self.v_proj = nn.Linear(context_width, width)
        self.out_proj = nn.Linear(width, width)
        self.width, self.heads = width, heads
        self.slot: int | None = None  # this layer's place in a KVCache (set by the model that owns it)

    def _split(self, t: Tensor) -> Tensor:
        b, length, _ = t.shape
        return t.view(b, length, self.heads, self.width // self.heads).transpose(1, 2)  # (B, heads, L, d)

    def forward(
        self, x: Tensor, context: Tensor | None = None, *, causal: bool = False, cache: KVCache | None = None
    ) -> Tensor:
        source = x if context is None else context
        q, k, v = self._split(self.q_proj(x)), self._split(self.k_proj(source)), self._split(self.v_proj(source))
        past = 0
        if cache is not None:
            if context is not None or self.slot is None:
                raise ValueError("a KVCache serves self-attention layers that have a slot (set by their model)")
            past = cache.cached(self.slot)
            k, v = cache.extend(self.slot, k, v)
        mask = None
        if causal and (x.shape[1] > 1 or past == 0):
            # query i (at position past + i) sees keys 0 .. past + i
            new, total = x.shape[1], k.shape[2]
            mask = torch.ones(new, total, dtype=torch.bool, device=x.device).tril(past)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out_proj(out.transpose(1, 2).reshape(x.shape[0], x.shape[1], self.width))

    @classmethod
    def from_multihead(cls, mha: nn.MultiheadAttention) -> "Attention":
        """The same function as a ``batch_first`` ``nn.MultiheadAttention`` (with biases), its fused input
        projection split into ``q_proj``, ``k_proj``, ``v_proj`` (weights copied, trainability kept)."""
        if not (mha.batch_first and mha._qkv_same_embed_dim and mha.in_proj_bias is not None):
            raise ValueError("from_multihead expects nn.MultiheadAttention(batch_first=True, bias=True) over one width")
        attn = cls(mha.embed_dim, mha.num_heads).to(mha.in_proj_weight.device, mha.in_proj_weight.dtype)
        with torch.no_grad():
            for proj, w, b in zip(
                (attn.q_proj, attn.k_proj, attn.v_proj), mha.in_proj_weight.chunk(3), mha.in_proj_bias.chunk(3)
            ):
                proj.weight.copy_(w)
                proj.bias.copy_(b)
            attn.out_proj.load_state_dict(mha.out_proj.state_dict())
        attn.requires_grad_(mha.in_proj_weight.requires_grad)
        return attn


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)) [+ cross_attn(norm_cross(x), context)] + mlp(norm2(x))."""

    def __init__(self, width: int, heads: int, *, mlp_ratio: int = 4, cross_width: int | None = None) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        if cross_width is not None:
            self.norm_cross = nn.LayerNorm(width)
            self.cross_attn = Attention(width, heads, context_width=cross_width)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width))
        self.has_cross = cross_width is not None

    def forward(
        self, x: Tensor, *, context: Tensor | None = None, causal: bool = False, cache: KVCache | None = None
    ) -> Tensor:
        x = x + self.attn(self.norm1(x), causal=causal, cache=cache)
        if self.has_cross:
            if context is None:
                raise ValueError("this block has cross-attention: pass context=")
            x = x + self.cross_attn(self.norm_cross(x), context)
        return x + self.mlp(self.norm2(x))

    @classmethod
    def from_text_block(cls, block: nn.Module) -> "Block":
        """The same function as a block of the course CLIP's towers (:class:`mmcourse.models.text.Block`,
        built on ``nn.MultiheadAttention``), with separate projections (e.g. for LoRA on q and v)."""
        width = block.norm1.normalized_shape[0]
        ratio = block.mlp[0].out_features // width
        new = cls(width, block.attn.num_heads, mlp_ratio=ratio).to(block.norm1.weight.device, block.norm1.weight.dtype)
        new.attn = Attention.from_multihead(block.attn)
        for name in ("norm1", "norm2", "mlp"):
            getattr(new, name).load_state_dict(getattr(block, name).state_dict())
        return new.requires_grad_(any(p.requires_grad for p in block.parameters()))


class CausalLM(nn.Module):
    """A word-level decoder-only language model: logits for the next token at every position.

    ``forward(ids)`` or ``forward(embeds=...)`` (input embeddings, e.g. image tokens projected into the
    model's width followed by ``token_embedding(ids)``); position embeddings are added inside, continuing
    after what a ``KVCache`` already holds.
    """

    def __init__(self, vocab_size: int, width: int = 128, layers: int = 4, heads: int = 4, context_length: int = 128) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.position_embedding = nn.Embedding(context_length, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        for i, block in enumerate(self.blocks):
            block.attn.slot = i
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab_size, bias=False)
        self.vocab_size, self.width, self.context_length = vocab_size, width, context_length
        self.config = {"vocab_size": vocab_size, "width": width, "layers": layers, "heads": heads,
                       "context_length": context_length}
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def _inputs(self, ids: Tensor | None, embeds: Tensor | None, cache: KVCache | None) -> Tensor:
        if (ids is None) == (embeds is None):
            raise ValueError("pass exactly one of ids (B, L) or embeds (B, L, width)")
        x = self.token_embedding(ids) if embeds is None else embeds
        if x.ndim != 3 or x.shape[-1] != self.width:
            raise ValueError(f"expected ids (B, L) or embeds (B, L, {self.width}), got {tuple(x.shape)}")
        start = 0 if cache is None else cache.length
        end = start + x.shape[1]
        if end > self.context_length:
            raise ValueError(f"sequence of {end} tokens is longer than the context length {self.context_length}")
        return x + self.position_embedding(torch.arange(start, end, device=x.device))

    def hidden(self, ids: Tensor | None = None, *, embeds: Tensor | None = None, cache: KVCache | None = None) -> Tensor:
        """(B, L, width): the final-norm hidden states (``forward`` applies the output head to them)."""
        x = self._inputs(ids, embeds, cache)
        for block in self.blocks:
            x = block(x, causal=True, cache=cache)
        if cache is not None:
            cache.length += x.shape[1]
        return self.norm(x)

    def forward(self, ids: Tensor | None = None, *, embeds: Tensor | None = None, cache: KVCache | None = None) -> Tensor:
        return self.head(self.hidden(ids, embeds=embeds, cache=cache))

    @torch.no_grad()
    def generate(
        self,
        ids: Tensor,
        max_new_tokens: int,
        *,
        embeds_prefix: Tensor | None = None,
        temperature: float = 0.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        stop_id: int | None = None,
        use_cache: bool = True,
    ) -> Tensor:
        """``ids`` (B, L) followed by ``max_new_tokens`` generated ids: greedy at ``temperature`` 0, else
        sampled from softmax(logits / temperature), restricted to the ``top_k`` most likely when given.
        Rows that produced ``stop_id`` keep producing it. ``use_cache=False`` recomputes the whole sequence
        at every step (the same tokens, one step's cost growing with the length)."""
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 is greedy), got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        prefix = 0 if embeds_prefix is None else embeds_prefix.shape[1]
        if prefix + ids.shape[1] + max_new_tokens > self.context_length:
            raise ValueError(
                f"{prefix} prefix + {ids.shape[1]} prompt + {max_new_tokens} new tokens exceed the context length "
                f"{self.context_length}"
            )

        def inputs(tokens: Tensor) -> Tensor:
            x = self.token_embedding(tokens)
            return x if embeds_prefix is None else torch.cat([embeds_prefix, x], dim=1)

        out = ids
        done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
        cache = KVCache() if use_cache else None
        logits = self(embeds=inputs(ids), cache=cache)[:, -1]
        for step in range(max_new_tokens):
            if temperature == 0:
                token = logits.argmax(dim=-1)
            else:
                scaled = logits / temperature
                if top_k is not None:
                    kth = scaled.topk(min(top_k, scaled.shape[-1]), dim=-1).values[:, -1:]
                    scaled = scaled.masked_fill(scaled < kth, float("-inf"))
                token = torch.multinomial(scaled.softmax(dim=-1), 1, generator=generator).squeeze(1)
            if stop_id is not None:
                token = torch.where(done, torch.full_like(token, stop_id), token)
                done |= token == stop_id
            out = torch.cat([out, token[:, None]], dim=1)
            if step + 1 == max_new_tokens:
                break
            if use_cache:
                logits = self(token[:, None], cache=cache)[:, -1]
            else:
                logits = self(embeds=inputs(out))[:, -1]
        return out
