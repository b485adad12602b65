"""Checks for notebook 09 (audio: spectrograms, WaveNet, audio tokens).

* ``09.mel``: the mel filterbank librosa uses by default (Slaney scale, triangles, area normalisation),
  built from the mel scale alone: the notebook shows the scale and the torchaudio convention's shape,
  and the triangles only after the check;
* ``09.receptive_field``: the receptive field of a stack of dilated causal convolutions, in samples and
  in milliseconds, for any kernel sizes (the notebook shows WaveNet's stack with kernel 2 only);
* ``09.mu_law``: mu-law codes in [0, mu] with rounding to the nearest level, clipping and any mu.

The references are :mod:`mmcourse.audio` (whose tests compare it with librosa). A wrong answer gets the
case, expected against given, and what the typical mistake it matches does wrong.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from mmcourse import audio as A
from mmcourse.check.core import AnswerError, Case, Exercise, close, as_number, diagnosis, expect_tensor, register, remember

Tensor = torch.Tensor




def _named_mistake(given: Any, same: Any) -> None:
    """Raise naming the typical mistake (recorded by the reference) that ``given`` matches, if any."""
    for why, wrong in diagnosis(same)[0].items():
        if why.startswith("_"):
            continue
        try:
            value = wrong()
        except Exception:  # a mistake that cannot even be computed on this case matches nothing
            continue
        if isinstance(value, Tensor) and isinstance(given, Tensor) and value.shape == given.shape:
            if given.is_floating_point() or value.is_floating_point():
                scale = float(value.abs().max()) if value.numel() else 1.0
                if close(given, value, 1e-6 * max(scale, 1e-12), 1e-4):
                    raise AnswerError(why)
            elif torch.equal(given.long(), value.long()):
                raise AnswerError(why)
        elif isinstance(value, tuple) and isinstance(given, tuple) and len(value) == len(given):
            try:
                if all(abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(b))) for a, b in zip(given, value)):
                    raise AnswerError(why)
            except (TypeError, ValueError):
                continue


# --------------------------------------------------------------------------------------------- 09.mel


def mel_filterbank(sr: float, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> Tensor:
    """Reference for 09.mel: ``librosa.filters.mel``'s default, Slaney scale with Slaney area normalisation."""
    fb = A.mel_filterbank(sr, n_fft, n_mels, fmin=fmin, fmax=fmax, dtype=torch.float64)
    fmax_ = sr / 2 if fmax is None else fmax
    freqs = A.fft_frequencies(sr, n_fft)

    def triangles(edges: Tensor) -> Tensor:
        w = edges.diff()
        ramps = edges[:, None] - freqs[None]
        return torch.minimum(-ramps[:-2] / w[:-1, None], ramps[2:] / w[1:, None]).clamp(min=0)

    edges = A.mel_frequencies(n_mels + 2, fmin, fmax_)
    htk_edges = A.mel_frequencies(n_mels + 2, fmin, fmax_, htk=True)
    linear_edges = torch.linspace(fmin, fmax_, n_mels + 2, dtype=torch.float64)
    return remember(fb, {
        "it matches the triangles with peaks at 1: librosa's default also normalises each filter's area, "
        "multiplying it by 2 / (its right edge - its left edge) in Hz": lambda: triangles(edges),
        "it matches the HTK mel scale (2595 log10(1 + f / 700), torchaudio's); librosa's default is the Slaney "
        "scale, linear below 1 kHz and logarithmic above (A.hz_to_mel with htk=False)": lambda: triangles(htk_edges) * (
            2.0 / (htk_edges[2:] - htk_edges[:-2]))[:, None],
        "it matches the HTK scale without normalisation (torchaudio's MelSpectrogram): the exercise asks for "
        "librosa's default, the Slaney scale and area normalisation": lambda: triangles(htk_edges),
        "it matches edges spaced evenly in Hz: the edges are evenly spaced in mels (then converted to Hz)":
            lambda: triangles(linear_edges) * (2.0 / (linear_edges[2:] - linear_edges[:-2]))[:, None],
        "it matches n_mels edges instead of n_mels + 2: filter i spans edges i, i + 1, i + 2, so the n_mels "
        "filters need n_mels + 2 edges from fmin to fmax": lambda: _fewer_edges(freqs, n_mels, fmin, fmax_),
        "each filter is divided by its sum (its values add up to 1); Slaney normalisation divides by half the "
        "width in Hz instead, (right edge - left edge) / 2, so filters over more bins do not all weigh the same":
            lambda: triangles(edges) / triangles(edges).sum(1, keepdim=True).clamp(min=1e-12),
    })


