"""Checks for notebook 08 (diffusion with classifier-free guidance).

Every exercise asks for something the notebook shows only after its check:

* ``08.q_sample``: the forward process in one jump, derived from the one-step kernel (given the betas);
* ``08.posterior_step``: a DDPM step drawn from the posterior q(x_t' | x_t, x_0), written for a jump
  t -> t' of any length when the notebook shows the paper's equation for one step;
* ``08.ddim_clipped``: a DDIM step that clips x0_hat and stays consistent (the noise recomputed);
* ``08.compose``: guidance towards several captions and away from others (negative prompts), derived
  from the scores.

The exercises take plain tensors (alpha bars as numbers, no schedule object), so a student's function is
the formula and nothing else. The references are written with :mod:`mmcourse.diffusion` (whose tests
compare it with diffusers' schedulers) where it has the function. A wrong answer gets a message naming
the case, expected against given, and, for the typical mistakes (variances for standard deviations, the
one-step variance, swapped coefficients, ...), what the answer matches instead.
"""

from __future__ import annotations

from typing import Sequence

import torch

from mmcourse import diffusion as D
from mmcourse.check.core import Case, Exercise, judge_close, register, remember

Tensor = torch.Tensor

# ----------------------------------------------------------------------------- diagnosing typical mistakes

# References record what each typical mistake would return on their case (check.core.remember);
# compare functions name the one an answer matches (check.core.diagnosis).




def _per_image(values: Tensor, like: Tensor) -> Tensor:
    """(N,) -> (N, 1, 1, ...) so that it broadcasts over ``like`` (N, ...)."""
    return values.view(-1, *[1] * (like.ndim - 1))


def _number(value: float | Tensor) -> Tensor:
    return torch.as_tensor(value, dtype=torch.float32)


def _two_step_schedule(alpha_bar_t: float | Tensor, alpha_bar_prev: float | Tensor) -> tuple[D.NoiseSchedule, int, int]:
    """A schedule holding just the two alpha bars, and the (t, t_prev) of the jump between them in it, so
    the references can call the package's steps (t_prev = -1 when alpha_bar_prev is 1, the clean image)."""
    a, a_prev = _number(alpha_bar_t), _number(alpha_bar_prev)
    if float(a_prev) == 1.0:
        bars, t, t_prev = a.view(1), 0, -1
    else:
        bars, t, t_prev = torch.stack([a_prev, a]), 1, 0
    alphas = torch.cat([bars[:1], bars[1:] / bars[:-1]])
    return D.NoiseSchedule("given", 1 - alphas, alphas, bars), t, t_prev


# ------------------------------------------------------------------------------- 08.q_sample


def q_sample(x0: Tensor, t: Tensor, noise: Tensor, betas: Tensor) -> Tensor:
    """Reference for 08.q_sample: x_t after the steps 0..t, with abar_t = prod_{s <= t} (1 - beta_s):
    x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise."""
    schedule = D.NoiseSchedule.from_betas("given", betas)
    x_t = D.q_sample(x0, t, noise, schedule)
    abar = _per_image(schedule.alphas_cumprod[t], x0)
    beta = _per_image(betas.float()[t], x0)
    abar_before = _per_image(torch.cat([torch.ones(1), schedule.alphas_cumprod[:-1]])[t], x0)
    noise_kept_whole = _per_image(torch.cumsum(betas.float(), 0)[t], x0)
    prod_betas = _per_image(torch.cumprod(betas.float(), 0)[t], x0)
    return remember(x_t, {
        "it matches abar * x0 + (1 - abar) * noise with abar the product of the (1 - beta)s: those are the "
        "variances of the two parts, but x_t adds the parts themselves, each scaled by its standard deviation":
            lambda: abar * x0 + (1 - abar) * noise,
        "its noise part matches the sum of the betas, as if each step's noise stayed whole; every later step "
        "shrinks the noise already in x_t by its sqrt(1 - beta) too": lambda: abar.sqrt() * x0 + noise_kept_whole.sqrt() * noise,
        "it matches a single step from x0 with beta_t alone; x_t is t + 1 steps away from x0 (code counts "
        "the steps from 0: t = 0 is the first)": lambda: (1 - beta).sqrt() * x0 + beta.sqrt() * noise,
        "it matches the steps 0..t-1 only: t = 0 already holds one step of noise (beta_0), so the product runs "
        "over s = 0..t, step t included": lambda: abar_before.sqrt() * x0 + (1 - abar_before).sqrt() * noise,
        "it matches a product of the betas; what survives of the image is a product of the (1 - beta)s":
            lambda: prod_betas.sqrt() * x0 + (1 - prod_betas).sqrt() * noise,
        "the weights of the image and the noise are swapped: at small t x_t should be almost the clean image":
            lambda: (1 - abar).sqrt() * x0 + abar.sqrt() * noise,
    })


