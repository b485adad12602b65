"""Audio as tokens: residual vector quantisation (RVQ), the quantiser of SoundStream and EnCodec.

One codebook of K vectors turns a frame into one of K tokens: log2 K bits, a coarse approximation.
RVQ spends more bits by quantising what is left: the first codebook quantises the frame, the second
the residual (frame minus the first code), the third what the first two missed, and so on::

    r_0 = x;   c_q = nearest(r_{q-1}, codebook_q);   r_q = r_{q-1} - codebook_q[c_q];   x_hat = sum_q codebook_q[c_q]

A frame becomes ``n_q`` tokens, one per codebook; keeping only the first few gives a coarser copy, so
the first codebook carries the most (VALL-E's figure) and a codec can trade bitrate for quality by
dropping the last ones (EnCodec: 2, 4, 8, 16 or 32 codebooks of 1024 for 1.5 to 24 kbps at 75 frames
per second). The lookup is ``mmcourse.dvae.nearest_code`` (the VQ-VAE's, notebook 07). Codebooks here are
learned as RVQ was first trained: k-means on each stage's residuals, one stage after the other.
"""

from __future__ import annotations

import math

import torch

from mmcourse.dvae import codebook_usage, nearest_code

Tensor = torch.Tensor

__all__ = ["nearest_code", "codebook_usage", "residual_quantize", "residual_decode", "kmeans", "fit_residual_codebooks",
           "bitrate"]


def _check_codebooks(x: Tensor, codebooks: Tensor) -> None:
    if codebooks.ndim != 3:
        raise ValueError(f"codebooks must be (n_q, K, D), got shape {tuple(codebooks.shape)}")
    if x.shape[-1] != codebooks.shape[-1]:
        raise ValueError(f"vectors (..., D={x.shape[-1]}) and codebooks (n_q, K, D={codebooks.shape[-1]}) must share D")


def residual_quantize(x: Tensor, codebooks: Tensor, n_q: int | None = None) -> tuple[Tensor, Tensor]:
    """RVQ with the first ``n_q`` (default: all) of ``codebooks`` (n_q, K, D): x (..., D) ->
    (codes (..., n_q) long, x_hat (..., D), the sum of the chosen codes)."""
    _check_codebooks(x, codebooks)
    n_q = codebooks.shape[0] if n_q is None else n_q
    if not 1 <= n_q <= codebooks.shape[0]:
        raise ValueError(f"n_q must be between 1 and {codebooks.shape[0]}, got {n_q}")
    residual, x_hat, codes = x, torch.zeros_like(x), []
    for book in codebooks[:n_q]:
        c = nearest_code(residual, book)  # (...)
        chosen = book[c]  # (..., D)
        x_hat = x_hat + chosen
        residual = residual - chosen
        codes.append(c)
    return torch.stack(codes, dim=-1), x_hat


def residual_decode(codes: Tensor, codebooks: Tensor) -> Tensor:
    """codes (..., n) with n <= n_q -> the sum of the first n codebooks' chosen vectors (..., D)."""
    if codes.shape[-1] > codebooks.shape[0]:
        raise ValueError(f"{codes.shape[-1]} codes per frame but only {codebooks.shape[0]} codebooks")
    return sum(codebooks[q][codes[..., q]] for q in range(codes.shape[-1]))


def kmeans(x: Tensor, k: int, *, iters: int = 20, seed: int = 0) -> Tensor:
    """``k`` centroids (k, D) of the rows of ``x`` (N, D): k-means++ seeding from a seeded generator, then
    Lloyd iterations; a centroid that loses all its points jumps onto the worst-served point."""
    if x.ndim != 2 or x.shape[0] < k:
        raise ValueError(f"k-means needs (N, D) data with N >= k = {k}, got shape {tuple(x.shape)}")
    g = torch.Generator().manual_seed(seed)
    centroids = x[torch.randint(x.shape[0], (1,), generator=g)]
    for _ in range(1, k):  # k-means++: the next centroid far from the ones chosen
        d2 = torch.cdist(x, centroids).min(dim=1).values ** 2
        centroids = torch.cat([centroids, x[torch.multinomial(d2 + 1e-12, 1, generator=g)]])
    for _ in range(iters):
        assign = nearest_code(x, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        empty = counts == 0
        centroids = torch.where(empty[:, None], centroids, sums / counts.clamp(min=1)[:, None])
        if empty.any():  # dead centroids restart on the points farthest from their code
            err = (x - centroids[nearest_code(x, centroids)]).pow(2).sum(1)
            far = err.topk(int(empty.sum())).indices
            centroids[empty] = x[far]
    return centroids


def fit_residual_codebooks(x: Tensor, n_q: int, k: int, *, iters: int = 20, seed: int = 0) -> Tensor:
    """``n_q`` codebooks (n_q, k, D) for the rows of ``x`` (N, D), each k-means on the residuals the
    codebooks before it leave."""
    residual, books = x, []
    for q in range(n_q):
        book = kmeans(residual, k, iters=iters, seed=seed + q)
        residual = residual - book[nearest_code(residual, book)]
        books.append(book)
    return torch.stack(books)


def bitrate(n_q: int, codebook_size: int, frames_per_second: float) -> float:
    """Bits per second of RVQ tokens: n_q log2(K) bits per frame (EnCodec at 24 kHz: 75 frames/s,
    K = 1024, so 8 codebooks are 6 kbps)."""
    return n_q * math.log2(codebook_size) * frames_per_second