def _fewer_edges(freqs: Tensor, n_mels: int, fmin: float, fmax: float) -> Tensor:
    edges = A.mel_frequencies(n_mels, fmin, fmax)
    edges = torch.cat([edges, edges[-1:] + 1, edges[-1:] + 2])  # padded so a (n_mels, F) result exists
    w = edges.diff()
    ramps = edges[:, None] - freqs[None]
    tri = torch.minimum(-ramps[:-2] / w[:-1, None], ramps[2:] / w[1:, None]).clamp(min=0)
    return tri * (2.0 / (edges[2:] - edges[:-2]))[:, None]


def _judge_mel(given: Any, expected: Tensor) -> None:
    given = expect_tensor(given, name="the filterbank", shape=tuple(expected.shape), dtype="float")
    scale = float(expected.abs().max())
    if close(given, expected, 1e-6 * scale, 1e-4):
        return
    _named_mistake(given, expected)
    err = (given.double() - expected).abs()
    m, f = divmod(int(err.argmax()), expected.shape[1])
    raise AnswerError(f"the filterbank has wrong values: filter {m}, FFT bin {f}: expected {expected[m, f].item():.6g}, "
                      f"got {given[m, f].item():.6g} (largest difference {err.max().item():.3g})")


def _mel_cases(g: torch.Generator) -> list[Case]:
    return [
        Case("sr = 8000, n_fft = 256, n_mels = 32 (the notebook's settings)", (8000, 256, 32)),
        Case("sr = 16000, n_fft = 512, n_mels = 40, fmin = 0, fmax = 8000", (16000, 512, 40, 0.0, 8000.0)),
        Case("sr = 22050, n_fft = 2048, n_mels = 128, fmin = 30, fmax = 8000 (edges above and below 1 kHz)",
             (22050, 2048, 128, 30.0, 8000.0)),
        Case("sr = 8000, n_fft = 512, n_mels = 10, fmin = 200, fmax = 3000", (8000, 512, 10, 200.0, 3000.0)),
        Case("sr = 44100, n_fft = 1024, n_mels = 64, fmin = 1000 (only the logarithmic part of the scale)",
             (44100, 1024, 64, 1000.0, None)),
    ]


register(
    Exercise(
        id="09.mel",
        title="a mel filterbank",
        cases=_mel_cases,
        reference=mel_filterbank,
        compare=_judge_mel,
        hint="fmax defaults to sr / 2. Take n_mels + 2 edges evenly spaced in mels: A.hz_to_mel(fmin) .. "
        "A.hz_to_mel(fmax) with torch.linspace, then back to Hz with A.mel_to_hz. The FFT bins sit at "
        "torch.linspace(0, sr / 2, n_fft // 2 + 1). Filter i rises from 0 at edge i to 1 at edge i + 1 and falls to 0 "
        "at edge i + 2: (f - left) / (centre - left) and (right - f) / (right - centre), the minimum of the two, "
        "clamped at 0. Then multiply filter i by 2 / (edge i + 2 - edge i).",
    )
)


# --------------------------------------------------------------------------------- 09.receptive_field


