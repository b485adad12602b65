"""Typical mistakes for the exercises of notebook 08: each must be rejected with a message naming the problem.

``MISTAKES[exercise id][what the student did] = (function, words the failure message must contain)``;
tests/test_exercises.py runs them all.
"""

import math

import torch
import torch.nn.functional as F


def _norm(x):
    return x / x.norm(dim=1, keepdim=True)



def _abar(alphas_cumprod, t, x0):
    return alphas_cumprod[t].view(-1, *[1] * (x0.ndim - 1))


MISTAKES = {
    "08.q_sample": {
        "no square roots (weights abar and 1 - abar)": (
            lambda x0, t, e, ab: _abar(ab, t, x0) * x0 + (1 - _abar(ab, t, x0)) * e, "wrong values"),
        "weights swapped (noise kept, image destroyed)": (
            lambda x0, t, e, ab: (1 - _abar(ab, t, x0)).sqrt() * x0 + _abar(ab, t, x0).sqrt() * e, "wrong values"),
        "sqrt(1 - abar) on the image only, noise added unscaled": (
            lambda x0, t, e, ab: _abar(ab, t, x0).sqrt() * x0 + e, "wrong values"),
        "off by one: alphas_cumprod[t - 1]": (
            lambda x0, t, e, ab: _abar(ab, (t - 1).clamp(min=0), x0).sqrt() * x0
            + (1 - _abar(ab, (t - 1).clamp(min=0), x0)).sqrt() * e, "wrong values"),
        "hard-coded image shape (view(-1, 1, 1, 1))": (
            lambda x0, t, e, ab: ab[t].view(-1, 1, 1, 1).sqrt() * x0 + (1 - ab[t].view(-1, 1, 1, 1)).sqrt() * e,
            "should have shape (5, 6)"),
    },
    "08.cfg": {
        "diffusers' rule with s = w (w = 0 gives the unconditional prediction)": (
            lambda c, u, w: u + w * (c - u), "wrong values"),
        "wrong sign: pushed towards the unconditional prediction": (lambda c, u, w: c + w * (u - c), "wrong values"),
        "only the guidance term": (lambda c, u, w: w * (c - u), "wrong values"),
        "a convex mix of the two": (lambda c, u, w: (c + w * u) / (1 + w), "wrong values"),
    },
    "08.ddim_step": {
        "x0_hat without square roots": (lambda x, e, a, ap: ap ** 0.5 * (x - (1 - a) * e) / a + (1 - ap) ** 0.5 * e, "wrong values"),
        "returns x0_hat (jumps straight to the end)": (lambda x, e, a, ap: (x - (1 - a) ** 0.5 * e) / a ** 0.5, "wrong values"),
        "re-noises with fresh noise instead of eps": (
            lambda x, e, a, ap: ap ** 0.5 * (x - (1 - a) ** 0.5 * e) / a ** 0.5 + (1 - ap) ** 0.5 * torch.randn_like(x),
            "wrong values"),
        "alpha bars swapped": (
            lambda x, e, a, ap: a ** 0.5 * (x - (1 - ap) ** 0.5 * e) / ap ** 0.5 + (1 - a) ** 0.5 * e, "wrong values"),
        "clips x0_hat to [-1, 1] (fine in a sampler, but the exercise asks for the plain update)": (
            lambda x, e, a, ap: ap ** 0.5 * ((x - (1 - a) ** 0.5 * e) / a ** 0.5).clamp(-1, 1) + (1 - ap) ** 0.5 * e,
            "wrong values"),
    },
}
