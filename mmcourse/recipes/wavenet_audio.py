"""``wavenet_audio``: a small WaveNet over the mu-law codes of the audio world, conditioned on the kind
of sound (notebook 09).

Why each setting is what it is:

* 8 kHz clips and dilations 1, 2, ..., 64 twice with kernel 2: a receptive field of 255 samples (32 ms),
  several periods of every pitch in the world (its lowest note, 110 Hz, repeats every 73 samples). The
  paper's stacks of 1, ..., 512 reach 1 024 samples per stack; on two CPU cores the deeper stack costs
  twice as much per step and the minutes were better spent on steps;
* 32 residual and 64 skip channels, 256 classes: the paper's design at a width a CPU trains in minutes;
* crops of 256 predicted samples after a full receptive field of context (the loss is taken only
  where the network sees a whole receptive field of real input; clips are preceded by silence, as
  ``generate`` starts);
* global conditioning on the kind (9 labels), so the notebook can ask for "a rising chirp".
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from mmcourse.audio import mu_law_encode
from mmcourse.data.audio import KINDS, make_audio
from mmcourse.models.wavenet import SILENCE, WaveNet, nll_nats
from mmcourse.training import fit

DESCRIPTION = ("WaveNet over 8 kHz mu-law codes of the audio world, conditioned on the kind of sound: dilated causal "
               "convolutions, gated units, residual and skip connections (notebook 09)")

SETTINGS: dict = {
    "steps": 700,
    "batch_size": 8,
    "crop": 256,
    "lr": 3e-3,
    "train_clips": 512,
    "channels": 32,
    "skip_channels": 64,
    "kernel_size": 2,
    "dilations": [1, 2, 4, 8, 16, 32, 64] * 2,
}


def training_codes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """mu-law codes (n, T) and kind labels (n,) of ``n`` training clips."""
    clips = make_audio(n, seed=seed, split="train")
    return mu_law_encode(clips.waveforms), clips.labels


def crops(codes: torch.Tensor, labels: torch.Tensor, *, context: int, crop: int, batch_size: int, seed: int):
    """Endless batches (codes (B, context + crop), labels (B,)) cut from the clips preceded by ``context``
    silent samples; the first ``context`` codes of a crop are its history."""
    padded = torch.cat([torch.full((codes.shape[0], context), SILENCE, dtype=torch.long), codes], dim=1)
    g = torch.Generator().manual_seed(seed)
    span = context + crop + 1  # + 1: the last input's target
    while True:
        rows = torch.randint(codes.shape[0], (batch_size,), generator=g)
        starts = torch.randint(padded.shape[1] - span + 1, (batch_size,), generator=g)
        batch = torch.stack([padded[r, s : s + span] for r, s in zip(rows.tolist(), starts.tolist())])
        yield batch, labels[rows]


def loss_on_crop(model: WaveNet, batch, context: int) -> torch.Tensor:
    codes, labels = batch
    logits = model(codes[:, :-1], labels)  # (B, 256, context + crop)
    return F.cross_entropy(logits[:, :, context - 1 :], codes[:, context:])  # where a whole receptive field is seen


def train(*, seed: int = 0, progress: bool = True, steps: int | None = None, evaluate: bool = True,
          train_clips: int | None = None) -> tuple[WaveNet, dict]:
    """Train with ``SETTINGS`` (``steps`` and ``train_clips`` override them for short runs), then measure the
    test NLL (skipped with ``evaluate=False``)."""
    s = dict(SETTINGS, **{k: v for k, v in {"steps": steps, "train_clips": train_clips}.items() if v is not None})
    start = time.perf_counter()
    torch.manual_seed(seed)
    model = WaveNet(channels=s["channels"], skip_channels=s["skip_channels"], kernel_size=s["kernel_size"],
                    dilations=s["dilations"], num_labels=len(KINDS), sample_rate=8000)
    context = model.receptive_field
    codes, labels = training_codes(s["train_clips"], seed=100 + seed)
    batches = crops(codes, labels, context=context, crop=s["crop"], batch_size=s["batch_size"], seed=seed)
    losses = fit(model, lambda m, b: loss_on_crop(m, b, context), batches, steps=s["steps"], lr=s["lr"],
                 schedule=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, s["steps"]),
                 progress=progress, desc="wavenet_audio")
    seconds = time.perf_counter() - start
    if not evaluate:
        return model, {"train_seconds": round(seconds, 1), "recipe": s}
    test = make_audio(72, seed=7_000 + seed, split="all")
    test_codes = mu_law_encode(test.waveforms)
    per_kind = {k: round(nll_nats(model, test_codes[test.labels == i], test.labels[test.labels == i]), 3)
                for i, k in enumerate(KINDS) if (test.labels == i).any()}
    chunk = max(1, s["steps"] // 20)
    curve = [[i + chunk, round(sum(losses[i : i + chunk]) / len(losses[i : i + chunk]), 4)]
             for i in range(0, s["steps"], chunk)]
    metrics = {
        "receptive_field": model.receptive_field,
        "test_nll_nats": round(nll_nats(model, test_codes, test.labels), 4),
        "test_nll_per_kind": per_kind,
        "chance_nll_nats": round(float(torch.log(torch.tensor(256.0))), 4),
        "test_clips": {"n": 72, "seed": 7_000 + seed, "split": "all"},
        "train_seconds": round(seconds, 1),
        "loss_curve": curve,
        "recipe": s,
    }
    return model, metrics
