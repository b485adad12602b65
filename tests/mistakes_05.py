"""Typical mistakes for the exercises of notebook 05: each must be rejected with a message naming the problem.

``MISTAKES[exercise id][what the student did] = (function, words the failure message must contain)``;
tests/test_exercises.py runs them all.
"""

import math

import torch


def _forward(scale_of, *, bias=True, base=True):
    def f(x, weight, b, lora_A, lora_B, alpha, rslora=False):
        r = lora_A.shape[0]
        y = (x @ lora_A.T) @ lora_B.T * scale_of(alpha, r, rslora)
        if base:
            y = y + x @ weight.T
        if bias and b is not None:
            y = y + b
        return y

    return f


def _count(per_layer, *, loose=False, every=False):
    def f(layers, targets, r):
        def selected(name):
            if every:
                return True
            if loose:
                return any(name.endswith(t) for t in targets)
            return any(name == t or name.endswith("." + t) for t in targets)

        return sum(per_layer(o, i, r) for name, (o, i) in layers.items() if selected(name))

    return f


def _factors(pick):
    def f(delta, r):
        u, s, vh = torch.linalg.svd(delta, full_matrices=False)
        return pick(u, s, vh, r)

    return f


MISTAKES = {
    "05.lora_forward": {
        "scales by alpha alone": (_forward(lambda a, r, rs: a), "scaling by α alone"),
        "always alpha / r, even with rslora": (_forward(lambda a, r, rs: a / r), "with rslora=True the scaling is α/√r"),
        "always alpha / sqrt(r)": (_forward(lambda a, r, rs: a / math.sqrt(r)), "without rslora the scaling is α/r"),
        "no scaling": (_forward(lambda a, r, rs: 1.0), "without any scaling"),
        "forgets the bias": (_forward(lambda a, r, rs: a / math.sqrt(r) if rs else a / r, bias=False), "without the bias"),
        "returns only the low-rank branch": (
            _forward(lambda a, r, rs: a / math.sqrt(r) if rs else a / r, bias=False, base=False), "low-rank branch alone"),
        "crashes on bias=None": (lambda x, w, b, A, B, alpha, rslora=False: x @ w.T + b + (x @ A.T) @ B.T * alpha / A.shape[0],
                                 "your function raised TypeError"),
    },
    "05.lora_params": {
        "r * in * out per layer": (_count(lambda o, i, r: r * i * o), "r * in * out"),
        "only A": (_count(lambda o, i, r: r * i), "counts only A"),
        "square layers assumed": (_count(lambda o, i, r: 2 * r * i), "as if every layer were square"),
        "every layer": (_count(lambda o, i, r: r * (i + o), every=True), "only those the target names select"),
        "full weights": (_count(lambda o, i, r: o * i), "as full fine-tuning would"),
        "name matched by endswith": (_count(lambda o, i, r: r * (i + o), loose=True), "ending in '.' + target"),
        "a float": (lambda layers, targets, r: 0.5, "whole number"),
    },
    "05.low_rank": {
        "smallest singular values": (_factors(lambda u, s, vh, r: (u[:, -r:] * s[-r:], vh[-r:])), "*smallest*"),
        "singular values left out": (_factors(lambda u, s, vh, r: (u[:, :r], vh[:r])), "without the singular values"),
        "singular values in both": (_factors(lambda u, s, vh, r: (u[:, :r] * s[:r], s[:r, None] * vh[:r])), "in both B and A"),
        "A transposed": (_factors(lambda u, s, vh, r: (u[:, :r] * s[:r], vh[:r].T)), "A should have shape"),
        "returns the product": (_factors(lambda u, s, vh, r: (u[:, :r] * s[:r]) @ vh[:r]), "return a pair (B, A)"),
    },
}
