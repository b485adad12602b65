"""Typical mistakes for the exercises of notebook 06: each must be rejected with a message naming the problem.

``MISTAKES[exercise id][what the student did] = (function, words the failure message must contain)``;
tests/test_exercises.py runs them all.
"""

import math

import torch


def _mask(ids, a, s, *, start=False, stop=True, first_only=False, never_off=False):
    out = torch.zeros_like(ids, dtype=torch.bool)
    for r, row in enumerate(ids.tolist()):
        inside, done = False, False
        for t, tok in enumerate(row):
            if tok == a and not inside and not done:
                inside, out[r, t] = True, start
                continue
            if inside and tok == s and not never_off:
                out[r, t], inside, done = stop, False, first_only
                continue
            out[r, t] = inside
    return out


def _attend(latents, patches, w_q, w_k, w_v, *, keys="both", scale=True, dim=-1):
    context = {"both": torch.cat([patches, latents], 1), "patches": patches, "latents": latents}[keys]
    q, k, v = latents @ w_q, context @ w_k, context @ w_v
    s = q @ k.transpose(-2, -1) / (math.sqrt(q.shape[-1]) if scale else 1.0)
    return torch.softmax(s, dim=dim) @ v


def _gated(x, visual, block, *, gate=torch.tanh, residual=True, norm=True, ff=True, shared=False):
    a, f = gate(block.attn_gate), gate(block.attn_gate if shared else block.ff_gate)
    y = (x if residual else 0) + a * block.attn(block.norm(x) if norm else x, visual)
    return y + f * block.ff(y) if ff else y


MISTAKES = {
    "06.answer_mask": {
        "the <assistant> token counted as an answer": (
            lambda ids, a, s: _mask(ids, a, s, start=True), "<assistant> token itself"),
        "the <stop> token left out": (lambda ids, a, s: _mask(ids, a, s, stop=False), "leaves out the <stop>"),
        "off by one: from <assistant> up to before <stop>": (
            lambda ids, a, s: _mask(ids, a, s, start=True, stop=False), "shift it by one"),
        "never switched off after the first answer": (
            lambda ids, a, s: _mask(ids, a, s, never_off=True), "everything after the first"),
        "only the first answer": (lambda ids, a, s: _mask(ids, a, s, first_only=True), "only the first answer"),
        "drops the last position": (
            lambda ids, a, s: _mask(ids, a, s)[:, :-1], "shape"),
        "hard-coded ids instead of the arguments": (
            lambda ids, a, s: _mask(ids, 30, 31), "mask is wrong"),
    },
    "06.resampler_attention": {
        "keys and values from the patches only": (
            lambda l, p, q, k, v: _attend(l, p, q, k, v, keys="patches"), "patches alone"),
        "no 1/sqrt(d) scaling": (lambda l, p, q, k, v: _attend(l, p, q, k, v, scale=False), "scaling"),
        "softmax over the queries": (lambda l, p, q, k, v: _attend(l, p, q, k, v, dim=-2), "softmax over the latents"),
        "weights transposed": (
            lambda l, p, q, k, v: _attend(l, p, q.T, k.T, v.T), "transposed"),
        "self-attention among the latents only": (
            lambda l, p, q, k, v: _attend(l, p, q, k, v, keys="latents"), "wrong values"),
        "returns the attention weights": (
            lambda l, p, q, k, v: torch.softmax((l @ q) @ (torch.cat([p, l], 1) @ k).transpose(-2, -1) / math.sqrt(q.shape[-1]), -1),
            "shape"),
    },
    "06.gated_xattn": {
        "sigmoid gates": (lambda x, vis, b: _gated(x, vis, b, gate=torch.sigmoid), "sigmoid"),
        "raw gate values": (lambda x, vis, b: _gated(x, vis, b, gate=lambda g: g), "raw gate"),
        "no residual": (lambda x, vis, b: _gated(x, vis, b, residual=False), "residual"),
        "no layer norm before attention": (lambda x, vis, b: _gated(x, vis, b, norm=False), "block.norm"),
        "attention half only": (lambda x, vis, b: _gated(x, vis, b, ff=False), "feed-forward"),
        "one gate for both": (lambda x, vis, b: _gated(x, vis, b, shared=True), "one gate"),
    },
}
