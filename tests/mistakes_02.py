"""Typical mistakes for the exercises of notebook 02: each must be rejected with a message naming the problem.

``MISTAKES[exercise id][what the student did] = (function, words the failure message must contain)``;
tests/test_exercises.py runs them all.
"""

import math

import torch
import torch.nn.functional as F


def _candidates(pos, neg, tau):
    return torch.cat([pos[:, None], neg], dim=1) / tau  # (B, 1 + K), the positive first


def _softmax_parts(z):
    n = z.shape[0]
    return torch.softmax(z, dim=1), torch.softmax(z, dim=0), torch.eye(n, dtype=z.dtype), n


def _bisect(prob, lo=-14.0, hi=14.0, steps=100):
    """tau from a function prob(tau) that falls as tau grows (the right search)."""
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if prob(math.exp(mid)) > 0 else (lo, mid)
    return math.exp((lo + hi) / 2)


def _targets(keys, dtype=torch.float32):
    same = torch.tensor([[float(a == b) for b in keys] for a in keys], dtype=dtype)
    return same, same / same.sum(dim=1, keepdim=True)


def _gathered(i, t, s, r, w, *, labels_offset=True, both=True, whole=False, local=False):
    per = i.shape[0] // w
    mine = slice(r * per, (r + 1) * per)
    if whole:
        i_rows, t_rows, i_all, t_all, off = i, t, i, t, 0
    elif local:
        i_rows, t_rows, i_all, t_all, off = i[mine], t[mine], i[mine], t[mine], 0
    else:
        i_rows, t_rows, i_all, t_all, off = i[mine], t[mine], i, t, r * per if labels_offset else 0
    labels = torch.arange(i_rows.shape[0]) + off
    image_side = F.cross_entropy(s * i_rows @ t_all.T, labels)
    if not both:
        return image_side
    return 0.5 * (image_side + F.cross_entropy(s * t_rows @ i_all.T, labels))


