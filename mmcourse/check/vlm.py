"""Checks for notebook 06 (vision-language model adapters).

* ``06.answer_mask``: the loss mask of instruction tuning: which tokens of a chat (several turns, padded)
  the model is trained to predict: the assistant's answers and the stop token that ends each one;
* ``06.resampler_attention``: one head of the Perceiver resampler's attention, whose keys and values are
  the patches *and the latents*, written from the lecture's pseudocode;
* ``06.gated_xattn``: Flamingo's tanh-gated cross-attention block, from its parts, identical to the frozen
  LM's input at gate 0.

A wrong answer gets a message naming the case, expected against given, and, for the typical mistakes
(the ``<assistant>`` token counted as an answer, the stop token left out, keys from the patches alone, no
1/sqrt(d), a sigmoid gate, ...), what the answer matches instead.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from mmcourse.check.core import AnswerError, Case, Exercise, judge_close, diagnosis, expect_tensor, register, remember
from mmcourse.connectors import GatedCrossAttention
from mmcourse.vlm import answer_mask as _answer_mask

Tensor = torch.Tensor




# ---------------------------------------------------------------------------------------- 06.answer_mask


def _after_each(ids: Tensor, start_id: int, stop_id: int, *, include_start: bool, include_stop: bool,
                first_only: bool = False, never_off: bool = False) -> Tensor:
    out = torch.zeros_like(ids, dtype=torch.bool)
    for r, row in enumerate(ids.tolist()):
        inside, done = False, False
        for t, tok in enumerate(row):
            if tok == start_id and not inside and not done:
                inside = True
                out[r, t] = include_start
                continue
            if inside and tok == stop_id and not never_off:
                out[r, t] = include_stop
                inside, done = False, first_only
                continue
            out[r, t] = inside
    return out


def answer_mask(ids: Tensor, assistant_id: int, stop_id: int) -> Tensor:
    """Reference for 06.answer_mask: True from the token after each ``<assistant>`` through its ``<stop>``."""
    mask = _answer_mask(ids, assistant_id, stop_id)
    a, s = assistant_id, stop_id
    return remember(mask, {
        "it also marks the <assistant> token itself; that token is part of the prompt (it tells the model to "
        "answer now), the answer starts after it": lambda: _after_each(ids, a, s, include_start=True, include_stop=True),
        "it leaves out the <stop> token; the model must learn to say <stop>, or it never ends its answer":
            lambda: _after_each(ids, a, s, include_start=False, include_stop=False),
        "it marks the <assistant> token and not the <stop> token: shift it by one position (the answer starts "
        "after <assistant> and ends with <stop>)": lambda: _after_each(ids, a, s, include_start=True, include_stop=False),
        "it marks everything after the first <assistant>, later user turns and padding too; each answer ends at "
        "its <stop>": lambda: _after_each(ids, a, s, include_start=False, include_stop=True, never_off=True),
        "it marks only the first answer of each chat; every assistant turn is trained on":
            lambda: _after_each(ids, a, s, include_start=False, include_stop=True, first_only=True),
        "it marks the user's turns instead of the assistant's": lambda: (~mask) & (ids != 0),
    })


def _compare_mask(given: Any, expected: Tensor) -> None:
    if isinstance(given, Tensor) and given.dtype != torch.bool and not given.is_floating_point() and given.shape == expected.shape \
            and bool(((given == 0) | (given == 1)).all()):
        given = given.bool()
    given = expect_tensor(given, name="the mask", shape=tuple(expected.shape), dtype=torch.bool)
    if torch.equal(given.cpu(), expected.cpu()):
        return
    bad = (given.cpu() != expected.cpu()).nonzero()[0].tolist()
    shown = (f"at (row {bad[0]}, position {bad[1]}) expected {bool(expected[tuple(bad)])}, got {bool(given[tuple(bad)])}; "
             f"{int((given.cpu() != expected.cpu()).sum())} of {expected.numel()} entries differ")
    for why, wrong in diagnosis(expected)[0].items():
        value = wrong()
        if torch.equal(given.cpu(), value.cpu()) and not torch.equal(value.cpu(), expected.cpu()):
            raise AnswerError(f"the mask is wrong: {why} ({shown})")
    raise AnswerError(f"the mask is wrong: {shown}")


def _mask_cases(g: torch.Generator) -> list[Case]:
    A, S, U, Y, P = 30, 31, 29, 28, 0  # assistant, stop, user, system, pad (made-up ids: use the arguments)

    def words(n: int) -> list[int]:
        return torch.randint(7, 27, (n,), generator=g).tolist()

    def chat(turns: int, answer_len: int = 2) -> list[int]:
        ids = [Y, *words(3)]
        for _ in range(turns):
            ids += [U, *words(4), A, *words(answer_len), S]
        return ids

    def batch(rows: list[list[int]]) -> Tensor:
        n = max(map(len, rows))
        return torch.tensor([r + [P] * (n - len(r)) for r in rows])

    return [
        Case("one chat, one answer of one word, no padding", (batch([chat(1, 1)]), A, S)),
        Case("two chats of different lengths, right-padded", (batch([chat(1, 3), chat(1, 1)]), A, S)),
        Case("a chat of three turns: every answer counts, the user's turns between them do not",
             (batch([chat(3), chat(2, 1)]), A, S)),
        Case("a row without any answer (a prompt being generated from)", (batch([[Y, *words(3), U, *words(4), A], chat(1)]), A, S)),
        Case("an answer cut off by the context length (no <stop> yet)", (batch([[Y, U, *words(3), A, *words(5)]]), A, S)),
        Case("other ids for <assistant> and <stop> (read them from the arguments)",
             (torch.tensor([[5, 8, 9, 3, 10, 11, 4, 0, 0]]), 3, 4)),
        Case("a batch of 8 random chats", (batch([chat(int(torch.randint(1, 4, (1,), generator=g)),
                                                       int(torch.randint(1, 5, (1,), generator=g))) for _ in range(8)]), A, S)),
    ]


register(
    Exercise(
        id="06.answer_mask",
        title="the answer-only loss mask",
        cases=_mask_cases,
        reference=answer_mask,
        compare=_compare_mask,
        hint="walk along each row keeping a flag 'inside an answer': a position is True when the flag is set "
        "*before* looking at its token; seeing <assistant> sets the flag for the next positions, and a <stop> "
        "(which is itself still True) clears it for the positions after it. Return a bool tensor of ids' shape.",
    )
)


# ---------------------------------------------------------------------------------- 06.resampler_attention


def resampler_attention(latents: Tensor, patches: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor) -> Tensor:
    """Reference for 06.resampler_attention: softmax(q k^T / sqrt(d)) v with q from the latents and k, v from
    cat(patches, latents); every input (B, ., d) and weights (d, d), one head."""
    lat, pat = latents.double(), patches.double()
    wq, wk, wv = w_q.double(), w_k.double(), w_v.double()
    d = wq.shape[1]

    def attend(context: Tensor, scale: float = 1 / math.sqrt(d), dim: int = -1, q_w: Tensor = wq) -> Tensor:
        q, k, v = lat @ q_w, context @ wk, context @ wv
        return torch.softmax(q @ k.transpose(-2, -1) * scale, dim=dim) @ v

    both = torch.cat([pat, lat], dim=1)
    out = attend(both)
    mistakes = {
        "it matches keys and values from the patches alone; Flamingo's latents attend to cat(patches, latents)":
            lambda: attend(pat) if pat.shape[1] else out * float("nan"),
        "it matches attention without the 1/sqrt(d) scaling of the scores": lambda: attend(both, 1.0),
        "it matches a softmax over the latents (the queries); each latent's weights must sum to 1 over the keys":
            lambda: attend(both, dim=-2),
        "it matches the weights transposed (x @ W.T); the projections are x @ W": lambda: (
            torch.softmax((lat @ wq.T) @ (both @ wk.T).transpose(-2, -1) / math.sqrt(d), dim=-1) @ (both @ wv.T)),
    }
    return remember(out, mistakes)


def _resampler_cases(g: torch.Generator) -> list[Case]:
    def t(*shape: int, scale: float = 1.0) -> Tensor:
        return torch.randn(*shape, generator=g) * scale

    def weights(d: int) -> tuple[Tensor, Tensor, Tensor]:
        return t(d, d, scale=d ** -0.5), t(d, d, scale=d ** -0.5), t(d, d, scale=d ** -0.5)

    return [
        Case("1 image, 2 latents, 3 patches, d = 4", (t(1, 2, 4), t(1, 3, 4), *weights(4))),
        Case("a batch of 3, 5 latents, 16 patches (a 4 x 4 grid), d = 8", (t(3, 5, 8), t(3, 16, 8), *weights(8))),
        Case("one latent", (t(2, 1, 6), t(2, 7, 6), *weights(6))),
        Case("no patches at all: the latents attend to themselves only", (t(2, 3, 4), t(2, 0, 4), *weights(4))),
        Case("more latents than patches (8 latents, 2 patches)", (t(1, 8, 4), t(1, 2, 4), *weights(4))),
        Case("large features (scores in the hundreds without scaling)", (t(2, 4, 16, scale=6.0), t(2, 9, 16, scale=6.0),
                                                                         *weights(16))),
    ]


register(
    Exercise(
        id="06.resampler_attention",
        title="the resampler's attention, latents among the keys",
        cases=_resampler_cases,
        reference=resampler_attention,
        compare=lambda given, expected: judge_close(given, expected, "the latents' update", atol=1e-5, rtol=1e-4),
        hint="concatenate patches and latents along the token axis, (B, N + R, d); queries = latents @ w_q, keys "
        "and values = that concatenation @ w_k and @ w_v; scores = q @ k^T / sqrt(d), a softmax over the last axis "
        "(the N + R keys), times the values.",
    )
)


# ----------------------------------------------------------------------------------------- 06.gated_xattn


def gated_xattn(x: Tensor, visual: Tensor, block: GatedCrossAttention) -> Tensor:
    """Reference for 06.gated_xattn: the block's own forward."""
    with torch.no_grad():
        out = block(x, visual)
        a, f = block.attn_gate, block.ff_gate
        attn = block.attn(block.norm(x), visual)

        def sigmoid_gates() -> Tensor:
            y = x + torch.sigmoid(a) * attn
            return y + torch.sigmoid(f) * block.ff(y)

        def raw_gates() -> Tensor:
            y = x + a * attn
            return y + f * block.ff(y)

        def no_residual() -> Tensor:
            y = torch.tanh(a) * attn
            return y + torch.tanh(f) * block.ff(y)

        def gate_after_residual() -> Tensor:
            y = torch.tanh(a) * (x + attn)
            return torch.tanh(f) * (y + block.ff(y))

        def no_norm() -> Tensor:
            y = x + torch.tanh(a) * block.attn(x, visual)
            return y + torch.tanh(f) * block.ff(y)

        def attention_only() -> Tensor:
            return x + torch.tanh(a) * attn

        def one_gate() -> Tensor:
            y = x + torch.tanh(a) * attn
            return y + torch.tanh(a) * block.ff(y)

    return remember(out, {
        "it matches sigmoid gates; Flamingo's gate is tanh, which is 0 at 0, so the block starts as the identity": sigmoid_gates,
        "it matches the raw gate values; the gate enters through tanh(gate)": raw_gates,
        "it matches the block without its residual connections (x + ...); the frozen LM's input must pass "
        "through": no_residual,
        "it matches the gate applied after the residual; tanh(gate) multiplies the new information only": gate_after_residual,
        "it matches attention on x without block.norm; the block normalises x before attending": no_norm,
        "it matches the attention half alone; the gated feed-forward layer (block.ff, behind ff_gate) follows": attention_only,
        "it matches one gate for both halves; the feed-forward layer has its own gate, block.ff_gate": one_gate,
    })


