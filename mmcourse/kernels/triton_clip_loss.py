"""The CLIP loss as two Triton kernels that tile the N x N similarity matrix and never store it.

Imported only when ``fused_clip_loss(..., backend="triton")`` (or ``"auto"`` on a GPU) runs, so that
``import mmcourse`` stays fast and works where Triton is missing.

The loss needs, for every row i and every column j of the logits ``Z = s * I @ T.T``, a log-sum-exp:

    lse_row[i] = log sum_j exp(Z[i, j])        (image i against every text)
    lse_col[j] = log sum_i exp(Z[i, j])        (text j against every image)
    loss = 1/2 * (mean_i (lse_row[i] - Z[i, i]) + mean_j (lse_col[j] - Z[j, j]))

Forward (``_clip_lse_kernel``), one program per block of BLOCK_M rows, walking over all column blocks:

- the (BLOCK_M, BLOCK_N) tile of Z is computed in registers, BLOCK_D features at a time;
- the row statistics are kept *online*, as in FlashAttention: a running max ``m`` and a running sum
  ``l`` of ``exp(Z - m)``, rescaled by ``exp(m_old - m_new)`` whenever the max grows;
- the column statistics cannot be finished by one program (a column meets every row block), so each
  program writes, for every column, the log-sum-exp over its own BLOCK_M rows into a buffer of shape
  (num_row_blocks, N); one ``logsumexp`` over the first axis on the host merges them. That costs
  N * N / BLOCK_M floats (1/64 of the N x N fp32 logits at BLOCK_M = 64; 1 GiB at N = 131072), keeps the
  kernel free of atomics and the result deterministic. (Atomics would need a max and a sum updated
  together, which no single atomic does.)
- the diagonal ``Z[i, i]`` is picked out of whichever tile holds it.

Backward. With ``P = softmax over rows`` and ``Q = softmax over columns`` of Z, the gradient of the loss
with respect to the logits is

    G[i, j] = 1/(2N) * (P[i, j] + Q[i, j] - 2 * [i == j]),   P = exp(Z - lse_row[:, None]),
                                                              Q = exp(Z - lse_col[None, :])

and ``dI = s * G @ T``, ``dT = s * G.T @ I``, ``d s = sum_ij G[i, j] * (I @ T.T)[i, j]``. G is symmetric
in the roles of (I, lse_row) and (T, lse_col), so one kernel (``_clip_grad_kernel``) computes
``dA = s * G @ B`` for a block of rows of A, recomputing each tile of Z from A and B; it runs twice,
once with (A, B) = (I, T) and once with (T, I). Each program owns its rows of dA, so it accumulates
them in place (fp32, in global memory, BLOCK_D columns at a time, which keeps large D out of the
registers) without atomics. Recomputing Z in both passes costs 10 N^2 D FLOPs for forward + backward
instead of the 8 N^2 D of a single fused backward with atomic adds: deterministic, and simple.

Precision: inputs may be fp32, fp16 or bf16; every tile of logits, the exponentials and all
accumulators are fp32. The kernels also run in Triton's CPU interpreter (``TRITON_INTERPRET=1`` set
before triton is first imported), which mishandles bf16 arithmetic, so there every tile is upcast to
fp32 right after it is loaded.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

Tensor = torch.Tensor

# A starting point, not tuned on a GPU yet: 64 x 64 tiles of logits, 64 features at a time.
BLOCK_M = 64
BLOCK_N = 64
BLOCK_D = 64


@triton.jit
def _clip_lse_kernel(
    I_ptr, T_ptr, scale_ptr,  # (N, D), (N, D), (1,) fp32
    lse_row_ptr, diag_ptr,  # (N,) fp32 outputs
    col_lse_ptr,  # (num_row_blocks, N) fp32 output: per row block, the log-sum-exp of each column
    N, D, stride_i, stride_t,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < N
    s = tl.load(scale_ptr)
    m = tl.full([BLOCK_M], float("-inf"), tl.float32)  # running row max
    l = tl.zeros([BLOCK_M], tl.float32)  # running row sum of exp(Z - m)
    diag = tl.zeros([BLOCK_M], tl.float32)
    for n0 in range(0, N, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        col_ok = cols < N
        sim = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)  # (BLOCK_M, BLOCK_N) tile of I @ T.T
        for d0 in range(0, D, BLOCK_D):
            feats = d0 + tl.arange(0, BLOCK_D)
            a = tl.load(I_ptr + rows[:, None] * stride_i + feats[None, :], mask=row_ok[:, None] & (feats[None, :] < D), other=0.0)
            b = tl.load(T_ptr + cols[:, None] * stride_t + feats[None, :], mask=col_ok[:, None] & (feats[None, :] < D), other=0.0)
            if UPCAST:
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            sim = tl.dot(a, tl.trans(b), sim, input_precision=DOT_PRECISION)
        z = s * sim
        # rows: online log-sum-exp over the valid columns (every column block has at least one)
        z_row = tl.where(col_ok[None, :], z, float("-inf"))
        m_new = tl.maximum(m, tl.max(z_row, axis=1))
        l = l * tl.exp(m - m_new) + tl.sum(tl.exp(z_row - m_new[:, None]), axis=1)
        m = m_new
        # columns: this row block's partial max and sum over its valid rows (it has at least one)
        z_col = tl.where(row_ok[:, None], z, float("-inf"))
        c_max = tl.max(z_col, axis=0)
        c_lse = c_max + tl.log(tl.sum(tl.exp(z_col - c_max[None, :]), axis=0))
        tl.store(col_lse_ptr + pid * N + cols, c_lse, mask=col_ok)
        # the positive pair of each row, wherever its tile is
        diag += tl.sum(tl.where(rows[:, None] == cols[None, :], z, 0.0), axis=1)
    tl.store(lse_row_ptr + rows, m + tl.log(l), mask=row_ok)
    tl.store(diag_ptr + rows, diag, mask=row_ok)


@triton.jit
def _clip_grad_kernel(
    A_ptr, B_ptr, scale_ptr,  # (N, D), (N, D), (1,) fp32
    lse_a_ptr, lse_b_ptr,  # (N,) fp32: log-sum-exp along A's rows, along B's rows
    dA_ptr,  # (N, D) fp32, zero-initialised: receives 2N * s * G @ B
    ds_ptr,  # (num_row_blocks,) fp32: per program, sum of 2N * G * (A @ B.T) (only if WITH_DS)
    N, D, stride_a, stride_b,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr, WITH_DS: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < N
    s = tl.load(scale_ptr)
    lse_a = tl.load(lse_a_ptr + rows, mask=row_ok, other=0.0)
    ds = tl.zeros([BLOCK_M], tl.float32)
    for n0 in range(0, N, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        col_ok = cols < N
        sim = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)  # recompute the tile of A @ B.T
        for d0 in range(0, D, BLOCK_D):
            feats = d0 + tl.arange(0, BLOCK_D)
            a = tl.load(A_ptr + rows[:, None] * stride_a + feats[None, :], mask=row_ok[:, None] & (feats[None, :] < D), other=0.0)
            b = tl.load(B_ptr + cols[:, None] * stride_b + feats[None, :], mask=col_ok[:, None] & (feats[None, :] < D), other=0.0)
            if UPCAST:
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            sim = tl.dot(a, tl.trans(b), sim, input_precision=DOT_PRECISION)
        z = s * sim
        lse_b = tl.load(lse_b_ptr + cols, mask=col_ok, other=0.0)
        # 2N * dLoss/dZ for this tile: row softmax + column softmax - 2 on the diagonal. The 1/(2N)
        # is applied on the host: at large N it would push fp16 tiles below fp16's smallest number.
        g = tl.exp(z - lse_a[:, None]) + tl.exp(z - lse_b[None, :])
        g = tl.where(rows[:, None] == cols[None, :], g - 2.0, g)
        g = tl.where(row_ok[:, None] & col_ok[None, :], g, 0.0)
        if WITH_DS:
            ds += tl.sum(g * sim, axis=1)
        g = g * s
        if not UPCAST:
            g = g.to(B_ptr.dtype.element_ty)  # tensor-core dot in the input precision, as FlashAttention does
        for d0 in range(0, D, BLOCK_D):
            feats = d0 + tl.arange(0, BLOCK_D)
            b = tl.load(B_ptr + cols[:, None] * stride_b + feats[None, :], mask=col_ok[:, None] & (feats[None, :] < D), other=0.0)
            if UPCAST:
                b = b.to(tl.float32)
            out = dA_ptr + rows[:, None] * D + feats[None, :]
            out_ok = row_ok[:, None] & (feats[None, :] < D)
            acc = tl.load(out, mask=out_ok, other=0.0)
            acc = tl.dot(g, b, acc, input_precision=DOT_PRECISION)
            tl.store(out, acc, mask=out_ok)
    if WITH_DS:
        tl.store(ds_ptr + pid, tl.sum(ds, axis=0))


def interpreting() -> bool:
    """True when the kernels run in Triton's CPU interpreter (``TRITON_INTERPRET=1``).

    Triton reads ``TRITON_INTERPRET`` once, when it is first imported: that is when ``@triton.jit``
    wraps both these kernels and Triton's own helpers (``tl.zeros``, ``tl.sum``, ...) for the GPU
    compiler or for the interpreter. Setting the variable later changes nothing, so a mismatch is an error.
    """
    wanted = os.environ.get("TRITON_INTERPRET", "0") == "1"
    wrapped = type(_clip_lse_kernel).__name__ == "InterpretedFunction"
    if wanted != wrapped:
        raise RuntimeError(
            f"TRITON_INTERPRET is {'1' if wanted else 'not 1'} now but was {'1' if wrapped else 'not 1'} when triton "
            "was first imported, and Triton only reads it then: set it before anything imports triton (in the "
            "shell, or at the very top of the script), or restart the Python process"
        )
    return wrapped


def _dot_precision(dtype: torch.dtype) -> str:
    # fp32 inputs: TF32 tensor cores only where torch itself allows them for matmuls
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"
    return "tf32"


class TritonClipLoss(torch.autograd.Function):
    """Forward: row and column log-sum-exp in one pass over tiles. Backward: tiles recomputed."""

    @staticmethod
    def forward(ctx, image_features: Tensor, text_features: Tensor, logit_scale: Tensor) -> Tensor:
        img, txt = image_features.contiguous(), text_features.contiguous()
        n, d = img.shape
        upcast = interpreting() and img.dtype != torch.float32  # the interpreter handles fp32 fine
        scale = logit_scale.detach().reshape(1).to(device=img.device, dtype=torch.float32)
        row_blocks = triton.cdiv(n, BLOCK_M)
        lse_row = torch.empty(n, device=img.device, dtype=torch.float32)
        diag = torch.empty(n, device=img.device, dtype=torch.float32)
        col_lse = torch.empty(row_blocks, n, device=img.device, dtype=torch.float32)  # (row blocks, N)
        _clip_lse_kernel[(row_blocks,)](
            img, txt, scale, lse_row, diag, col_lse, n, d, img.stride(0), txt.stride(0),
            BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_D=BLOCK_D, UPCAST=upcast, DOT_PRECISION=_dot_precision(img.dtype),
        )
        # merge the row blocks' partial log-sum-exps of each column
        lse_col = torch.logsumexp(col_lse, dim=0)
        del col_lse
        loss = 0.5 * ((lse_row - diag).mean() + (lse_col - diag).mean())
        ctx.save_for_backward(img, txt, scale, lse_row, lse_col)
        ctx.scale_like = (logit_scale.shape, logit_scale.dtype)
        return loss  # fp32, as under autocast

    @staticmethod
    def backward(ctx, grad_loss: Tensor):
        img, txt, scale, lse_row, lse_col = ctx.saved_tensors
        n, d = img.shape
        upcast = interpreting() and img.dtype != torch.float32  # the interpreter handles fp32 fine
        precision = _dot_precision(img.dtype)
        blocks = triton.cdiv(n, BLOCK_M)
        common = dict(BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_D=BLOCK_D, UPCAST=upcast, DOT_PRECISION=precision)
        d_img = torch.zeros(n, d, device=img.device, dtype=torch.float32)
        d_txt = torch.zeros(n, d, device=img.device, dtype=torch.float32)
        ds = torch.empty(blocks, device=img.device, dtype=torch.float32)
        want_ds = ctx.needs_input_grad[2]
        _clip_grad_kernel[(blocks,)](
            img, txt, scale, lse_row, lse_col, d_img, ds, n, d, img.stride(0), txt.stride(0),
            WITH_DS=want_ds, **common,
        )
        _clip_grad_kernel[(blocks,)](
            txt, img, scale, lse_col, lse_row, d_txt, ds, n, d, txt.stride(0), img.stride(0),
            WITH_DS=False, **common,
        )
        g = grad_loss.float() * (0.5 / n)  # the 1/(2N) of G, times the incoming gradient
        d_scale = None
        if want_ds:
            shape, dtype = ctx.scale_like
            d_scale = (ds.sum() * g).reshape(shape).to(dtype)
        return (d_img * g).to(img.dtype), (d_txt * g).to(txt.dtype), d_scale


def triton_clip_loss(image_features: Tensor, text_features: Tensor, logit_scale: Tensor) -> Tensor:
    """The CLIP loss by the Triton kernels (inputs already checked by ``fused_clip_loss``)."""
    return TritonClipLoss.apply(image_features, text_features, logit_scale)
