# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.16.0
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown] slideshow={"slide_type": "slide"}
# # 09 · Audio spectrograms and WaveNet
#
# **In this notebook you will**
#
# 1. see why a **waveform** is a hard sequence for a model (a song is millions of samples) and hear the
#    course's synthetic audio world;
# 2. build the **STFT** and a **mel filterbank** from scratch, check them against the package (whose tests
#    compare it with librosa), and meet the traps between librosa and torch/torchaudio;
# 3. treat the **log-mel spectrogram as an image**: a Conv2d classifier, and CLAP, the CLIP loss of
#    notebook 02 between sounds and captions, with zero-shot classification and retrieval;
# 4. throw away the **phase**, get it back with **Griffin-Lim**, and hear what was lost;
# 5. build **WaveNet**: dilated causal convolutions, the **receptive field** (checked by gradients),
#    **μ-law** codes, a short live training run, and fast generation with a queue per layer;
# 6. turn audio into **tokens** with **residual vector quantisation**, as EnCodec does for VALL-E, and see
#    why the first codebook matters most.
#
# About 50 minutes. Every sound here is generated (no download), at 8 kHz; the two bundled models
# (`wavenet_audio`, `clap_audio`; `mmcourse train NAME` rebuilds them) were trained in minutes on a CPU.

# %% tags=["setup"]
import sys

if "google.colab" in sys.modules:  # on Colab: install the course package, pinned to this notebook's version
    import subprocess

    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "mmcourse @ git+https://github.com/mmcourse/mmcourse@v0.1.0"],
        check=True,
    )

import math
import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from IPython.display import Audio, display

import mmcourse
from mmcourse import audio as A
from mmcourse import check, codec, pretrained
from mmcourse.data.audio import KINDS, make_audio
from mmcourse.models import SpectrogramClassifier, WaveNet
from mmcourse.models.wavenet import nll_nats
from mmcourse.retrieval import recall_table
from mmcourse.training import batches_of, fit
from mmcourse.zeroshot import build_classifier, logits_from_features

device = mmcourse.start(seed=0)
SR = 8000  # samples per second in the whole notebook


def play(x: torch.Tensor, label: str = "") -> None:
    """An audio player for a waveform (T,) at 8 kHz, with a label (normalise=False: loudness is kept)."""
    if label:
        print(label)
    display(Audio(x.detach().double().clamp(-1, 1).numpy(), rate=SR, normalize=False))


# %% [markdown] slideshow={"slide_type": "slide"}
# ## 1 · A waveform is a long sequence
#
# Digital audio stores the air pressure at a microphone as a **waveform**: one number per sample, taken
# at a fixed **sample rate**. Streaming music uses 44.1 kHz; speech models often use 16 kHz; this
# notebook uses 8 kHz (telephone quality), the cheapest rate that still carries a voice. A sample rate
# $f_s$ can only represent frequencies below $f_s / 2$ (the **Nyquist** frequency, 4 kHz here): a
# faster oscillation is sampled too sparsely and shows up as a slower one (aliasing).
#
# The lecture's example of why raw audio is hard to model: a two-minute song.

# %%
song_seconds, streaming_rate = 2 * 60, 44_100
song_samples = song_seconds * streaming_rate
print(f"a {song_seconds} s song at {streaming_rate:,} Hz is a sequence of {song_samples:,} samples "
      f"({song_samples / 1e6:.3f} M); a 256-token caption is {song_samples / 256:,.0f} times shorter")
print(f"one second at our {SR:,} Hz: {SR:,} samples; Nyquist frequency {SR // 2:,} Hz")

# %% [markdown]
# The course's **audio world** (`mmcourse.data.audio`) synthesises nine kinds of sound, each with a
# caption, in a few milliseconds a clip: pure tones, major and minor chords, rising and falling chirps,
# noise bursts, drum hits, short melodies, and vowel-like sounds (a buzz at a voice's pitch shaped by
# two formants, the resonances that make "ah" differ from "ee"). Like the shapes world it has a `train`
# split that never holds some kind-register pairs and a `heldout` split with only those.

# %%
demo = {k: make_audio(1, seed=4, kinds=[k], split="all") for k in KINDS}
fig, axes = plt.subplots(3, 3, figsize=(11, 5.5), sharex=True, sharey=True)
t_axis = torch.arange(4000) / SR
for ax, (kind, clip) in zip(axes.flat, demo.items()):
    ax.plot(t_axis, clip.waveforms[0], lw=0.4)
    ax.set_title(f'{kind}: "{clip.captions[0]}"', fontsize=8)
for ax in axes[-1]:
    ax.set_xlabel("time (s)")
for ax in axes[:, 0]:
    ax.set_ylabel("amplitude")
fig.suptitle("one clip of each kind: half a second, 4 000 samples", fontsize=10)
plt.tight_layout()
plt.show()
for kind in ("major chord", "rising chirp", "drum hit", "vowel"):
    play(demo[kind].waveforms[0], f'{kind}: "{demo[kind].captions[0]}"')

# %% [markdown]
# Zoom in and the waveform of a chord is a sum of sines; the eye cannot read the notes from it, and a
# model reading samples one by one must discover the periodicity itself. The frequencies are what
# the ear hears, so the next section makes them explicit.

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 2.6))
for ax, kind in zip(axes, ("major chord", "vowel")):
    ax.plot(1000 * t_axis[2000:2160], demo[kind].waveforms[0, 2000:2160], ".-", lw=0.6, ms=2)
    ax.set_xlabel("time (ms)")
    ax.set_title(f"{kind}: 20 ms = 160 samples", fontsize=9)
axes[0].set_ylabel("amplitude")
plt.tight_layout()
plt.show()

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 2 · The short-time Fourier transform, from scratch
#
# The STFT cuts the signal into overlapping **frames** of `n_fft` samples, one every `hop` samples,
# multiplies each by a **window** that fades its ends to zero, and takes each frame's discrete Fourier
# transform:
#
# $$X[f, m] = \sum_{n=0}^{N-1} w[n]\,x[mH + n]\,e^{-2\pi i f n / N}, \qquad f = 0, \dots, N/2,$$
#
# with $N$ = `n_fft`, $H$ = `hop`, and $w$ the periodic Hann window $w[n] = \tfrac12 - \tfrac12\cos(2\pi n / N)$.
# Bin $f$ is the frequency $f \cdot f_s / N$; with $N = 256$ at 8 kHz the bins are 31.25 Hz apart and
# a frame lasts 32 ms. Libraries **centre** the frames: the signal is padded with $N/2$ samples at both
# ends so frame $m$ is centred on sample $mH$. Here it is in four lines, checked against the package:

