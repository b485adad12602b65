"""Typical mistakes for the exercises of notebook 03: each must be rejected with a message naming the problem.

``MISTAKES[exercise id][what the student did] = (function, words the failure message must contain)``;
tests/test_exercises.py runs them all.
"""

import math

import torch
import torch.nn.functional as F


def _norm(x):
    return x / x.norm(dim=1, keepdim=True)



def _logit(p):
    p = torch.as_tensor(p, dtype=torch.float64)
    return torch.log(p / (1 - p))


def _linear_fit(x, y):
    x, y = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
    return slope, y.mean() - slope * x.mean()


MISTAKES = {
    "03.classifier": {
        "dot products, nothing normalised": (lambda i, t, s: (s * i @ t.T).softmax(1), "wrong values"),
        "only the text normalised (as build_classifier returns it)": (
            lambda i, t, s: (s * i @ F.normalize(t, dim=1).T).softmax(1), "wrong values"),
        "forgot the logit scale": (lambda i, t, s: (_norm(i) @ _norm(t).T).softmax(1), "wrong values"),
        "softmax over the images instead of the classes": (lambda i, t, s: (s * _norm(i) @ _norm(t).T).softmax(0), "wrong values"),
        "returns the logits, not probabilities": (lambda i, t, s: s * _norm(i) @ _norm(t).T, "wrong values"),
        "returns the predicted class": (lambda i, t, s: (_norm(i) @ _norm(t).T).argmax(1), "shape"),
    },
    "03.ensemble": {
        "averages the raw embeddings (long templates dominate)": (lambda e: F.normalize(e.mean(1), dim=-1), "wrong values"),
        "no normalisation after averaging": (lambda e: F.normalize(e, dim=-1).mean(1), "wrong values"),
        "normalises over the templates instead of D": (lambda e: F.normalize(F.normalize(e, dim=1).mean(1), dim=-1), "wrong values"),
        "averages over the classes": (lambda e: F.normalize(F.normalize(e, dim=-1).mean(0), dim=-1), "shape"),
        "keeps only the first template": (lambda e: F.normalize(e[:, 0], dim=-1), "wrong values"),
    },
    "03.effective_robustness": {
        "the plain drop (ood - id), no baselines": (lambda bi, bo, mi, mo: mo - mi, "should be"),
        "line fitted on accuracies, not logits": (
            lambda bi, bo, mi, mo: mo - (lambda a, b: (a * mi + b).item())(*_linear_fit(bi, bo)), "should be"),
        "compared in logit units (no sigmoid back)": (
            lambda bi, bo, mi, mo: (_logit(mo) - (lambda a, b: a * _logit(mi) + b)(*_linear_fit(_logit(bi), _logit(bo)))).item(),
            "should be"),
        "axes swapped (id fitted on ood)": (
            lambda bi, bo, mi, mo: mo - torch.sigmoid((_logit(mi) - (lambda a, b: b)(*_linear_fit(_logit(bo), _logit(bi))))
                                                      / (lambda a, b: a)(*_linear_fit(_logit(bo), _logit(bi)))).item(),
            "should be"),
        "against the baselines' mean ood accuracy": (lambda bi, bo, mi, mo: mo - float(torch.as_tensor(bo).mean()), "should be"),
        "returns one value per baseline": (lambda bi, bo, mi, mo: mo - torch.as_tensor(bo), "single number"),
    },
}
