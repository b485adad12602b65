"""Typical mistakes for the exercises of notebook 09: each must be rejected with a message naming the problem.

``MISTAKES[exercise id][what the student did] = (function, words the failure message must contain)``;
tests/test_exercises.py runs them all.
"""

import math

import torch

from mmcourse import audio as A


def _triangles(sr, n_fft, n_mels, fmin=0.0, fmax=None, *, htk=False, norm=True, spacing="mel", edges_count=None):
    fmax = sr / 2 if fmax is None else fmax
    count = n_mels + 2 if edges_count is None else edges_count
    if spacing == "mel":
        edges = A.mel_to_hz(torch.linspace(A.hz_to_mel(fmin, htk=htk).item(), A.hz_to_mel(fmax, htk=htk).item(), count,
                                           dtype=torch.float64), htk=htk)
    else:
        edges = torch.linspace(fmin, fmax, count, dtype=torch.float64)
    freqs = torch.linspace(0, sr / 2, n_fft // 2 + 1, dtype=torch.float64)
    rows = []
    for i in range(n_mels):
        left, centre, right = edges[i], edges[i + 1], edges[i + 2]
        tri = torch.minimum((freqs - left) / (centre - left), (right - freqs) / (right - centre)).clamp(min=0)
        rows.append(tri * (2 / (right - left)) if norm else tri)
    return torch.stack(rows).float()


def _rf(kernels, dilations, sr, *, plus_one=True, k_not_k_minus_1=False, seconds=False):
    r = sum((k if k_not_k_minus_1 else k - 1) * d for k, d in zip(kernels, dilations)) + (1 if plus_one else 0)
    return r, (r / sr if seconds else 1000 * r / sr)


def _mu(x, mu=255, *, rounding="nearest", signed=False, clip=True, compress=True):
    x = x.clamp(-1, 1) if clip else x
    y = torch.sign(x) * torch.log1p(mu * x.abs()) / math.log1p(mu) if compress else x
    level = (y + 1) / 2 * mu
    codes = {"nearest": (level + 0.5).floor(), "floor": level.floor(), "ceil": level.ceil()}[rounding].long()
    return codes - (mu + 1) // 2 if signed else codes


MISTAKES = {
    "09.mel": {
        "no area normalisation": (lambda sr, n, m, fmin=0.0, fmax=None: _triangles(sr, n, m, fmin, fmax, norm=False),
                                  "area"),
        "HTK scale": (lambda sr, n, m, fmin=0.0, fmax=None: _triangles(sr, n, m, fmin, fmax, htk=True), "HTK"),
        "torchaudio's convention": (
            lambda sr, n, m, fmin=0.0, fmax=None: _triangles(sr, n, m, fmin, fmax, htk=True, norm=False), "torchaudio"),
        "edges evenly spaced in Hz": (
            lambda sr, n, m, fmin=0.0, fmax=None: _triangles(sr, n, m, fmin, fmax, spacing="hz"), "evenly spaced in mels"),
        "transposed result": (lambda sr, n, m, fmin=0.0, fmax=None: _triangles(sr, n, m, fmin, fmax).T, "shape"),
    },
    "09.receptive_field": {
        "k times d": (lambda k, d, sr: _rf(k, d, sr, k_not_k_minus_1=True), "(k - 1) * d"),
        "forgot the current sample": (lambda k, d, sr: _rf(k, d, sr, plus_one=False), "the current sample"),
        "seconds instead of ms": (lambda k, d, sr: _rf(k, d, sr, seconds=True), "milliseconds"),
        "a number, not a pair": (lambda k, d, sr: _rf(k, d, sr)[0], "pair"),
    },
    "09.mu_law": {
        "floor": (lambda x, mu=255: _mu(x, mu, rounding="floor"), "rounding down"),
        "librosa's ceiling": (lambda x, mu=255: _mu(x, mu, rounding="ceil"), "rounding up"),
        "signed codes": (lambda x, mu=255: _mu(x, mu, rounding="ceil", signed=True), "[0, mu]"),
        "no compression": (lambda x, mu=255: _mu(x, mu, compress=False), "without compression"),
        "no clipping": (lambda x, mu=255: _mu(x, mu, clip=False), "clipped"),
        "float codes": (lambda x, mu=255: _mu(x, mu).float(), "integer"),
    },
}