def _q_sample_cases(g: torch.Generator) -> list[Case]:
    linear = D.linear_schedule(1000).betas
    cosine = D.cosine_schedule(1000).betas
    short = D.linear_schedule(10, 0.05, 0.3).betas

    def batch(n: int, *shape: int) -> tuple[Tensor, Tensor]:
        return torch.randn(n, *shape, generator=g), torch.randn(n, *shape, generator=g)

    x0, eps = batch(4, 3, 8, 8)
    x1, eps1 = batch(3, 3, 4, 4)
    x2, eps2 = batch(5, 6)
    x3, eps3 = batch(6, 3, 2, 2)
    steps = torch.tensor([5, 100, 500, 999])
    return [
        Case("x0 = 1 and noise = 0 (what is left of the image after the steps 0..t), linear schedule, "
             "t = 5, 100, 500, 999", (torch.ones(4, 3, 2, 2), steps, torch.zeros(4, 3, 2, 2), linear)),
        Case("x0 = 0 and noise = 1 (how much noise x_t holds), linear schedule, t = 5, 100, 500, 999",
             (torch.zeros(4, 3, 2, 2), steps, torch.ones(4, 3, 2, 2), linear)),
        Case("4 images (3x8x8), linear schedule, t = 10, 250, 500, 999", (x0, torch.tensor([10, 250, 500, 999]), eps, linear)),
        Case("t = 0: one step of noise, cosine schedule", (x1, torch.zeros(3, dtype=torch.long), eps1, cosine)),
        Case("each image its own step, a 10-step schedule (t = 0..9)", (x3, torch.tensor([0, 1, 3, 5, 8, 9]), eps3, short)),
        Case("vectors (N, D) instead of images: broadcast over whatever follows the batch dimension",
             (x2, torch.tensor([3, 7, 0, 9, 5]), eps2, short)),
        Case("a single image at the last step t = T - 1 (almost pure noise), cosine schedule",
             (x0[:1], torch.tensor([999]), eps[:1], cosine)),
    ]


register(
    Exercise(
        id="08.q_sample",
        title="the forward process in one jump",
        cases=_q_sample_cases,
        reference=q_sample,
        compare=lambda given, expected: judge_close(given, expected, "x_t", atol=1e-5),
        hint="one step maps x to sqrt(1 - beta) x + sqrt(beta) eps. Apply it twice and collect terms: the image is "
        "scaled by the product of the sqrt(1 - beta)s, and the two noises add to one Gaussian whose variance is "
        "(1 - beta_2)(beta_1) + beta_2 = 1 - (1 - beta_1)(1 - beta_2). So with abar_t = prod over s <= t of "
        "(1 - beta_s) (torch.cumprod), x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise. Take abar at each image's own "
        "step and reshape it to (N, 1, 1, ...) so it broadcasts over the rest of x0.",
    )
)


# -------------------------------------------------------------------------- 08.posterior_step


