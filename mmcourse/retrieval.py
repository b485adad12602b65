"""Cross-modal retrieval in a shared embedding space: cosine similarity, top-k, Recall@K."""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def cosine_similarity(a: Tensor, b: Tensor) -> Tensor:
    """All pairwise cosine similarities: ``a`` (N, D), ``b`` (M, D) -> (N, M).

    cos(a_i, b_j) = a_i . b_j / (|a_i| |b_j|): the dot product of the L2-normalised rows.
    """
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected (N, D) and (M, D) with the same D, got {tuple(a.shape)} and {tuple(b.shape)}")
    return F.normalize(a, dim=1) @ F.normalize(b, dim=1).T


def retrieve(similarity: Tensor, k: int) -> Tensor:
    """Indices (N, k) of the ``k`` most similar gallery items (columns) for each query (row)."""
    return similarity.topk(min(k, similarity.shape[1]), dim=1).indices


def recall_at_k(similarity: Tensor, k: int, relevant: Tensor | None = None) -> float:
    """Fraction of queries (rows) with a relevant item among their ``k`` most similar columns.

    Without ``relevant``, query ``i``'s only relevant item is column ``i`` (the paired item), and a
    query counts as found when fewer than ``k`` columns score strictly higher than it. With
    ``relevant`` (a boolean (N, M) matrix), a query is found when fewer than ``k`` irrelevant columns
    score at least as high as its best relevant column.
    Ties count against the query: a column scoring exactly as high as the match ranks ahead of it, so
    a collapsed embedding (all similarities equal) finds nothing rather than everything.
    """
    if similarity.ndim != 2:
        raise ValueError(f"similarity must be (N, M), got shape {tuple(similarity.shape)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if relevant is None:
        n = min(similarity.shape)
        positive = similarity[torch.arange(n), torch.arange(n)]
        rank = (similarity[:n] >= positive[:, None]).sum(dim=1) - 1  # the match ties with itself
        return (rank < k).float().mean().item()
    if relevant.shape != similarity.shape:
        raise ValueError(f"relevant must have the shape of similarity {tuple(similarity.shape)}, got {tuple(relevant.shape)}")
    relevant = relevant.bool()
    best = similarity.masked_fill(~relevant, float("-inf")).amax(dim=1)  # the best relevant score per query
    ahead = ((similarity >= best[:, None]) & ~relevant).sum(dim=1)  # irrelevant items at least as high
    return ((ahead < k) & relevant.any(dim=1)).float().mean().item()


def recall_table(image_emb: Tensor, text_emb: Tensor, relevant: Tensor, ks: tuple[int, ...] = (1, 5, 10)) -> dict:
    """Recall@K both ways for paired embeddings; ``relevant[i, j]`` says text ``j`` describes image ``i``.

    Returns ``{"image→text": {k: recall}, "text→image": {k: recall}}``.
    """
    sim = cosine_similarity(image_emb, text_emb)
    return {
        "image→text": {k: recall_at_k(sim, k, relevant) for k in ks},
        "text→image": {k: recall_at_k(sim.T, k, relevant.T) for k in ks},
    }


def analogy_search(image_emb: Tensor, minus_emb: Tensor, plus_emb: Tensor, gallery_emb: Tensor, k: int) -> Tensor:
    """Vector arithmetic across modalities (Kiros et al.): the ``k`` gallery items nearest to
    image - minus + plus, each of the three terms first scaled to unit length so that each counts once.

    ``image_emb``, ``minus_emb``, ``plus_emb`` (Q, D), one row per query; ``gallery_emb`` (G, D).
    Returns (Q, k) gallery indices, most cosine-similar first.
    """
    query = F.normalize(image_emb, dim=1) - F.normalize(minus_emb, dim=1) + F.normalize(plus_emb, dim=1)
    return retrieve(cosine_similarity(query, gallery_emb), k)
