"""Audio as a model sees it: frames and their spectra, the mel scale, phase, and mu-law codes.

The functions follow librosa's definitions (its tests are our oracles, tests/test_audio.py) and make
the choices a library hides visible as arguments:

* ``stft`` pads both ends with **zeros** by default (``pad_mode="constant"``, librosa since 0.9);
  ``torch.stft(center=True)`` pads by **reflection**, so the first and last frames differ;
* the window is a periodic Hann window of ``n_fft`` samples; ``torch.stft`` called without a window
  uses a **rectangular** one (every sample weighted 1), whose spectrum leaks far more;
* ``mel_filterbank`` defaults to librosa's convention, the **Slaney** mel scale (linear below 1 kHz,
  logarithmic above) with **Slaney area normalisation** (each triangle scaled by 2 / its width in Hz, so
  all have area 1); torchaudio's ``MelSpectrogram`` uses the **HTK** scale (2595 log10(1 + f / 700))
  with **no** normalisation (peaks at 1): ``htk=True, norm=None`` here;
* ``mu_law_encode`` returns codes in [0, mu] (torchaudio's convention, rounding to the nearest
  level); ``librosa.mu_compress(quantize=True)`` returns [-(mu + 1) / 2, (mu - 1) / 2] = [-128, 127]
  and takes the level above (the ceiling), so the two disagree by one level on about half the inputs.

Waveforms are ``(T,)`` or ``(B, T)`` float tensors; spectrograms ``(..., F, frames)`` with
``F = n_fft // 2 + 1`` frequency bins.
"""

from __future__ import annotations

import math

import torch

Tensor = torch.Tensor

# ------------------------------------------------------------------------------------- input checks


