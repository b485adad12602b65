"""Stage 1 of DALL-E: turning an image into a grid of discrete tokens (notebook 07).

Two ways to pick a token per grid cell, as two small interchangeable quantisers:

* **dVAE** (DALL-E): the encoder gives logits over the K codes of every cell; training draws a
  *relaxed* one-hot sample with the Gumbel-softmax at temperature ``tau`` (annealed towards 1/16),
  and the evidence lower bound adds the KL of the encoder's distribution to a uniform prior,
  weighted by ``beta`` (ramped up). ``hard=True`` is the straight-through variant: a true one-hot
  forward, the relaxed sample's gradient backward.
* **VQ-VAE** (van den Oord et al.): the encoder gives a vector per cell and the token is the index of
  the **nearest code** in the codebook; the codebook and commitment losses (weight 0.25) train
  both sides, and the straight-through estimator copies the decoder's gradient to the encoder.
  Codes the encoder never picks get no gradient and stay dead; k-means initialisation and restarts
  (a dead code jumps onto an encoder output) are the usual remedies.

Both take tensors and return tensors; the networks around them live in ``mmcourse.models.dvae``.
``nearest_code`` is the lookup any vector quantiser needs (residual VQ for audio tokens reuses it).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor


def _check_tau(tau: float) -> float:
    tau = float(tau)
    if not math.isfinite(tau) or tau <= 0:
        raise ValueError(f"the Gumbel-softmax temperature must be a finite number > 0, got {tau} (at tau = 0 the "
                         "softmax divides by zero; use hard=True or argmax for a one-hot sample)")
    return tau


def gumbel_noise(shape: tuple[int, ...] | torch.Size, *, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None) -> Tensor:
    """Standard Gumbel noise ``-log(-log U)``, U uniform in (0, 1) kept away from 0 and 1 (no inf, no NaN)."""
    u = torch.rand(shape, generator=generator, device=device)
    tiny = torch.finfo(u.dtype).tiny
    u = u.clamp(tiny, 1 - torch.finfo(u.dtype).eps)
    return -torch.log(-torch.log(u))


def gumbel_softmax(logits: Tensor, tau: float = 1.0, *, hard: bool = False, dim: int = -1,
                   generator: torch.Generator | None = None) -> Tensor:
    """A relaxed one-hot sample of the categorical ``softmax(logits)`` along ``dim``:
    ``softmax((logits + g) / tau)`` with g standard Gumbel noise (same shape as ``logits``).

    As tau -> 0 the sample becomes the one-hot of ``argmax(logits + g)``, an exact draw from the
    categorical (the Gumbel-max trick); at tau = 1 it is smooth. ``hard=True``: the one-hot in the
    forward pass, the relaxed sample's gradient in the backward pass (straight-through). Same
    distribution as ``torch.nn.functional.gumbel_softmax`` (tested), but a ``generator`` may be given
    and tau <= 0 or non-finite logits raise instead of returning NaN.
    """
    tau = _check_tau(tau)
    if not torch.isfinite(logits).all():
        raise ValueError("logits contain NaN or inf")
    g = gumbel_noise(logits.shape, generator=generator, device=logits.device).to(logits.dtype)
    soft = F.softmax((logits + g) / tau, dim=dim)
    if not hard:
        return soft
    one_hot = torch.zeros_like(soft).scatter_(dim, soft.argmax(dim, keepdim=True), 1.0)
    return one_hot - soft.detach() + soft  # value: one-hot; gradient: the soft sample's


def kl_to_uniform(logits: Tensor, dim: int = 1) -> Tensor:
    """KL(q || uniform) = sum_k q_k log q_k + log K for q = softmax(logits) along ``dim``, averaged over
    every other position: the prior term of DALL-E's ELB (0 when q is uniform, log K when one-hot)."""
    log_q = F.log_softmax(logits, dim=dim)
    return ((log_q.exp() * log_q).sum(dim) + math.log(logits.shape[dim])).mean()


def temperature_at(step: int, total: int, *, start: float = 1.0, end: float = 1 / 16) -> float:
    """DALL-E's relaxation temperature: from ``start`` to ``end`` over ``total`` steps on a cosine
    curve in log space, then held at ``end``."""
    frac = min(max(step / max(total, 1), 0.0), 1.0)
    w = 0.5 * (1 - math.cos(math.pi * frac))
    return math.exp((1 - w) * math.log(start) + w * math.log(end))


def beta_at(step: int, warmup: int, beta: float) -> float:
    """The KL weight, ramped linearly from 0 to ``beta`` over ``warmup`` steps (DALL-E ramped it up too,
    so the codes first learn to reconstruct and only then are pushed towards the uniform prior)."""
    return beta * min(1.0, step / warmup) if warmup > 0 else beta


def nearest_code(x: Tensor, codebook: Tensor) -> Tensor:
    """The index of the nearest code (squared Euclidean distance) for every vector.

    x: (..., D); codebook: (K, D) -> (...) long. Ties go to the lower index. Written as
    ||x||^2 - 2 x.e + ||e||^2 so no (..., K, D) tensor is formed.
    """
    if x.shape[-1] != codebook.shape[-1] or codebook.ndim != 2:
        raise ValueError(f"vectors (..., D) and a codebook (K, D) must share D; got {tuple(x.shape)} and {tuple(codebook.shape)}")
    flat = x.reshape(-1, x.shape[-1])
    dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codebook.t() + codebook.pow(2).sum(1)[None]  # (M, K)
    return dist.argmin(1).view(x.shape[:-1])


