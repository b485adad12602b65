"""The CLIP loss in plain PyTorch, a block of rows at a time: O(N*D + N*chunk) memory instead of O(N^2).

The naive loss builds the (N, N) logits, two log-softmaxes of them and, in backward, their gradients:
a few N x N matrices at once (1 GiB each in fp32 at N = 16384). But the loss only needs two vectors
of log-sum-exps, one per row and one per column of the logits, and the gradient of the loss with
respect to the logits has a closed form:

    G[i, j] = 1/(2N) * (P[i, j] + Q[i, j] - 2 * [i == j]),   P[i, j] = exp(Z[i, j] - lse_row[i])
                                                              Q[i, j] = exp(Z[i, j] - lse_col[j])

so both passes can walk over the rows of ``Z = s * I @ T.T`` a chunk at a time and forget each chunk:

- forward: each chunk of rows gives its rows' log-sum-exps outright, and a partial log-sum-exp for
  every column that is folded into a running total with ``logaddexp``;
- backward: each chunk is recomputed from I and T, turned into its rows of G, and contributes
  ``dI[chunk] = s * G_chunk @ T``, ``dT += s * G_chunk.T @ I[chunk]`` and ``ds += sum(G_chunk * S_chunk)``.

This is the same algorithm as the Triton kernel, with chunks of rows instead of tiles, and matrix
multiplications left to PyTorch; it runs anywhere PyTorch runs.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor

# Elements of one (chunk, N) block of logits: 4 Mi floats = 16 MiB in fp32; the backward holds about
# three such blocks at a time.
CHUNK_ELEMENTS = 1 << 22


def default_chunk_size(n: int) -> int:
    """Rows per chunk for a batch of ``n``: as many as fit in ``CHUNK_ELEMENTS`` logits, at least 1."""
    return max(1, min(n, CHUNK_ELEMENTS // max(n, 1)))


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


class ChunkedClipLoss(torch.autograd.Function):
    """Two passes over chunks of rows; backward recomputes each chunk instead of storing N x N."""

    @staticmethod
    def forward(ctx, image_features: Tensor, text_features: Tensor, logit_scale: Tensor, chunk_size: int) -> Tensor:
        dtype = _compute_dtype(image_features.dtype)
        img, txt = image_features.to(dtype), text_features.to(dtype)  # (N, D); no copy when already fp32
        s = logit_scale.detach().to(device=img.device, dtype=dtype).reshape(())
        n = img.shape[0]
        lse_row = torch.empty(n, device=img.device, dtype=dtype)
        lse_col = torch.full((n,), float("-inf"), device=img.device, dtype=dtype)
        for start in range(0, n, chunk_size):
            stop = min(start + chunk_size, n)
            z = torch.mm(img[start:stop], txt.T).mul_(s)  # (chunk, N) logits
            lse_row[start:stop] = torch.logsumexp(z, dim=1)
            lse_col = torch.logaddexp(lse_col, torch.logsumexp(z, dim=0))
        diag = s * (img * txt).sum(dim=1)  # (N,) logits of the positive pairs
        loss = 0.5 * ((lse_row - diag).mean() + (lse_col - diag).mean())
        ctx.save_for_backward(image_features, text_features, logit_scale, lse_row, lse_col)
        ctx.chunk_size = chunk_size
        return loss

    @staticmethod
    def backward(ctx, grad_loss: Tensor):
        image_features, text_features, logit_scale, lse_row, lse_col = ctx.saved_tensors
        dtype = lse_row.dtype
        img, txt = image_features.to(dtype), text_features.to(dtype)
        s = logit_scale.detach().to(device=img.device, dtype=dtype).reshape(())
        n = img.shape[0]
        coef = grad_loss.to(dtype) * (0.5 / n)
        d_img = torch.empty_like(img)
        d_txt = torch.zeros_like(txt)
        d_scale = torch.zeros((), device=img.device, dtype=dtype)
        for start in range(0, n, ctx.chunk_size):
            stop = min(start + ctx.chunk_size, n)
            sim = torch.mm(img[start:stop], txt.T)  # (chunk, N) cosine similarities
            z = sim * s
            g = (z - lse_row[start:stop, None]).exp_()  # row softmax P
            g += z.sub_(lse_col[None, :]).exp_()  # + column softmax Q (z is reused in place)
            del z
            g.diagonal(offset=start).sub_(2.0)  # - 2 where the pair is positive
            g *= coef  # (chunk, N): dLoss/dZ for these rows
            d_scale += torch.dot(g.flatten(), sim.flatten())
            del sim
            g *= s  # dLoss/d(I @ T.T)
            d_img[start:stop] = g @ txt
            d_txt.addmm_(g.T, img[start:stop])
        grads = [d_img.to(image_features.dtype), d_txt.to(text_features.dtype)]
        grads.append(d_scale.reshape(logit_scale.shape).to(logit_scale.dtype) if ctx.needs_input_grad[2] else None)
        return grads[0], grads[1], grads[2], None


def chunked_clip_loss(
    image_features: Tensor, text_features: Tensor, logit_scale: Tensor, *, chunk_size: int | None = None
) -> Tensor:
    """The CLIP loss in chunks of ``chunk_size`` rows (default: :func:`default_chunk_size`).

    Inputs as in ``fused_clip_loss`` (already checked there); ``logit_scale`` a tensor with one element.
    Returns the loss in fp32 (fp64 for fp64 features).
    """
    n = image_features.shape[0]
    chunk = default_chunk_size(n) if chunk_size is None else int(chunk_size)
    if chunk < 1:
        raise ValueError(f"chunk_size must be a positive number of rows, got {chunk_size}")
    return ChunkedClipLoss.apply(image_features, text_features, logit_scale, chunk)
