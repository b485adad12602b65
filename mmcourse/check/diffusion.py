"""Checks for notebook 08 (diffusion with classifier-free guidance).

The exercises take plain tensors (no schedule object), so a student's function is the formula and
nothing else; the references below are written with :mod:`mmcourse.diffusion`, whose tests compare
it with diffusers' schedulers.
"""

from __future__ import annotations

import torch

from mmcourse import diffusion as D
from mmcourse.check.core import Case, Exercise, expect_close, register

Tensor = torch.Tensor


# ------------------------------------------------------------------------------- 08.q_sample


def q_sample(x0: Tensor, t: Tensor, noise: Tensor, alphas_cumprod: Tensor) -> Tensor:
    """Reference for 08.q_sample: x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, abar_t = alphas_cumprod[t]."""
    alphas = torch.cat([alphas_cumprod[:1], alphas_cumprod[1:] / alphas_cumprod[:-1]])
    schedule = D.NoiseSchedule("given", 1 - alphas, alphas, alphas_cumprod)  # only alphas_cumprod is used
    return D.q_sample(x0, t, noise, schedule)


def _q_sample_cases(g: torch.Generator) -> list[Case]:
    linear = D.linear_schedule(1000).alphas_cumprod
    cosine = D.cosine_schedule(1000).alphas_cumprod
    short = D.linear_schedule(10, 0.05, 0.3).alphas_cumprod

    def batch(n: int, *shape: int) -> tuple[Tensor, Tensor]:
        return torch.randn(n, *shape, generator=g), torch.randn(n, *shape, generator=g)

    x0, eps = batch(4, 3, 8, 8)
    x1, eps1 = batch(3, 3, 4, 4)
    x2, eps2 = batch(5, 6)
    x3, eps3 = batch(6, 3, 2, 2)
    return [
        Case("4 images (3x8x8), linear schedule, t = 10, 250, 500, 999",
             (x0, torch.tensor([10, 250, 500, 999]), eps, linear)),
        Case("t = 0: the first step, almost no noise", (x1, torch.zeros(3, dtype=torch.long), eps1, cosine)),
        Case("each image its own step, a 10-step schedule (t = 0..9)",
             (x3, torch.tensor([0, 1, 3, 5, 8, 9]), eps3, short)),
        Case("vectors (N, D) instead of images: broadcast over whatever follows the batch dimension",
             (x2, torch.tensor([3, 7, 0, 9, 5]), eps2, short)),
        Case("a single image at the last step t = T - 1 (almost pure noise)",
             (x0[:1], torch.tensor([999]), eps[:1], cosine)),
    ]


register(
    Exercise(
        id="08.q_sample",
        title="the forward process q(x_t | x_0)",
        cases=_q_sample_cases,
        reference=q_sample,
        compare=lambda given, expected: expect_close(given, expected, name="x_t", atol=1e-5),
        hint="take abar = alphas_cumprod[t] (one value per image), reshape it to (N, 1, 1, ...) so it broadcasts over the "
        "rest of x0 (e.g. abar.view(-1, *[1] * (x0.ndim - 1))), then x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise: "
        "square roots of both weights, so that the variance of x_t stays 1.",
    )
)


# ------------------------------------------------------------------------------------ 08.cfg


def guided_eps(eps_cond: Tensor, eps_uncond: Tensor, w: float) -> Tensor:
    """Reference for 08.cfg: eps_bar = eps_cond + w (eps_cond - eps_uncond)."""
    return D.guided_eps(eps_cond, eps_uncond, w)


def _cfg_cases(g: torch.Generator) -> list[Case]:
    def pair(*shape: int) -> tuple[Tensor, Tensor]:
        c = torch.randn(*shape, generator=g)
        return c, c + 0.5 * torch.randn(*shape, generator=g)

    c, u = pair(4, 3, 8, 8)
    return [
        Case("w = 0: no guidance, the conditional prediction itself", (c, u, 0.0)),
        Case("w = 1.5 (Stable Diffusion's cfg 2.5)", (c, u, 1.5)),
        Case("w = 6.5 (cfg 7.5)", (*pair(2, 3, 4, 4), 6.5)),
        Case("w = -1: the unconditional prediction", (*pair(3, 3, 4, 4), -1.0)),
        Case("w = 3 on vectors (N, D)", (*pair(5, 7), 3.0)),
    ]


register(
    Exercise(
        id="08.cfg",
        title="the classifier-free guidance combination",
        cases=_cfg_cases,
        reference=guided_eps,
        compare=lambda given, expected: expect_close(given, expected, name="the guided noise prediction", atol=1e-5),
        hint="start from the conditional prediction and move further along the direction from the unconditional to the "
        "conditional one: eps_cond + w * (eps_cond - eps_uncond). With w = 0 it must return eps_cond exactly; diffusers' "
        "eps_uncond + s * (eps_cond - eps_uncond) is the same rule with s = 1 + w, not with s = w.",
    )
)


# ------------------------------------------------------------------------------ 08.ddim_step


def ddim_step(x_t: Tensor, eps: Tensor, alpha_bar_t: float, alpha_bar_prev: float) -> Tensor:
    """Reference for 08.ddim_step: the deterministic DDIM update (eta = 0), without clipping x0_hat."""
    a, a_prev = torch.as_tensor(alpha_bar_t, dtype=x_t.dtype), torch.as_tensor(alpha_bar_prev, dtype=x_t.dtype)
    x0 = D.predict_x0(x_t, eps, a)
    return a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps


def _ddim_cases(g: torch.Generator) -> list[Case]:
    abar = D.cosine_schedule(1000).alphas_cumprod

    def state(*shape: int) -> tuple[Tensor, Tensor]:
        return torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)

    x, e = state(4, 3, 8, 8)
    return [
        Case("a step in the middle of the chain, t = 600 -> 580 (cosine schedule)",
             (x, e, abar[600].item(), abar[580].item())),
        Case("the first step from pure noise, t = 999 -> 979", (*state(2, 3, 8, 8), abar[999].item(), abar[979].item())),
        Case("the last step, to the clean image (alpha_bar_prev = 1)", (*state(3, 3, 4, 4), abar[20].item(), 1.0)),
        Case("a big jump, t = 800 -> 200 (DDIM may skip steps)", (*state(2, 3, 4, 4), abar[800].item(), abar[200].item())),
        Case("alpha bars given as 0-d tensors", (*state(2, 5), abar[400], abar[300])),
    ]


register(
    Exercise(
        id="08.ddim_step",
        title="one DDIM step",
        cases=_ddim_cases,
        reference=ddim_step,
        compare=lambda given, expected: expect_close(given, expected, name="x_prev", atol=1e-4),
        hint="first invert the forward process to estimate the clean image, x0_hat = (x_t - sqrt(1 - a) * eps) / sqrt(a) "
        "with a = alpha_bar_t; then re-noise it to the earlier step with the *same* eps: "
        "x_prev = sqrt(a_prev) * x0_hat + sqrt(1 - a_prev) * eps. Square roots of the alpha bars, no fresh noise (eta = 0), "
        "and no clamping of x0_hat (samplers clip it; this exercise is the plain update).",
    )
)