def codebook_usage(codes: Tensor, num_codes: int) -> dict[str, float]:
    """How a set of codes (any shape, long) spreads over ``num_codes``: ``perplexity`` = exp(entropy)
    of the code histogram (K if every code is equally used, 1 if one code takes all), ``dead`` =
    codes never used, ``used`` = codes used at least once. Measure it over a whole evaluation set:
    one batch undercounts the codes in use."""
    if num_codes <= 0:
        raise ValueError(f"num_codes must be > 0, got {num_codes}")
    if codes.numel() and (codes.min() < 0 or codes.max() >= num_codes):
        raise ValueError(f"codes must lie in [0, {num_codes}), got values in [{int(codes.min())}, {int(codes.max())}]")
    counts = torch.bincount(codes.flatten().long(), minlength=num_codes).double()
    p = counts / counts.sum().clamp_min(1)
    entropy = -(p[p > 0] * p[p > 0].log()).sum().item()
    used = int((counts > 0).sum())
    return {"perplexity": round(math.exp(entropy), 3), "used": used, "dead": num_codes - used}


class GumbelQuantizer(nn.Module):
    """DALL-E's relaxation: logits (N, K, H, W) -> code vectors (N, D, H, W) as the relaxed one-hot
    sample times the codebook. ``tau`` and ``hard`` are set by the training loop."""

    def __init__(self, num_codes: int, code_dim: int):
        super().__init__()
        self.codebook = nn.Parameter(torch.randn(num_codes, code_dim))  # (K, D)
        self.tau = 1.0
        self.hard = False

    def forward(self, logits: Tensor, *, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """-> (z_q (N, D, H, W), codes (N, H, W) = argmax of the logits, KL(q || uniform))."""
        if self.training:
            soft = gumbel_softmax(logits, self.tau, hard=self.hard, dim=1, generator=generator)  # (N, K, H, W)
        else:
            soft = F.one_hot(logits.argmax(1), logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype)
        z_q = torch.einsum("nkhw,kd->ndhw", soft, self.codebook)
        return z_q, logits.argmax(1), kl_to_uniform(logits, dim=1)


class VectorQuantizer(nn.Module):
    """VQ-VAE's lookup: vectors (N, D, H, W) -> the nearest codes, with the codebook and commitment
    losses and the straight-through estimator; k-means initialisation on the first training batch and
    restarts of codes unused for ``restart_after`` training steps."""

    def __init__(self, num_codes: int, code_dim: int, *, commitment: float = 0.25, restart_after: int = 100,
                 kmeans_iters: int = 10):
        super().__init__()
        self.codebook = nn.Parameter(torch.randn(num_codes, code_dim))  # (K, D)
        self.commitment = commitment
        self.restart_after = restart_after
        self.kmeans_iters = kmeans_iters
        self.register_buffer("initialised", torch.tensor(False), persistent=False)
        self.register_buffer("idle", torch.zeros(num_codes, dtype=torch.long), persistent=False)
        self.restarts = 0

    @torch.no_grad()
    def _kmeans_init(self, flat: Tensor, generator: torch.Generator | None) -> None:
        k = self.codebook.shape[0]
        centres = flat[torch.randint(0, len(flat), (k,), generator=generator)].clone()
        for _ in range(self.kmeans_iters):
            assign = nearest_code(flat, centres)
            sums = torch.zeros_like(centres).index_add_(0, assign, flat)
            counts = torch.bincount(assign, minlength=k)
            moved = counts > 0
            centres[moved] = sums[moved] / counts[moved, None]
        self.codebook.data.copy_(centres)
        self.initialised.fill_(True)

    @torch.no_grad()
    def _restart_dead(self, flat: Tensor, codes: Tensor, generator: torch.Generator | None) -> None:
        used = torch.bincount(codes, minlength=self.codebook.shape[0]) > 0
        self.idle[used] = 0
        self.idle[~used] += 1
        dead = (self.idle >= self.restart_after).nonzero().flatten()
        if len(dead):
            picks = torch.randint(0, len(flat), (len(dead),), generator=generator)
            self.codebook.data[dead] = flat[picks]
            self.idle[dead] = 0
            self.restarts += len(dead)

    def forward(self, z: Tensor, *, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """-> (z_q (N, D, H, W) with straight-through gradients, codes (N, H, W), the VQ loss
        ||sg[z] - e||^2 + commitment * ||z - sg[e]||^2)."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])  # (N*H*W, D)
        if self.training and not bool(self.initialised):
            self._kmeans_init(flat.detach(), generator)
        codes = nearest_code(flat.detach(), self.codebook.detach())  # (N*H*W,)
        e = self.codebook[codes]
        loss = F.mse_loss(e, flat.detach()) + self.commitment * F.mse_loss(flat, e.detach())
        if self.training:
            self._restart_dead(flat.detach(), codes, generator)
        z_q = flat + (e - flat).detach()  # straight-through: the value of e, the gradient of z
        n, _, h, w = z.shape
        return z_q.view(n, h, w, -1).permute(0, 3, 1, 2), codes.view(n, h, w), loss
