"""Denoising diffusion with classifier-free guidance (notebook 08).

The forward process adds Gaussian noise to an image x_0 in T small steps, with variances
beta_1..beta_T. Any step can be reached in one jump:

    x_t = sqrt(abar_t) * x_0 + sqrt(1 - abar_t) * eps,   eps ~ N(0, I),   abar_t = prod_{s<=t} (1 - beta_s)

A network eps_theta(x_t, t, c) learns to predict eps (the "epsilon-prediction" loss of DDPM), and
sampling runs the process backwards from pure noise x_T, one denoising step at a time:

* ``ddpm_step``: a draw from the Gaussian posterior q(x_{t-1} | x_t, x_0) (``posterior_step``) with
  x_0 estimated from eps (Ho et al. 2020); stochastic, so it needs fresh noise every step.
* ``ddim_step``: the deterministic update of Song et al. 2021 (eta = 0), which may skip steps;
  eta = 1 gives back DDPM's variance. ``ddim_step_clipped`` is the form samplers use.

``sample`` runs the loop with any of these steps. The model (``mmcourse.models.DiffusionModel``)
lives apart, as diffusers keeps schedulers apart from models, so the loop stays visible.

Classifier-free guidance (Ho & Salimans 2022) trains one network both with the caption and without
it (the caption is replaced by a null embedding for a fraction ``p_uncond`` of the examples), then
extrapolates away from the unconditional prediction:

    eps_bar = eps(x_t, t, c) + w * (eps(x_t, t, c) - eps(x_t, t))

w = 0 is the purely conditional model; larger w trades diversity for fidelity to the caption.
Diffusers' pipelines (Stable Diffusion among them) write the same rule as
``eps_u + s * (eps_c - eps_u)`` with ``guidance_scale`` s = 1 + w, so their "cfg 1" is our w = 0
and their "cfg 7.5" is our w = 6.5 (``cfg_scale_to_w``).

Conventions: steps are numbered t = 0..T-1 in code, as in diffusers (the papers count 1..T), and a
step to ``t_prev = -1`` lands on the clean image (abar = 1). Images live in [0, 1] outside and in
[-1, 1] inside the model (``to_model_space``, ``to_images``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
Step = Callable[..., Tensor]  # step(x_t, eps, t, t_prev, schedule, noise) -> x_{t_prev}

SCHEDULES: tuple[str, ...] = ("linear", "cosine")


# ----------------------------------------------------------------------------------- schedules


@dataclass(frozen=True)
class NoiseSchedule:
    """The variances of the forward process. All tensors are (T,) float32, indexed by t = 0..T-1."""

    name: str
    betas: Tensor  # beta_t: the variance added at step t
    alphas: Tensor  # 1 - beta_t
    alphas_cumprod: Tensor  # abar_t = prod_{s <= t} alpha_s: how much of x_0 survives in x_t

    @property
    def num_steps(self) -> int:
        """T, the number of training steps."""
        return self.betas.shape[0]

    @classmethod
    def from_betas(cls, name: str, betas: Tensor) -> "NoiseSchedule":
        # float32 throughout, as the network runs and as diffusers computes it: same numbers, same steps
        betas = betas.float()
        alphas = 1.0 - betas
        return cls(name, betas, alphas, torch.cumprod(alphas, dim=0))

    def alpha_bar(self, t: int) -> Tensor:
        """abar_t as a 0-dim tensor; t = -1 means "before any noise" (abar = 1)."""
        if not -1 <= t < self.num_steps:
            raise ValueError(f"step {t} is outside the schedule: use -1..{self.num_steps - 1}")
        return self.alphas_cumprod[t] if t >= 0 else torch.ones((), dtype=self.alphas_cumprod.dtype)


def linear_schedule(num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> NoiseSchedule:
    """DDPM's schedule: betas evenly spaced from ``beta_start`` to ``beta_end`` (Ho et al. 2020)."""
    _check_steps(num_steps)
    return NoiseSchedule.from_betas("linear", torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float32))


