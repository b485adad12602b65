"""Denoising diffusion with classifier-free guidance (notebook 08).

The forward process adds Gaussian noise to an image x_0 in T small steps, with variances
beta_1..beta_T. Any step can be reached in one jump:

    x_t = sqrt(abar_t) * x_0 + sqrt(1 - abar_t) * eps,   eps ~ N(0, I),   abar_t = prod_{s<=t} (1 - beta_s)

A network eps_theta(x_t, t, c) learns to predict eps (the "epsilon-prediction" loss of DDPM), and
sampling runs the process backwards from pure noise x_T, one denoising step at a time:

* ``ddpm_step``: a draw from the Gaussian posterior q(x_{t-1} | x_t, x_0) with x_0 estimated from eps
  (Ho et al. 2020); stochastic, so it needs fresh noise every step.
* ``ddim_step``: the deterministic update of Song et al. 2021 (eta = 0), which may skip steps;
  eta = 1 gives back DDPM's variance.

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
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor

SAMPLERS: tuple[str, ...] = ("ddim", "ddpm")
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


def ddpm_step(
    x_t: Tensor, eps: Tensor, t: int, t_prev: int, schedule: NoiseSchedule, noise: Tensor, *, clip_x0: bool = True
) -> Tensor:
    """One ancestral DDPM step x_t -> x_{t_prev}: a draw from q(x_{t_prev} | x_t, x_0 = x0_hat).

    With a = abar_t, a' = abar_{t_prev} and beta = 1 - a/a' (the variance added between the two steps):

        mean = sqrt(a') beta / (1 - a) * x0_hat + sqrt(a/a') (1 - a') / (1 - a) * x_t
        var  = (1 - a') / (1 - a) * beta          (the posterior variance, "fixed_small")

    and x_{t_prev} = mean + sqrt(var) * noise. ``t_prev`` is usually t - 1; a larger gap skips steps.
    At ``t_prev = -1`` the variance is 0 and the step returns the mean. ``clip_x0`` clamps x0_hat to
    [-1, 1], the range of real images (diffusers' ``clip_sample=True``).
    """
    a, a_prev = _alpha_bars(x_t, eps, t, t_prev, schedule)
    _check_like(noise, x_t, "noise")
    x0 = predict_x0(x_t, eps, a)
    if clip_x0:
        x0 = x0.clamp(-1, 1)
    beta = 1 - a / a_prev
    mean = a_prev.sqrt() * beta / (1 - a) * x0 + (a / a_prev).sqrt() * (1 - a_prev) / (1 - a) * x_t
    var = (1 - a_prev) / (1 - a) * beta
    return mean + var.sqrt() * noise


def ddim_step(
    x_t: Tensor,
    eps: Tensor,
    t: int,
    t_prev: int,
    schedule: NoiseSchedule,
    *,
    eta: float = 0.0,
    noise: Tensor | None = None,
    clip_x0: bool = True,
    eps_from_clipped_x0: bool = False,
) -> Tensor:
    """One DDIM step x_t -> x_{t_prev} (Song et al. 2021, eq. 12):

        x_{t_prev} = sqrt(a') x0_hat  +  sqrt(1 - a' - sigma^2) eps  +  sigma * noise
                     (the predicted image)  (pointing back to x_t)     (fresh noise)

    with sigma = eta * sqrt((1 - a') / (1 - a)) * sqrt(1 - a / a'). eta = 0 (the default) is
    deterministic: the same x_T always gives the same image, and steps can be skipped freely.
    ``noise`` is needed only when eta > 0. ``clip_x0`` clamps x0_hat to [-1, 1].

    eps appears twice, in x0_hat and in the direction term. By default (as in the paper and in
    diffusers) the direction term uses the network's eps even when x0_hat was clipped, so the two
    terms no longer describe the same x_t. ``eps_from_clipped_x0=True`` recomputes eps from the
    clipped x0_hat, eps = (x_t - sqrt(a) x0_hat) / sqrt(1 - a), which keeps them consistent
    (diffusers' ``use_clipped_model_output=True``). Under strong guidance this matters: at high noise
    the guided x0_hat lands far outside [-1, 1], the clip removes guidance's push from it, and the
    unclipped direction term then carries that push with the opposite sign, away from the caption.
    """
    a, a_prev = _alpha_bars(x_t, eps, t, t_prev, schedule)
    if not isinstance(eta, Real) or isinstance(eta, bool) or not 0 <= eta <= 1:
        raise ValueError(f"eta must be a number in [0, 1], got {eta!r}")
    x0 = predict_x0(x_t, eps, a)
    if clip_x0:
        x0 = x0.clamp(-1, 1)
        if eps_from_clipped_x0:
            eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
    sigma = eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)).sqrt()
    x_prev = a_prev.sqrt() * x0 + (1 - a_prev - sigma**2).sqrt() * eps
    if eta > 0:
        if noise is None:
            raise ValueError("ddim_step with eta > 0 adds fresh noise: pass noise=torch.randn_like(x_t)")
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


# ----------------------------------------------------------------------- model and training


class DiffusionModel(nn.Module):
    """A text-to-image diffusion model: a frozen caption encoder, a noise predictor, a schedule.

    * ``encode(captions)`` -> c (N, cond_dim), from the caption encoder;
    * ``null_cond`` (cond_dim,): the learned "no caption" embedding used for the unconditional
      prediction eps(x_t, t). It starts at zero and is trained whenever a caption is dropped.
      Why learned rather than fixed zeros: the stand-in bag-of-words encoder maps an empty caption
      to zeros anyway, but a CLIP encoder maps nothing to zero, so any fixed choice would be an
      arbitrary point of its space; a learned vector lets the network choose where "unconditional"
      sits, like the extra class token of Ho & Salimans and DiT;
    * ``forward(x_t, t, cond)`` -> eps (N, 3, S, S).

    The caption encoder is *not* a submodule: it is frozen, its weights belong to another bundled
    checkpoint (``clip_shapes``), so this model's state dict holds only the denoiser and
    ``null_cond``, and it stays on the CPU when the denoiser moves to a GPU (a caption is encoded
    once per sampling call). A model trained on a bundled encoder records that checkpoint's sha256
    (``encoder_sha256``); building it again against an encoder with another sha256 fails, because
    the denoiser only understands the exact embeddings it was trained on.
    """

    def __init__(
        self,
        encoder: str = "bag_of_words",
        image_size: int = 32,
        schedule: str = "cosine",
        num_steps: int = 1000,
        channels: Sequence[int] = (16, 32, 64),
        emb_dim: int = 128,
        attention: bool = False,
        encoder_sha256: str | None = None,
    ) -> None:
        super().__init__()
        from mmcourse.models.caption_encoders import caption_encoder, encoder_fingerprint
        from mmcourse.models.unet import ConditionalUNet

        fingerprint = encoder_fingerprint(encoder)  # before loading anything
        if encoder_sha256 is not None and encoder_sha256 != fingerprint:
            from mmcourse.pretrained import CheckpointError

            raise CheckpointError(
                f"this diffusion model was trained on the caption embeddings of {encoder!r} with sha256 "
                f"{encoder_sha256[:12]}..., but the bundled {encoder!r} has sha256 {str(fingerprint)[:12]}...: "
                f"the embeddings changed and the denoiser no longer understands them; rebuild it "
                f"(`mmcourse train diffusion_shapes`) after the text encoder"
            )
        self.__dict__["encoder"] = caption_encoder(encoder)  # outside the module tree (see above)
        self.unet = ConditionalUNet(self.encoder.dim, tuple(channels), emb_dim, attention=attention)
        self.null_cond = nn.Parameter(torch.zeros(self.encoder.dim))
        self.schedule = make_schedule(schedule, num_steps)
        self.image_size = image_size
        self.config = {"encoder": encoder, "image_size": image_size, "schedule": schedule,
                       "num_steps": num_steps, "channels": list(channels), "emb_dim": emb_dim, "attention": attention}
        if fingerprint is not None:
            self.config["encoder_sha256"] = fingerprint

    def encode(self, captions: Sequence[str] | str) -> Tensor:
        """(N, cond_dim) condition vectors, on the model's device."""
        return self.encoder(captions).to(self.null_cond.device)

    def forward(self, x_t: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        return self.unet(x_t, t, cond)


def training_loss(
    model: DiffusionModel,
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
    model: DiffusionModel,
    captions: Sequence[str] | str,
    *,
    guidance_scale: float,
    steps: int = 50,
    seed: int = 0,
    sampler: str = "ddpm",
    eps_from_clipped_x0: bool = True,
) -> Tensor:
    """Images (N, 3, S, S) in [0, 1] for N captions, guided with w = ``guidance_scale``.

    Starts from x_T ~ N(0, I) (drawn on the CPU from ``seed``, so a seed gives the same images on
    any device) and takes ``steps`` denoising steps with ``ddpm_step`` (fresh noise each step, the
    default) or ``ddim_step`` (deterministic). With w != 0 each step evaluates the network twice,
    with the caption and with ``null_cond`` (one batch of 2N); with w = 0 only once.
    Note w is the course's guidance weight: diffusers' guidance_scale s corresponds to w = s - 1.

    Both samplers clip x0_hat to [-1, 1]. DDIM then recomputes eps from the clipped x0_hat
    (``eps_from_clipped_x0``, diffusers' ``use_clipped_model_output=True``): without it guidance
    pushes the other way at high noise, and DDIM with 50 steps scores worse at w = 3 than at w = 0
    for the bundled model (notebook 08, section 4, shows both). DDPM ignores the flag.
    """
    w = _check_guidance(guidance_scale)
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(map(repr, SAMPLERS))}")
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
        if sampler == "ddpm":
            x = ddpm_step(x, eps, t, t_prev, schedule, torch.randn(x.shape, generator=g).to(device))
        else:
            x = ddim_step(x, eps, t, t_prev, schedule, eps_from_clipped_x0=eps_from_clipped_x0)
    return to_images(x)


# ------------------------------------------------------------------------ recipe and quality


def train_diffusion(
    *,
    seed: int = 0,
    steps: int = 5000,
    batch_size: int = 32,
    lr: float = 2e-3,
    p_uncond: float = 0.1,
    ema_decay: float = 0.999,
    encoder: str = "bag_of_words",
    schedule: str = "cosine",
    channels: Sequence[int] = (16, 32, 64),
    emb_dim: int = 128,
    attention: bool = False,
    image_size: int = 32,
    style: str = "photo",
    captions: str = "varied",
    snr_gamma: float | None = None,
    progress: bool = True,
) -> tuple[DiffusionModel, dict]:
    """Train a text-to-image model on a stream of fresh single-object images of the train split (never
    a pair of ``HELDOUT_COMBOS``); returns the exponential moving average of its weights and the final loss.

    The average (decay ``ema_decay``, warmed up over the first steps) is what one samples from:
    the raw weights of a diffusion model jitter from step to step, and the jitter shows in samples.
    """
    import copy

    from mmcourse.data.shapes import stream_shapes
    from mmcourse.training import fit

    torch.manual_seed(seed)
    model = DiffusionModel(encoder=encoder, image_size=image_size, schedule=schedule, channels=channels, emb_dim=emb_dim,
                           attention=attention)
    ema = copy.deepcopy(model).requires_grad_(False)
    g = torch.Generator().manual_seed(seed)
    data = stream_shapes(batch_size, seed=2_000_000 + 1000 * seed, split="train", style=style, size=image_size,
                         captions=captions)
    batches = ((to_model_space(b.images), model.encode(b.captions)) for b in data)

    def update_ema(step: int) -> None:
        decay = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for avg, p in zip(ema.parameters(), model.parameters()):
                avg.lerp_(p, 1 - decay)

    losses = fit(
        model,
        lambda m, b: training_loss(m, b[0], b[1], p_uncond=p_uncond, snr_gamma=snr_gamma, generator=g),
        batches,
        steps=steps,
        lr=lr,
        progress=progress,
        desc="diffusion_shapes",
        after_step=update_ema,
    )
    chunk = max(1, steps // 20)  # the loss curve in 20 points, each the mean over its chunk of steps
    curve = [[i + chunk, round(sum(losses[i : i + chunk]) / len(losses[i : i + chunk]), 4)] for i in range(0, steps, chunk)]
    return ema.eval(), {"final_loss": curve[-1][1], "loss_curve": curve, "steps": steps, "batch_size": batch_size}


# The bundled ``diffusion_shapes``: why each setting is what it is (each was chosen in short runs,
# one thread, a few minutes each, judged by the classifier score of samples).
#   image_size 16: on two CPU cores the budget is about ten thousand steps. At 32 x 32 pixels a step
#     costs three times as much, and in the same time the model learned colour but drew fragments
#     instead of shapes; at 16 x 16 the shapes come out, and the independent classifier still reads
#     real 16 x 16 images (upsampled) right 96 % of the time;
#   style "flat": one object on a plain background, the shapes world's cleanest rendering (the photo
#     style's texture is a second thing to learn in the same budget);
#   channels (16, 32, 64) at 16, 8 and 4 pixels, self-attention at 4 x 4: attention keeps an object in
#     one piece; wider levels lowered the loss but not the shape errors in the time available;
#   snr_gamma 5 (min-SNR weighting): the noisy steps, which decide colour and shape, get the gradient;
#     colour and shape were learned two to three times faster than with the plain loss;
#   encoder "clip_shapes": the frozen course CLIP text tower, as DALL-E 2 and Imagen freeze theirs;
#   p_uncond 0.1: one caption in ten is dropped, so the same network learns eps(x_t, t) for guidance.
DIFFUSION_SHAPES_RECIPE: dict = {
    "steps": 8500,
    "batch_size": 32,
    "lr": 2e-3,
    "p_uncond": 0.1,
    "ema_decay": 0.999,
    "encoder": "clip_shapes",
    "schedule": "cosine",
    "channels": (16, 32, 64),
    "emb_dim": 128,
    "attention": True,
    "image_size": 16,
    "style": "flat",
    "captions": "varied",
    "snr_gamma": 5.0,
}
# the guidance weights on the card (w = cfg - 1: 0, 1.5, 3.5, 6.5 are the seed's SD3.5 sweep)
CARD_WEIGHTS: tuple[float, ...] = (0.0, 1.0, 1.5, 2.0, 3.0, 3.5, 4.5, 6.5)


def train_diffusion_shapes(*, seed: int = 0, progress: bool = True, eval_per_caption: int = 12) -> tuple[DiffusionModel, dict]:
    """The recipe of the bundled ``diffusion_shapes``: ``train_diffusion`` with
    ``DIFFUSION_SHAPES_RECIPE``, then its quality at ``CARD_WEIGHTS`` with the default sampler (fresh
    samples judged by the independent ``attributes_shapes`` classifier), DDIM at w = 0 and 3 for
    comparison, the same scores for real images, and the sampling time."""
    import time

    model, metrics = train_diffusion(seed=seed, progress=progress, **DIFFUSION_SHAPES_RECIPE)
    start = time.perf_counter()
    eval_seed = 10_000 + seed  # x_T never used in training (training draws its noise from another generator)
    quality = evaluate_guidance(model, CARD_WEIGHTS, per_caption=eval_per_caption, steps=50, seed=eval_seed)
    ddim = evaluate_guidance(model, (0.0, 3.0), per_caption=eval_per_caption, steps=50, seed=eval_seed, sampler="ddim")
    real = real_reference(per_caption=eval_per_caption, seed=20_000 + seed, style=DIFFUSION_SHAPES_RECIPE["style"],
                          size=model.image_size)
    metrics.update(
        recipe={k: list(v) if isinstance(v, tuple) else v for k, v in DIFFUSION_SHAPES_RECIPE.items()},
        evaluation={
            "pairs": [" ".join(p) for p in eval_pairs()],
            "per_caption": eval_per_caption,
            "sampler": "ddpm, 50 steps (the default of mmcourse.diffusion.sample)",
            "seed": eval_seed,
            "classifier": "attributes_shapes (16 x 16 samples upsampled to 32 x 32)",
            "seconds": round(time.perf_counter() - start, 1),
        },
        guidance={f"{w:g}": scores for w, scores in quality.items()},
        guidance_ddim_50={f"{w:g}": scores for w, scores in ddim.items()},
        real_images=real,
        sampling_seconds_per_image=sampling_time(model),
    )
    return model, metrics


def sampling_time(model: DiffusionModel, *, n: int = 16, steps: int = 50, sampler: str = "ddpm") -> dict[str, float]:
    """Seconds per image for a batch of ``n`` captions (``steps`` steps of ``sampler``), unguided and guided."""
    import time

    captions = [f"a {c} {s}" for c, s in eval_pairs()] * (n // len(eval_pairs()) + 1)
    out = {"threads": torch.get_num_threads(), "batch": n, "steps": steps, "sampler": sampler}
    for key, w in (("w=0", 0.0), ("w=3", 3.0)):
        start = time.perf_counter()
        sample(model, captions[:n], guidance_scale=w, steps=steps, seed=0, sampler=sampler)
        out[key] = round((time.perf_counter() - start) / n, 4)
    return out


def eval_pairs(heldout: bool = False) -> list[tuple[str, str]]:
    """The (colour, shape) pairs the quality numbers are measured on: every colour and every shape
    once, either the "diagonal" (red circle, orange square, ...; none is held out) or ``HELDOUT_COMBOS``."""
    from mmcourse.data.shapes import COLORS, HELDOUT_COMBOS, SHAPES

    return list(HELDOUT_COMBOS) if heldout else list(zip(COLORS, SHAPES))


def score_images(images: Tensor, pairs: Sequence[tuple[str, str]], classifier: nn.Module | None = None) -> dict[str, float]:
    """Fidelity and diversity of images (P, K, 3, S, S) that should show pair p in row p.

    * ``color``, ``shape``, ``both``: how often an independent classifier (the bundled
      ``attributes_shapes``, trained on real images only, never on samples) reads the requested
      colour, shape, or both in an image;
    * ``diversity``: the per-pixel standard deviation across the K images of a row (unbiased),
      averaged over pixels, channels and rows. Identical images score 0; it shrinks as guidance
      pushes every sample of a caption towards one prototype.

    The same function scores real images, which gives the reference values a model should approach.
    """
    from mmcourse import pretrained
    from mmcourse.data.shapes import COLORS, SHAPES

    if images.ndim != 5 or images.shape[0] != len(pairs) or images.shape[1] < 2:
        raise ValueError(f"need images (P={len(pairs)} pairs, K >= 2 per pair, 3, S, S), got {tuple(images.shape)}")
    p, k = images.shape[:2]
    classifier = pretrained.load("attributes_shapes") if classifier is None else classifier
    color_ids = torch.tensor([COLORS.index(c) for c, _ in pairs]).repeat_interleave(k)
    shape_ids = torch.tensor([SHAPES.index(s) for _, s in pairs]).repeat_interleave(k)
    flat = images.flatten(0, 1).cpu()
    if flat.shape[-1] != 32:  # the classifier was trained on 32 x 32 images
        flat = F.interpolate(flat, size=(32, 32), mode="bilinear", align_corners=False)
    with torch.no_grad():
        logits = classifier(flat)
    color_ok = logits[:, : len(COLORS)].argmax(1) == color_ids
    shape_ok = logits[:, len(COLORS) :].argmax(1) == shape_ids
    return {
        "color": round(color_ok.float().mean().item(), 4),
        "shape": round(shape_ok.float().mean().item(), 4),
        "both": round((color_ok & shape_ok).float().mean().item(), 4),
        "diversity": round(images.cpu().std(dim=1).mean().item(), 4),
    }


def evaluate_guidance(
    model: DiffusionModel,
    guidance_scales: Sequence[float] = (0.0, 1.5, 3.5, 6.5),
    *,
    per_caption: int = 4,
    steps: int = 50,
    seed: int = 0,
    heldout: bool = False,
    sampler: str = "ddpm",
) -> dict[float, dict[str, float]]:
    """``score_images`` of samples at each guidance weight w: ``per_caption`` samples of
    "a {colour} {shape}" for each of the eight ``eval_pairs(heldout)``, the same seed for every w."""
    if per_caption < 2:
        raise ValueError("diversity needs at least 2 samples per caption (per_caption >= 2)")
    from mmcourse import pretrained

    pairs = eval_pairs(heldout)
    captions = [f"a {c} {s}" for c, s in pairs for _ in range(per_caption)]
    classifier = pretrained.load("attributes_shapes")
    results = {}
    for w in guidance_scales:
        images = sample(model, captions, guidance_scale=w, steps=steps, seed=seed, sampler=sampler).cpu()
        results[float(w)] = score_images(images.view(len(pairs), per_caption, *images.shape[1:]), pairs, classifier)
    return results


def real_reference(
    *,
    per_caption: int = 16,
    seed: int = 0,
    style: str = "flat",
    size: int = 32,
    sizes: Sequence[str] | None = None,
    heldout: bool = False,
) -> dict[str, float]:
    """``score_images`` of real images: ``per_caption`` fresh single-object images of each eval pair,
    drawn as the training images were (style, image size, object sizes). What a perfect model's
    samples would score, the classifier's own errors included."""
    from mmcourse.data.shapes import make_shapes

    pairs = eval_pairs(heldout)
    split = "heldout" if heldout else "train"
    rows = []
    for i, pair in enumerate(pairs):
        data = make_shapes(8 * per_caption, seed=seed + i, style=style, split=split, size=size, combos=[pair])
        keep = [j for j, s in enumerate(data.sizes) if sizes is None or s in sizes][:per_caption]
        rows.append(data.images[keep])
    images = torch.stack(rows)
    return score_images(images, pairs)


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