def receptive_field(kernel_sizes: Sequence[int], dilations: Sequence[int], sample_rate: float) -> tuple[int, float]:
    """Reference for 09.receptive_field: R = 1 + sum_l (k_l - 1) d_l samples, and R / sample_rate in ms."""
    ks, ds = [int(k) for k in kernel_sizes], [int(d) for d in dilations]
    r = 1 + sum((k - 1) * d for k, d in zip(ks, ds))
    ms = 1000.0 * r / sample_rate
    return remember((r, ms), {
        "it matches k * d summed over the layers: a kernel of k taps reaches k - 1 steps of d back, so each layer "
        "adds (k - 1) * d": lambda: (1 + sum(k * d for k, d in zip(ks, ds)), 1000.0 * (1 + sum(k * d for k, d in zip(ks, ds))) / sample_rate),
        "it matches the sum without the + 1: the current sample counts too (one layer of kernel 2 and dilation 1 "
        "sees 2 samples)": lambda: (r - 1, 1000.0 * (r - 1) / sample_rate),
        "it matches the product of the kernel spans: stacked layers add their reach, they do not multiply it":
            lambda: (math.prod((k - 1) * d + 1 for k, d in zip(ks, ds)), 1000.0 * math.prod((k - 1) * d + 1 for k, d in zip(ks, ds)) / sample_rate),
        "the samples are right but the time is in seconds: the exercise asks for milliseconds":
            lambda: (r, r / sample_rate),
        "it matches the widest single layer: every layer adds its own reach to the ones below it":
            lambda: (max((k - 1) * d + 1 for k, d in zip(ks, ds)), 1000.0 * max((k - 1) * d + 1 for k, d in zip(ks, ds)) / sample_rate),
    })


def _judge_rf(given: Any, expected: tuple[int, float]) -> None:
    if not isinstance(given, (tuple, list)) or len(given) != 2:
        raise AnswerError(f"return a pair (samples, milliseconds), got {type(given).__name__}"
                          + (f" of length {len(given)}" if isinstance(given, (tuple, list)) else ""))
    samples, ms = as_number(given[0], "the receptive field in samples"), as_number(given[1], "the receptive field in ms")
    if samples == expected[0] and abs(ms - expected[1]) <= 1e-6 * max(1.0, expected[1]):
        return
    _named_mistake((samples, ms), expected)
    if samples != expected[0]:
        raise AnswerError(f"the receptive field should be {expected[0]} samples, got {samples:g}")
    raise AnswerError(f"{expected[0]} samples is right; in milliseconds it should be {expected[1]:.6g}, got {ms:.6g}")


def _rf_cases(g: torch.Generator) -> list[Case]:
    paper = [2 ** i for i in range(10)]  # 1, 2, ..., 512
    return [
        Case("one layer, kernel 2, dilation 1, 16 kHz", ([2], [1], 16000)),
        Case("WaveNet's stack 1, 2, ..., 512 with kernel 2 at 16 kHz (the lecture's 1024 samples)",
             ([2] * 10, paper, 16000)),
        Case("the same stack at 44.1 kHz", ([2] * 10, paper, 44100)),
        Case("three stacks of 1, ..., 512, kernel 2, 16 kHz", ([2] * 30, paper * 3, 16000)),
        Case("kernel 3, dilations 1, 2, 4, 8, 8 kHz", ([3] * 4, [1, 2, 4, 8], 8000)),
        Case("mixed kernels (an initial causal convolution of kernel 4, then kernel 2 with dilations 1, 2, 4), 24 kHz",
             ([4, 2, 2, 2], [1, 1, 2, 4], 24000)),
    ]


register(
    Exercise(
        id="09.receptive_field",
        title="the receptive field of a dilated stack",
        cases=_rf_cases,
        reference=receptive_field,
        compare=_judge_rf,
        hint="a causal convolution with k taps and dilation d reads the samples t, t - d, ..., t - (k - 1) d: it "
        "reaches (k - 1) d samples further back than its input already did. Stacking adds the reaches: "
        "R = 1 + sum over layers of (k - 1) d (the 1 is the current sample). Milliseconds: 1000 R / sample_rate.",
    )
)


# ------------------------------------------------------------------------------------------ 09.mu_law