def cosine_schedule(num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> NoiseSchedule:
    """Nichol & Dhariwal's schedule: abar(t) = f(t) / f(0) with f(t) = cos^2((t/T + s) / (1 + s) * pi/2).

    It destroys information more slowly than the linear schedule, which at low resolution spends
    its last few hundred steps on images that are already pure noise. beta_t = 1 - abar(t+1)/abar(t),
    capped at ``max_beta`` so the last step stays finite.
    """
    _check_steps(num_steps)
    u = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    f = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)
    return NoiseSchedule.from_betas("cosine", betas)


def make_schedule(name: str, num_steps: int = 1000) -> NoiseSchedule:
    """``linear_schedule`` or ``cosine_schedule`` by name (as stored in a checkpoint's config)."""
    if name == "linear":
        return linear_schedule(num_steps)
    if name == "cosine":
        return cosine_schedule(num_steps)
    raise ValueError(f"unknown noise schedule {name!r}; choose one of {', '.join(map(repr, SCHEDULES))}")


# ---------------------------------------------------------------------------- forward process


def to_model_space(images: Tensor) -> Tensor:
    """Images in [0, 1] -> x_0 in [-1, 1], the range the noise is scaled to."""
    return images * 2 - 1


def to_images(x: Tensor) -> Tensor:
    """x in [-1, 1] -> images in [0, 1] (clamped)."""
    return ((x + 1) / 2).clamp(0, 1)


def q_sample(x0: Tensor, t: Tensor, noise: Tensor, schedule: NoiseSchedule) -> Tensor:
    """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps for each image: x0, noise (N, ...), t (N,) ints."""
    if noise.shape != x0.shape:
        raise ValueError(f"noise must have the shape of x0 {tuple(x0.shape)}, got {tuple(noise.shape)}")
    if t.ndim != 1 or t.shape[0] != x0.shape[0] or t.is_floating_point():
        raise ValueError(f"t must be a (N,) integer tensor with N = {x0.shape[0]} images, got {t.dtype} {tuple(t.shape)}")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= schedule.num_steps):
        raise ValueError(f"t must lie in 0..{schedule.num_steps - 1}, got values in {int(t.min())}..{int(t.max())}")
    abar = schedule.alphas_cumprod.to(x0.device)[t].view(-1, *([1] * (x0.ndim - 1)))  # (N, 1, 1, 1)
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise


def predict_x0(x_t: Tensor, eps: Tensor, alpha_bar_t: Tensor) -> Tensor:
    """The clean image the noise prediction implies: invert q_sample, x_0 = (x_t - sqrt(1-abar) eps) / sqrt(abar)."""
    return (x_t - (1 - alpha_bar_t).sqrt() * eps) / alpha_bar_t.sqrt()


# ------------------------------------------------------------------------------ reverse steps
#
# Every reverse step has the same signature, step(x_t, eps, t, t_prev, schedule, noise) -> x_{t_prev},
# so a sampling loop takes the step as an argument: one small function per sampler, no flags.


def posterior_step(x_t: Tensor, x0: Tensor, t: int, t_prev: int, schedule: NoiseSchedule, noise: Tensor) -> Tensor:
    """A draw from the Gaussian posterior q(x_{t_prev} | x_t, x_0) of the forward process (Ho et al. 2020, eq. 7).

    With a = abar_t, a' = abar_{t_prev} and beta = 1 - a/a' (the variance added between the two steps):

        mean = sqrt(a') beta / (1 - a) * x_0 + sqrt(a/a') (1 - a') / (1 - a) * x_t
        var  = (1 - a') / (1 - a) * beta          (the posterior variance, "fixed_small")

    and x_{t_prev} = mean + sqrt(var) * noise. ``t_prev`` is usually t - 1; a larger gap skips steps.
    At ``t_prev = -1`` the variance is 0 and the step returns the mean.
    """
    a, a_prev = _alpha_bars(x_t, x0, t, t_prev, schedule)
    _check_like(noise, x_t, "noise")
    beta = 1 - a / a_prev
    mean = a_prev.sqrt() * beta / (1 - a) * x0 + (a / a_prev).sqrt() * (1 - a_prev) / (1 - a) * x_t
    var = (1 - a_prev) / (1 - a) * beta
    return mean + var.sqrt() * noise