def check_waveform(x: Tensor, *, name: str = "audio", min_length: int = 1) -> Tensor:
    """``x`` as a floating-point ``(T,)`` or ``(B, T)`` tensor with at least ``min_length`` finite samples;
    a clear ``ValueError`` otherwise (empty, NaN or inf, too short for one frame)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of samples, got {type(x).__name__}")
    if x.ndim not in (1, 2):
        raise ValueError(f"{name} must be (T,) or (batch, T), got shape {tuple(x.shape)}")
    if x.shape[-1] == 0:
        raise ValueError(f"{name} is empty (0 samples)")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be floating point (samples in [-1, 1]), got {x.dtype}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf samples ({int((~torch.isfinite(x)).sum())} of {x.numel()})")
    if x.shape[-1] < min_length:
        raise ValueError(f"{name} has {x.shape[-1]} samples, shorter than one frame of {min_length}: "
                         f"use a smaller n_fft or a longer clip")
    return x


def _check_rate(sr: float) -> None:
    if not isinstance(sr, (int, float)) or isinstance(sr, bool) or not math.isfinite(sr) or sr <= 0:
        raise ValueError(f"the sample rate must be a positive number of samples per second, got {sr!r}")


def _check_fft(n_fft: int, hop_length: int) -> None:
    if not isinstance(n_fft, int) or n_fft < 2:
        raise ValueError(f"n_fft must be an integer >= 2, got {n_fft!r}")
    if not isinstance(hop_length, int) or hop_length < 1:
        raise ValueError(f"hop_length must be a positive integer, got {hop_length!r}")


# ------------------------------------------------------------------------------------------- frames


def frame_count(num_samples: int, n_fft: int, hop_length: int, *, center: bool = True) -> int:
    """How many frames ``stft`` makes of ``num_samples`` samples: 1 + (T + 2 (n_fft // 2) - n_fft) // hop
    with centring, 1 + (T - n_fft) // hop without."""
    padded = num_samples + 2 * (n_fft // 2) if center else num_samples
    return 1 + (padded - n_fft) // hop_length


def hann_window(n: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """The periodic Hann window 0.5 - 0.5 cos(2 pi k / n), k = 0..n-1 (scipy's ``get_window('hann', n)``)."""
    return torch.hann_window(n, periodic=True, dtype=dtype)


def stft(x: Tensor, n_fft: int, hop_length: int | None = None, *, window: Tensor | str | None = "hann",
         center: bool = True, pad_mode: str = "constant") -> Tensor:
    """Complex short-time Fourier transform ``(..., n_fft // 2 + 1, frames)``, librosa's ``stft``.

    Frame ``m`` holds samples ``m * hop .. m * hop + n_fft - 1`` of the signal padded by ``n_fft // 2`` on
    both sides (``center=True``) with zeros (``pad_mode="constant"``, librosa's default) or a mirror
    image (``"reflect"``, ``torch.stft``'s default). ``window``: ``"hann"`` (periodic, ``n_fft`` long),
    a tensor of ``n_fft`` weights, or ``None`` for the rectangular window ``torch.stft`` uses when given none.
    """
    hop_length = n_fft // 4 if hop_length is None else hop_length
    _check_fft(n_fft, hop_length)
    check_waveform(x, min_length=1 if center else n_fft)
    if window is None:
        win = torch.ones(n_fft, dtype=x.dtype, device=x.device)
    elif isinstance(window, str):
        if window != "hann":
            raise ValueError(f"window must be 'hann', a tensor or None, got {window!r}")
        win = hann_window(n_fft, x.dtype).to(x.device)
    else:
        win = window.to(x.device, x.dtype)
        if win.shape != (n_fft,):
            raise ValueError(f"a window tensor must have n_fft = {n_fft} weights, got shape {tuple(win.shape)}")
    if center:
        if pad_mode not in ("constant", "reflect"):
            raise ValueError(f"pad_mode must be 'constant' (zeros, librosa) or 'reflect' (torch.stft), got {pad_mode!r}")
        if pad_mode == "reflect" and x.shape[-1] <= n_fft // 2:
            raise ValueError(f"reflect padding needs more than n_fft // 2 = {n_fft // 2} samples, got {x.shape[-1]}")
        batched = x if x.ndim == 2 else x[None]
        batched = torch.nn.functional.pad(batched[:, None], (n_fft // 2, n_fft // 2), mode=pad_mode)[:, 0]
        x = batched if x.ndim == 2 else batched[0]
    return torch.stft(x, n_fft, hop_length, window=win, center=False, return_complex=True)


def istft(spec: Tensor, n_fft: int, hop_length: int | None = None, *, length: int | None = None) -> Tensor:
    """The inverse of ``stft`` (Hann window, centred): overlap-add of the frames' inverse FFTs divided by
    the summed squared window, librosa's ``istft``. ``spec`` (..., n_fft // 2 + 1, frames) complex."""
    hop_length = n_fft // 4 if hop_length is None else hop_length
    _check_fft(n_fft, hop_length)
    win = hann_window(n_fft, spec.real.dtype).to(spec.device)
    return torch.istft(spec, n_fft, hop_length, window=win, center=True, length=length)


def spectrogram(x: Tensor, n_fft: int, hop_length: int | None = None, *, power: float = 1.0, **stft_kwargs) -> Tensor:
    """|STFT|^power ``(..., n_fft // 2 + 1, frames)``: magnitude (power 1) or power (2). Phase is dropped here."""
    return stft(x, n_fft, hop_length, **stft_kwargs).abs() ** power


# ------------------------------------------------------------------------------------------ mel scale

_F_SP = 200.0 / 3  # Slaney: 3 mels per 200 Hz below 1 kHz
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP  # 15
_LOGSTEP = math.log(6.4) / 27.0  # Slaney: 27 mels per factor 6.4 in frequency above 1 kHz


def hz_to_mel(f: Tensor | float, *, htk: bool = False) -> Tensor:
    """Hertz to mels. HTK: 2595 log10(1 + f / 700). Slaney (librosa's default): f / (200 / 3) below
    1 kHz, 15 + ln(f / 1000) / (ln 6.4 / 27) above."""
    f = torch.as_tensor(f, dtype=torch.float64)
    if htk:
        return 2595.0 * torch.log10(1.0 + f / 700.0)
    linear = f / _F_SP
    log = _MIN_LOG_MEL + torch.log(f.clamp(min=_MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return torch.where(f >= _MIN_LOG_HZ, log, linear)


def mel_to_hz(m: Tensor | float, *, htk: bool = False) -> Tensor:
    """Mels to hertz, the inverse of ``hz_to_mel`` in the same convention."""
    m = torch.as_tensor(m, dtype=torch.float64)
    if htk:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    linear = _F_SP * m
    log = _MIN_LOG_HZ * torch.exp(_LOGSTEP * (m - _MIN_LOG_MEL))
    return torch.where(m >= _MIN_LOG_MEL, log, linear)


def fft_frequencies(sr: float, n_fft: int) -> Tensor:
    """The centre frequency of each STFT bin, 0 .. sr / 2 in ``n_fft // 2 + 1`` steps (float64)."""
    return torch.linspace(0, sr / 2, n_fft // 2 + 1, dtype=torch.float64)


def mel_frequencies(n: int, fmin: float, fmax: float, *, htk: bool = False) -> Tensor:
    """``n`` frequencies (Hz, float64) equally spaced on the mel scale from ``fmin`` to ``fmax``."""
    return mel_to_hz(torch.linspace(hz_to_mel(fmin, htk=htk).item(), hz_to_mel(fmax, htk=htk).item(), n,
                                    dtype=torch.float64), htk=htk)


def mel_filterbank(sr: float, n_fft: int, n_mels: int, *, fmin: float = 0.0, fmax: float | None = None,
                   htk: bool = False, norm: str | None = "slaney", dtype: torch.dtype = torch.float32) -> Tensor:
    """Triangular mel filters ``(n_mels, n_fft // 2 + 1)``, equal to ``librosa.filters.mel`` with the same
    arguments.

    Filter ``i`` rises linearly from edge ``i`` to edge ``i + 1`` and falls to edge ``i + 2``, the
    ``n_mels + 2`` edges equally spaced in mels between ``fmin`` and ``fmax`` (default ``sr / 2``).
    ``norm="slaney"`` scales each triangle by 2 / (its width in Hz), so every filter has the same area and
    a wide high filter does not collect more energy than a narrow low one; ``norm=None`` leaves peaks at 1.

    A filter whose triangle falls between two FFT bins is all zeros: with too many mels for ``n_fft``
    this function raises (librosa only warns, "Empty filters detected").
    """
    _check_rate(sr)
    if not isinstance(n_fft, int) or n_fft < 2:
        raise ValueError(f"n_fft must be an integer >= 2, got {n_fft!r}")
    if not isinstance(n_mels, int) or n_mels < 1:
        raise ValueError(f"n_mels must be a positive integer, got {n_mels!r}")
    fmax = sr / 2 if fmax is None else fmax
    if not 0 <= fmin < fmax:
        raise ValueError(f"need 0 <= fmin < fmax, got fmin={fmin}, fmax={fmax}")
    if norm not in ("slaney", None):
        raise ValueError(f"norm must be 'slaney' (librosa's default) or None (torchaudio's), got {norm!r}")
    freqs = fft_frequencies(sr, n_fft)  # (F,)
    edges = mel_frequencies(n_mels + 2, fmin, fmax, htk=htk)  # (n_mels + 2,)
    widths = edges.diff()  # (n_mels + 1,)
    ramps = edges[:, None] - freqs[None, :]  # (n_mels + 2, F): how far each edge lies above each bin
    rising = -ramps[:-2] / widths[:-1, None]  # 0 at the left edge, 1 at the centre
    falling = ramps[2:] / widths[1:, None]  # 1 at the centre, 0 at the right edge
    weights = torch.minimum(rising, falling).clamp(min=0).to(dtype)  # (n_mels, F)
    if norm == "slaney":
        weights = weights * (2.0 / (edges[2:] - edges[:-2])).to(dtype)[:, None]
    empty = (weights.amax(dim=1) <= 0) & (edges[:-2] != 0)
    if empty.any():
        first = int(empty.nonzero()[0])
        raise ValueError(
            f"{int(empty.sum())} of the {n_mels} mel filters are empty (the first is filter {first}): with n_fft = "
            f"{n_fft} the FFT bins are {sr / n_fft:.1f} Hz apart, wider than those triangles, so they catch no bin. "
            f"Use fewer mels or a larger n_fft (librosa only warns 'Empty filters detected')."
        )
    return weights


def mel_spectrogram(x: Tensor, sr: float, n_fft: int, hop_length: int | None = None, n_mels: int = 32, *,
                    power: float = 2.0, htk: bool = False, norm: str | None = "slaney", fmin: float = 0.0,
                    fmax: float | None = None, pad_mode: str = "constant") -> Tensor:
    """The mel spectrogram ``(..., n_mels, frames)``: mel filters times |STFT|^power (librosa's
    ``feature.melspectrogram``; power 2 by default)."""
    _check_rate(sr)
    spec = spectrogram(x, n_fft, hop_length, power=power, pad_mode=pad_mode)
    fb = mel_filterbank(sr, n_fft, n_mels, fmin=fmin, fmax=fmax, htk=htk, norm=norm, dtype=spec.dtype).to(spec.device)
    return fb @ spec


def power_to_db(power: Tensor, *, amin: float = 1e-10, top_db: float | None = 80.0) -> Tensor:
    """10 log10(max(power, amin)), floored at ``top_db`` below the loudest value (per clip for a batch):
    librosa's ``power_to_db`` with ``ref=1``."""
    db = 10.0 * torch.log10(power.clamp(min=amin))
    if top_db is not None:
        peak = db.amax(dim=(-2, -1), keepdim=True) if db.ndim >= 2 else db.max()
        db = torch.maximum(db, peak - top_db)
    return db


def log_mel(x: Tensor, sr: float, n_fft: int = 256, hop_length: int = 64, n_mels: int = 32, **kwargs) -> Tensor:
    """The log-mel spectrogram in dB ``(..., n_mels, frames)``: what the course's audio models read as an image."""
    return power_to_db(mel_spectrogram(x, sr, n_fft, hop_length, n_mels, **kwargs))


# ------------------------------------------------------------------------------------------- phase


def spectral_convergence(magnitude: Tensor, waveform: Tensor, n_fft: int, hop_length: int | None = None) -> float:
    """|| S - |STFT(waveform)| ||_F / || S ||_F: how far a waveform's magnitudes are from the target ``S``."""
    rebuilt = spectrogram(waveform, n_fft, hop_length)
    frames = min(rebuilt.shape[-1], magnitude.shape[-1])
    diff = magnitude[..., :frames] - rebuilt[..., :frames]
    return float(torch.linalg.vector_norm(diff) / torch.linalg.vector_norm(magnitude).clamp(min=1e-12))


def griffin_lim(magnitude: Tensor, n_fft: int, hop_length: int | None = None, *, n_iter: int = 32,
                momentum: float = 0.99, length: int | None = None, init: str | None = "random", seed: int = 0,
                history: list | None = None) -> Tensor:
    """A waveform whose STFT magnitude approaches ``magnitude`` ``(..., n_fft // 2 + 1, frames)``: the fast
    Griffin-Lim algorithm (Perraudin et al. 2013), librosa's ``griffinlim``.

    Start from random phases (``init="random"``) or zero phases (``init=None``); then ``n_iter`` times:
    put the target magnitudes under the current phases, go to a waveform (``istft``) and back (``stft``),
    keep the new phases, pushed on by ``momentum`` times the previous step. ``history``: a list that
    receives the spectral convergence after every iteration.
    """
    hop_length = n_fft // 4 if hop_length is None else hop_length
    if not torch.isfinite(magnitude).all() or (magnitude < 0).any():
        raise ValueError("magnitude must be finite and non-negative (|STFT|, not dB)")
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1) (librosa warns above 1), got {momentum}")
    if init == "random":
        g = torch.Generator().manual_seed(seed)
        phase = torch.rand(magnitude.shape, generator=g, dtype=torch.float64).to(magnitude.dtype)
        angles = torch.polar(torch.ones_like(magnitude), 2 * math.pi * phase.to(magnitude.device))
    elif init is None:
        angles = torch.ones_like(magnitude, dtype=torch.complex128 if magnitude.dtype == torch.float64 else torch.complex64)
    else:
        raise ValueError(f"init must be 'random' or None, got {init!r}")
    eps = torch.finfo(magnitude.dtype).tiny
    angles = angles * magnitude
    previous = None
    for _ in range(n_iter):
        inverse = istft(angles, n_fft, hop_length, length=length)
        rebuilt = stft(inverse, n_fft, hop_length)
        angles = rebuilt if previous is None else rebuilt - (momentum / (1 + momentum)) * previous
        angles = angles / (angles.abs() + eps) * magnitude
        previous = rebuilt
        if history is not None:
            history.append(float(torch.linalg.vector_norm(magnitude - rebuilt.abs())
                                 / torch.linalg.vector_norm(magnitude).clamp(min=1e-12)))
    return istft(angles, n_fft, hop_length, length=length)


def mel_to_linear(mel: Tensor, fb: Tensor) -> Tensor:
    """An STFT power spectrogram ``(..., F, frames)`` whose mel spectrogram is close to ``mel`` ``(..., n_mels,
    frames)``: the non-negative least-squares inverse of the filterbank ``fb`` (n_mels, F), by projected
    gradient steps (librosa's ``mel_to_stft`` solves the same problem). Many bins share a filter, so detail
    within a filter is lost: a mel spectrogram cannot be inverted exactly, even before phase."""
    pinv = torch.linalg.pinv(fb.double()).to(mel.dtype)  # (F, n_mels)
    spec = (pinv @ mel).clamp(min=0)
    step = 1.0 / float(torch.linalg.matrix_norm(fb.double(), ord=2) ** 2)
    for _ in range(50):
        spec = (spec - step * (fb.T @ (fb @ spec - mel))).clamp(min=0)
    return spec


# ------------------------------------------------------------------------------------------ mu-law


def mu_law_compress(x: Tensor, mu: int = 255) -> Tensor:
    """sign(x) ln(1 + mu |x|) / ln(1 + mu): [-1, 1] -> [-1, 1], fine steps for quiet samples, coarse for loud."""
    return torch.sign(x) * torch.log1p(mu * x.abs()) / math.log1p(mu)


def mu_law_expand(y: Tensor, mu: int = 255) -> Tensor:
    """The inverse of ``mu_law_compress``: sign(y) ((1 + mu)^|y| - 1) / mu."""
    return torch.sign(y) * torch.expm1(y.abs() * math.log1p(mu)) / mu


def _check_mu(mu: int) -> None:
    if not isinstance(mu, int) or isinstance(mu, bool) or mu < 1:
        raise ValueError(f"mu must be a positive integer (255 gives 256 levels), got {mu!r}")


def mu_law_encode(x: Tensor, mu: int = 255) -> Tensor:
    """Samples in [-1, 1] -> long codes in [0, mu] (``mu + 1`` classes, WaveNet's softmax targets):
    compress, map [-1, 1] onto [0, mu] and round to the nearest level (torchaudio's ``mu_law_encoding``).
    Samples outside [-1, 1] are clipped first."""
    _check_mu(mu)
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"mu_law_encode takes a floating-point tensor of samples, got {type(x).__name__}")
    if not torch.isfinite(x).all():
        raise ValueError("mu_law_encode: the audio contains NaN or inf samples")
    y = mu_law_compress(x.clamp(-1, 1), mu)
    return ((y + 1) / 2 * mu + 0.5).floor().long().clamp(0, mu)


def mu_law_decode(codes: Tensor, mu: int = 255) -> Tensor:
    """Codes in [0, mu] -> samples in [-1, 1]: each code's level (2 c / mu - 1), expanded."""
    _check_mu(mu)
    if codes.is_floating_point() or (codes < 0).any() or (codes > mu).any():
        raise ValueError(f"mu_law_decode takes integer codes in [0, {mu}]")
    return mu_law_expand(codes.double() * 2 / mu - 1, mu).float()
