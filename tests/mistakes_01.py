"""Typical mistakes for the exercises of notebook 01: each must be rejected with a message naming the problem.

``MISTAKES[exercise id][what the student did] = (function, words the failure message must contain)``;
tests/test_exercises.py runs them all.
"""

import math

import torch
import torch.nn.functional as F


def _norm(x):
    return x / x.norm(dim=1, keepdim=True)


MISTAKES = {
    "01.cosine": {
        "no normalisation (a dot product)": (lambda a, b: a @ b.T, "wrong values"),
        "normalised along the wrong dimension": (lambda a, b: F.normalize(a, dim=0) @ F.normalize(b, dim=0).T, "wrong values"),
        "transposed result": (lambda a, b: _norm(b) @ _norm(a).T, "shape"),
        "returns a list": (lambda a, b: (_norm(a) @ _norm(b).T).tolist(), "torch.Tensor"),
        "NaN from dividing by zero": (lambda a, b: (_norm(a) @ _norm(b).T) * float("nan"), "NaN"),
    },
    "01.recall": {
        "columns instead of rows": (
            lambda s, k: ((s >= s.diagonal()[None, :]).sum(0) - 1 < k).float().mean().item(), "should be"),
        "ties count for the match": (lambda s, k: ((s > s.diagonal()[:, None]).sum(1) < k).float().mean().item(), "should be"),
        "off by one in k": (lambda s, k: ((s >= s.diagonal()[:, None]).sum(1) - 1 <= k).float().mean().item(), "should be"),
        "returns a count, not a fraction": (lambda s, k: int(((s >= s.diagonal()[:, None]).sum(1) - 1 < k).sum()), "should be"),
        "returns a per-query tensor": (lambda s, k: ((s >= s.diagonal()[:, None]).sum(1) - 1 < k).float(), "single number"),
    },
    "01.attributes": {
        "dot product instead of cosine": (lambda x, s: (x @ s.T).argmax(1), "differs"),
        "argmin": (lambda x, s: (_norm(x) @ _norm(s).T).argmin(1), "differs"),
        "argmax over the wrong dimension": (lambda x, s: (_norm(x) @ _norm(s).T).argmax(0), "shape"),
        "float indices": (lambda x, s: (_norm(x) @ _norm(s).T).argmax(1).float(), "integer tensor"),
        "the similarity matrix itself": (lambda x, s: _norm(x) @ _norm(s).T, "shape"),
    },
}