def mu_law_encode(x: Tensor, mu: int = 255) -> Tensor:
    """Reference for 09.mu_law: ``mmcourse.audio.mu_law_encode`` (compress, map [-1, 1] to [0, mu], round)."""
    codes = A.mu_law_encode(x, mu)
    xc = x.double().clamp(-1, 1)
    y = A.mu_law_compress(xc, mu)
    unclipped = A.mu_law_compress(x.double(), mu) if bool((x.abs() <= 1).all()) is False else None
    mistakes = {
        "it matches rounding down (floor): round to the nearest of the mu + 1 levels, (y + 1) / 2 * mu + 0.5 "
        "then floor": lambda: ((y + 1) / 2 * mu).floor().long(),
        "it matches rounding up, librosa.mu_compress's choice; the exercise (and torchaudio) rounds to the "
        "nearest level": lambda: ((y + 1) / 2 * mu).ceil().long(),
        "it matches signed codes in [-(mu + 1) / 2, (mu - 1) / 2] (librosa's range); the codes must lie in "
        "[0, mu] to index a softmax over mu + 1 classes": lambda: ((y + 1) / 2 * mu).ceil().long() - (mu + 1) // 2,
        "it matches the samples quantised without compression: apply sign(x) ln(1 + mu |x|) / ln(1 + mu) first":
            lambda: ((xc + 1) / 2 * mu + 0.5).floor().long(),
        "it matches compression of |x| without the sign: negative samples must give codes below the middle":
            lambda: ((torch.log1p(mu * xc.abs()) / math.log1p(mu) + 1) / 2 * mu + 0.5).floor().long(),
        "it matches mu + 1 steps across [-1, 1] ((y + 1) / 2 * (mu + 1)): the top level is mu, so y = 1 must give mu":
            lambda: ((y + 1) / 2 * (mu + 1) + 0.5).floor().long(),
    }
    if unclipped is not None:
        mistakes["samples outside [-1, 1] are not clipped first: they give codes outside [0, mu]"] = (
            lambda: ((unclipped + 1) / 2 * mu + 0.5).floor().long())
    return remember(codes, mistakes)


def _judge_mu(given: Any, expected: Tensor) -> None:
    given = expect_tensor(given, name="the codes", shape=tuple(expected.shape), dtype="integer")
    if torch.equal(given.long(), expected):
        return
    _named_mistake(given, expected)
    bad = given.long() != expected
    i = tuple(bad.nonzero()[0].tolist())
    raise AnswerError(f"the codes differ at index {i}: expected {expected[i].item()}, got {given[i].item()} "
                      f"({int(bad.sum())} of {expected.numel()} differ)")


def _mu_cases(g: torch.Generator) -> list[Case]:
    return [
        Case("x = -1, -0.5, 0, 0.5, 1 with mu = 255 (the ends and the middle)", (torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0]),)),
        Case("1000 samples evenly spread over [-1, 1], mu = 255", (torch.linspace(-1, 1, 1000),)),
        Case("quiet samples (|x| < 0.01), where mu-law spends most levels", ((torch.rand(300, generator=g) - 0.5) * 0.02,)),
        Case("a batch of clips (2, 400)", ((torch.rand(2, 400, generator=g) * 2 - 1) ** 3,)),
        Case("mu = 15 (16 levels)", (torch.linspace(-1, 1, 101), 15)),
        Case("samples beyond [-1, 1] (a clipped recording): clip them first", (torch.tensor([-1.7, -1.0, 0.3, 1.0, 2.5]),)),
    ]


register(
    Exercise(
        id="09.mu_law",
        title="mu-law codes with rounding",
        cases=_mu_cases,
        reference=mu_law_encode,
        compare=_judge_mu,
        hint="clip x to [-1, 1]; compress y = sign(x) ln(1 + mu |x|) / ln(1 + mu) (torch.log1p); map y from [-1, 1] to "
        "[0, mu] with (y + 1) / 2 * mu; round to the nearest integer by adding 0.5 and taking the floor; return "
        ".long().",
    )
)
