"""WaveNet (van den Oord et al., 2016): a stack of dilated causal convolutions that predicts the next
audio sample's mu-law code from the ones before it.

    codes (B, T) --embed--> x (B, C, T)
    for each layer with dilation d:                        # d = 1, 2, 4, ..., 128, then again
        h = dilated_causal_conv(x)  (+ the clip's label)   # (B, 2C, T): kernel k, taps t, t-d, .., t-(k-1)d
        z = tanh(h_filter) * sigmoid(h_gate)               # the gated activation unit
        x = x + residual_1x1(z);  skip += skip_1x1(z)      # residual and skip connections
    logits = out_1x1(relu(hidden_1x1(relu(skip))))         # (B, 256, T): p(code_{t+1} | codes_<=t)

The output at ``t`` sees the inputs ``t - R + 1 .. t`` with the receptive field
``R = (k - 1) * sum(dilations) + 1`` (no initial causal convolution here: the input is embedded sample
by sample). ``generate`` draws samples one at a time either naively (the whole network over the last
R codes for every sample) or with a queue of past inputs per layer (Paine et al., fast-wavenet): one
new column per layer per sample. Same random draws, same samples.
"""

from __future__ import annotations

import time
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor

SILENCE = 128  # the mu-law code of a zero sample (mu = 255): the context before a clip starts


