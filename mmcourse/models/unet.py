"""A tiny conditional U-Net: the noise predictor eps(x_t, t, c) of notebook 08.

The network sees a noisy image ``x_t``, the step ``t`` and a condition vector ``c`` (a caption
embedding) and predicts the noise that was added. Its parts, in the order data flows:

* ``timestep_embedding``: t -> sinusoids (as the Transformer's positions), then an MLP;
* a condition MLP: c -> the same width, *added* to the time embedding, so one vector ``emb``
  carries "how noisy" and "what to draw";
* ``ResBlock``: two 3x3 convolutions; ``emb`` enters between them by FiLM (a per-channel scale and
  shift of the normalised features);
* an encoder that halves the resolution at each level, a middle block, and a decoder that doubles
  it again, each decoder block reading the encoder's features of the same size (the U's skips).

Why FiLM and not cross-attention: the condition here is one pooled vector per caption (N, C).
Cross-attention needs a *sequence* of text tokens to attend over; with a single key the softmax is
1 and attention reduces to a learned linear map of that vector, i.e. a worse FiLM. Stable Diffusion
uses cross-attention because it conditions on all 77 token embeddings of its text encoder.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal features (N, dim) of integer steps t (N,): cos and sin at geometric frequencies."""
    if dim % 2:
        raise ValueError(f"the timestep embedding needs an even dim, got {dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None, :]  # (N, half)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


class ResBlock(nn.Module):
    """x (N, c_in, H, W), emb (N, E) -> (N, c_out, H, W); emb modulates the features by FiLM."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int = 8) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * c_out)  # -> (scale, shift) per channel
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity: a deep U-Net trains stably
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(F.silu(emb))[:, :, None, None].chunk(2, dim=1)  # (N, c_out, 1, 1) each
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(F.silu(h))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the pixels of a feature map (N, C, H, W), as a residual block.

    Convolutions only see neighbours; at the lowest resolution one attention layer lets every
    position see every other, which keeps an object in one piece (a conv-only denoiser tends to
    draw fragments). At 8 x 8 or 4 x 4 pixels it costs almost nothing. Starts as the identity.
    """

    def __init__(self, channels: int, heads: int = 4, groups: int = 8) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.heads = heads

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, self.heads, c // self.heads, h * w).unbind(1)  # (N, heads, d, HW)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))  # (N, heads, HW, d)
        return x + self.proj(out.transpose(-1, -2).reshape(n, c, h, w))


class ConditionalUNet(nn.Module):
    """eps(x_t, t, c): images (N, 3, S, S), steps (N,) and conditions (N, cond_dim) -> noise (N, 3, S, S).

    ``channels`` gives the width of each level; every level after the first halves the resolution,
    so S must be divisible by 2 ** (len(channels) - 1). The default (16, 32, 64) runs a 32x32 image
    at 32, 16 and 8 pixels and keeps the full-resolution level narrow: on a CPU the cost of a
    convolution grows with pixels x channels^2, so width is cheapest where the image is smallest.
    ``cond_dim`` is the size of the caption embedding the model is trained on.
    """

    def __init__(
        self,
        cond_dim: int,
        channels: tuple[int, ...] = (16, 32, 64),
        emb_dim: int = 128,
        in_channels: int = 3,
        groups: int = 8,
        attention: bool = False,
    ) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if not channels or any(c % groups for c in channels):
            raise ValueError(f"channels must be a non-empty tuple of multiples of groups={groups}, got {channels}")
        self.config = {"cond_dim": cond_dim, "channels": list(channels), "emb_dim": emb_dim,
                       "in_channels": in_channels, "groups": groups, "attention": attention}
        self.cond_dim, self.emb_dim, self.channels = cond_dim, emb_dim, channels
        self.time_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.cond_mlp = nn.Sequential(nn.Linear(cond_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        self.conv_in = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.down = nn.ModuleList()  # one ResBlock per level
        self.downsample = nn.ModuleList()  # between levels: stride-2 convolution
        c_prev = channels[0]
        for i, c in enumerate(channels):
            self.down.append(ResBlock(c_prev, c, emb_dim, groups))
            if i < len(channels) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
            c_prev = c
        self.mid = ResBlock(c_prev, c_prev, emb_dim, groups)
        self.mid_attention = SelfAttention(c_prev, groups=groups) if attention else None
        self.up = nn.ModuleList()  # reads [decoder features, encoder skip] of the same level
        self.upsample = nn.ModuleList()  # between levels: nearest-neighbour x2, then a convolution
        for i in reversed(range(len(channels))):
            self.up.append(ResBlock(c_prev + channels[i], channels[i], emb_dim, groups))
            if i > 0:
                self.upsample.append(nn.Conv2d(channels[i], channels[i - 1], 3, padding=1))
            c_prev = channels[i] if i == 0 else channels[i - 1]
        self.norm_out = nn.GroupNorm(groups, channels[0])
        self.conv_out = nn.Conv2d(channels[0], in_channels, 3, padding=1)

    def embed(self, t: Tensor, cond: Tensor) -> Tensor:
        """(N, emb_dim): time embedding + condition embedding."""
        return self.time_mlp(timestep_embedding(t, self.emb_dim)) + self.cond_mlp(cond)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        n, _, height, width = x.shape
        levels = len(self.channels)
        if height % 2 ** (levels - 1) or width % 2 ** (levels - 1):
            raise ValueError(f"image size {height}x{width} must be divisible by {2 ** (levels - 1)} ({levels} levels)")
        if t.shape != (n,) or cond.shape != (n, self.cond_dim):
            raise ValueError(
                f"expected t of shape ({n},) and cond of shape ({n}, {self.cond_dim}) for {n} images; "
                f"got t {tuple(t.shape)} and cond {tuple(cond.shape)}"
            )
        emb = self.embed(t, cond)  # (N, E)
        h = self.conv_in(x)  # (N, c0, S, S)
        skips = []
        for i, block in enumerate(self.down):
            h = block(h, emb)
            skips.append(h)
            if i < levels - 1:
                h = self.downsample[i](h)  # (N, c_i, S/2^(i+1), ...)
        h = self.mid(h, emb)
        if self.mid_attention is not None:
            h = self.mid_attention(h)  # every position sees every other at the lowest resolution
        for j, block in enumerate(self.up):
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
            if j < levels - 1:
                h = self.upsample[j](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))  # (N, 3, S, S)
