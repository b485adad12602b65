"""Notebook 09's measurements, side by side in one run: STFT + mel against librosa (throughput ratio),
Griffin-Lim's spectral convergence (ours and librosa's), WaveNet generation with queues against naive
recomputation for one second of audio, and the RVQ error per added codebook.

    python benchmarks/audio.py            # writes benchmarks/results/audio.md and audio.json

Ratios, not absolute times, are the result: the machine this ran on may be shared.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

import librosa
import numpy as np
import torch

from mmcourse import audio as A
from mmcourse import codec, pretrained
from mmcourse.data.audio import KINDS, make_audio
from mmcourse.models import WaveNet

OUT = Path(__file__).parent / "results"
SR, N_FFT, HOP, N_MELS = 8000, 256, 64, 32


def timed(fn, repeats: int) -> float:
    """The median of ``repeats`` wall times of ``fn()`` (seconds)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def stft_mel(clips: torch.Tensor) -> dict:
    x32, x_np = clips.float(), clips.numpy().astype(np.float32)
    ours = timed(lambda: A.mel_spectrogram(x32, SR, N_FFT, HOP, N_MELS), 7)
    theirs = timed(lambda: librosa.feature.melspectrogram(y=x_np, sr=SR, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS), 7)
    ref = librosa.feature.melspectrogram(y=x_np, sr=SR, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS)
    diff = float(np.abs(A.mel_spectrogram(x32, SR, N_FFT, HOP, N_MELS).numpy() - ref).max() / ref.max())
    n = clips.shape[0]
    return {"clips": n, "ours_clips_per_s": n / ours, "librosa_clips_per_s": n / theirs, "ratio": theirs / ours,
            "max_rel_diff": diff}


def griffin_lim(clips: torch.Tensor) -> dict:
    rows = {}
    for n_iter in (32, 100):
        ours, theirs = [], []
        for x in clips.double():
            mag = A.spectrogram(x, N_FFT, HOP)
            y = A.griffin_lim(mag, N_FFT, HOP, n_iter=n_iter, length=x.shape[0], seed=0)
            z = librosa.griffinlim(mag.numpy(), n_iter=n_iter, hop_length=HOP, n_fft=N_FFT, length=x.shape[0], random_state=0)
            ours.append(A.spectral_convergence(mag, y, N_FFT, HOP))
            theirs.append(A.spectral_convergence(mag, torch.from_numpy(z), N_FFT, HOP))
        rows[n_iter] = {"ours": statistics.mean(ours), "librosa": statistics.mean(theirs)}
    return rows


def wavenet_speed(seconds: float = 1.0) -> dict:
    model = pretrained.load("wavenet_audio")
    n = int(SR * seconds)
    label = torch.tensor([KINDS.index("tone")])
    start = time.perf_counter()
    fast = model.generate(n, labels=label, seed=0, fast=True)
    t_fast = time.perf_counter() - start
    start = time.perf_counter()
    naive = model.generate(n, labels=label, seed=0, fast=False)
    t_naive = time.perf_counter() - start
    return {"samples": n, "receptive_field": model.receptive_field, "fast_s": t_fast, "naive_s": t_naive,
            "ratio": t_naive / t_fast, "identical": bool(torch.equal(fast, naive))}


def wavenet_speed_by_size() -> list[dict]:
    """Fast against naive for stacks of growing receptive field (untrained weights: speed does not depend on
    them), batch 1 and 3, 1 000 samples each: the queues' advantage grows with R and the batch."""
    rows = []
    for name, channels, dilations in (("wavenet_audio's shape", 32, [2**i for i in range(7)] * 2),
                                      ("the paper's stack 1..512, twice", 32, [2**i for i in range(10)] * 2)):
        torch.manual_seed(0)
        model = WaveNet(channels=channels, skip_channels=2 * channels, dilations=dilations, num_labels=len(KINDS)).eval()
        for batch in (1, 3):
            labels = torch.arange(batch)
            t0 = time.perf_counter()
            fast = model.generate(1000, batch=batch, labels=labels, seed=0)
            t1 = time.perf_counter()
            naive = model.generate(1000, batch=batch, labels=labels, seed=0, fast=False)
            t2 = time.perf_counter()
            rows.append({"stack": name, "receptive_field": model.receptive_field, "batch": batch, "fast_s": t1 - t0,
                         "naive_s": t2 - t1, "ratio": (t2 - t1) / (t1 - t0), "identical": bool(torch.equal(fast, naive))})
    return rows


