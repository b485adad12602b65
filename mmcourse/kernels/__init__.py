"""Kernels for scaling up the course's losses: a Triton GPU kernel and a PyTorch fallback behind one function.

``fused_clip_loss(image_features, text_features, logit_scale, *, backend="auto")`` is the CLIP loss of
``mmcourse.losses.clip_loss`` without the N x N logits. Triton is imported only when its kernel runs.
"""

from mmcourse.kernels.clip_loss import fused_clip_loss

__all__ = ["fused_clip_loss"]