# %%
n_fft, hop = 256, 64
x = demo["rising chirp"].waveforms[0]
padded = F.pad(x, (n_fft // 2, n_fft // 2))  # zeros at both ends (librosa's centring)
frames = padded.unfold(0, n_fft, hop)  # (frames, n_fft): frame m starts at sample m * hop of the padded signal
window = 0.5 - 0.5 * torch.cos(2 * math.pi * torch.arange(n_fft) / n_fft)  # periodic Hann
stft_scratch = torch.fft.rfft(frames * window, dim=1).T  # (n_fft // 2 + 1, frames) complex
assert torch.allclose(stft_scratch, A.stft(x, n_fft, hop), atol=1e-4)
print(f"{x.shape[0]} samples -> {stft_scratch.shape[1]} frames x {stft_scratch.shape[0]} frequency bins "
      f"({SR / n_fft:.2f} Hz apart); matches mmcourse.audio.stft")

# %% [markdown]
# **Three traps between libraries** (the package's tests check each against librosa):
#
# * `librosa.stft` pads the ends with **zeros** (since version 0.9); `torch.stft(center=True)` pads by
#   **reflection** (a mirror image of the first samples). The middle frames agree, the first and last do not.
# * `torch.stft` called **without a window** uses a rectangular one: every sample of the frame weighted
#   1. A frame then starts and stops abruptly, and a pure tone leaks energy into every bin.
# * Mel filterbanks come in two conventions (below): librosa's default is not torchaudio's.

# %%
offset = x + 0.3  # a signal that does not start at zero makes the padding visible
ours = A.stft(offset, n_fft, hop)
torch_default = torch.stft(offset, n_fft, hop, window=torch.hann_window(n_fft), return_complex=True)
edge_diff = (ours[:, 0] - torch_default[:, 0]).abs().max().item()
middle_diff = (ours[:, 5:-5] - torch_default[:, 5:-5]).abs().max().item()
print(f"zero padding vs torch.stft's reflection: first frame differs by up to {edge_diff:.2f}, "
      f"middle frames by {middle_diff:.1e}")

tone = torch.sin(2 * math.pi * 1010 * torch.arange(4000) / SR)  # 1010 Hz: between two bins
fig, ax = plt.subplots(figsize=(7, 3))
for name, win in (("Hann window", "hann"), ("no window (rectangular)", None)):
    mag = A.spectrogram(tone, n_fft, hop, window=win)[:, 30]
    ax.plot(A.fft_frequencies(SR, n_fft), 20 * torch.log10(mag / mag.max() + 1e-9), label=name)
ax.set_xlabel("frequency (Hz)")
ax.set_ylabel("level (dB below the peak)")
ax.set_ylim(-120, 5)
ax.set_title("one frame of a 1010 Hz tone: the rectangular window leaks everywhere", fontsize=10)
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown] slideshow={"slide_type": "slide"}
# ### The mel scale
#
# We hear pitch roughly logarithmically: 100 → 200 Hz sounds like the same step as 1000 → 2000 Hz. The
# **mel scale** warps frequency to follow that. Two definitions are in use:
#
# * **HTK** (the HTK toolkit; torchaudio's default): $m = 2595 \log_{10}(1 + f / 700)$;
# * **Slaney** (Malcolm Slaney's Auditory Toolbox; librosa's default): linear below 1 kHz,
#   $m = f / (200/3)$ (15 mels at 1 kHz), logarithmic above, $m = 15 + \ln(f / 1000) / (\ln 6.4 / 27)$.
#
# A **mel filterbank** has `n_mels` triangular filters with edges evenly spaced in mels; multiplying it
# with the power spectrogram sums each band. Narrow at low frequencies, wide at high ones, like the
# ear's resolution. librosa also **normalises** each triangle (`norm="slaney"`) so that it has the same
# area; torchaudio leaves the peaks at 1.

# %%
f = torch.linspace(0, 4000, 400)
fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(f, A.hz_to_mel(f), label="Slaney (librosa)")
ax.plot(f, A.hz_to_mel(f, htk=True) / A.hz_to_mel(4000.0, htk=True) * A.hz_to_mel(4000.0), "--",
        label="HTK (torchaudio), rescaled to the same end point")
ax.axvline(1000, color="gray", lw=0.5)
ax.set_xlabel("frequency (Hz)")
ax.set_ylabel("mel")
ax.set_title("two mel scales", fontsize=10)
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# **Exercise 09.mel** (3 points). Write `mel_filterbank(sr, n_fft, n_mels, fmin=0.0, fmax=None)`: the
# `(n_mels, n_fft // 2 + 1)` filterbank of `librosa.filters.mel` with its defaults (Slaney scale, Slaney
# normalisation). `fmax` defaults to `sr / 2`; the FFT bins sit at `torch.linspace(0, sr / 2, n_fft // 2 + 1)`;
# use `A.hz_to_mel` and `A.mel_to_hz` (Slaney by default) for the scale. How many edges do `n_mels`
# triangles need, where is each triangle 1, and what makes every triangle's area equal?

# %% exercise="09.mel"
def mel_filterbank(sr: float, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> torch.Tensor:
    """-> (n_mels, n_fft // 2 + 1) float: Slaney-scale triangles with Slaney area normalisation."""
    ### BEGIN SOLUTION
    fmax = sr / 2 if fmax is None else fmax
    mels = torch.linspace(A.hz_to_mel(fmin).item(), A.hz_to_mel(fmax).item(), n_mels + 2, dtype=torch.float64)
    edges = A.mel_to_hz(mels)  # (n_mels + 2,) Hz: filter i spans edges i, i + 1, i + 2
    freqs = torch.linspace(0, sr / 2, n_fft // 2 + 1, dtype=torch.float64)
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # (n_mels, 1) each
    rising = (freqs - left) / (centre - left)
    falling = (right - freqs) / (right - centre)
    triangles = torch.minimum(rising, falling).clamp(min=0)  # (n_mels, F), peaks at 1
    return (triangles * 2 / (right - left)).float()  # equal areas
    ### END SOLUTION


# %% tags=["check"]
check.exercise("09.mel", mel_filterbank)

# %% [markdown] slideshow={"slide_type": "slide"}
# ### The filterbank, worked out
#
# `n_mels` triangles need `n_mels + 2` edges: filter $i$ rises from edge $i$ to 1 at edge $i+1$ and falls
# to 0 at edge $i+2$, so neighbours overlap by half. Slaney normalisation multiplies filter $i$ by
# $2 / (f_{i+2} - f_i)$: a triangle of height 1 and base $b$ has area $b/2$, so every filter gets area 1.
# Without it the wide high filters would sum many more bins than the narrow low ones and dominate the
# spectrogram. The figure shows both conventions for our settings.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3), sharex=True)
freqs = A.fft_frequencies(SR, n_fft)
for ax, (name, kw) in zip(axes, (("librosa default: Slaney scale, Slaney norm", {}),
                                ("torchaudio default: HTK scale, no norm", {"htk": True, "norm": None}))):
    fb = A.mel_filterbank(SR, n_fft, 32, **kw)
    for row in fb[::2]:
        ax.plot(freqs, row, lw=0.8)
    ax.set_title(name, fontsize=9)
    ax.set_xlabel("frequency (Hz)")
axes[0].set_ylabel("weight")
plt.tight_layout()
plt.show()

# %% [markdown]
# A **log-mel spectrogram** is the mel-filtered power spectrogram in decibels, $10\log_{10}$ of the
# power, floored 80 dB below the loudest value: the loudness scale of hearing, and a range a network
# can read. Here are the nine kinds, each as a 32 × 63 image:

# %%
fig, axes = plt.subplots(3, 3, figsize=(11, 6), sharex=True, sharey=True)
for ax, (kind, clip) in zip(axes.flat, demo.items()):
    image = A.log_mel(clip.waveforms[0], SR)  # (32 mels, 63 frames), dB
    ax.imshow(image, origin="lower", aspect="auto", cmap="magma", extent=(0, 0.5, -0.5, 31.5), vmin=-80, vmax=0)
    ax.set_title(kind, fontsize=8)
for ax in axes[-1]:
    ax.set_xlabel("time (s)")
for ax in axes[:, 0]:
    ax.set_ylabel("mel band")
fig.suptitle("log-mel spectrograms (n_fft 256, hop 64, 32 mels): chords are stacked lines, chirps slopes, "
             "noise a block, vowels harmonics with two bright formant regions", fontsize=9)
plt.tight_layout()
plt.show()

# %% [markdown]
# ### Play: the spectrogram explorer
#
# A longer `n_fft` sharpens frequency and blurs time (a chirp's slope turns into a smear, a drum hit
# spreads); a shorter one does the opposite. Too many mels for a small `n_fft` leaves filters that
# catch no FFT bin at all: the explorer says so (librosa would only warn).

# %%
from mmcourse.widgets.spectrogram import SpectrogramExplorer

explorer = SpectrogramExplorer(demo["drum hit"].waveforms[0] + demo["rising chirp"].waveforms[0], SR,
                               title="drum hits + a rising chirp")
start = time.perf_counter()
explorer.render(1024, 64, 64, "HTK, no norm (torchaudio)")
print(f"one redraw: {1000 * (time.perf_counter() - start):.0f} ms")
explorer.widget()

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 3 · Spectrograms as images
#
# The lecture: "models can treat this spectrogram as an image. Ex: Conv2d!" Here is exactly that: the
# course's small `ConvEncoder` (the image encoder notebook 02's CLIP can use) with one input channel,
# reading 32 × 63 log-mels, trained live for a few seconds to tell the nine kinds apart.

# %%
def log_mels(waveforms: torch.Tensor) -> torch.Tensor:
    return A.log_mel(waveforms, SR)  # (N, 32, 63) dB: n_fft 256, hop 64, 32 Slaney mels


train_clips = make_audio(768, seed=11, split="train")
test_clips = make_audio(270, seed=12, split="all")
heldout_clips = make_audio(270, seed=13, split="heldout")
train_mels, test_mels, heldout_mels = (log_mels(c.waveforms) for c in (train_clips, test_clips, heldout_clips))

torch.manual_seed(0)
classifier = SpectrogramClassifier(num_classes=len(KINDS))
start = time.perf_counter()
losses = fit(classifier, lambda m, b: F.cross_entropy(m(b[0]), b[1]),
             batches_of((train_mels, train_clips.labels), 32, seed=0), steps=100, lr=3e-3, progress=False)
with torch.no_grad():
    acc = {name: (classifier(mels).argmax(1) == clips.labels).float().mean().item()
           for name, mels, clips in (("test", test_mels, test_clips), ("held-out pairs", heldout_mels, heldout_clips))}
print(f"100 steps of 32 clips in {time.perf_counter() - start:.1f} s: loss {losses[0]:.2f} -> {sum(losses[-10:]) / 10:.2f}; "
      f"accuracy {acc['test']:.1%} on fresh clips, {acc['held-out pairs']:.1%} on kind-register pairs never heard")

# %% [markdown] slideshow={"slide_type": "slide"}
# ### CLAP: the CLIP loss between sounds and captions
#
# CLAP (Elizalde et al., 2023) is CLIP for audio: an audio encoder over log-mels and a text encoder,
# trained with the symmetric contrastive loss of notebook 02 on (clip, caption) pairs. Once trained, a
# classifier is built from label text exactly as in notebook 03, and sounds and captions retrieve each
# other. The bundled `clap_audio` is the classifier's Conv2d encoder next to notebook 02's text
# transformer, trained with `mmcourse.losses.clip_loss` (the course tokenizer with the audio world's
# words appended). Its card says how it was trained:

# %%
clap = pretrained.load("clap_audio")
clap_card = pretrained.card("clap_audio")
templates = clap_card["metrics"]["templates"]
zs_classifier = build_classifier(clap, KINDS, templates)  # (9, 64): one text embedding per kind
with torch.no_grad():
    audio_emb = {name: clap.encode_audio(m) for name, m in (("test", test_mels), ("held-out pairs", heldout_mels))}
zero_shot = {name: (logits_from_features(e, zs_classifier).argmax(1) == clips.labels).float().mean().item()
             for (name, e), clips in zip(audio_emb.items(), (test_clips, heldout_clips))}
print(f"templates {templates}; trained {clap_card['metrics']['recipe']['steps']} steps in "
      f"{clap_card['metrics']['train_seconds']:.0f} s")
for name in zero_shot:
    print(f"{name:>15s}: zero-shot from label text {zero_shot[name]:.1%}   supervised Conv2d (above) {acc[name]:.1%}")
with torch.no_grad():
    text_emb = clap.encode_text(test_clips.captions)
relevant = torch.tensor([[a == b for b in test_clips.captions] for a in test_clips.captions])  # same caption
table = recall_table(audio_emb["test"], text_emb, relevant, ks=(1, 5, 10))
for way, name in (("image→text", "audio → caption"), ("text→image", "caption → audio")):
    print(f"{name}: " + "  ".join(f"R@{k} {v:.1%}" for k, v in table[way].items()))

# %% [markdown]
# Retrieval is scored against *identical* captions, so "a drum" for a clip captioned "two drum hits"
# counts as a miss: Recall@1 is low for that reason, and Recall@10 shows captions of the right kind near
# the top. Both classifiers stop well short of 100 %, and the held-out pairs drop further. Where do the
# errors go? The kinds each model confuses most, on fresh clips and on held-out pairs:

# %%
def confusions(pred: torch.Tensor, labels: torch.Tensor, top: int = 3) -> str:
    pairs = {}
    for t, p in zip(labels.tolist(), pred.tolist()):
        if t != p:
            pairs[(KINDS[t], KINDS[p])] = pairs.get((KINDS[t], KINDS[p]), 0) + 1
    return "; ".join(f"{t} -> {p}: {n}" for (t, p), n in sorted(pairs.items(), key=lambda kv: -kv[1])[:top])


with torch.no_grad():
    for (name, e), mels, clips in zip(audio_emb.items(), (test_mels, heldout_mels), (test_clips, heldout_clips)):
        print(f"{name:>15s}  zero-shot: {confusions(logits_from_features(e, zs_classifier).argmax(1), clips.labels)}")
        print(f"{'':>15s}  supervised: {confusions(classifier(mels).argmax(1), clips.labels)}")
third = {"major": 2 ** (4 / 12) * 261.63, "minor": 2 ** (3 / 12) * 261.63}  # the third above C4 (261.63 Hz)
band = A.mel_frequencies(34, 0, SR / 2)  # the edges of our 32 filters
print(f"C major's third {third['major']:.0f} Hz vs C minor's {third['minor']:.0f} Hz: {third['major'] - third['minor']:.0f} Hz "
      f"apart; our mel filters near 300 Hz are {float(band[5] - band[4]):.0f} Hz apart")

# %% [markdown]
# Major and minor chords differ only in their third, one semitone apart, and at these pitches a semitone
# is narrower than one of our 32 mel bands (printed above): the log-mel image barely shows the difference
# the label depends on. The held-out pairs include low major and high minor chords, so in training every
# *low* chord was minor and every *high* one major: a model that cannot hear the third can learn the
# register instead, and then calls the held-out low major chords "minor" and the high minor ones "major"
# (read the lines above). That is a **shortcut**, the
# audio version of notebook 03's lesson: a representation is only as good as what its input resolves.
# More mel bands or a longer `n_fft` (try the explorer) would separate the thirds; the rest of the
# confusions (tones, chirps and melodies, which share one pitched line) come from the captions, which
# use "going up" and "rising" for both melodies and chirps.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 4 · Phase, and getting it back
#
# The spectrogram keeps $|X[f, m]|$ and throws away the angle of each complex number, the **phase**. The
# lecture: going back from spectrogram to waveform is lossy. How lossy? **Griffin-Lim** (1984; here the
# fast variant with momentum 0.99 that librosa uses) looks for a waveform whose STFT magnitude matches:
# start from random phases, and repeat "waveform from (target magnitude, current phase), STFT it, keep its
# phase". Each round can only bring the magnitudes closer; the **spectral convergence**
# $\| S - |\mathrm{STFT}(\hat x)| \|_F / \|S\|_F$ measures how close.

# %%
original = demo["vowel"].waveforms[0]
magnitude = A.spectrogram(original, n_fft, hop)  # (129, 63): no phase
history: list[float] = []
rebuilt = A.griffin_lim(magnitude, n_fft, hop, n_iter=100, length=4000, history=history)
random_phase = A.griffin_lim(magnitude, n_fft, hop, n_iter=0, length=4000)  # the starting point: random phases
sc_random = A.spectral_convergence(magnitude, random_phase, n_fft, hop)
sc_32 = history[31]
sc_final = A.spectral_convergence(magnitude, rebuilt, n_fft, hop)
wave_error = ((rebuilt - original).norm() / original.norm()).item()
fig, axes = plt.subplots(1, 2, figsize=(10, 3))
axes[0].plot(range(1, 101), history)
axes[0].set_yscale("log")
axes[0].set_xlabel("iteration")
axes[0].set_ylabel("spectral convergence")
axes[0].set_title("Griffin-Lim: the magnitudes converge", fontsize=10)
axes[1].plot(1000 * t_axis[2000:2160], original[2000:2160], label="original")
axes[1].plot(1000 * t_axis[2000:2160], rebuilt[2000:2160], label="Griffin-Lim, 100 iterations")
axes[1].set_xlabel("time (ms)")
axes[1].set_title("the same magnitudes, a different waveform", fontsize=10)
axes[1].legend(fontsize=8)
plt.tight_layout()
plt.show()
print(f"spectral convergence: random phase {sc_random:.3f}, 32 iterations (librosa's default) {sc_32:.3f}, "
      f"100 iterations {sc_final:.3f}; the waveform itself differs by {wave_error:.0%} of its norm")
play(original, "the original vowel")
play(random_phase, "its magnitudes with random phases")
play(rebuilt, "Griffin-Lim, 100 iterations")

# %% [markdown]
# The magnitudes come back closely and the sample values do not (they cannot: shifting the phase of a
# harmonic changes the waveform, not what we hear). The random-phase version sounds rough and smeared:
# phase carries *when* within a frame things happen, which is what a sharp attack needs. A mel
# spectrogram loses more: each filter sums many bins, so the detail inside a band is gone before phase
# is. The package inverts the filterbank by non-negative least squares (`A.mel_to_linear`, as librosa's
# `mel_to_stft` does) and then runs Griffin-Lim:

# %%
fb = A.mel_filterbank(SR, n_fft, 32)
mel_power = fb @ magnitude**2  # (32, 63): what a log-mel image holds (before the log)
from_mel = A.griffin_lim(A.mel_to_linear(mel_power, fb).sqrt(), n_fft, hop, n_iter=100, length=4000)
sc_mel = A.spectral_convergence(magnitude, from_mel, n_fft, hop)
print(f"spectral convergence to the true magnitudes: from the full spectrogram {sc_final:.3f}, "
      f"from 32 mel bands {sc_mel:.3f}")
play(from_mel, "Griffin-Lim from the 32-band mel spectrogram")

# %% [markdown]
# Real systems replace Griffin-Lim with a **neural vocoder** (WaveNet itself in Tacotron 2, conditioned
# on mel spectrograms; later HiFi-GAN), which learns what the phase of speech should be.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 5 · WaveNet
#
# WaveNet (van den Oord et al., 2016) models the waveform directly, one sample at a time:
# $p(\mathbf x) = \prod_t p(x_t \mid x_1, \dots, x_{t-1})$. Three ideas make that work:
#
# * **causal convolutions**: the output at $t$ uses inputs up to $t$ only (pad on the left), so all
#   positions train in parallel, like a masked transformer;
# * **dilation**: layer $l$'s kernel skips $d_l - 1$ samples between its taps; with $d = 1, 2, 4, \dots$
#   the reach doubles every layer, so a few layers see far back;
# * a **softmax over 256 μ-law classes** instead of a regression on the sample value (below).
#
# Each layer is a gated residual block, written out in `mmcourse/models/wavenet.py`:
# $\mathbf z = \tanh(W_f * \mathbf x) \odot \sigma(W_g * \mathbf x)$, then a 1×1 convolution back to the
# residual stream ($\mathbf x + \dots$) and another into the skip connections that the output head sums.
#
# The lecture puts WaveNet's chunk at "~300 ms (1024 samples)". How many samples does a stack see?

# %% [markdown]
# **Exercise 09.receptive_field** (2 points). Write `receptive_field(kernel_sizes, dilations, sample_rate)`
# for a stack of causal convolutions (layer $l$ has kernel $k_l$ and dilation $d_l$): return
# `(samples, milliseconds)`, the number of input samples the last layer's output at $t$ depends on, and
# how long that is at `sample_rate`. Layers may have different kernels (an initial causal convolution
# with a wider kernel, say).

# %% exercise="09.receptive_field"
def receptive_field(kernel_sizes: list[int], dilations: list[int], sample_rate: float) -> tuple[int, float]:
    """-> (R in samples, R in milliseconds) of a stack of causal convolutions."""
    ### BEGIN SOLUTION
    samples = 1 + sum((k - 1) * d for k, d in zip(kernel_sizes, dilations))
    return samples, 1000 * samples / sample_rate
    ### END SOLUTION


# %% tags=["check"]
check.exercise("09.receptive_field", receptive_field)

# %% [markdown] slideshow={"slide_type": "slide"}
# ### The receptive field, worked out
#
# A layer with $k$ taps and dilation $d$ reads $t, t-d, \dots, t-(k-1)d$: it reaches $(k-1)d$ samples
# further back than its input already reached. Stacking adds the reaches, and the current sample
# counts once:
#
# $$R = 1 + \sum_l (k_l - 1)\, d_l.$$
#
# WaveNet's stack of dilations $1, 2, \dots, 512$ with $k = 2$ gives $R = 1 + 1023 = 1024$: the lecture's
# number. Converting it to time corrects the slide:

# %%
paper_stack = [2**i for i in range(10)]  # 1, 2, ..., 512
for stacks, rate in ((1, 16_000), (1, 44_100), (3, 16_000), (5, 16_000)):
    r = 1 + sum((2 - 1) * d for d in paper_stack * stacks)
    print(f"{stacks} stack(s) of 1..512, kernel 2: {r:5d} samples = {1000 * r / rate:6.1f} ms at {rate / 1000:g} kHz")

# %% [markdown]
# 1 024 samples are 64 ms at WaveNet's 16 kHz and 23 ms at 44.1 kHz, not 300 ms: the slide's two numbers
# do not go together. The paper stacks several such blocks, and its speech models report receptive fields
# of a few hundred milliseconds, so "~300 ms" describes a deeper model than "1 024 samples". Either way the receptive field is a fraction of a second: WaveNet models
# texture (pitch, timbre), and anything longer, like words, must come from conditioning. Our
# `wavenet_audio` uses $1, \dots, 64$ twice at 8 kHz; its receptive field, from the architecture and
# **verified by gradients**: the output at $t$ must have a non-zero gradient with respect to exactly the
# inputs $t - R + 1, \dots, t$.

# %%
wavenet = pretrained.load("wavenet_audio")
R = wavenet.receptive_field
probe = torch.randn(1, wavenet.config["channels"], 3 * R, requires_grad=True)  # embedded inputs (B, C, T)
t_out = 2 * R
wavenet.forward_embedded(probe, torch.tensor([0]))[0, :, t_out].sum().backward()
reach = probe.grad.abs().sum(dim=1)[0]  # (T,): how much output t_out moves with each input
touched = (reach > 0).nonzero().flatten()
assert touched.min().item() == t_out - R + 1 and touched.max().item() == t_out, "receptive field mismatch"
fig, ax = plt.subplots(figsize=(9, 2.6))
ax.semilogy(reach.numpy() + 1e-12)
ax.axvspan(t_out - R + 1, t_out, color="tab:green", alpha=0.15, label=f"R = {R} samples ending at t")
ax.set_xlabel("input position")
ax.set_ylabel("|d output_t / d input|")
ax.set_title(f"gradient probe: (k - 1) sum(d) + 1 = {R} samples = {1000 * R / SR:.0f} ms at 8 kHz, nothing "
             "outside", fontsize=9)
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown] slideshow={"slide_type": "slide"}
# ### μ-law: 256 classes for a sample
#
# Treating the next sample as one of 256 classes lets the softmax express any distribution (two likely
# values, a skewed one) where a Gaussian regression could not. Spending the 256 levels evenly over
# $[-1, 1]$ would waste most of them on loud values that are rare; **μ-law companding** (telephony's
# G.711) first compresses the amplitude,
#
# $$y = \operatorname{sign}(x)\,\frac{\ln(1 + \mu |x|)}{\ln(1 + \mu)}, \qquad \mu = 255,$$
#
# so quiet samples get fine steps and loud ones coarse steps, and then quantises $y$ evenly.

# %%
xs = torch.linspace(-1, 1, 1001)
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(xs, A.mu_law_compress(xs), label="mu = 255")
ax.plot(xs, xs, "--", color="gray", label="linear")
ax.set_xlabel("sample x")
ax.set_ylabel("compressed y")
ax.set_title("mu-law compression", fontsize=10)
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# **Exercise 09.mu_law** (3 points). Write `mu_law_encode(x, mu=255)`: samples `x` (any shape) to
# integer codes in $[0, \mu]$, the classes WaveNet's softmax predicts. Compress, map $y \in [-1, 1]$ onto
# $[0, \mu]$ so that $y = -1$ gives 0 and $y = 1$ gives $\mu$, and round to the **nearest** level
# (torchaudio's convention). Samples outside $[-1, 1]$ (a clipped recording) must still give valid codes.

# %% exercise="09.mu_law"
def mu_law_encode(x: torch.Tensor, mu: int = 255) -> torch.Tensor:
    """x (...) float -> codes (...) long in [0, mu]."""
    ### BEGIN SOLUTION
    x = x.clamp(-1, 1)
    y = torch.sign(x) * torch.log1p(mu * x.abs()) / math.log1p(mu)
    return ((y + 1) / 2 * mu + 0.5).floor().long()
    ### END SOLUTION


# %% tags=["check"]
check.exercise("09.mu_law", mu_law_encode)

# %% [markdown] slideshow={"slide_type": "slide"}
# ### μ-law, worked out
#
# `((y + 1) / 2 * mu + 0.5).floor()` is rounding to the nearest level; clipping first keeps every code in
# range. Libraries differ exactly here: torchaudio rounds to the nearest level and returns $[0, 255]$,
# while `librosa.mu_compress(quantize=True)` takes the level above and returns *signed* codes in
# $[-128, 127]$. Adding 128 to librosa's codes does not give torchaudio's: they disagree by one level on
# about half of all inputs (`tests/test_audio.py` checks both). What the companding buys, on a quiet
# clip quantised to 256 levels both ways:

# %%
quiet = 0.05 * demo["vowel"].waveforms[0] / demo["vowel"].waveforms[0].abs().max()
linear_8bit = torch.round((quiet + 1) / 2 * 255) / 255 * 2 - 1
mu_8bit = A.mu_law_decode(A.mu_law_encode(quiet))


def snr_db(clean: torch.Tensor, noisy: torch.Tensor) -> float:
    return (10 * torch.log10(clean.pow(2).sum() / (noisy - clean).pow(2).sum())).item()


print(f"a quiet vowel (peak 0.05) in 256 levels: linear {snr_db(quiet, linear_8bit):.1f} dB SNR, "
      f"mu-law {snr_db(quiet, mu_8bit):.1f} dB SNR; distinct codes used: linear "
      f"{torch.round((quiet + 1) / 2 * 255).unique().numel()}, mu-law {A.mu_law_encode(quiet).unique().numel()}")
play(10 * linear_8bit, "linear 8 bits (played 10x louder)")
play(10 * mu_8bit, "mu-law 8 bits (played 10x louder)")

# %% [markdown] slideshow={"slide_type": "slide"}
# ### Training, live and bundled
#
# Training is next-sample classification: inputs are the codes up to $t$, the target is the code at
# $t + 1$, the loss the cross-entropy in nats. Guessing uniformly costs $\ln 256 \approx 5.55$ nats. A
# small WaveNet (one stack of $1, \dots, 32$, 16 channels), trained for a few seconds on crops of
# training clips, each conditioned on its kind:

# %%
codes_train = A.mu_law_encode(train_clips.waveforms)  # (768, 4000) long
torch.manual_seed(0)
tiny = WaveNet(channels=16, skip_channels=32, dilations=[1, 2, 4, 8, 16, 32], num_labels=len(KINDS))
g = torch.Generator().manual_seed(0)


def crop_batch(_):
    rows = torch.randint(len(codes_train), (8,), generator=g)
    start_at = torch.randint(0, 4000 - 320, (8,), generator=g)
    return torch.stack([codes_train[r, s : s + 320] for r, s in zip(rows, start_at)]), train_clips.labels[rows]


def next_sample_loss(model, batch):
    codes, labels = batch
    logits = model(codes[:, :-1], labels)  # (B, 256, T - 1): position t predicts code t + 1
    return F.cross_entropy(logits[:, :, model.receptive_field :], codes[:, model.receptive_field + 1 :])


start = time.perf_counter()
live = fit(tiny, next_sample_loss, map(crop_batch, iter(int, 1)), steps=60, lr=5e-3, progress=False)
print(f"60 steps in {time.perf_counter() - start:.1f} s: loss {live[0]:.2f} -> {sum(live[-10:]) / 10:.2f} nats "
      f"(chance ln 256 = {math.log(256):.2f})")

# %% [markdown]
# The bundled `wavenet_audio` trained the same way for longer, with a deeper stack. Its negative
# log-likelihood on fresh clips of every kind, next to chance:

# %%
wn_card = pretrained.card("wavenet_audio")["metrics"]
per_kind = {}
for kind in KINDS:  # two fresh clips of each kind, their first quarter second
    fresh = make_audio(2, seed=21, kinds=[kind], split="all")
    per_kind[kind] = nll_nats(wavenet, A.mu_law_encode(fresh.waveforms[:, :2000]), fresh.labels)
overall = sum(per_kind.values()) / len(per_kind)
print(f"wavenet_audio: receptive field {R} samples, trained {wn_card['recipe']['steps']} steps in "
      f"{wn_card['train_seconds']:.0f} s")
print(f"NLL on 18 fresh clips (2 per kind, 0.25 s each): {overall:.2f} nats per sample (chance {math.log(256):.2f}; the card's test set: "
      f"{wn_card['test_nll_nats']:.2f})")
for k, v in per_kind.items():
    print(f"  {k:>14s}: {v:.2f}")
assert overall <= math.log(256) - 1

# %% [markdown]
# Pitched sounds are cheap (a sine's next sample follows from the last few); noise costs almost the
# full $\ln 256$ while it lasts, since nothing can predict it, and only the silence around it is cheap.

# %% [markdown] slideshow={"slide_type": "slide"}
# ### Generating, naively and with queues
#
# Generation is sequential: draw $x_{t+1}$ from the softmax, feed it back, repeat 8 000 times for a
# second. The **naive** way runs the whole network over the last $R$ samples for every new sample. But
# almost all of that was computed one step earlier: layer $l$ at time $t$ needs its own input at
# $t - d_l$ (for $k = 2$), which it saw $d_l$ steps ago. **Fast WaveNet** (Paine et al., 2016) keeps a
# **queue per layer** of its last $d_l$ inputs: each new sample costs one column per layer. Both ways
# draw with the same random numbers (Gumbel-max with a seeded generator), so they must give the same
# samples:

# %%
labels = torch.tensor([KINDS.index("tone"), KINDS.index("major chord"), KINDS.index("vowel")])
timing = {}
for name, fast in (("naive", False), ("fast", True)):
    start = time.perf_counter()
    out = wavenet.generate(200, batch=3, labels=labels, seed=0, fast=fast)
    timing[name] = (time.perf_counter() - start, out)
assert torch.equal(timing["naive"][1], timing["fast"][1]), "fast and naive generation must agree sample for sample"
print(f"200 samples (25 ms) x 3 clips: naive {timing['naive'][0]:.2f} s, fast {timing['fast'][0]:.2f} s: "
      f"{timing['naive'][0] / timing['fast'][0]:.1f}x faster, identical samples")

start = time.perf_counter()
generated = wavenet.generate(3 * SR // 8, batch=3, labels=labels, seed=1)  # 0.375 s each, the fast way
print(f"0.375 s x 3 clips with queues in {time.perf_counter() - start:.1f} s")
fig, axes = plt.subplots(1, 3, figsize=(11, 2.6))
for ax, codes, lab in zip(axes, generated, labels):
    ax.imshow(A.log_mel(A.mu_law_decode(codes), SR), origin="lower", aspect="auto", cmap="magma", vmin=-80, vmax=0)
    ax.set_title(f"generated, conditioned on '{KINDS[lab]}'", fontsize=9)
    ax.set_xlabel("frame")
axes[0].set_ylabel("mel band")
plt.tight_layout()
plt.show()
for codes, lab in zip(generated, labels):
    play(A.mu_law_decode(codes), f"WaveNet, '{KINDS[lab]}'")

# %% [markdown]
# The speed-up grows with the receptive field: the naive way costs about $R$ columns per layer per sample,
# the queues one. `benchmarks/audio.py` measures it for a full second (table in
# `benchmarks/results/audio.md`). Listen, and look at the spectrograms: a WaveNet trained for minutes with
# 32 ms of context does not yet make a tone or a chord. Started from silence it stays quiet or breaks into
# noisy bursts. Its NLL above is one step ahead *given real audio*; sampling feeds it its own output, and
# every small error becomes the context of the next step. The paper's models trained for days on many
# hours of speech, with conditioning (text features, a speaker) that tells them what to say; that is the
# gap between a good next-sample loss and good samples.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 6 · Audio as tokens: residual vector quantisation
#
# VALL-E (2023) does text-to-speech with a transformer that predicts **discrete codes**: the tokens of
# the neural codec EnCodec. EnCodec's encoder turns 24 kHz audio into 75 vectors a second, and **residual
# vector quantisation** turns each vector into a few integers:
#
# $$\mathbf r_0 = \mathbf x,\quad c_q = \arg\min_j \|\mathbf r_{q-1} - \mathbf e^{(q)}_j\|,\quad
# \mathbf r_q = \mathbf r_{q-1} - \mathbf e^{(q)}_{c_q},\quad \hat{\mathbf x} = \sum_q \mathbf e^{(q)}_{c_q}.$$
#
# Codebook 1 quantises the vector, codebook 2 what codebook 1 missed, and so on. Our stand-in for
# EnCodec's encoder is the log-mel frame itself (32 numbers, 125 frames a second); eight codebooks of
# 64 codes, each learned by k-means on the residuals the previous ones leave (`mmcourse.codec`; the
# nearest-code lookup is the VQ-VAE's from notebook 07, and `tests/test_audio.py` checks the codes equal
# vector-quantize-pytorch's `ResidualVQ` given the same codebooks).

# %%
def mel_frames(mels: torch.Tensor) -> torch.Tensor:
    return mels.transpose(1, 2).reshape(-1, mels.shape[1])  # (N * frames, 32): one vector per frame


n_q, K = 8, 64
start = time.perf_counter()
books = codec.fit_residual_codebooks(mel_frames(train_mels[:192]), n_q=n_q, k=K, iters=8)  # (8, 64, 32)
test_frames = mel_frames(test_mels)
errors = [(test_frames - codec.residual_quantize(test_frames, books, q)[1]).pow(2).mean().item() for q in range(1, n_q + 1)]
total = test_frames.sub(test_frames.mean(0)).pow(2).mean().item()
gain = [total - errors[0]] + [a - b for a, b in zip(errors, errors[1:])]
print(f"codebooks learned in {time.perf_counter() - start:.1f} s; frame variance {total:.1f} dB^2")
fig, axes = plt.subplots(1, 2, figsize=(10, 3))
axes[0].plot(range(1, n_q + 1), errors, "o-")
axes[0].set_xlabel("codebooks used")
axes[0].set_ylabel("mean squared error (dB^2)")
axes[0].set_title("reconstruction error falls with each quantiser", fontsize=10)
axes[1].bar(range(1, n_q + 1), gain)
axes[1].set_xlabel("codebook")
axes[1].set_ylabel("error removed (dB^2)")
axes[1].set_title("the first codebook carries the most", fontsize=10)
plt.tight_layout()
plt.show()
print("error with 1..8 codebooks: " + ", ".join(f"{e:.1f}" for e in errors))
assert all(a > b for a, b in zip(errors, errors[1:])) and gain[0] == max(gain)

# %% [markdown]
# That is the shape of the VALL-E paper's figure: the first quantiser plays the most important role,
# the others refine. VALL-E predicts codebook 1 autoregressively (one token per frame, conditioned on
# text and a 3-second prompt of the speaker) and the other seven in parallel. To hear tokens, decode
# them: codes → the sum of their code vectors (a log-mel frame) → the mel filterbank inverted → Griffin-Lim:

# %%
clip_mels = log_mels(demo["melody"].waveforms[:1])[0]  # (32, 63)
codes_clip, _ = codec.residual_quantize(clip_mels.T, books)  # (63 frames, 8 tokens)
print(f"the melody as tokens: {codes_clip.shape[0]} frames x {codes_clip.shape[1]} codebooks; first frames:\n"
      f"{codes_clip[10:13].tolist()}")
play(demo["melody"].waveforms[0], "the original melody")
for q in (1, 2, 8):
    decoded_db = codec.residual_decode(codes_clip[:, :q], books).T  # (32, 63) dB
    power = A.mel_to_linear(10 ** (decoded_db / 10), fb)
    play(A.griffin_lim(power.sqrt(), n_fft, hop, n_iter=60, length=4000), f"from {q} codebook(s)")

# %% [markdown] slideshow={"slide_type": "slide"}
# ### Bits, and sequence lengths
#
# A token from a codebook of $K$ entries carries $\log_2 K$ bits, so $n_q$ codebooks at $F$ frames a
# second cost $n_q \log_2 K \cdot F$ bits per second. EnCodec (24 kHz, 75 frames a second, $K = 1024$)
# spends 2, 4, 8, 16 or 32 codebooks for its five bitrates, computed here:

# %%
for q in (2, 4, 8, 16, 32):
    print(f"EnCodec, {q:2d} codebooks: {codec.bitrate(q, 1024, 75) / 1000:5.1f} kbps")
ours_rate = codec.bitrate(n_q, K, SR / hop)
print(f"ours: {n_q} codebooks of {K} at {SR / hop:g} frames/s = {ours_rate / 1000:.1f} kbps; "
      f"8-bit mu-law at 8 kHz = {8 * SR / 1000:.0f} kbps; 16-bit CD audio = {16 * 44_100 * 2 / 1000:.0f} kbps")
tokens_song = 75 * 8 * song_seconds
print(f"the lecture's 2-minute song: {song_samples:,} samples, or {75 * song_seconds:,} EnCodec frames "
      f"({tokens_song:,} tokens with 8 codebooks, {75 * song_seconds:,} for VALL-E's autoregressive first codebook)")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 7 · Everything becomes tokens
#
# The lecture closes on one idea: treat every input as a sequence of tokens and one transformer can
# read and write them all. This course has now built each kind:
#
# | modality | tokens | built in |
# | --- | --- | --- |
# | text | words of the course tokenizer | notebooks 01–03 |
# | image | ViT patches (continuous) or dVAE codes (discrete, DALL-E) | 02, 07 |
# | audio | μ-law samples (8 000 a second here), or RVQ codes of frames (125 × 8 a second here) | 09 |
#
# Audio as tokens has one more choice than text: how many codebooks to spend, which is bitrate against
# quality, and which structure to put in the sequence (VALL-E: the first codebook autoregressively, the
# rest in parallel). Spectrograms, meanwhile, are images, and CLAP aligns them with text by the same
# loss CLIP uses for pictures.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## What to remember
#
# * Raw audio is long: 44.1 kHz × 120 s is 5.292 M samples. Frequencies above half the sample rate
#   cannot be represented.
# * The STFT frames, windows (Hann) and Fourier-transforms; libraries disagree on padding (librosa
#   zeros, `torch.stft` reflection) and `torch.stft` without a window is rectangular.
# * Mel filterbanks: triangles on edges evenly spaced in mels; librosa's default is the Slaney scale
#   with area normalisation, torchaudio's the HTK scale with peaks at 1. Log-mels are images: a Conv2d
#   classifies them, and CLAP trains them against captions with the CLIP loss.
# * Spectrograms drop phase; Griffin-Lim recovers *a* phase whose magnitudes match, not the original
#   waveform, and a mel spectrogram loses detail inside each band too.
# * WaveNet: dilated causal convolutions with gated units, residual and skip connections, a softmax over
#   256 μ-law codes; receptive field $R = 1 + \sum_l (k_l - 1) d_l$ (1 024 samples = 64 ms at 16 kHz).
#   Generation with a queue per layer gives the same samples as recomputation, much faster.
# * RVQ quantises residuals codebook after codebook: each added codebook lowers the error, the first
#   the most, and bitrate is $n_q \log_2 K$ bits per frame.
#
# ## References
#
# * A. van den Oord et al. *WaveNet: a generative model for raw audio.* 2016.
# * T. Le Paine et al. *Fast Wavenet generation algorithm.* 2016.
# * D. Griffin, J. Lim. *Signal estimation from modified short-time Fourier transform.* IEEE TASSP 1984;
#   N. Perraudin, P. Balazs, P. Søndergaard. *A fast Griffin-Lim algorithm.* WASPAA 2013.
# * S. S. Stevens, J. Volkmann, E. B. Newman. *A scale for the measurement of the psychological magnitude
#   pitch.* JASA 1937; M. Slaney. *Auditory Toolbox*, 1998.
# * ITU-T G.711: pulse code modulation of voice frequencies (μ-law), 1972.
# * B. Elizalde, S. Deshmukh, M. Al Ismail, H. Wang. *CLAP: learning audio concepts from natural language
#   supervision.* ICASSP 2023.
# * N. Zeghidour et al. *SoundStream: an end-to-end neural audio codec.* 2021.
# * A. Défossez, J. Copet, G. Synnaeve, Y. Adi. *High fidelity neural audio compression (EnCodec).* 2022.
# * C. Wang et al. *Neural codec language models are zero-shot text to speech synthesizers (VALL-E).* 2023.
# * J. Shen et al. *Natural TTS synthesis by conditioning WaveNet on mel spectrogram predictions (Tacotron 2).* 2018.
# * librosa (`filters.mel`, `stft`, `griffinlim`, `mu_compress`) and vector-quantize-pytorch (`ResidualVQ`):
#   the oracles of the course's tests.
