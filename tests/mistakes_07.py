"""Typical mistakes for the exercises of notebook 07: each must be rejected with a message naming the problem.

``MISTAKES[exercise id][what the student did] = (function, words the failure message must contain)``;
tests/test_exercises.py runs them all.
"""

import torch
import torch.nn.functional as F


def _g(u):
    return -torch.log(-torch.log(u))


def _nearest(z, c, how="dist"):
    if how == "dot":
        return c[(z @ c.t()).argmax(-1)]
    if how == "cos":
        return c[(F.normalize(z, dim=-1) @ F.normalize(c, dim=-1).t()).argmax(-1)]
    d = (z[..., None, :] - c).pow(2).sum(-1)
    return c[d.argmin(-1)]


def _cos(i, t):
    return torch.einsum("ckd,cd->ck", F.normalize(i, dim=-1), F.normalize(t, dim=-1))


MISTAKES = {
    "07.gumbel": {
        "exponential noise -log(u)": (lambda l, u, tau: torch.softmax((l - torch.log(u)) / tau, -1), "-log(-log(u))"),
        "noise subtracted": (lambda l, u, tau: torch.softmax((l - _g(u)) / tau, -1), "wrong sign"),
        "only the logits divided by tau": (lambda l, u, tau: torch.softmax(l / tau + _g(u), -1), "divided by tau too"),
        "no temperature": (lambda l, u, tau: torch.softmax(l + _g(u), -1), "tau = 1"),
        "multiplied by tau": (lambda l, u, tau: torch.softmax((l + _g(u)) * tau, -1), "divide by it"),
        "log-softmax": (lambda l, u, tau: torch.log_softmax((l + _g(u)) / tau, -1), "log-softmax"),
        "hard one-hot": (lambda l, u, tau: F.one_hot((l + _g(u)).argmax(-1), l.shape[-1]).float(), "Gumbel-max"),
        "softmax over the first dimension": (lambda l, u, tau: torch.softmax((l + _g(u)) / tau, 0), "wrong dimension"),
        "naive exp overflows with large logits": (
            lambda l, u, tau: (lambda x: x.exp() / x.exp().sum(-1, keepdim=True))((l + _g(u)) / tau), "subtract each row's maximum"),
        "returns the logits": (lambda l, u, tau: l, "expected"),
    },
    "07.straight_through": {
        "no straight-through (commitment gradient only)": (
            lambda z, c, g, b: 2 * b * (z - _nearest(z, c)), "grad_zq reaches z unchanged"),
        "decoder gradient only": (lambda z, c, g, b: g, "commitment loss pulls z"),
        "sign of the commitment term flipped": (lambda z, c, g, b: g + 2 * b * (_nearest(z, c) - z), "wrong sign"),
        "factor 2 missing": (lambda z, c, g, b: g + b * (z - _nearest(z, c)), "factor 2"),
        "commitment weight ignored": (lambda z, c, g, b: g + 2 * (z - _nearest(z, c)), "without its weight"),
        "nearest by dot product": (lambda z, c, g, b: g + 2 * b * (z - _nearest(z, c, "dot")), "largest dot product"),
        "nearest by cosine": (lambda z, c, g, b: g + 2 * b * (z - _nearest(z, c, "cos")), "cosine similarity"),
        "codebook loss gradient added to z": (
            lambda z, c, g, b: g + 2 * b * (z - _nearest(z, c)) + 2 * (z - _nearest(z, c)), "stop-gradient is on z"),
        "flattened output": (lambda z, c, g, b: (g + 2 * b * (z - _nearest(z, c))).reshape(-1, z.shape[-1]), "shape"),
    },
    "07.rerank": {
        "raw dot products": (lambda i, t: torch.einsum("ckd,cd->ck", i, t).argsort(1, descending=True), "cosine"),
        "ascending order": (lambda i, t: _cos(i, t).argsort(1), "worst sample first"),
        "only the best index": (lambda i, t: _cos(i, t).argmax(1), "not only the best"),
        "scores instead of indices": (lambda i, t: _cos(i, t).sort(1, descending=True).values, "integer"),
        "every sample against every caption": (
            lambda i, t: torch.einsum("ckd,ed->cke", F.normalize(i, dim=-1), F.normalize(t, dim=-1)).amax(-1)
            .argsort(1, descending=True), "differs at index"),
    },
}
