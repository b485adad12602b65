"""The LoRA forward ``y = x Wᵀ + b + s · (x Aᵀ) Bᵀ`` as one Triton kernel.

Imported only when ``lora_linear(..., backend="triton")`` (or ``"auto"`` on a GPU) runs, so that
``import mmcourse`` stays fast and works where Triton is missing.

Unfused, an unmerged LoRA layer is three matmuls and an add: ``x Wᵀ`` (M × N), ``x Aᵀ`` (M × r, written
to memory), ``(x Aᵀ) Bᵀ`` (M × N, written to memory), then the sum (read both back). For small r the
two extra M × N passes over memory, not the FLOPs, are the overhead. Here one program owns a
(BLOCK_M, BLOCK_N) tile of y and, while it walks over K for ``x Wᵀ``, multiplies the same tile of x with
A as well, so ``x Aᵀ`` for its rows stays in registers, (BLOCK_M, R_PAD); at the end one small dot with
B's tile adds the low-rank part, and y is written once. The price: every column block of programs
recomputes its rows' ``x Aᵀ``, R_PAD / BLOCK_N more FLOPs (1/8 at r = 16, BLOCK_N = 128).

Precision: products accumulate in fp32; the low-rank activations ``s · x Aᵀ`` are rounded to the input
dtype before the dot with B, as the unfused path rounds ``x Aᵀ`` when it writes it out. The kernel also
runs in Triton's CPU interpreter (``TRITON_INTERPRET=1`` set before triton is first imported), which
mishandles bf16 arithmetic, so there every tile is upcast to fp32 right after it is loaded.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Triton reads TRITON_INTERPRET once, at its first import, for every kernel alike: the CLIP loss kernels'
# helpers tell whether this process interprets, and which dot precision torch's matmul settings ask for.
from mmcourse.kernels.triton_clip_loss import _dot_precision, interpreting

Tensor = torch.Tensor

# A starting point, not tuned on a GPU yet (no GPU was lent while this was written).
BLOCK_M = 64
BLOCK_N = 64
BLOCK_K = 32


@triton.jit
def _lora_forward_kernel(
    X_ptr, W_ptr, A_ptr, B_ptr, bias_ptr, Y_ptr,  # (M, K), (N, K), (R, K), (N, R), (N,), (M, N)
    M, N, K, R, scaling,
    stride_xm, stride_wn, stride_am, stride_bn, stride_ym,
    HAS_BIAS: tl.constexpr, R_PAD: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    ranks = tl.arange(0, R_PAD)
    row_ok, col_ok, rank_ok = rows < M, cols < N, ranks < R
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)  # x Wᵀ for this tile
    xa = tl.zeros([BLOCK_M, R_PAD], tl.float32)  # x Aᵀ for these rows, kept in registers
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < K
        x = tl.load(X_ptr + rows[:, None] * stride_xm + ks[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(W_ptr + cols[:, None] * stride_wn + ks[None, :], mask=col_ok[:, None] & k_ok[None, :], other=0.0)
        a = tl.load(A_ptr + ranks[:, None] * stride_am + ks[None, :], mask=rank_ok[:, None] & k_ok[None, :], other=0.0)
        if UPCAST:
            x, w, a = x.to(tl.float32), w.to(tl.float32), a.to(tl.float32)
        acc = tl.dot(x, tl.trans(w), acc, input_precision=DOT_PRECISION)
        xa = tl.dot(x, tl.trans(a), xa, input_precision=DOT_PRECISION)
    b = tl.load(B_ptr + cols[:, None] * stride_bn + ranks[None, :], mask=col_ok[:, None] & rank_ok[None, :], other=0.0)
    if UPCAST:
        b = b.to(tl.float32)
    low = (xa * scaling).to(b.dtype)  # (BLOCK_M, R_PAD), rounded as the unfused path stores x Aᵀ
    acc = tl.dot(low, tl.trans(b), acc, input_precision=DOT_PRECISION)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        acc += bias[None, :]
    out = Y_ptr + rows[:, None] * stride_ym + cols[None, :]
    tl.store(out, acc.to(Y_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


def triton_lora_forward(x: Tensor, weight: Tensor, bias: Tensor | None, lora_A: Tensor, lora_B: Tensor,
                        scaling: float) -> Tensor:
    """(M, K) x -> (M, N) y by the fused kernel (inputs already checked by ``lora_linear``)."""
    x, weight, lora_A, lora_B = x.contiguous(), weight.contiguous(), lora_A.contiguous(), lora_B.contiguous()
    m, k = x.shape
    n, r = weight.shape[0], lora_A.shape[0]
    y = torch.empty(m, n, device=x.device, dtype=x.dtype)
    r_pad = max(16, triton.next_power_of_2(r))  # tl.dot needs every dimension >= 16
    grid = (triton.cdiv(m, BLOCK_M), triton.cdiv(n, BLOCK_N))
    _lora_forward_kernel[grid](
        x, weight, lora_A, lora_B, bias if bias is not None else x, y,
        m, n, k, r, float(scaling),
        x.stride(0), weight.stride(0), lora_A.stride(0), lora_B.stride(0), y.stride(0),
        HAS_BIAS=bias is not None, R_PAD=r_pad, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K,
        UPCAST=interpreting() and x.dtype != torch.float32, DOT_PRECISION=_dot_precision(x.dtype),
    )
    return y
