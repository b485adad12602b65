"""The text-to-image diffusion model of notebook 08 (bundled as ``diffusion_shapes``): a frozen
caption encoder, a noise-predicting U-Net and the noise schedule it was trained with.

The sampling loop and the training loss live in ``mmcourse.diffusion``, apart from the model, so
the loop a student must understand stays visible (diffusers keeps its schedulers apart the same way).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mmcourse.diffusion import make_schedule
from mmcourse.models.caption_encoders import BagOfWordsCaptionEncoder, CaptionEncoder, FrozenTextEncoder
from mmcourse.models.unet import ConditionalUNet

Tensor = torch.Tensor


class DiffusionModel(nn.Module):
    """A text-to-image diffusion model: a frozen caption encoder, a noise predictor, a schedule.

    * ``encode(captions)`` -> c (N, cond_dim), from the caption encoder: the frozen ``text_model``
      (anything with ``encode_text``, e.g. the bundled ``clip_shapes``) or, without one, word counts;
    * ``null_cond`` (cond_dim,): the learned "no caption" embedding used for the unconditional
      prediction eps(x_t, t). It starts at zero and is trained whenever a caption is dropped.
      Why learned rather than fixed zeros: the bag-of-words encoder maps an empty caption to zeros
      anyway, but a CLIP encoder maps nothing to zero, so any fixed choice would be an arbitrary
      point of its space; a learned vector lets the network choose where "unconditional" sits,
      like the extra class token of Ho & Salimans and DiT;
    * ``forward(x_t, t, cond)`` -> eps (N, 3, S, S).

    The caption encoder is *not* a submodule: it is frozen and its weights belong to another
    checkpoint, so this model's state dict holds only the denoiser and ``null_cond``, and the
    encoder stays on the CPU when the denoiser moves to a GPU (a caption is encoded once per
    sampling call).
    """

    def __init__(
        self,
        text_model: nn.Module | None = None,
        *,
        image_size: int = 32,
        schedule: str = "cosine",
        num_steps: int = 1000,
        channels: Sequence[int] = (16, 32, 64),
        emb_dim: int = 128,
        attention: bool = False,
    ) -> None:
        super().__init__()
        encoder: CaptionEncoder = BagOfWordsCaptionEncoder() if text_model is None else FrozenTextEncoder(text_model)
        self.__dict__["encoder"] = encoder  # outside the module tree (see above)
        self.unet = ConditionalUNet(encoder.dim, tuple(channels), emb_dim, attention=attention)
        self.null_cond = nn.Parameter(torch.zeros(encoder.dim))
        self.schedule = make_schedule(schedule, num_steps)
        self.image_size = image_size
        self.config = {"image_size": image_size, "schedule": schedule, "num_steps": num_steps,
                       "channels": list(channels), "emb_dim": emb_dim, "attention": attention}

    def encode(self, captions: Sequence[str] | str) -> Tensor:
        """(N, cond_dim) condition vectors, on the model's device."""
        return self.encoder(captions).to(self.null_cond.device)

    def forward(self, x_t: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        return self.unet(x_t, t, cond)