def posterior_step(x_t: Tensor, x0: Tensor, alpha_bar_t: float | Tensor, alpha_bar_prev: float | Tensor,
                   noise: Tensor) -> Tensor:
    """Reference for 08.posterior_step: a draw from q(x_t' | x_t, x_0) for a jump t -> t' < t (Ho et al. eq. 7
    with alpha = abar_t / abar_t' and beta = 1 - alpha, the shrink and the variance of the forward jump)."""
    schedule, t, t_prev = _two_step_schedule(alpha_bar_t, alpha_bar_prev)
    x_prev = D.posterior_step(x_t, x0, t, t_prev, schedule, noise)
    a, a_prev = _number(alpha_bar_t), _number(alpha_bar_prev)
    alpha = a / a_prev
    beta = 1 - alpha
    c0, ct = a_prev.sqrt() * beta / (1 - a), alpha.sqrt() * (1 - a_prev) / (1 - a)
    var = (1 - a_prev) / (1 - a) * beta
    mean = c0 * x0 + ct * x_t
    last = float(a_prev) == 1.0
    mistakes = {}
    if last:
        mistakes["at the last step (alpha_bar_prev = 1, the clean image) x0 is known, so the posterior has no spread "
                 "left: your step still adds noise (with the jump's variance beta, DDPM's 'fixed_large' choice)"] = (
            lambda: mean + beta.sqrt() * noise)
    else:
        mistakes["its spread matches beta = 1 - abar_t / abar_t', the variance the forward jump adds (DDPM's "
                 "'fixed_large' choice); the posterior, which also knows x0, has a smaller variance (eq. 7's beta tilde)"] = (
            lambda: mean + beta.sqrt() * noise)
    mistakes.update({
        "it matches the variance used as a standard deviation: the noise must be scaled by the square root of the "
        "posterior variance": lambda: mean + var * noise,
        "it matches the posterior's mean alone: DDPM draws from the posterior, so add its standard deviation times "
        "the noise": lambda: mean,
        "the coefficients of x0 and x_t are swapped: at a small jump the mean should stay close to x_t":
            lambda: ct * x0 + c0 * x_t + var.sqrt() * noise,
        "it matches beta taken as 1 - abar_t, the variance of the whole way from x0 to x_t; the jump from x_t' to "
        "x_t has alpha = abar_t / abar_t' and beta = 1 - alpha": lambda: (
            a_prev.sqrt() * x0 + a.sqrt() * (1 - a_prev) / (1 - a) * x_t + (1 - a_prev).sqrt() * noise),
        "the coefficient of x_t lacks a square root on alpha = abar_t / abar_t' (the mean of the forward jump is "
        "sqrt(alpha) x_t')": lambda: c0 * x0 + alpha * (1 - a_prev) / (1 - a) * x_t + var.sqrt() * noise,
        "the coefficient of x0 lacks the square root of abar_t'": lambda: (
            a_prev * beta / (1 - a) * x0 + ct * x_t + var.sqrt() * noise),
    })
    return remember(x_prev, mistakes)


def _posterior_cases(g: torch.Generator) -> list[Case]:
    abar = D.cosine_schedule(1000).alphas_cumprod

    def step(shape: tuple[int, ...], t: int, t_prev: int, *, bars_as_tensors: bool = False) -> tuple:
        """(x_t, x0, alpha_bar_t, alpha_bar_prev, noise) for a jump t -> t_prev (-1: the clean image)."""
        x_t, x0 = torch.randn(*shape, generator=g), torch.randn(*shape, generator=g).clamp(-1, 1)
        a, a_prev = abar[t], abar[t_prev] if t_prev >= 0 else torch.tensor(1.0)
        bars = (a, a_prev) if bars_as_tensors else (a.item(), a_prev.item())
        return (x_t, x0, *bars, torch.randn(*shape, generator=g))

    mean_only = step((4, 3, 8, 8), 600, 599)
    zeros = torch.zeros(2, 3, 2, 2)
    return [
        Case("noise = 0 (the posterior's mean), one step t = 600 -> 599", (*mean_only[:4], torch.zeros_like(mean_only[0]))),
        Case("x_t = x0 = 0 and noise = 1 (the posterior's standard deviation), a jump t = 600 -> 580",
             (zeros, zeros, abar[600].item(), abar[580].item(), torch.ones_like(zeros))),
        Case("a jump in the middle of the chain, t = 600 -> 580", step((4, 3, 8, 8), 600, 580)),
        Case("the first step from pure noise, t = 999 -> 979", step((2, 3, 8, 8), 999, 979)),
        Case("the last step, t = 20 -> the clean image (alpha_bar_prev = 1)", step((3, 3, 4, 4), 20, -1)),
        Case("a big jump, t = 800 -> 200", step((2, 3, 4, 4), 800, 200)),
        Case("vectors (N, D), alpha bars as 0-d tensors, t = 400 -> 380", step((5, 6), 400, 380, bars_as_tensors=True)),
    ]


register(
    Exercise(
        id="08.posterior_step",
        title="a DDPM step from the posterior",
        cases=_posterior_cases,
        reference=posterior_step,
        compare=lambda given, expected: judge_close(given, expected, "x_t'", atol=1e-5),
        hint="the forward jump from x_t' to x_t is one Gaussian step like q(x_t | x_t-1): it shrinks by "
        "sqrt(alpha) with alpha = abar_t / abar_t' and adds variance beta = 1 - alpha. Put those into the one-step "
        "formulas: mean = sqrt(abar_t') beta / (1 - abar_t) x0 + sqrt(alpha) (1 - abar_t') / (1 - abar_t) x_t and "
        "variance (1 - abar_t') / (1 - abar_t) beta, then return mean + sqrt(variance) * noise. At abar_t' = 1 the "
        "variance is 0 by itself.",
    )
)


