"""Typical mistakes for the exercises of notebook 08: each must be rejected with a message naming the problem.

``MISTAKES[exercise id][what the student did] = (function, words the failure message must contain)``;
tests/test_exercises.py runs them all.
"""

import torch


def _abar(betas, t, x0):
    """prod_{s <= t} (1 - beta_s) per image, shaped to broadcast over x0."""
    return torch.cumprod(1 - betas, 0)[t].view(-1, *[1] * (x0.ndim - 1))


def _abar_excluding_t(betas, t, x0):
    before = torch.cat([torch.ones(1), torch.cumprod(1 - betas, 0)[:-1]])
    return before[t].view(-1, *[1] * (x0.ndim - 1))


def _col(values, x0):
    return values.view(-1, *[1] * (x0.ndim - 1))


def _x0_hat(x, e, a):
    return (x - (1 - a) ** 0.5 * e) / a**0.5


def _posterior(x, x0, a, ap, z, *, var_fn=None, swap=False, beta_fn=None, std=True, x0_root=True, alpha_root=True):
    """The posterior step with one part changed, as the typical mistakes change it."""
    alpha = a / ap
    beta = beta_fn(a, ap) if beta_fn else 1 - alpha
    c0 = (ap**0.5 if x0_root else ap) * beta / (1 - a)
    ct = (alpha**0.5 if alpha_root else alpha) * (1 - ap) / (1 - a)
    if beta_fn:  # beta taken as 1 - abar_t: the whole way from x0, with alpha = abar_t
        c0, ct = ap**0.5 * (1 - a) / (1 - a), a**0.5 * (1 - ap) / (1 - a)
    var = var_fn(a, ap) if var_fn else (1 - ap) / (1 - a) * beta
    if swap:
        c0, ct = ct, c0
    spread = var**0.5 if std else var
    return c0 * x0 + ct * x + spread * z


