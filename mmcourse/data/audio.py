"""The audio world: short captioned sounds, synthesised on the fly (no file is ever downloaded).

Nine kinds of sound, each a few lines of signal processing, each with a caption drawn from varied
templates ("a rising chirp", "a C major chord", "two drum hits"):

* ``tone``: one sine wave with a soft attack and decay;
* ``major chord`` / ``minor chord``: three sines a major third (4 semitones) or a minor third (3) and a
  fifth (7) above a named root;
* ``rising chirp`` / ``falling chirp``: a sine whose frequency sweeps exponentially up or down;
* ``noise burst``: white noise under an envelope (no pitch at all);
* ``drum hit``: one to three percussive hits, a low sine whose pitch drops fast plus a click of noise;
* ``melody``: four notes of a major scale, going up or down;
* ``vowel``: a buzz at a voice's pitch shaped by the two formants of "ah", "ee" or "oo".

Each clip has a register (``low``, ``mid``, ``high``: the pitch range it is drawn from). Like the
shapes world, the ``train`` split never holds the pairs of ``HELDOUT_COMBOS`` (a kind in one register),
``heldout`` holds only those, ``all`` both. Everything is decided by a ``torch.Generator`` seeded from
``seed`` and ``split``: the same arguments give identical waveforms on any machine. A clip of half a
second at 8 kHz takes one to three milliseconds (512 clips: about a second on one core).

>>> clips = make_audio(4, seed=0)
>>> clips.waveforms.shape
torch.Size([4, 4000])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import torch

from mmcourse.data.tokenizer import Tokenizer, default_tokenizer

Tensor = torch.Tensor

SAMPLE_RATE = 8000  # Hz: enough for voices and tones up to 4 kHz (Nyquist), cheap for a laptop
DURATION = 0.5  # seconds per clip
KINDS: tuple[str, ...] = ("tone", "major chord", "minor chord", "rising chirp", "falling chirp", "noise burst",
                          "drum hit", "melody", "vowel")
REGISTERS: tuple[str, ...] = ("low", "mid", "high")
SPLITS: tuple[str, ...] = ("train", "heldout", "all")
# one unusual register per pitched kind, so every kind and every register is still heard in training
HELDOUT_COMBOS: tuple[tuple[str, str], ...] = (
    ("tone", "high"),
    ("major chord", "low"),
    ("minor chord", "high"),
    ("rising chirp", "low"),
    ("falling chirp", "high"),
    ("melody", "low"),
    ("vowel", "high"),
)
NOTE_NAMES: tuple[str, ...] = ("c", "d", "e", "f", "g", "a", "b")
_SEMITONES = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}
_OCTAVE = {"low": 3, "mid": 4, "high": 5}  # C3 = 131 Hz, C4 = 262 Hz, C5 = 523 Hz
_RANGE = {"low": (110.0, 220.0), "mid": (220.0, 520.0), "high": (520.0, 1200.0)}  # Hz, for tones and sweeps
VOWELS: dict[str, tuple[float, float]] = {"ah": (730.0, 1090.0), "ee": (270.0, 2290.0), "oo": (300.0, 870.0)}
_SPLIT_OFFSET = {"train": 0, "heldout": 1, "all": 2}

CAPTIONS: dict[str, tuple[str, ...]] = {
    "tone": ("a {register} pure tone", "a {register} tone", "a pure tone", "a {register} sine tone",
             "a steady {register} note"),
    "major chord": ("a {note} major chord", "a major chord", "a {register} major chord", "a bright major chord"),
    "minor chord": ("a {note} minor chord", "a minor chord", "a {register} minor chord", "a sad minor chord"),
    "rising chirp": ("a rising chirp", "a chirp going up", "a {register} rising sweep", "a rising whistle"),
    "falling chirp": ("a falling chirp", "a chirp going down", "a {register} falling sweep", "a falling whistle"),
    "noise burst": ("a burst of noise", "a noise burst", "a short hiss", "white noise"),
    "drum hit": ("{count} drum hit{s}", "a drum", "{count} percussive hit{s}", "{count} drum beat{s}"),
    "melody": ("a melody going {direction}", "a {register} melody going {direction}", "a short melody",
               "four notes going {direction}"),
    "vowel": ("a voice singing {vowel}", "a vowel sound {vowel}", "a {register} voice", "someone singing {vowel}"),
}
# the words of every caption (for the tokenizer's vocabulary and its test)
CAPTION_WORDS: tuple[str, ...] = tuple(sorted({
    w for templates in CAPTIONS.values() for t in templates for plural in ("", "s")
    for w in t.replace("{s}", plural).split() if "{" not in w
} | set(REGISTERS) | set(NOTE_NAMES) | set(VOWELS) | {"up", "down", "one", "two", "three"}))




@lru_cache(maxsize=1)
def audio_tokenizer() -> Tokenizer:
    """The course tokenizer with the audio captions' new words **appended** ("chirp", "chord", ...): every id
    of the course vocabulary keeps its meaning and ``vocab.txt`` (which the bundled checkpoints depend on)
    does not change."""
    course = default_tokenizer().itos
    return Tokenizer([*course, *[w for w in CAPTION_WORDS if w not in set(course)]])


@dataclass
class AudioData:
    """``waveforms`` (N, T) float in [-1, 1] at ``sample_rate``; per clip its ``captions``, ``kinds``
    (one of ``KINDS``), ``labels`` (the kind's index, long (N,)) and ``registers``."""

    waveforms: Tensor
    captions: list[str]
    kinds: list[str]
    labels: Tensor
    registers: list[str]
    sample_rate: int

    def __len__(self) -> int:
        return self.waveforms.shape[0]


def _allowed(split: str) -> list[tuple[str, str]]:
    pairs = [(k, r) for k in KINDS for r in REGISTERS]
    if split == "train":
        return [p for p in pairs if p not in HELDOUT_COMBOS]
    if split == "heldout":
        return list(HELDOUT_COMBOS)
    return pairs


def _envelope(t: Tensor, duration: float, attack: float, release: float) -> Tensor:
    """A trapezoid with a linear attack and release (seconds), 0 outside [0, duration]."""
    up = (t / attack).clamp(0, 1)
    down = ((duration - t) / release).clamp(0, 1)
    return up * down


def _note_hz(name: str, octave: int, shift: int = 0) -> float:
    midi = 12 * (octave + 1) + _SEMITONES[name] + shift
    return 440.0 * 2 ** ((midi - 69) / 12)


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * torch.rand((), generator=g, dtype=torch.float64).item()


def _choice(g: torch.Generator, options: Sequence):
    return options[int(torch.randint(len(options), (), generator=g))]


def _sine(freq_hz: Tensor | float, t: Tensor, sr: int, phase: float = 0.0) -> Tensor:
    """A sine of constant or time-varying frequency (the phase is the running sum of 2 pi f / sr)."""
    if isinstance(freq_hz, Tensor):
        return torch.sin(phase + 2 * math.pi * torch.cumsum(freq_hz, 0) / sr)
    return torch.sin(phase + 2 * math.pi * freq_hz * t)


def _render(kind: str, register: str, g: torch.Generator, sr: int, n: int) -> tuple[Tensor, dict]:
    """One clip (n,) float64 and the words that fill its caption."""
    t = torch.arange(n, dtype=torch.float64) / sr
    duration = n / sr
    start = _uniform(g, 0.0, 0.08 * duration)  # sounds do not all start at sample 0
    length = _uniform(g, 0.7, 0.9) * (duration - start)  # seconds of sound
    local = t - start
    env = _envelope(local, length, 0.01, 0.05)
    words: dict = {"register": register}
    if kind == "tone":
        f = _uniform(g, *_RANGE[register])
        x = _sine(f, local, sr, _uniform(g, 0, 2 * math.pi))
    elif kind in ("major chord", "minor chord"):
        root = _choice(g, NOTE_NAMES)
        third = 4 if kind == "major chord" else 3
        x = sum(_sine(_note_hz(root, _OCTAVE[register], s), local, sr, _uniform(g, 0, 2 * math.pi))
                for s in (0, third, 7)) / 3
        words["note"] = root.upper()
    elif kind in ("rising chirp", "falling chirp"):
        lo, hi = _RANGE[register]
        f0, f1 = _uniform(g, lo, (lo + hi) / 2), _uniform(g, 2 * lo, 3 * hi)
        f1 = min(f1, 0.45 * sr)
        ratio = (local / length).clamp(0, 1)
        freq = f0 * (f1 / f0) ** ratio if kind == "rising chirp" else f1 * (f0 / f1) ** ratio
        x = _sine(freq, local, sr)
    elif kind == "noise burst":
        x = torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1
        env = _envelope(local, _uniform(g, 0.1, 0.3), 0.005, 0.05)
    elif kind == "drum hit":
        count = 1 + int(torch.randint(3, (), generator=g))
        x = torch.zeros(n, dtype=torch.float64)
        f = {"low": 60.0, "mid": 110.0, "high": 200.0}[register] * _uniform(g, 0.8, 1.25)
        gap = duration / (count + 0.5)
        for i in range(count):
            s = local - i * gap
            decay = torch.where(s >= 0, torch.exp(-s.clamp(min=0) / 0.04), torch.zeros_like(s))
            pitch = f * (1 + 2 * torch.exp(-s.clamp(min=0) / 0.01))  # the pitch drops fast: a thump
            click = (torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1) * torch.where(
                s >= 0, torch.exp(-s.clamp(min=0) / 0.004), torch.zeros_like(s))
            x = x + decay * torch.sin(2 * math.pi * torch.cumsum(pitch * (s >= 0), 0) / sr) + 0.5 * click
        env = torch.ones(n, dtype=torch.float64)
        words.update(count=("one", "two", "three")[count - 1], s="s" if count > 1 else "")
    elif kind == "melody":
        direction = _choice(g, ("up", "down"))
        first = int(torch.randint(4, (), generator=g))
        scale = [0, 2, 4, 5, 7, 9, 11, 12]
        steps = [scale[first + i] for i in range(4)]
        steps = steps if direction == "up" else steps[::-1]
        base = _note_hz("c", _OCTAVE[register])
        note_len = length / 4
        x = torch.zeros(n, dtype=torch.float64)
        for i, s in enumerate(steps):
            part = local - i * note_len
            x = x + _envelope(part, note_len, 0.005, 0.03) * torch.sin(2 * math.pi * base * 2 ** (s / 12) * part)
        words["direction"] = direction
    elif kind == "vowel":
        vowel = _choice(g, tuple(VOWELS))
        f0 = {"low": 100.0, "mid": 160.0, "high": 260.0}[register] * _uniform(g, 0.9, 1.1)
        vibrato = f0 * (1 + 0.01 * torch.sin(2 * math.pi * 5 * t))
        phase = 2 * math.pi * torch.cumsum(vibrato, 0) / sr
        x = torch.zeros(n, dtype=torch.float64)
        for k in range(1, int(0.45 * sr / f0) + 1):  # harmonics below Nyquist, each weighted by the formants
            fk = k * f0
            gain = sum(1 / (1 + ((fk - fm) / 90.0) ** 2) for fm in VOWELS[vowel]) / k ** 0.5
            x = x + gain * torch.sin(k * phase)
        words["vowel"] = vowel
    else:  # pragma: no cover - KINDS lists every kind above
        raise ValueError(kind)
    x = x * env
    x = x / x.abs().max().clamp(min=1e-9) * _uniform(g, 0.5, 0.9)
    x = x + 0.003 * torch.randn(n, generator=g, dtype=torch.float64)  # a faint background hiss
    return x.clamp(-1, 1), words


def make_audio(n: int, *, seed: int, sample_rate: int = SAMPLE_RATE, duration: float = DURATION, split: str = "train",
               kinds: Sequence[str] | None = None) -> AudioData:
    """``n`` captioned clips of ``duration`` seconds at ``sample_rate`` Hz, kinds drawn uniformly from
    ``kinds`` (default: all of ``KINDS``) within ``split``."""
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    length = int(round(sample_rate * duration))
    if length < 1:
        raise ValueError(f"duration {duration} s at {sample_rate} Hz gives no samples")
    kinds = tuple(kinds) if kinds is not None else KINDS
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown kinds {unknown}; the audio world has {KINDS}")
    pairs = [p for p in _allowed(split) if p[0] in kinds]
    if not pairs:
        raise ValueError(f"the split {split!r} holds none of the kinds {kinds}")
    g = torch.Generator().manual_seed(1_000_003 * seed + _SPLIT_OFFSET[split])
    waves, captions, names, registers = [], [], [], []
    for _ in range(n):
        kind = _choice(g, sorted({k for k, _ in pairs}, key=KINDS.index))
        register = _choice(g, [r for k, r in pairs if k == kind])
        x, words = _render(kind, register, g, sample_rate, length)
        template = _choice(g, CAPTIONS[kind])
        waves.append(x)
        captions.append(template.format(**words))
        names.append(kind)
        registers.append(register)
    waveforms = torch.stack(waves).float() if waves else torch.zeros(0, length)
    return AudioData(waveforms, captions, names, torch.tensor([KINDS.index(k) for k in names], dtype=torch.long),
                     registers, sample_rate)
