"""``lora_linear``: the forward of an unmerged LoRA layer, fused on a GPU or as plain PyTorch matmuls.

    y = x Wᵀ + b + s · (x Aᵀ) Bᵀ,   x (..., K), W (N, K), b (N,) or None, A (r, K), B (N, r), s = α / r

Two implementations, chosen in one place (:func:`lora_linear`):

- ``"triton"``: :mod:`mmcourse.kernels.triton_lora`, one kernel, the (M, r) low-rank activations kept in
  registers (forward only; the backward pass is the unfused one in PyTorch, below);
- ``"torch"``: three matmuls, exactly what :class:`mmcourse.peft.LoRALinear` computes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmcourse.kernels.clip_loss import BACKENDS, TRITON_DTYPES, require_triton, triton_available

Tensor = torch.Tensor


def torch_lora_linear(x: Tensor, weight: Tensor, bias: Tensor | None, lora_A: Tensor, lora_B: Tensor,
                      scaling: float) -> Tensor:
    """The unfused path: ``F.linear(x, W, b) + s · F.linear(F.linear(x, A), B)``."""
    return F.linear(x, weight, bias) + F.linear(F.linear(x, lora_A), lora_B) * scaling


class _FusedLoRA(torch.autograd.Function):
    """Forward by the Triton kernel; backward by PyTorch matmuls (g = dL/dy, u = x Aᵀ):
    dx = g W + s (g B) A,  dA = s (g B)ᵀ x,  dB = s gᵀ u,  dW = gᵀ x,  db = Σ g."""

    @staticmethod
    def forward(ctx, x, weight, bias, lora_A, lora_B, scaling):
        from mmcourse.kernels.triton_lora import triton_lora_forward

        ctx.save_for_backward(x, weight, lora_A, lora_B)
        ctx.scaling, ctx.has_bias = scaling, bias is not None
        return triton_lora_forward(x, weight, bias, lora_A, lora_B, scaling)

    @staticmethod
    def backward(ctx, g):
        x, weight, lora_A, lora_B = ctx.saved_tensors
        s = ctx.scaling
        gb = g @ lora_B  # (M, r)
        dx = g @ weight + (gb @ lora_A) * s if ctx.needs_input_grad[0] else None
        dw = g.T @ x if ctx.needs_input_grad[1] else None
        db = g.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        da = (gb.T @ x) * s if ctx.needs_input_grad[3] else None
        dB = (g.T @ (x @ lora_A.T)) * s if ctx.needs_input_grad[4] else None
        return dx, dw, db, da, dB, None


def _check(x: Tensor, weight: Tensor, bias: Tensor | None, lora_A: Tensor, lora_B: Tensor) -> None:
    if x.ndim < 1 or weight.ndim != 2 or lora_A.ndim != 2 or lora_B.ndim != 2:
        raise ValueError("expected x (..., K), weight (N, K), lora_A (r, K), lora_B (N, r)")
    n, k = weight.shape
    r = lora_A.shape[0]
    if x.shape[-1] != k or lora_A.shape[1] != k or tuple(lora_B.shape) != (n, r):
        raise ValueError(
            f"shapes do not fit: x {tuple(x.shape)}, weight {tuple(weight.shape)}, lora_A {tuple(lora_A.shape)}, "
            f"lora_B {tuple(lora_B.shape)}; need x (..., K), weight (N, K), lora_A (r, K), lora_B (N, r)"
        )
    if bias is not None and tuple(bias.shape) != (n,):
        raise ValueError(f"bias should have shape ({n},), got {tuple(bias.shape)}")
    tensors = [t for t in (x, weight, bias, lora_A, lora_B) if t is not None]
    if len({t.dtype for t in tensors}) != 1 or len({t.device for t in tensors}) != 1:
        raise ValueError("x, weight, bias, lora_A and lora_B must share one dtype and one device")


def lora_linear(x: Tensor, weight: Tensor, bias: Tensor | None, lora_A: Tensor, lora_B: Tensor, scaling: float,
                *, backend: str = "auto") -> Tensor:
    """``x Wᵀ + b + scaling · (x Aᵀ) Bᵀ`` for x (..., K) -> (..., N); autograd-capable on both paths.

    ``backend``: ``"auto"`` (Triton for CUDA tensors in fp32/fp16/bf16 when triton is installed, else
    ``"torch"``), ``"triton"`` (on CPU tensors only under ``TRITON_INTERPRET=1``), or ``"torch"``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(map(repr, BACKENDS))}")
    _check(x, weight, bias, lora_A, lora_B)
    if backend == "auto":
        on_gpu = x.device.type == "cuda" and x.dtype in TRITON_DTYPES
        backend = "triton" if on_gpu and triton_available() else "torch"
    if backend == "torch":
        return torch_lora_linear(x, weight, bias, lora_A, lora_B, scaling)
    require_triton(x)
    lead = x.shape[:-1]
    y = _FusedLoRA.apply(x.reshape(-1, x.shape[-1]), weight, bias, lora_A, lora_B, float(scaling))
    return y.reshape(*lead, weight.shape[0])
