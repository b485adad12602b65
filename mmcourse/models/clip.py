"""A course-sized CLIP: an image encoder and a text encoder, each followed by a linear projection
into one shared space, and a learned temperature.

Following CLIP's pseudocode::

    I_f = image_encoder(I); T_f = text_encoder(T)           # [n, d_i], [n, d_t]
    I_e = l2_normalize(I_f @ W_i); T_e = l2_normalize(T_f @ W_t)
    logits = I_e @ T_e.T * exp(t)

``t`` is stored in log space (``logit_scale``), starts at log(1/0.07) and is clamped so that
``exp(t)`` never exceeds 100, as in the paper.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mmcourse.models.cnn import ConvEncoder
from mmcourse.models.text import BagOfWordsEncoder, TextTransformer
from mmcourse.models.vit import TinyViT

Tensor = torch.Tensor

MAX_LOGIT_SCALE = 100.0


def capped_scale(logit_scale: Tensor) -> Tensor:
    """The multiplier exp(t) of the log-space logit scale ``t``, capped at ``MAX_LOGIT_SCALE`` (100) as
    in the paper; gradients flow to ``t`` below the cap. ``CLIP.scale()`` is this for the model's own t."""
    return logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)


_ENCODERS: dict[str, dict[str, type[nn.Module]]] = {
    "image": {"cnn": ConvEncoder, "vit": TinyViT},
    "text": {"transformer": TextTransformer, "bow": BagOfWordsEncoder},
}


def build_encoder(modality: str, config: dict) -> nn.Module:
    """An encoder from its config, ``{"kind": ..., **its arguments}``: for images ``"cnn"`` or ``"vit"``,
    for text ``"transformer"`` or ``"bow"``."""
    kinds = _ENCODERS[modality]
    kind = config.get("kind")
    if kind not in kinds:
        raise ValueError(f"unknown {modality} encoder kind {kind!r}; use one of {', '.join(map(repr, kinds))}")
    return kinds[kind](**{k: v for k, v in config.items() if k != "kind"})


class CLIP(nn.Module):
    """``encode_image(images)`` and ``encode_text(list_of_str)`` give unnormalised (N, embed_dim)
    embeddings; ``forward(images, texts)`` gives the normalised pair and the multiplier exp(t)."""

    def __init__(self, image: dict, text: dict, embed_dim: int = 64) -> None:
        super().__init__()
        self.visual = build_encoder("image", image)
        self.text = build_encoder("text", text)
        self.image_projection = nn.Linear(self.visual.out_dim, embed_dim, bias=False)
        self.text_projection = nn.Linear(self.text.width, embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.embed_dim = embed_dim
        self.config = {"image": dict(image), "text": dict(text), "embed_dim": embed_dim}

    def encode_image(self, images: Tensor) -> Tensor:
        if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"encode_image expects images (N, 3, H, W), got {shape}")
        return self.image_projection(self.visual(images))

    def tokenize(self, texts: str | Sequence[str]) -> Tensor:
        return self.text.tokenize(texts)

    def encode_text(self, texts: str | Sequence[str] | Tensor) -> Tensor:
        """``texts``: a list of captions (or token ids from ``tokenize``)."""
        device = self.logit_scale.device
        ids = texts.to(device) if isinstance(texts, Tensor) else self.tokenize(texts).to(device)
        return self.text_projection(self.text(ids))

    def scale(self) -> Tensor:
        """The multiplier exp(t), at most 100."""
        return capped_scale(self.logit_scale)

    def forward(self, images: Tensor, texts: Sequence[str] | Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(normalised image embeddings, normalised text embeddings, exp(t))."""
        return (
            F.normalize(self.encode_image(images), dim=-1),
            F.normalize(self.encode_text(texts), dim=-1),
            self.scale(),
        )

    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        """Keep exp(t) within [1, 100] (call after each optimiser step, as open_clip does)."""
        self.logit_scale.clamp_(0, math.log(MAX_LOGIT_SCALE))