class ResidualLayer(nn.Module):
    """One dilated causal convolution with the gated activation, a residual and a skip output."""

    def __init__(self, channels: int, skip_channels: int, kernel_size: int, dilation: int, num_labels: int) -> None:
        super().__init__()
        self.kernel_size, self.dilation = kernel_size, dilation
        self.dilated = nn.Conv1d(channels, 2 * channels, kernel_size, dilation=dilation)
        self.label = nn.Embedding(num_labels, 2 * channels) if num_labels else None
        self.residual = nn.Conv1d(channels, channels, 1)
        self.skip = nn.Conv1d(channels, skip_channels, 1)

    @property
    def history(self) -> int:
        """How many past inputs the layer reads: (k - 1) * d."""
        return (self.kernel_size - 1) * self.dilation

    def gate(self, h: Tensor, labels: Tensor | None) -> Tensor:
        if self.label is not None and labels is not None:
            h = h + self.label(labels)[:, :, None]  # global conditioning: a per-clip bias on every gate
        filt, gate = h.chunk(2, dim=1)
        return torch.tanh(filt) * torch.sigmoid(gate)  # (B, C, T)

    def causal_conv(self, x: Tensor) -> Tensor:
        """The dilated causal convolution (B, C, T) -> (B, 2C, T): output t mixes inputs t - (k-1)d, .., t - d, t.

        Written as the k shifted copies of x stacked on the channels and one 1x1 convolution: the same
        sum as ``self.dilated`` over the left-padded input, but PyTorch's CPU path for dilated
        convolutions is many times slower than a matrix product."""
        T, d = x.shape[2], self.dilation
        padded = F.pad(x, (self.history, 0))  # left padding only: causal, same length
        taps = torch.cat([padded[:, :, j * d : j * d + T] for j in range(self.kernel_size)], dim=1)  # (B, kC, T)
        return F.conv1d(taps, self._stacked_weight(), self.dilated.bias)

    def _stacked_weight(self) -> Tensor:
        w = self.dilated.weight  # (2C, C, k)
        return w.permute(0, 2, 1).reshape(w.shape[0], -1, 1)  # (2C, kC, 1), tap-major like the stacked input

    def forward(self, x: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z = self.gate(self.causal_conv(x), labels)
        return x + self.residual(z), self.skip(z)

    def gated(self, h: Tensor) -> Tensor:
        """tanh(filter) * sigmoid(gate) for one time step, h (B, 2C) -> (B, C)."""
        filt, gate = h.chunk(2, dim=1)
        return torch.tanh(filt) * torch.sigmoid(gate)

    def step_matrices(self, labels: Tensor | None, batch: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The layer as matrices for one time step: taps (kC, 2C) with its bias (B, 2C) (the label's bias
        included), and the residual and skip 1x1 convolutions side by side (C, C + S) with their bias."""
        w_taps = self._stacked_weight()[:, :, 0].T  # (kC, 2C)
        bias = self.dilated.bias.expand(batch, -1)
        if self.label is not None and labels is not None:
            bias = bias + self.label(labels)
        w_rs = torch.cat([self.residual.weight[:, :, 0], self.skip.weight[:, :, 0]]).T  # (C, C + S)
        return w_taps, bias.contiguous(), w_rs, torch.cat([self.residual.bias, self.skip.bias])

    def step(self, window: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One time step from ``window`` (B, C, history + 1): the layer's inputs at t - history .. t."""
        taps = window[:, :, :: self.dilation].transpose(1, 2).reshape(window.shape[0], -1, 1)  # (B, kC, 1), tap-major
        z = self.gate(F.conv1d(taps, self._stacked_weight(), self.dilated.bias), labels)
        return window[:, :, -1:] + self.residual(z), self.skip(z)


class WaveNet(nn.Module):
    """Next-sample prediction over ``num_classes`` mu-law codes, optionally conditioned on a clip label
    (``num_labels`` > 0: e.g. the audio world's kinds)."""

    def __init__(self, channels: int = 32, skip_channels: int = 64, kernel_size: int = 2,
                 dilations: Sequence[int] = (1, 2, 4, 8, 16, 32, 64, 128) * 2, num_classes: int = 256,
                 num_labels: int = 0, sample_rate: int = 8000) -> None:
        super().__init__()
        if kernel_size < 1 or not dilations or min(dilations) < 1:
            raise ValueError("WaveNet needs kernel_size >= 1 and positive dilations")
        self.embed = nn.Embedding(num_classes, channels)
        self.layers = nn.ModuleList(
            ResidualLayer(channels, skip_channels, kernel_size, d, num_labels) for d in dilations)
        self.hidden = nn.Conv1d(skip_channels, skip_channels, 1)
        self.out = nn.Conv1d(skip_channels, num_classes, 1)
        self.num_classes, self.num_labels, self.sample_rate = num_classes, num_labels, sample_rate
        self.config = {"channels": channels, "skip_channels": skip_channels, "kernel_size": kernel_size,
                       "dilations": list(dilations), "num_classes": num_classes, "num_labels": num_labels,
                       "sample_rate": sample_rate}

    @property
    def receptive_field(self) -> int:
        """R = (k - 1) * sum(dilations) + 1 samples: the output at t depends on inputs t - R + 1 .. t."""
        return sum(layer.history for layer in self.layers) + 1

    def _labels(self, labels: Tensor | None, batch: int) -> Tensor | None:
        if self.num_labels == 0:
            return None
        if labels is None:
            raise ValueError(f"this WaveNet is conditioned on {self.num_labels} labels: pass labels (B,)")
        labels = torch.as_tensor(labels, dtype=torch.long, device=self.embed.weight.device).reshape(-1)
        if labels.numel() != batch or (labels < 0).any() or (labels >= self.num_labels).any():
            raise ValueError(f"labels must be {batch} integers in [0, {self.num_labels})")
        return labels

    def head(self, skip: Tensor) -> Tensor:
        return self.out(F.relu(self.hidden(F.relu(skip))))

    def forward_embedded(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """Logits (B, num_classes, T) from embedded inputs x (B, C, T) (differentiable: used to probe
        the receptive field by gradients)."""
        labels = self._labels(labels, x.shape[0])
        skip = 0
        for layer in self.layers:
            x, s = layer(x, labels)
            skip = skip + s
        return self.head(skip)

    def forward(self, codes: Tensor, labels: Tensor | None = None) -> Tensor:
        """codes (B, T) long in [0, num_classes) -> logits (B, num_classes, T); position t predicts code t + 1."""
        if codes.ndim != 2 or codes.is_floating_point():
            raise ValueError(f"WaveNet takes integer codes (B, T), got {tuple(codes.shape)} {codes.dtype}")
        return self.forward_embedded(self.embed(codes).transpose(1, 2), labels)

    # --------------------------------------------------------------------------------- generation

    @torch.inference_mode()
    def generate(self, num_samples: int, *, batch: int = 1, labels: Tensor | None = None, seed: int = 0,
                 fast: bool = True, temperature: float = 1.0, prime: Tensor | None = None) -> Tensor:
        """Draw ``num_samples`` codes (batch, num_samples) one at a time after ``prime`` (batch, P) (default:
        ``receptive_field`` silent samples). Each code is ``argmax(logits / temperature + g)`` with Gumbel
        noise ``g`` from a generator seeded with ``seed`` (an exact draw from the softmax), so the fast and
        the naive path see the same noise and give the same samples."""
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        device, dtype = self.embed.weight.device, self.embed.weight.dtype
        labels = self._labels(labels, batch)
        R = self.receptive_field
        if prime is None:
            prime = torch.full((batch, R), SILENCE, dtype=torch.long, device=device)
        g = torch.Generator().manual_seed(seed)
        u = torch.rand(num_samples, batch, self.num_classes, generator=g, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
        gumbel = -torch.log(-torch.log(u)).to(device, dtype)  # (num_samples, B, K): drawn once, up front
        step = iter(range(num_samples))

        def draw(logits: Tensor) -> Tensor:  # (B, K) -> (B,): the Gumbel-max trick with this step's noise
            return (logits / temperature + gumbel[next(step)]).argmax(dim=1)

        out = torch.empty(batch, num_samples, dtype=torch.long, device=device)
        if not fast:
            codes = prime
            for t in range(num_samples):
                logits = self(codes[:, -R:], labels)[:, :, -1]  # the whole stack over the receptive field
                out[:, t] = draw(logits)
                codes = torch.cat([codes[:, -R:], out[:, t : t + 1]], dim=1)
            return out
        # the queues: per layer a ring buffer (history, B, C) of its last `history` inputs, oldest at ring_at[i]
        rings = [q.permute(2, 0, 1).contiguous() for q in self._fill_queues(prime, labels)]
        ring_at = [0] * len(self.layers)
        mats = [layer.step_matrices(labels, batch) for layer in self.layers]
        hidden_w, out_w = self.hidden.weight[:, :, 0].T, self.out.weight[:, :, 0].T
        current = prime[:, -1]
        for t in range(num_samples):
            x = self.embed.weight[current]  # (B, C): the newest input
            skip = None
            for i, (layer, (w_taps, b_taps, w_rs, b_rs)) in enumerate(zip(self.layers, mats)):
                h, k, d = layer.history, layer.kernel_size, layer.dilation
                taps = [rings[i][(ring_at[i] + h - (k - 1 - j) * d) % h] for j in range(k - 1)] + [x]  # t-(k-1)d .. t
                z = layer.gated(torch.addmm(b_taps, torch.cat(taps, dim=1), w_taps))  # (B, C)
                rs = torch.addmm(b_rs, z, w_rs)  # (B, C + S): the residual and skip 1x1 convolutions at once
                if h:
                    rings[i][ring_at[i]] = x  # the oldest input is no longer needed: x takes its place
                    ring_at[i] = (ring_at[i] + 1) % h
                x = x + rs[:, : x.shape[1]]
                skip = rs[:, x.shape[1] :] if skip is None else skip + rs[:, x.shape[1] :]
            logits = torch.addmm(self.out.bias, F.relu(torch.addmm(self.hidden.bias, F.relu(skip), hidden_w)), out_w)
            current = draw(logits)
            out[:, t] = current
        return out

    def _fill_queues(self, prime: Tensor, labels: Tensor | None) -> list[Tensor]:
        """Each layer's inputs at the last ``history`` positions before the prime's final code (the queue
        that ``generate`` pushes to), from one pass over the prime."""
        x = self.embed(prime[:, :-1]).transpose(1, 2)  # (B, C, P - 1)
        queues = []
        for layer in self.layers:
            past = F.pad(x, (layer.history, 0))[:, :, x.shape[2]:] if layer.history else x[:, :, :0]
            queues.append(past)  # (B, C, history): zeros where the prime is too short
            x, _ = layer(x, labels)
        return queues

    def speedup(self, num_samples: int, *, batch: int = 1, labels: Tensor | None = None) -> dict:
        """Seconds for naive and fast generation of ``num_samples`` codes, side by side, and their ratio."""
        times = {}
        for name, fast in (("naive", False), ("fast", True)):
            start = time.perf_counter()
            self.generate(num_samples, batch=batch, labels=labels, fast=fast)
            times[name] = time.perf_counter() - start
        return {**times, "ratio": times["naive"] / times["fast"]}


def nll_nats(model: WaveNet, codes: Tensor, labels: Tensor | None = None) -> float:
    """Mean negative log-likelihood (nats per sample) of each clip's codes (B, T) given the ones before it,
    each clip preceded by ``receptive_field`` silent samples (as ``generate`` starts). Chance is ln 256."""
    context = torch.full((codes.shape[0], model.receptive_field), SILENCE, dtype=torch.long, device=codes.device)
    full = torch.cat([context, codes], dim=1)
    with torch.no_grad():
        logits = model(full[:, :-1], labels)[:, :, context.shape[1] - 1:]
    return float(F.cross_entropy(logits, full[:, context.shape[1]:]))