def ddpm_step(x_t: Tensor, eps: Tensor, t: int, t_prev: int, schedule: NoiseSchedule, noise: Tensor) -> Tensor:
    """One ancestral DDPM step x_t -> x_{t_prev}: estimate x0_hat from eps, clamp it to [-1, 1] (the
    range of real images, as DDPM's code and diffusers' ``clip_sample=True`` do), and draw from
    ``posterior_step`` with x_0 = x0_hat. Stochastic: it needs fresh ``noise`` every step."""
    a, _ = _alpha_bars(x_t, eps, t, t_prev, schedule)
    return posterior_step(x_t, predict_x0(x_t, eps, a).clamp(-1, 1), t, t_prev, schedule, noise)


def ddim_step(
    x_t: Tensor, eps: Tensor, t: int, t_prev: int, schedule: NoiseSchedule, noise: Tensor | None = None, *,
    eta: float = 0.0,
) -> Tensor:
    """One DDIM step x_t -> x_{t_prev} as the paper writes it (Song et al. 2021, eq. 12), nothing clipped:

        x_{t_prev} = sqrt(a') x0_hat  +  sqrt(1 - a' - sigma^2) eps  +  sigma * noise
                     (the predicted image)  (pointing back to x_t)     (fresh noise)

    with sigma = eta * sqrt((1 - a') / (1 - a)) * sqrt(1 - a / a'). eta = 0 (the default) is
    deterministic: the same x_T always gives the same image, ``noise`` is ignored, and steps can be
    skipped freely. eta = 1 gives back DDPM's variance; ``noise`` is needed when eta > 0.
    """
    a, _ = _alpha_bars(x_t, eps, t, t_prev, schedule)
    return _ddim_update(x_t, predict_x0(x_t, eps, a), eps, t, t_prev, schedule, eta, noise)


def ddim_step_clipped(
    x_t: Tensor, eps: Tensor, t: int, t_prev: int, schedule: NoiseSchedule, noise: Tensor | None = None, *,
    eta: float = 0.0,
) -> Tensor:
    """The DDIM step samplers use: x0_hat clamped to [-1, 1], and eps recomputed from the clamped
    x0_hat, eps = (x_t - sqrt(a) x0_hat) / sqrt(1 - a), so that both terms of the update describe
    the same x_t (diffusers' ``clip_sample=True`` with ``use_clipped_model_output=True``).

    Why recompute: eps appears twice, in x0_hat and in the direction term. Under strong guidance at
    high noise the guided x0_hat lands far outside [-1, 1]; the clamp removes guidance's push from
    it, and an unclamped direction term would then carry that push with the opposite sign, away
    from the caption (``ddim_step_clipped_x0_only`` shows it; notebook 08 measures it).
    """
    a, _ = _alpha_bars(x_t, eps, t, t_prev, schedule)
    x0 = predict_x0(x_t, eps, a).clamp(-1, 1)
    return _ddim_update(x_t, x0, (x_t - a.sqrt() * x0) / (1 - a).sqrt(), t, t_prev, schedule, eta, noise)


def ddim_step_clipped_x0_only(
    x_t: Tensor, eps: Tensor, t: int, t_prev: int, schedule: NoiseSchedule, noise: Tensor | None = None, *,
    eta: float = 0.0,
) -> Tensor:
    """DDIM with x0_hat clamped to [-1, 1] but the network's eps kept in the direction term
    (diffusers' default, ``clip_sample=True``): the two terms then disagree about x_t, which breaks
    guided sampling (see ``ddim_step_clipped``)."""
    a, _ = _alpha_bars(x_t, eps, t, t_prev, schedule)
    return _ddim_update(x_t, predict_x0(x_t, eps, a).clamp(-1, 1), eps, t, t_prev, schedule, eta, noise)


def _ddim_update(x_t: Tensor, x0: Tensor, eps: Tensor, t: int, t_prev: int, schedule: NoiseSchedule, eta: float,
                 noise: Tensor | None) -> Tensor:
    """sqrt(a') x0 + sqrt(1 - a' - sigma^2) eps + sigma noise, the update shared by the DDIM steps."""
    if not isinstance(eta, Real) or isinstance(eta, bool) or not 0 <= eta <= 1:
        raise ValueError(f"eta must be a number in [0, 1], got {eta!r}")
    a, a_prev = _alpha_bars(x_t, eps, t, t_prev, schedule)
    sigma = eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)).sqrt()
    x_prev = a_prev.sqrt() * x0 + (1 - a_prev - sigma**2).sqrt() * eps
    if eta > 0:
        if noise is None:
            raise ValueError("a DDIM step with eta > 0 adds fresh noise: pass noise=torch.randn_like(x_t)")
        _check_like(noise, x_t, "noise")
        x_prev = x_prev + sigma * noise
    return x_prev