# --------------------------------------------------------------------------- 08.ddim_clipped


def ddim_clipped(x_t: Tensor, eps: Tensor, alpha_bar_t: float | Tensor, alpha_bar_prev: float | Tensor) -> Tensor:
    """Reference for 08.ddim_clipped: DDIM (eta = 0) with x0_hat clamped to [-1, 1] and eps recomputed from
    the clamped x0_hat, ``mmcourse.diffusion.ddim_step_clipped``."""
    schedule, t, t_prev = _two_step_schedule(alpha_bar_t, alpha_bar_prev)
    x_prev = D.ddim_step_clipped(x_t, eps, t, t_prev, schedule)
    a, a_prev = _number(alpha_bar_t), _number(alpha_bar_prev)
    x0_hat = (x_t - (1 - a).sqrt() * eps) / a.sqrt()
    x0_clip = x0_hat.clamp(-1, 1)
    return remember(x_prev, {
        "it matches the plain DDIM step: x0_hat must be clamped to [-1, 1], the range of real images":
            lambda: a_prev.sqrt() * x0_hat + (1 - a_prev).sqrt() * eps,
        "it matches a clamped x0_hat next to the network's eps (diffusers' default): that eps belongs to the "
        "unclamped x0_hat, so the two terms describe two different x_t": lambda: a_prev.sqrt() * x0_clip + (1 - a_prev).sqrt() * eps,
        "it matches the plain DDIM step clamped afterwards: clamp the estimate x0_hat, not x_t'": lambda: (
            a_prev.sqrt() * x0_hat + (1 - a_prev).sqrt() * eps).clamp(-1, 1),
        "its noise term matches (x_t - abar x0_hat) / (1 - abar): the noise that goes with the clamped x0_hat solves "
        "x_t = sqrt(abar) x0_hat + sqrt(1 - abar) eps, square roots included": lambda: (
            a_prev.sqrt() * x0_clip + (1 - a_prev).sqrt() * (x_t - a * x0_clip) / (1 - a)),
        "it matches eps clamped to [-1, 1] too; the noise is Gaussian and must not be clamped": lambda: (
            a_prev.sqrt() * x0_clip + (1 - a_prev).sqrt() * eps.clamp(-1, 1)),
    })


def _ddim_cases(g: torch.Generator) -> list[Case]:
    abar = D.cosine_schedule(1000).alphas_cumprod

    def inside(n: int, *shape: int, t: int) -> tuple[Tensor, Tensor]:
        """x_t made from a clean image inside [-0.9, 0.9] and the true noise: nothing to clamp."""
        x0 = 0.9 * (2 * torch.rand(n, *shape, generator=g) - 1)
        eps = torch.randn(n, *shape, generator=g)
        a = abar[t]
        return a.sqrt() * x0 + (1 - a).sqrt() * eps, eps

    def guided(n: int, *shape: int, push: float) -> tuple[Tensor, Tensor]:
        """x_t ~ N(0, 1) and an eps pushed away from it, as strong guidance does: x0_hat lands outside [-1, 1]."""
        x = torch.randn(n, *shape, generator=g)
        return x, x + push * torch.randn(n, *shape, generator=g)

    return [
        Case("nothing to clamp (x0_hat inside [-1, 1]): the plain DDIM step, t = 600 -> 580",
             (*inside(4, 3, 8, 8, t=600), abar[600].item(), abar[580].item())),
        Case("strong guidance at high noise (x0_hat far outside [-1, 1]), t = 979 -> 959",
             (*guided(4, 3, 8, 8, push=0.5), abar[979].item(), abar[959].item())),
        Case("x0_hat partly outside [-1, 1], a big jump t = 500 -> 300",
             (*guided(2, 3, 4, 4, push=1.5), abar[500].item(), abar[300].item())),
        Case("the last step, to the clean image (alpha_bar_prev = 1)", (*guided(3, 3, 4, 4, push=1.0), abar[40].item(), 1.0)),
        Case("vectors (N, D), alpha bars as 0-d tensors, t = 900 -> 880", (*guided(5, 6, push=0.5), abar[900], abar[880])),
    ]