MISTAKES = {
    "02.infonce": {
        "positive left out of the denominator": (
            lambda p, n, tau: torch.logsumexp(n / tau, dim=1) - p / tau, "positive left out of the denominator"),
        "multiplies by tau": (
            lambda p, n, tau: (lambda x: torch.logsumexp(x, 1) - x[:, 0])(_candidates(p, n, 1 / tau)), "multiplied by tau"),
        "forgot the temperature": (
            lambda p, n, tau: (lambda x: torch.logsumexp(x, 1) - x[:, 0])(_candidates(p, n, 1.0)), "tau = 1"),
        "naive exp overflows at tau = 0.01": (
            lambda p, n, tau: (lambda x: -(x[:, 0].exp() / x.exp().sum(1)).log())(_candidates(p, n, tau)), "NaN"),
        "probability instead of its negative log": (
            lambda p, n, tau: torch.softmax(_candidates(p, n, tau), dim=1)[:, 0], "probability of the positive"),
        "mean over the batch instead of one loss per anchor": (
            lambda p, n, tau: (lambda x: (torch.logsumexp(x, 1) - x[:, 0]).mean())(_candidates(p, n, tau)), "shape (4,)"),
        "log p instead of -log p": (
            lambda p, n, tau: (lambda x: x[:, 0] - torch.logsumexp(x, 1))(_candidates(p, n, tau)), "never negative"),
    },
    "02.gradient": {
        "the image -> text half only": (
            lambda z: (lambda P, Q, I, n: (P - I) / n)(*_softmax_parts(z)), "text -> image"),
        "sign flipped (descent direction)": (
            lambda z: (lambda P, Q, I, n: -(P + Q - 2 * I) / (2 * n))(*_softmax_parts(z)), "opposite sign"),
        "forgot to divide by N": (
            lambda z: (lambda P, Q, I, n: (P + Q - 2 * I) / 2)(*_softmax_parts(z)), "N times too large"),
        "sum of the directions, not their mean": (
            lambda z: (lambda P, Q, I, n: (P + Q - 2 * I) / n)(*_softmax_parts(z)), "twice too large"),
        "column softmax not transposed back": (
            lambda z: (lambda P, Q, I, n: (P + torch.softmax(z.T, dim=1) - 2 * I) / (2 * n))(*_softmax_parts(z)),
            "transposed"),
        "one-hot targets missing": (
            lambda z: (lambda P, Q, I, n: (P + Q) / (2 * n))(*_softmax_parts(z)), "one-hot targets are missing"),
        "softmax written with a naive exp": (
            lambda z: (lambda I, n: (z.exp() / z.exp().sum(1, keepdim=True) + z.exp() / z.exp().sum(0, keepdim=True)
                                     - 2 * I) / (2 * n))(torch.eye(len(z)), len(z)), "NaN"),
        "log-softmax in place of the softmax": (
            lambda z: (lambda I, n: (torch.log_softmax(z, 1) + torch.log_softmax(z, 0) - 2 * I) / (2 * n))(
                torch.eye(len(z)), len(z)), "add up to 0"),
    },
    "02.margin": {
        "N negatives instead of N - 1": (lambda n, m, tau: math.log1p(n * math.exp(-m / tau)), "N - 1 negatives"),
        "log base 2": (lambda n, m, tau: math.log2(1 + (n - 1) * math.exp(-m / tau)), "bits"),
        "multiplies the margin by tau": (lambda n, m, tau: math.log1p((n - 1) * math.exp(-m * tau)), "multiplied by tau"),
        "margin with the wrong sign": (lambda n, m, tau: math.log1p((n - 1) * math.exp(m / tau)), "wrong sign"),
        "ln N whatever the margin": (lambda n, m, tau: math.log(n), "does not depend on the margin"),
        "the probability of the positive": (lambda n, m, tau: 1 / (1 + (n - 1) * math.exp(-m / tau)), "probability"),
        "a tensor of the wrong shape": (lambda n, m, tau: torch.full((n,), math.log(n)), "single number"),
    },
    "02.temperature": {
        "the logit scale 1/tau": (
            lambda s, i, p: 1 / _bisect(lambda t: torch.softmax(s / t, -1)[i].item() - p), "logit scale"),
        "the two-level closed form, negatives replaced by their mean": (
            lambda s, i, p: (s[i] - (s.sum() - s[i]) / (len(s) - 1)).item() / math.log((len(s) - 1) * p / (1 - p)),
            "probability is"),
        "bisection in the wrong direction": (
            lambda s, i, p: _bisect(lambda t: p - torch.softmax(s / t, -1)[i].item()), "probability is"),
        "naive softmax overflows for small tau": (
            lambda s, i, p: _bisect(lambda t: ((s / t).exp()[i] / (s / t).exp().sum()).item() - p), "probability is"),
        "too few bisection steps": (
            lambda s, i, p: _bisect(lambda t: torch.softmax(s / t, -1)[i].item() - p, steps=8), "probability is"),
        "the probability of entry 0 instead of the positive": (
            lambda s, i, p: _bisect(lambda t: torch.softmax(s / t, -1)[0].item() - p), "probability is"),
    },
    "02.false_negatives": {
        "plain targets arange(N)": (
            lambda z, keys: 0.5 * (F.cross_entropy(z, torch.arange(len(keys))) + F.cross_entropy(z.T, torch.arange(len(keys)))),
            "plain CLIP loss"),
        "the image -> text direction only": (
            lambda z, keys: F.cross_entropy(z, _targets(keys)[1]), "image -> text half alone"),
        "targets not normalised (ones for every equal key)": (
            lambda z, keys: 0.5 * (F.cross_entropy(z, _targets(keys)[0]) + F.cross_entropy(z.T, _targets(keys)[0])),
            "add up to 1"),
        "hard label: the first pair with the key": (
            lambda z, keys: (lambda first: 0.5 * (F.cross_entropy(z, first) + F.cross_entropy(z.T, first)))(
                torch.tensor([keys.index(k) for k in keys])), "first pair"),
        "-log of the group's total probability": (
            lambda z, keys: (lambda same: 0.5 * (
                -(torch.logsumexp(z.masked_fill(same == 0, -math.inf), 1) - torch.logsumexp(z, 1)).mean()
                - (torch.logsumexp(z.T.masked_fill(same == 0, -math.inf), 1) - torch.logsumexp(z.T, 1)).mean()))(
                _targets(keys)[0]), "total probability"),
        "keys compared case-insensitively": (
            lambda z, keys: (lambda t: 0.5 * (F.cross_entropy(z, t) + F.cross_entropy(z.T, t)))(
                _targets([k.lower().replace("  ", " ") for k in keys])[1]), "differ only in case"),
        "naive log-softmax overflows at scale 100": (
            lambda z, keys: (lambda t: 0.5 * (-(t * (z.exp() / z.exp().sum(1, keepdim=True)).log()).sum(1).mean()
                                              - (t * (z.T.exp() / z.T.exp().sum(1, keepdim=True)).log()).sum(1).mean()))(
                _targets(keys)[1]), "NaN"),
    },
    "02.local_loss": {
        "the whole batch's loss on every rank": (
            lambda i, t, s, r, w: _gathered(i, t, s, r, w, whole=True), "whole batch"),
        "this rank's pairs alone, no gathering": (
            lambda i, t, s, r, w: _gathered(i, t, s, r, w, local=True), "this rank's pairs alone"),
        "labels without the rank's offset": (
            lambda i, t, s, r, w: _gathered(i, t, s, r, w, labels_offset=False), "rank * N/W + i"),
        "the image -> text half only": (
            lambda i, t, s, r, w: _gathered(i, t, s, r, w, both=False), "image -> text half alone"),
        "divided by the world size": (
            lambda i, t, s, r, w: _gathered(i, t, s, r, w) / w, "W times too small"),
        "a rank's slice taken as rows r, r + W, r + 2W, ...": (
            lambda i, t, s, r, w: (lambda rows: 0.5 * (F.cross_entropy(s * i[rows] @ t.T, rows)
                                                        + F.cross_entropy(s * t[rows] @ i.T, rows)))(
                torch.arange(r, i.shape[0], w)), "wrong values"),
    },
}