def sampling_timesteps(steps: int, num_steps: int = 1000) -> list[int]:
    """The ``steps`` training steps a sampler visits, from noisiest to cleanest.

    Evenly spaced, starting at T - 1 ("trailing" spacing in diffusers): the first step then sees
    the pure noise the model was trained on at t = T - 1. After the last one the sampler jumps to
    t_prev = -1, the clean image. With ``steps = T`` this is every step, T-1 down to 0.
    """
    _check_steps(steps)
    if steps > num_steps:
        raise ValueError(f"cannot sample in {steps} steps with a schedule of {num_steps} steps")
    stride = num_steps / steps
    return [round(num_steps - i * stride) - 1 for i in range(steps)]


# ----------------------------------------------------------------------------------- guidance


def guided_eps(eps_cond: Tensor, eps_uncond: Tensor, w: float) -> Tensor:
    """Classifier-free guidance: eps_bar = eps_cond + w * (eps_cond - eps_uncond).

    w = 0 returns ``eps_cond`` unchanged (the conditional model), w = -1 the unconditional one.
    Diffusers' ``guidance_scale`` s is 1 + w: ``eps_uncond + s * (eps_cond - eps_uncond)``.
    """
    if eps_cond.shape != eps_uncond.shape:
        raise ValueError(
            f"eps_cond and eps_uncond must have the same shape, got {tuple(eps_cond.shape)} and {tuple(eps_uncond.shape)}"
        )
    w = _check_guidance(w)
    if w == 0:
        return eps_cond
    return eps_cond + w * (eps_cond - eps_uncond)


def cfg_scale_to_w(guidance_scale: float) -> float:
    """Diffusers' / Stable Diffusion's ``guidance_scale`` s as this course's w = s - 1 (cfg 7.5 -> w = 6.5)."""
    return _check_guidance(guidance_scale) - 1.0


# ------------------------------------------------------------------------------------ training


