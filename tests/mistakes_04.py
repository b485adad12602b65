"""Typical mistakes for the exercises of notebook 04: each must be rejected with a message naming the problem.

``MISTAKES[exercise id][what the student did] = (function, words the failure message must contain)``;
tests/test_exercises.py runs them all.
"""

import torch
import torch.nn.functional as F


# ------------------------------------------------------------------------------------------- 04.assemble


def _assemble(sos, ctx, name, eos, position, *, half=None, ends=True, swap=False, flip_name=False, flip_ctx=False,
              repeat_ctx=False):
    m = ctx.shape[0]
    if flip_name:
        name = name.flip(0)
    if flip_ctx:
        ctx = ctx.flip(0)
    if swap:
        position = {"end": "front", "front": "end", "middle": "end"}[position]
    if position == "end":
        parts = [ctx, name]
    elif position == "front":
        parts = [name, ctx]
    else:
        h = half(m) if half else m // 2
        parts = [ctx[:h], name, ctx[h:]]
    if repeat_ctx and position == "middle":
        parts = [ctx, name, ctx]
    if ends:
        parts = [sos[None]] + parts + [eos[None]]
    return torch.cat(parts)


# ----------------------------------------------------------------------------------------------- 04.shift


def _shift(ctx, x, w1, b1, w2, b2, *, normalise=True, relu=True, first_only=False, bias=True, replace=False):
    if normalise:
        x = F.normalize(x, dim=-1)
    h = x @ w1.T + (b1 if bias else 0)
    if relu:
        h = h.relu()
    pi = h @ w2.T + (b2 if bias else 0)
    if replace:
        return pi[:, None, :].expand(-1, ctx.shape[0], -1).clone()
    if first_only:
        out = ctx.unsqueeze(0).repeat(x.shape[0], 1, 1)
        out[:, 0] += pi
        return out
    return ctx.unsqueeze(0) + pi[:, None, :]


# --------------------------------------------------------------------------------------------- 04.nearest


def _nearest(vectors, embedding, k, how="euclidean"):
    if how == "cosine":
        score = F.normalize(vectors, dim=-1) @ F.normalize(embedding, dim=-1).T
    elif how == "dot":
        score = vectors @ embedding.T
    elif how == "far":
        score = torch.cdist(vectors, embedding)
    else:
        score = -torch.cdist(vectors, embedding)
    return score.topk(k, dim=1).indices


MISTAKES = {
    "04.assemble": {
        "the first half of the context rounded up": (
            lambda s, c, n, e, p: _assemble(s, c, n, e, p, half=lambda m: (m + 1) // 2), "rounds up"),
        "no [SOS] and [EOS]": (lambda s, c, n, e, p: _assemble(s, c, n, e, p, ends=False), "[SOS] and [EOS]"),
        "front and end swapped": (lambda s, c, n, e, p: _assemble(s, c, n, e, p, swap=True), "position"),
        "the class name's tokens reversed": (lambda s, c, n, e, p: _assemble(s, c, n, e, p, flip_name=True), "reversed"),
        "the context reversed": (lambda s, c, n, e, p: _assemble(s, c, n, e, p, flip_ctx=True), "reversed"),
        "the whole context on both sides in the middle": (
            lambda s, c, n, e, p: _assemble(s, c, n, e, p, repeat_ctx=True), "shape"),
        "the sum of the pieces instead of the sequence": (
            lambda s, c, n, e, p: torch.cat([s[None], c, n, e[None]]).sum(0), "shape"),
    },
    "04.shift": {
        "no L2 normalisation of the image features": (
            lambda *a: _shift(*a, normalise=False), "not L2-normalised"),
        "no ReLU": (lambda *a: _shift(*a, relu=False), "ReLU"),
        "only the first context vector shifted": (lambda *a: _shift(*a, first_only=True), "every one of the M"),
        "no biases": (lambda *a: _shift(*a, bias=False), "biases"),
        "the shift replaces the context": (lambda *a: _shift(*a, replace=True), "wrong values"),
        "one shared context, the shift averaged over images": (
            lambda *a: _shift(*a).mean(0), "shape (B, M, W)"),
    },
    "04.nearest": {
        "cosine similarity instead of distance": (lambda v, e, k: _nearest(v, e, k, "cosine"), "Euclidean"),
        "dot product": (lambda v, e, k: _nearest(v, e, k, "dot"), "dot product"),
        "the farthest words": (lambda v, e, k: _nearest(v, e, k, "far"), "farthest"),
        "the distances instead of the ids": (
            lambda v, e, k: torch.cdist(v, e).topk(k, dim=1, largest=False).values, "integer ids"),
        "a list of lists": (lambda v, e, k: _nearest(v, e, k).tolist(), "tensor of ids"),
        "k + 1 words (an off-by-one)": (lambda v, e, k: _nearest(v, e, k + 1), "shape"),
    },
}
