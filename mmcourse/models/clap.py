"""Spectrograms as images: a Conv2d classifier over log-mels, and CLAP, CLIP's recipe for audio and text.

Both read a log-mel spectrogram (B, n_mels, frames) in dB as a one-channel image with the course's
small ``ConvEncoder`` (the one notebook 02's CLIP can use for pictures). CLAP (Elizalde et al. 2023)
pairs it with a text encoder, projects both into one space and trains them with the symmetric
contrastive loss of notebook 02 (``mmcourse.losses.clip_loss``); a zero-shot classifier is then built
from label text exactly as in notebook 03.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mmcourse.data.audio import audio_tokenizer
from mmcourse.models.clip import CLIP
from mmcourse.models.cnn import ConvEncoder

Tensor = torch.Tensor

DB_SHIFT, DB_SCALE = 40.0, 40.0  # log-mels in dB (about -80 .. 0) -> about -1 .. 1 before the first convolution


def _as_image(log_mels: Tensor) -> Tensor:
    if not isinstance(log_mels, Tensor) or log_mels.ndim != 3:
        shape = tuple(log_mels.shape) if isinstance(log_mels, Tensor) else type(log_mels).__name__
        raise ValueError(f"expected log-mel spectrograms (B, n_mels, frames) in dB, got {shape}")
    return ((log_mels + DB_SHIFT) / DB_SCALE)[:, None]  # (B, 1, n_mels, frames)


class SpectrogramClassifier(nn.Module):
    """Log-mels (B, n_mels, frames) -> class logits (B, num_classes): a Conv2d encoder and a linear head."""

    def __init__(self, num_classes: int = 9, width: int = 16, feature_dim: int = 64) -> None:
        super().__init__()
        self.encoder = ConvEncoder(out_dim=feature_dim, width=width, in_channels=1)
        self.head = nn.Linear(feature_dim, num_classes)
        self.config = {"num_classes": num_classes, "width": width, "feature_dim": feature_dim}

    def forward(self, log_mels: Tensor) -> Tensor:
        return self.head(F.relu(self.encoder(_as_image(log_mels))))


class CLAP(CLIP):
    """CLIP with a one-channel Conv2d encoder over log-mels in place of the image tower:
    ``encode_audio(log_mels)`` and ``encode_text(list_of_str)`` give unnormalised (N, embed_dim) embeddings in
    one space; ``scale()`` is the multiplier exp(t) of the learned temperature (capped at 100, as CLIP's).
    The text tower reads the course vocabulary with the audio words appended (``audio_tokenizer``)."""

    def __init__(self, audio: dict | None = None, text: dict | None = None, embed_dim: int = 64) -> None:
        tokenizer = audio_tokenizer()
        audio = dict(audio or {"width": 16, "out_dim": 64})
        text = dict(text or {"kind": "transformer", "width": 64, "layers": 2, "heads": 4})
        text.setdefault("vocab_size", tokenizer.vocab_size)
        super().__init__({"kind": "cnn", "in_channels": 1, **audio}, text, embed_dim)
        self.text.tokenizer = tokenizer
        self.config = {"audio": audio, "text": text, "embed_dim": embed_dim}

    def encode_audio(self, log_mels: Tensor) -> Tensor:
        return self.image_projection(self.visual(_as_image(log_mels)))

    def forward(self, log_mels: Tensor, texts: Sequence[str] | Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(normalised audio embeddings, normalised text embeddings, exp(t))."""
        return (F.normalize(self.encode_audio(log_mels), dim=-1), F.normalize(self.encode_text(texts), dim=-1),
                self.scale())