MISTAKES = {
    "08.q_sample": {
        "variances as weights (abar and 1 - abar, no square roots)": (
            lambda x0, t, e, b: _abar(b, t, x0) * x0 + (1 - _abar(b, t, x0)) * e, "variances of the two parts"),
        "each step's noise kept whole (noise std sqrt(sum of betas))": (
            lambda x0, t, e, b: _abar(b, t, x0).sqrt() * x0 + _col(torch.cumsum(b, 0)[t], x0).sqrt() * e,
            "sum of the betas"),
        "one step with beta_t alone": (
            lambda x0, t, e, b: (1 - _col(b[t], x0)).sqrt() * x0 + _col(b[t], x0).sqrt() * e, "single step"),
        "off by one: the product stops before step t": (
            lambda x0, t, e, b: _abar_excluding_t(b, t, x0).sqrt() * x0 + (1 - _abar_excluding_t(b, t, x0)).sqrt() * e,
            "step t included"),
        "product of the betas instead of the (1 - beta)s": (
            lambda x0, t, e, b: _col(torch.cumprod(b, 0)[t], x0).sqrt() * x0
            + (1 - _col(torch.cumprod(b, 0)[t], x0)).sqrt() * e, "product of the betas"),
        "weights swapped (noise kept, image destroyed)": (
            lambda x0, t, e, b: (1 - _abar(b, t, x0)).sqrt() * x0 + _abar(b, t, x0).sqrt() * e, "swapped"),
        "hard-coded image shape (view(-1, 1, 1, 1))": (
            lambda x0, t, e, b: torch.cumprod(1 - b, 0)[t].view(-1, 1, 1, 1).sqrt() * x0
            + (1 - torch.cumprod(1 - b, 0)[t].view(-1, 1, 1, 1)).sqrt() * e, "should have shape (5, 6)"),
        "variance of the noise summed as 1 - abar but the image kept unscaled": (
            lambda x0, t, e, b: x0 + (1 - _abar(b, t, x0)).sqrt() * e, "expected"),
    },
    "08.posterior_step": {
        "fixed_large: the forward jump's variance beta instead of the posterior's": (
            lambda x, x0, a, ap, z: _posterior(x, x0, a, ap, z, var_fn=lambda a, ap: 1 - a / ap), "fixed_large"),
        "the variance used as a standard deviation": (
            lambda x, x0, a, ap, z: _posterior(x, x0, a, ap, z, std=False), "standard deviation"),
        "returns the mean, no noise added": (lambda x, x0, a, ap, z: _posterior(x, x0, a, ap, 0 * z), "mean alone"),
        "coefficients of x0 and x_t swapped": (
            lambda x, x0, a, ap, z: _posterior(x, x0, a, ap, z, swap=True), "swapped"),
        "beta taken as 1 - abar_t (the one-step formula with abar_t for alpha_t)": (
            lambda x, x0, a, ap, z: _posterior(x, x0, a, ap, z, beta_fn=lambda a, ap: 1 - a,
                                               var_fn=lambda a, ap: 1 - ap), "whole way from x0"),
        "no square root on alpha in the x_t coefficient": (
            lambda x, x0, a, ap, z: _posterior(x, x0, a, ap, z, alpha_root=False), "square root on alpha"),
        "no square root on abar_t' in the x0 coefficient": (
            lambda x, x0, a, ap, z: _posterior(x, x0, a, ap, z, x0_root=False), "square root of abar_t'"),
        "noise added at the last step (t' = -1) with the jump's variance": (
            lambda x, x0, a, ap, z: _posterior(x, x0, a, ap, z) if float(ap) < 1 else x0 + (1 - a) ** 0.5 * z,
            "no spread"),
    },
    "08.ddim_clipped": {
        "plain DDIM, nothing clamped": (
            lambda x, e, a, ap: ap**0.5 * _x0_hat(x, e, a) + (1 - ap) ** 0.5 * e, "must be clamped"),
        "clamped x0_hat with the network's eps (diffusers' default)": (
            lambda x, e, a, ap: ap**0.5 * _x0_hat(x, e, a).clamp(-1, 1) + (1 - ap) ** 0.5 * e, "two different x_t"),
        "the result clamped instead of x0_hat": (
            lambda x, e, a, ap: (ap**0.5 * _x0_hat(x, e, a) + (1 - ap) ** 0.5 * e).clamp(-1, 1), "not x_t'"),
        "eps recomputed without square roots": (
            lambda x, e, a, ap: ap**0.5 * _x0_hat(x, e, a).clamp(-1, 1)
            + (1 - ap) ** 0.5 * (x - a * _x0_hat(x, e, a).clamp(-1, 1)) / (1 - a), "square roots included"),
        "eps clamped as well": (
            lambda x, e, a, ap: ap**0.5 * _x0_hat(x, e, a).clamp(-1, 1) + (1 - ap) ** 0.5 * e.clamp(-1, 1),
            "must not be clamped"),
        "x0_hat clamped to [0, 1] (the range of images outside the model)": (
            lambda x, e, a, ap: ap**0.5 * _x0_hat(x, e, a).clamp(0, 1)
            + (1 - ap) ** 0.5 * (x - a**0.5 * _x0_hat(x, e, a).clamp(0, 1)) / (1 - a) ** 0.5, "expected"),
    },
    "08.compose": {
        "each scale used as the lecture's w": (
            lambda u, c, s: u + ((1 + torch.as_tensor(s).view(-1, *[1] * u.ndim)) * (c - u)).sum(0), "lecture's w"),
        "the guidance terms without the unconditional prediction": (
            lambda u, c, s: (torch.as_tensor(s).view(-1, *[1] * u.ndim) * (c - u)).sum(0), "guidance terms alone"),
        "averaged over the captions": (
            lambda u, c, s: u + (torch.as_tensor(s).view(-1, *[1] * u.ndim) * (c - u)).mean(0), "average"),
        "opposite sign": (
            lambda u, c, s: u - (torch.as_tensor(s).view(-1, *[1] * u.ndim) * (c - u)).sum(0), "opposite sign"),
        "negative scales taken by their size": (
            lambda u, c, s: u + (torch.as_tensor(s).abs().view(-1, *[1] * u.ndim) * (c - u)).sum(0), "push away"),
        "the lecture's rule with the first caption as the base": (
            lambda u, c, s: c[0] + (torch.as_tensor(s).view(-1, *[1] * u.ndim) * (c - u)).sum(0), "lecture's w"),
        "the K scales not reshaped (broadcast against the wrong dimension)": (
            lambda u, c, s: u + (torch.as_tensor(s) * (c - u)).sum(0), "raised"),
    },
}
