"""Typical mistakes for the exercises of notebook 01: each must be rejected with a message naming the problem.

``MISTAKES[exercise id][what the student did] = (function, words the failure message must contain)``;
tests/test_exercises.py runs them all.
"""

import math

import torch
import torch.nn.functional as F


def _norm(x):
    return x / x.norm(dim=1, keepdim=True)


def _unit(x):
    return F.normalize(x, dim=1)


def _found(similarity, k, relevant, *, best=None, strict=False, slack=0):
    rel = relevant.bool()
    if best is None:
        best = similarity.masked_fill(~rel, -math.inf).amax(dim=1)
    above = similarity > best[:, None] if strict else similarity >= best[:, None]
    ahead = (above & ~rel).sum(dim=1)
    return ((ahead < k + slack) & rel.any(dim=1)).float().mean().item()


def _first_relevant(similarity, k, relevant):
    first = similarity.gather(1, relevant.float().argmax(dim=1, keepdim=True)).squeeze(1)
    return _found(similarity, k, relevant, best=first)


def _top(query, gallery, k, largest=True):
    return (_unit(query) @ _unit(gallery).T).topk(k, dim=1, largest=largest).indices


MISTAKES = {
    "01.cosine": {
        "no normalisation (a dot product)": (lambda a, b: a @ b.T, "plain dot products"),
        "normalised along the wrong dimension": (lambda a, b: F.normalize(a, dim=0) @ F.normalize(b, dim=0).T, "dim 0"),
        "only a normalised": (lambda a, b: F.normalize(a, dim=1) @ b.T, "b left as it is"),
        "transposed result": (lambda a, b: _norm(b) @ _norm(a).T, "transposed"),
        "returns a list": (lambda a, b: (_norm(a) @ _norm(b).T).tolist(), "torch.Tensor"),
        "NaN for a zero row (divides by a zero length)": (lambda a, b: _norm(a) @ _norm(b).T, "no direction"),
        "cosine of the sums, not a matrix": (lambda a, b: F.cosine_similarity(a.sum(0), b.sum(0), dim=0), "shape"),
    },
    "01.recall": {
        "ignores the relevant matrix (only the diagonal)": (
            lambda s, k, r: ((s >= s.diagonal()[:, None]).sum(1) - 1 < k).float().mean().item(), "only the diagonal"),
        "ties count for the query": (lambda s, k, r: _found(s, k, r, strict=True), "ties"),
        "off by one in k": (lambda s, k, r: _found(s, k, r, slack=1), "one too many"),
        "the first relevant item instead of the best": (_first_relevant, "first relevant item"),
        "every relevant item must be in the top k": (
            lambda s, k, r: _found(s, k, r, best=s.masked_fill(~r.bool(), math.inf).amin(dim=1)), "every relevant item"),
        "masks by multiplying with the boolean matrix": (
            lambda s, k, r: _found(s, k, r, best=(s * r).amax(dim=1)), "similarity * relevant"),
        "the columns taken as queries": (lambda s, k, r: _found(s.T, k, r.T), "columns as queries"),
        "returns a count, not a fraction": (
            lambda s, k, r: _found(s, k, r) * s.shape[0], "fraction"),
        "returns a per-query tensor": (
            lambda s, k, r: (((s >= s.masked_fill(~r.bool(), -math.inf).amax(1, keepdim=True)) & ~r.bool()).sum(1) < k).float(),
            "single number"),
    },
    "01.arithmetic": {
        "terms added without scaling them to unit length": (
            lambda a, m, p, g, k: _top(a - m + p, g, k), "unit length"),
        "signs swapped": (lambda a, m, p, g, k: _top(_unit(a) + _unit(m) - _unit(p), g, k), "signs are swapped"),
        "dot product with the gallery": (
            lambda a, m, p, g, k: ((_unit(a) - _unit(m) + _unit(p)) @ g.T).topk(k, dim=1).indices, "dot product"),
        "least similar first": (
            lambda a, m, p, g, k: _top(_unit(a) - _unit(m) + _unit(p), g, k, largest=False), "least similar"),
        "the image alone, the words ignored": (lambda a, m, p, g, k: _top(a, g, k), "image alone"),
        "returns the similarities instead of the indices": (
            lambda a, m, p, g, k: (_unit(_unit(a) - _unit(m) + _unit(p)) @ _unit(g).T).topk(k, dim=1).values, "integer tensor"),
        "returns the whole ranking, not the top k": (
            lambda a, m, p, g, k: (_unit(_unit(a) - _unit(m) + _unit(p)) @ _unit(g).T).argsort(dim=1, descending=True), "shape"),
    },
}