def widget_latency() -> dict:
    """The spectrogram explorer's redraw (log-mel + PNG, what the front end receives) for five settings, next to
    notebook 02's temperature explorer measured the same way in the same run (its quiet-machine median is in
    benchmarks/results/widget_latency.md): milliseconds, medians and maxima of rounds 2-3."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    from mmcourse.data import make_shapes
    from mmcourse.widgets.spectrogram import SpectrogramExplorer
    from mmcourse.widgets.temperature import TemperatureExplorer

    def timed_renders(render, inputs) -> list[float]:
        times = []
        for _ in range(3):
            for value in inputs:
                start = time.perf_counter()
                render(value).savefig(io.BytesIO(), format="png")
                times.append(1000 * (time.perf_counter() - start))
        return times[len(inputs):]

    explorer = SpectrogramExplorer(make_audio(1, seed=4, kinds=["drum hit"], split="all").waveforms[0], SR)
    settings = [(1024, 64, 64, "HTK, no norm (torchaudio)"), (256, 32, 32, "Slaney (librosa)"),
                (512, 128, 128, "Slaney (librosa)"), (64, 16, 8, "Slaney (librosa)"), (256, 64, 32, "Slaney (librosa)")]
    clip = pretrained.load("clip_shapes")
    demo = make_shapes(8, seed=21, split="train", style=("photo", "sketch", "flat", "cartoon"))
    with torch.no_grad():
        img, txt = clip.encode_image(demo.images), clip.encode_text(demo.captions)
    temperature = TemperatureExplorer(img, txt, [c[:28] for c in demo.captions])
    ours = timed_renders(lambda a: explorer.render(*a), settings)
    theirs = timed_renders(temperature.render, [0.003, 0.01, 0.07, 0.3, 1.0, 5.0])
    return {"spectrogram": {"median": statistics.median(ours), "max": max(ours)},
            "temperature": {"median": statistics.median(theirs), "max": max(theirs)}}


def rvq_errors(n_q: int = 8, k: int = 64) -> dict:
    train = A.log_mel(make_audio(384, seed=11, split="train").waveforms, SR)
    test = A.log_mel(make_audio(270, seed=12, split="all").waveforms, SR)
    frames = lambda m: m.transpose(1, 2).reshape(-1, m.shape[1])  # noqa: E731
    books = codec.fit_residual_codebooks(frames(train), n_q=n_q, k=k, iters=12)
    x = frames(test)
    variance = float(x.sub(x.mean(0)).pow(2).mean())
    errors = [float((x - codec.residual_quantize(x, books, q)[1]).pow(2).mean()) for q in range(1, n_q + 1)]
    return {"n_q": n_q, "k": k, "variance": variance, "mse": errors, "kbps": [codec.bitrate(q, k, SR / HOP) / 1000
                                                                              for q in range(1, n_q + 1)]}


def main() -> None:
    torch.set_num_threads(int(os.environ.get("MMCOURSE_THREADS", "1")))
    clips = make_audio(64, seed=0, split="all").waveforms
    one_per_kind = torch.cat([make_audio(1, seed=3, kinds=[k], split="all").waveforms for k in KINDS])
    results = {
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "load_average": os.getloadavg(), "torch": torch.__version__, "librosa": librosa.__version__,
                    "note": "a shared machine: other jobs ran at the same time; compare ratios within this run"},
        "stft_mel": stft_mel(clips),
        "griffin_lim": griffin_lim(one_per_kind),
        "wavenet": wavenet_speed(1.0),
        "wavenet_by_size": wavenet_speed_by_size(),
        "rvq": rvq_errors(),
        "widget": widget_latency(),
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "audio.json").write_text(json.dumps(results, indent=2) + "\n")
    s, g, w, r = results["stft_mel"], results["griffin_lim"], results["wavenet"], results["rvq"]
    wl = results["widget"]
    lines = [
        "# Audio (notebook 09): measured side by side in one run",
        "",
        f"`python benchmarks/audio.py`, {results['machine']['threads']} thread(s), torch {torch.__version__}, "
        f"librosa {librosa.__version__}. **The machine was shared** (load average "
        f"{', '.join(f'{v:.1f}' for v in results['machine']['load_average'])} at the end on 2 cores): absolute "
        "times are inflated; the ratios compare two things measured in the same run.",
        "",
        "## STFT + mel spectrogram against librosa",
        "",
        "| | clips / s (64 clips of 0.5 s at 8 kHz, n_fft 256, hop 64, 32 mels) |",
        "| --- | --- |",
        f"| `mmcourse.audio.mel_spectrogram` (torch, float32) | {s['ours_clips_per_s']:.0f} |",
        f"| `librosa.feature.melspectrogram` (numpy, float32) | {s['librosa_clips_per_s']:.0f} |",
        f"| ratio ours / librosa | **{s['ratio']:.2f}x** |",
        "",
        f"Largest difference relative to the largest value: {s['max_rel_diff']:.1e}.",
        "",
        "## Griffin-Lim: spectral convergence reached (mean over one clip of each of the nine kinds)",
        "",
        "| iterations | ours | librosa |",
        "| --- | --- | --- |",
        *[f"| {n} | {row['ours']:.4f} | {row['librosa']:.4f} |" for n, row in g.items()],
        "",
        "Both start from random phases (different generators), momentum 0.99. With `init=None` (zero phases) "
        "the two return the same waveform to 1e-9 (tests/test_audio.py).",
        "",
        "## WaveNet generation: queues per layer against naive recomputation",
        "",
        f"`wavenet_audio` (receptive field {w['receptive_field']} samples), {w['samples']} samples (1 s at 8 kHz), "
        "batch 1, same seed:",
        "",
        "| | seconds |",
        "| --- | --- |",
        f"| naive (whole stack over the last R samples per sample) | {w['naive_s']:.1f} |",
        f"| fast (Paine et al.: a queue per layer) | {w['fast_s']:.1f} |",
        f"| ratio | **{w['ratio']:.1f}x** |",
        "",
        f"Identical samples: {w['identical']}.",
        "",
        "The same comparison for 1 000 samples, untrained stacks of 32 channels (the speed does not depend on the "
        "weights): the queues' advantage grows with the receptive field R and with the batch, since the naive "
        "path recomputes about R columns per layer per sample and the fast one a single column, while a "
        "step's fixed cost (Python, small-tensor overhead) is the same for both.",
        "",
        "| stack | R (samples) | batch | naive (s) | fast (s) | ratio | identical |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *[f"| {row['stack']} | {row['receptive_field']} | {row['batch']} | {row['naive_s']:.1f} | {row['fast_s']:.1f} | "
          f"**{row['ratio']:.1f}x** | {row['identical']} |" for row in results["wavenet_by_size"]],
        "",
        "## Residual VQ on log-mel frames: error per added codebook",
        "",
        f"{r['n_q']} codebooks of {r['k']} (k-means on residuals, 384 training clips), 270 test clips; frame "
        f"variance {r['variance']:.1f} dB^2.",
        "",
        "| codebooks | kbps (125 frames/s) | MSE (dB^2) | error removed by this codebook |",
        "| --- | --- | --- | --- |",
        *[f"| {q + 1} | {r['kbps'][q]:.2f} | {r['mse'][q]:.2f} | "
          f"{(r['variance'] if q == 0 else r['mse'][q - 1]) - r['mse'][q]:.2f} |" for q in range(r["n_q"])],
        "",
        "## Spectrogram explorer: one redraw (log-mel + PNG), next to notebook 02's temperature slider",
        "",
        "| widget | median (ms) | max (ms) |",
        "| --- | --- | --- |",
        f"| spectrogram explorer (five settings, n_fft 64-1024, up to 128 mels) | {wl['spectrogram']['median']:.0f} | "
        f"{wl['spectrogram']['max']:.0f} |",
        f"| temperature slider (notebook 02) | {wl['temperature']['median']:.0f} | {wl['temperature']['max']:.0f} |",
        f"| ratio | **{wl['spectrogram']['median'] / wl['temperature']['median']:.2f}x** | |",
        "",
        "The temperature slider's quiet-machine median is in [widget_latency.md](widget_latency.md); the ratio "
        "scales it to the explorer's (budget 200 ms).",
        "",
        "On a shared machine every row moves from run to run (the load changes within a run); the STFT + mel ratio "
        "and the generation ratios most. Rerun for the spread.",
        "",
    ]
    (OUT / "audio.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