def training_loss(
    model,
    x0: Tensor,
    cond: Tensor,
    *,
    p_uncond: float = 0.1,
    snr_gamma: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The epsilon-prediction loss with condition dropout, for a batch x0 (N, 3, S, S) in [-1, 1].

    Draw t ~ Uniform{0..T-1} and eps ~ N(0, I) per image, noise x0 to x_t, replace the condition by
    ``model.null_cond`` with probability ``p_uncond`` (so the same network also learns eps(x_t, t)),
    and return mean ||eps - eps_theta(x_t, t, c)||^2. Ho & Salimans found p_uncond of 0.1-0.2 best.

    ``snr_gamma`` (optional) weights each image's squared error by min(SNR_t, gamma) / SNR_t with
    SNR_t = abar_t / (1 - abar_t), the "min-SNR" weighting of Hang et al. 2023: the many nearly clean
    steps, where predicting eps is easy and says little about the picture, count less, so more of
    the gradient goes to the noisy steps that decide colour and shape. The target is still eps.
    """
    if not 0 <= p_uncond <= 1:
        raise ValueError(f"p_uncond is a probability, got {p_uncond}")
    if snr_gamma is not None and not snr_gamma > 0:
        raise ValueError(f"snr_gamma must be positive (or None for the plain loss), got {snr_gamma}")
    n = x0.shape[0]
    if cond.shape != (n, model.null_cond.shape[0]):
        raise ValueError(f"cond must be ({n}, {model.null_cond.shape[0]}) for {n} images, got {tuple(cond.shape)}")
    t = torch.randint(0, model.schedule.num_steps, (n,), generator=generator).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    drop = (torch.rand(n, generator=generator) < p_uncond).to(x0.device)  # (N,) True: no caption
    cond = torch.where(drop[:, None], model.null_cond.expand_as(cond), cond)
    x_t = q_sample(x0, t, noise, model.schedule)
    if snr_gamma is None:
        return F.mse_loss(model(x_t, t, cond), noise)
    abar = model.schedule.alphas_cumprod.to(x0.device)[t]
    snr = abar / (1 - abar)
    weight = snr.clamp(max=snr_gamma) / snr  # (N,)
    per_image = (model(x_t, t, cond) - noise).pow(2).flatten(1).mean(1)
    return (weight * per_image).mean()


# ------------------------------------------------------------------------------------ sampling


@torch.no_grad()
def sample(
    model,
    captions: Sequence[str] | str,
    *,
    guidance_scale: float,
    steps: int = 50,
    seed: int = 0,
    step: Step = ddpm_step,
) -> Tensor:
    """Images (N, 3, S, S) in [0, 1] for N captions, guided with w = ``guidance_scale``.

    ``model`` is a text-to-image model such as ``mmcourse.models.DiffusionModel`` (the bundled
    ``diffusion_shapes``): ``encode(captions)``, ``null_cond``, ``schedule``, ``image_size`` and
    ``model(x_t, t, cond)`` -> eps. Starts from x_T ~ N(0, I) (drawn on the CPU from ``seed``, so a
    seed gives the same images on any device) and takes ``steps`` reverse steps with ``step``:
    ``ddpm_step`` (the default: fresh noise every step), ``ddim_step_clipped`` (deterministic), or
    any function of the same signature. With w != 0 each step evaluates the network twice, with the
    caption and with ``null_cond`` (one batch of 2N); with w = 0 only once.
    Note w is the course's guidance weight: diffusers' guidance_scale s corresponds to w = s - 1.
    """
    w = _check_guidance(guidance_scale)
    if not callable(step):
        raise TypeError(f"step must be a reverse-step function such as ddpm_step or ddim_step_clipped, got {step!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    schedule = model.schedule
    timesteps = sampling_timesteps(steps, schedule.num_steps)
    cond = model.encode(captions)  # (N, C)
    n, device = cond.shape[0], cond.device
    null = model.null_cond.expand_as(cond)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, model.image_size, model.image_size, generator=g).to(device)  # x_T

    for i, t in enumerate(timesteps):
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        t_batch = torch.full((n,), t, device=device)
        if w == 0:
            eps = model(x, t_batch, cond)
        else:
            eps_cond, eps_uncond = model(torch.cat([x, x]), torch.cat([t_batch, t_batch]), torch.cat([cond, null])).chunk(2)
            eps = guided_eps(eps_cond, eps_uncond, w)
        x = step(x, eps, t, t_prev, schedule, torch.randn(x.shape, generator=g).to(device))
    return to_images(x)


# ------------------------------------------------------------------------------- input checks


def _check_steps(steps: object) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"a number of steps must be a positive int, got {steps!r}")


def _check_guidance(w: object) -> float:
    if isinstance(w, bool) or not isinstance(w, Real) or not math.isfinite(w):
        raise ValueError(f"the guidance weight must be a finite number (w = 0: no guidance), got {w!r}")
    return float(w)


def _check_like(x: Tensor, ref: Tensor, name: str) -> None:
    if x.shape != ref.shape:
        raise ValueError(f"{name} must have the shape of x_t {tuple(ref.shape)}, got {tuple(x.shape)}")


def _alpha_bars(x_t: Tensor, eps: Tensor, t: int, t_prev: int, schedule: NoiseSchedule) -> tuple[Tensor, Tensor]:
    """abar_t and abar_{t_prev} for a step, after checking the step makes sense."""
    _check_like(eps, x_t, "eps")
    if isinstance(t, Tensor) or isinstance(t_prev, Tensor):
        t, t_prev = int(t), int(t_prev)
    if not 0 <= t < schedule.num_steps or not -1 <= t_prev < t:
        raise ValueError(
            f"a reverse step goes from t in 0..{schedule.num_steps - 1} to an earlier t_prev >= -1; "
            f"got t={t}, t_prev={t_prev}"
        )
    return schedule.alpha_bar(t).to(x_t.device), schedule.alpha_bar(t_prev).to(x_t.device)

