"""Kernels for scaling up the course's losses: a Triton GPU kernel and a PyTorch fallback behind one function.

``fused_clip_loss(image_features, text_features, logit_scale, *, backend="auto")`` is the CLIP loss of
``mmcourse.losses.clip_loss`` without the N x N logits; ``lora_linear(x, W, b, A, B, scaling, *, backend="auto")``
is an unmerged LoRA layer's forward in one kernel. Triton is imported only when its kernel runs.
"""

from mmcourse.kernels.clip_loss import fused_clip_loss
from mmcourse.kernels.lora import lora_linear

__all__ = ["fused_clip_loss", "lora_linear"]
