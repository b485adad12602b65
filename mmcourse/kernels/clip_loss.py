"""``fused_clip_loss``: the CLIP loss without the N x N logits, on a GPU kernel or in PyTorch chunks.

The value is the one of :func:`mmcourse.losses.clip_loss` (and of ``open_clip.ClipLoss``); what changes
is memory. The naive loss stores the (N, N) logits and their softmaxes, so doubling the batch (the
number of negatives each pair is contrasted with) quadruples memory. Here the logits are produced a
tile or a chunk at a time, reduced to one log-sum-exp per row and per column, and recomputed in the
backward pass: memory grows like N * D.

Two implementations, chosen in one place (:func:`fused_clip_loss`):

- ``"triton"``: :mod:`mmcourse.kernels.triton_clip_loss`, tiles of logits in GPU registers;
- ``"torch"``: :mod:`mmcourse.kernels.chunked_clip_loss`, chunks of rows with PyTorch matmuls.
"""

from __future__ import annotations

import importlib.util
import math

import torch

from mmcourse.losses import check_feature_pairs

Tensor = torch.Tensor

BACKENDS = ("auto", "triton", "torch")
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def triton_available() -> bool:
    """Whether the ``triton`` package can be imported (it ships with PyTorch's Linux wheels)."""
    return importlib.util.find_spec("triton") is not None


def _scale_tensor(logit_scale: Tensor | float, device: torch.device) -> Tensor:
    """``logit_scale`` as a one-element tensor on ``device`` (gradients still flow to the original)."""
    if isinstance(logit_scale, torch.Tensor):
        if logit_scale.numel() != 1:
            raise ValueError(f"logit_scale must be a scalar, got a tensor of shape {tuple(logit_scale.shape)}")
        if not logit_scale.is_floating_point():
            logit_scale = logit_scale.float()
        if not torch.isfinite(logit_scale.detach()).all():  # one sync on a GPU: cheaper than a NaN run
            raise ValueError(f"logit_scale must be finite, got {logit_scale.item()}")
        return logit_scale.to(device)
    if isinstance(logit_scale, bool) or not isinstance(logit_scale, (int, float)):
        raise TypeError(f"logit_scale must be a float or a one-element tensor, got {type(logit_scale).__name__}")
    if not math.isfinite(logit_scale):
        raise ValueError(f"logit_scale must be finite, got {logit_scale}")
    return torch.tensor(float(logit_scale), device=device)


def require_triton(x: Tensor, what: str = "") -> None:
    """Refuse, with what to do instead, a forced ``backend='triton'`` that cannot run on ``x``: a dtype the
    kernels do not take, no triton package, or a CPU tensor outside Triton's interpreter (shared by every kernel)."""
    if x.dtype not in TRITON_DTYPES:
        raise TypeError(f"the Triton kernel takes fp32, fp16 or bf16{what}, got {x.dtype}; use backend='torch'")
    if not triton_available():
        raise RuntimeError("backend='triton' needs the triton package (pip install triton); use backend='torch'")
    from mmcourse.kernels.triton_clip_loss import interpreting

    if x.device.type != "cuda" and not interpreting():
        raise RuntimeError(
            f"backend='triton' on {x.device.type} tensors runs only in Triton's CPU interpreter: set "
            "the environment variable TRITON_INTERPRET=1 before triton is first imported (slow; meant for tests), "
            "move the tensors to a CUDA GPU, or use backend='torch'"
        )


def _triton_loss(image_features: Tensor, text_features: Tensor, scale: Tensor) -> Tensor:
    require_triton(image_features, " features")
    from mmcourse.kernels.triton_clip_loss import triton_clip_loss

    return triton_clip_loss(image_features, text_features, scale)


def fused_clip_loss(
    image_features: Tensor, text_features: Tensor, logit_scale: Tensor | float, *, backend: str = "auto"
) -> Tensor:
    """The symmetric CLIP loss of :func:`mmcourse.losses.clip_loss`, without materialising N x N.

    ``image_features``, ``text_features``: (N, D), L2-normalised, row i of each forms a pair; fp32, fp16
    or bf16 (fp64 too with ``backend="torch"``). ``logit_scale``: the multiplier, already exponentiated
    (at most 100 in CLIP): a float, or a one-element tensor that may require grad.
    ``backend``: ``"auto"`` (Triton for CUDA tensors when triton is installed, else ``"torch"``),
    ``"triton"`` (on CPU tensors only under ``TRITON_INTERPRET=1``), or ``"torch"`` (chunks of rows).

    Returns a 0-d fp32 tensor (fp64 for fp64 features), differentiable with respect to both feature
    matrices and ``logit_scale``; all reductions run in fp32 whatever the input precision.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(map(repr, BACKENDS))}")
    check_feature_pairs(image_features, text_features)
    scale = _scale_tensor(logit_scale, image_features.device)
    if backend == "auto":
        on_gpu = image_features.device.type == "cuda" and image_features.dtype in TRITON_DTYPES
        backend = "triton" if on_gpu and triton_available() else "torch"
    if backend == "triton":
        return _triton_loss(image_features, text_features, scale)
    from mmcourse.kernels.chunked_clip_loss import chunked_clip_loss

    return chunked_clip_loss(image_features, text_features, scale)