register(
    Exercise(
        id="08.ddim_clipped",
        title="a DDIM step that survives clipping",
        cases=_ddim_cases,
        reference=ddim_clipped,
        compare=lambda given, expected: judge_close(given, expected, "x_t'", atol=1e-4),
        hint="estimate x0_hat = (x_t - sqrt(1 - a) eps) / sqrt(a) with a = alpha_bar_t and clamp it to [-1, 1]; then "
        "find the noise that, with the clamped x0_hat, gives back x_t: solve x_t = sqrt(a) x0_hat + sqrt(1 - a) eps "
        "for eps. Use that eps in the update x_t' = sqrt(a') x0_hat + sqrt(1 - a') eps (a' = alpha_bar_prev).",
    )
)


# ----------------------------------------------------------------------------------- 08.compose


def composed_eps(eps_uncond: Tensor, eps_conds: Tensor, scales: Sequence[float] | Tensor) -> Tensor:
    """Reference for 08.compose: the eps of p(x) prod_k p(c_k | x)^{s_k}, eps_u + sum_k s_k (eps_k - eps_u)."""
    s = torch.as_tensor(scales, dtype=eps_uncond.dtype).view(-1, *[1] * eps_uncond.ndim)  # (K, 1, 1, ...)
    terms = eps_conds - eps_uncond  # (K, N, ...): each caption's implicit classifier, as a noise direction
    expected = eps_uncond + (s * terms).sum(0)
    return remember(expected, {
        "it matches each scale used as the lecture's w (eps_k + w (eps_k - eps_u)); here s is the power of the "
        "caption's implicit classifier, so s = 1 must give eps_k back, and s = 1 + w is the lecture's rule":
            lambda: eps_uncond + ((1 + s) * terms).sum(0),
        "it matches the guidance terms alone; they are added to the unconditional prediction, the score of p(x)":
            lambda: (s * terms).sum(0),
        "it matches the average over the captions; each caption's classifier multiplies p(x), so their terms add up":
            lambda: eps_uncond + (s * terms).mean(0),
        "it has the opposite sign: a positive scale must move eps towards its caption's prediction":
            lambda: eps_uncond - (s * terms).sum(0),
        "it starts from the first caption's prediction instead of the unconditional one":
            lambda: eps_conds[0] + (s * terms).sum(0),
        "it matches the sizes of the scales only: a negative scale must push away from its caption":
            lambda: eps_uncond + (s.abs() * terms).sum(0),
    })


def _compose_cases(g: torch.Generator) -> list[Case]:
    def preds(k: int, *shape: int) -> tuple[Tensor, Tensor]:
        u = torch.randn(*shape, generator=g)
        return u, u + 0.5 * torch.randn(k, *shape, generator=g)

    return [
        Case("one caption, s = 1: the conditional prediction itself", (*preds(1, 4, 3, 8, 8), [1.0])),
        Case("one caption, s = 4: the lecture's rule with w = 3 (Stable Diffusion's cfg 4)", (*preds(1, 2, 3, 4, 4), [4.0])),
        Case("two captions pulled towards, s = (3, 3)", (*preds(2, 3, 3, 4, 4), [3.0, 3.0])),
        Case("a caption and a negative prompt, s = (4, -3): Stable Diffusion's negative prompt at cfg 4",
             (*preds(2, 2, 3, 4, 4), [4.0, -3.0])),
        Case("every scale 0: the unconditional prediction", (*preds(2, 2, 3, 4, 4), [0.0, 0.0])),
        Case("three captions on vectors (N, D), scales as a tensor", (*preds(3, 5, 7), torch.tensor([2.0, 1.5, -1.0]))),
    ]


register(
    Exercise(
        id="08.compose",
        title="guidance with several captions and negative prompts",
        cases=_compose_cases,
        reference=composed_eps,
        compare=lambda given, expected: judge_close(given, expected, "the composed noise prediction", atol=1e-5),
        hint="the score of p(x) * prod_k p(c_k | x)^{s_k} is grad log p(x) + sum_k s_k grad log p(c_k | x), and each "
        "caption's implicit classifier has grad log p(c_k | x) = -(eps_k - eps_u) / sqrt(1 - abar). Multiply the score "
        "by -sqrt(1 - abar) to get back to noise: eps_u + sum_k s_k (eps_k - eps_u). Reshape the K scales to "
        "(K, 1, 1, ...) so they broadcast over eps_conds (K, N, ...), and sum over the first dimension.",
    )
)
