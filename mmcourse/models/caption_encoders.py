"""Caption encoders: captions -> one condition vector each, for a text-to-image model.

A diffusion model conditioned on text never reads words itself: a frozen encoder turns each caption
into a vector c (N, dim), and the denoiser learns eps(x_t, t, c). Anything that maps a list of
strings to such vectors can play that part, so the encoders here share one small interface:

* ``encoder(captions)`` -> float tensor (N, encoder.dim), computed without gradients;
* ``encoder.dim``: the size of each vector (the denoiser's ``cond_dim``).

``BagOfWordsCaptionEncoder`` counts words (the simplest text features: order is lost, synonyms are
different words the denoiser must learn to treat alike). ``FrozenTextEncoder`` wraps any model with
an ``encode_text(list[str])`` method, such as the course CLIP, and keeps it frozen, which is what
Stable Diffusion and Imagen do with their text encoders.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mmcourse.data.tokenizer import default_tokenizer
from mmcourse.models.bow import bag_of_words

Tensor = torch.Tensor


class TextModel(Protocol):
    def encode_text(self, texts: list[str]) -> Tensor: ...


def _as_captions(captions: Sequence[str] | str) -> list[str]:
    if isinstance(captions, str):
        return [captions]
    captions = list(captions)
    if not captions or not all(isinstance(c, str) for c in captions):
        raise TypeError(f"captions must be a non-empty list of str, got {captions!r:.80}")
    return captions


class CaptionEncoder(nn.Module):
    """Base class: ``forward(captions)`` -> (N, dim); subclasses set ``dim`` and implement ``encode``."""

    dim: int

    def encode(self, captions: list[str]) -> Tensor:
        raise NotImplementedError

    def forward(self, captions: Sequence[str] | str) -> Tensor:
        with torch.no_grad():  # frozen: the diffusion loss never trains the text side
            return self.encode(_as_captions(captions)).float()


class BagOfWordsCaptionEncoder(CaptionEncoder):
    """Word counts over the course vocabulary: (N, vocab_size), no parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.dim = default_tokenizer().vocab_size

    def encode(self, captions: list[str]) -> Tensor:
        return bag_of_words(captions)


class FrozenTextEncoder(CaptionEncoder):
    """Wraps a model with ``encode_text`` (e.g. the bundled ``clip_shapes``), frozen.

    With ``normalize=True`` (the default) each embedding is L2-normalised: CLIP compares texts by
    cosine, so the direction carries the meaning and the length only adds a scale the denoiser
    would have to undo. The unit vector is then multiplied by sqrt(dim), so that its entries have a
    mean square of 1, the size of the network's other inputs (a unit vector's entries are about
    1/sqrt(dim) each, which makes the condition a whisper next to the time embedding early in
    training). A diffusion model only understands the exact embeddings it was trained on: the card
    of a bundled one records the sha256 of the text model it was trained with (``requires``), and
    ``mmcourse.pretrained.load`` refuses another.
    """

    def __init__(self, text_model: nn.Module, *, normalize: bool = True) -> None:
        super().__init__()
        if not callable(getattr(text_model, "encode_text", None)):
            raise TypeError(f"{type(text_model).__name__} has no encode_text(list[str]) method")
        self.text_model = text_model.eval().requires_grad_(False)
        self.normalize = normalize
        with torch.no_grad():
            self.dim = int(text_model.encode_text(["a red square"]).shape[-1])

    def train(self, mode: bool = True) -> "FrozenTextEncoder":
        super().train(mode)
        self.text_model.eval()  # stays in eval mode even while the denoiser trains
        return self

    def encode(self, captions: list[str]) -> Tensor:
        z = self.text_model.encode_text(captions)  # (N, D)
        return F.normalize(z, dim=-1) * self.dim**0.5 if self.normalize else z