def _block(g: torch.Generator, dim: int, visual_dim: int, attn_gate: float, ff_gate: float) -> GatedCrossAttention:
    block = GatedCrossAttention(dim, visual_dim, heads=2)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        block.attn_gate.fill_(attn_gate)
        block.ff_gate.fill_(ff_gate)
    return block.eval()


def _gated_cases(g: torch.Generator) -> list[Case]:
    def t(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=g)

    return [
        Case("gates at 0 (the start of training): the output must be x itself", (t(2, 5, 8), t(2, 3, 6), _block(g, 8, 6, 0.0, 0.0))),
        Case("attention gate 0.5, feed-forward gate 0", (t(1, 4, 8), t(1, 6, 6), _block(g, 8, 6, 0.5, 0.0))),
        Case("both gates open (1.0 and -0.7)", (t(3, 6, 8), t(3, 2, 6), _block(g, 8, 6, 1.0, -0.7))),
        Case("a large attention gate (4.0: tanh is nearly 1)", (t(2, 3, 4), t(2, 5, 4), _block(g, 4, 4, 4.0, 0.3))),
        Case("one visual token", (t(2, 7, 8), t(2, 1, 6), _block(g, 8, 6, 0.2, 0.2))),
    ]


def _compare_gated(given: Any, expected: Tensor) -> None:
    judge_close(given, expected, "the block's output", atol=1e-5, rtol=1e-4)


register(
    Exercise(
        id="06.gated_xattn",
        title="Flamingo's gated cross-attention block",
        cases=_gated_cases,
        reference=gated_xattn,
        compare=_compare_gated,
        hint="two residual updates in turn: first x + tanh(block.attn_gate) * block.attn(block.norm(x), visual), then "
        "y + tanh(block.ff_gate) * block.ff(y) on that result (block.ff normalises its own input).",
    )
)
