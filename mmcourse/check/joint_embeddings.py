"""Checks for notebook 01 (joint embeddings).

Each exercise asks for more than the notebook shows above it: the cosine matrix of two sets at once, safe
for an empty bag of words; Recall@K when several gallery items are right for a query (any image of the same
colour and shape), pessimistic about ties; and the retrieval of an image by vector arithmetic across
modalities. The worked versions come after the checks, in the package (``mmcourse.retrieval``).

A wrong answer gets a message naming the case and expected against given; for the typical mistakes the
reference remembers, beside the value it returns, what each mistake would have returned on that case, and
the message says which one the answer matches (without the code).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F

from mmcourse.check.core import (
    AnswerError, Case, Exercise, diagnosis, expect_close, expect_equal, expect_tensor, register, remember,
)
from mmcourse.retrieval import analogy_search, cosine_similarity, recall_at_k

Tensor = torch.Tensor

# References record what each typical mistake would return on their case (check.core.remember);
# compare functions name the one an answer matches (check.core.diagnosis).


def _matches(given: Any, value: Any, atol: float) -> bool:
    try:
        g = torch.as_tensor(given, dtype=torch.float64)
        v = torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        return False
    return g.shape == v.shape and bool(torch.isfinite(v).all()) and bool(((g - v).abs() <= atol).all())


def _diagnose(given: Any, expected: Any, atol: float) -> str | None:
    """The typical mistakes ``given`` matches on this case (those that differ from the answer), or None."""
    found = []
    for why, wrong in diagnosis(expected)[0].items():
        value = wrong()
        if _matches(given, value, atol) and not _matches(value, expected, atol):
            found.append(why)
    return "; or ".join(found[:2]) if found else None


# ------------------------------------------------------------------------------------------- 01.cosine


def _cosine_reference(a: Tensor, b: Tensor) -> Tensor:
    expected = cosine_similarity(a, b)
    return remember(expected, {
        "it matches the plain dot products a @ b.T: divide by the lengths of the rows": lambda: a @ b.T,
        "it matches rows normalised along dim 0 (over the examples); each row (one vector) needs unit length":
            lambda: F.normalize(a, dim=0) @ F.normalize(b, dim=0).T,
        "it matches only a normalised, b left as it is": lambda: F.normalize(a, dim=1) @ b.T,
    })


def _cosine_compare(given: Any, expected: Tensor) -> None:
    name = "the similarity matrix"
    if isinstance(given, Tensor) and given.is_floating_point() and tuple(given.shape) == tuple(expected.shape):
        bad = ~torch.isfinite(given.detach())
        zero_rows = expected.abs().amax(dim=1) == 0
        if bad.any() and bool(zero_rows.any()) and bool(bad[~zero_rows].logical_not().all()):
            rows = zero_rows.nonzero().flatten().tolist()
            raise AnswerError(f"{name} contains NaN in row(s) {rows}: a row of zeros has no direction, and its "
                              "similarities should be 0, not 0 / 0")
    if isinstance(given, Tensor) and given.ndim == 2 and tuple(given.shape) == tuple(expected.shape[::-1]) \
            and expected.shape[0] != expected.shape[1]:
        raise AnswerError(f"{name} should have shape {tuple(expected.shape)} (one row per vector of a, one column "
                          f"per vector of b), got {tuple(given.shape)}: it is transposed")
    why = _diagnose(given, expected, atol=1e-5)
    if why:
        given = expect_tensor(given, name=name, shape=tuple(expected.shape), dtype="float")
        raise AnswerError(f"{name} has wrong values: {why}")
    expect_close(given, expected, name=name, atol=1e-5)


def _cosine_cases(g: torch.Generator) -> list[Case]:
    x = torch.randn(6, 16, generator=g)
    empty = torch.randn(4, 5, generator=g) * 3
    empty[2] = 0.0
    return [
        Case("random (5, 8) vs (7, 8)", (torch.randn(5, 8, generator=g), torch.randn(7, 8, generator=g))),
        Case("rows of very different lengths",
             (torch.randn(4, 3, generator=g) * torch.tensor([[1e-2], [1.0], [30.0], [5.0]]), torch.randn(6, 3, generator=g) * 7)),
        Case("a single pair (1, 2) vs (1, 2)", (torch.tensor([[3.0, 4.0]]), torch.tensor([[-4.0, 3.0]]))),
        Case("identical sets (6, 16)", (x, x.clone())),
        Case("a row of zeros in a (an empty bag of words: every word unknown)", (empty, torch.randn(3, 5, generator=g))),
    ]


register(
    Exercise(
        id="01.cosine",
        title="cosine similarity matrix",
        cases=_cosine_cases,
        reference=_cosine_reference,
        compare=_cosine_compare,
        hint="divide every row of a and of b by its length (norm along dim=1, keepdim=True), with the length "
        "clamped from below by a tiny number such as 1e-12 so that a zero row stays zero; then one matrix product "
        "a @ b.T gives the (N, M) matrix. torch.nn.functional.normalize does the division and the clamp.",
    )
)


# ------------------------------------------------------------------------------------------- 01.recall


def _recall_reference(similarity: Tensor, k: int, relevant: Tensor) -> float:
    expected = recall_at_k(similarity, k, relevant)
    sim, rel = similarity.double(), relevant.bool()
    n = sim.shape[0]

    def found_with(best: Tensor, ahead_of: Callable[[Tensor], Tensor]) -> float:
        return ((ahead_of(best) < k) & rel.any(dim=1)).double().mean().item()

    def pessimistic(best: Tensor) -> Tensor:
        return ((sim >= best[:, None]) & ~rel).sum(dim=1)

    best = sim.masked_fill(~rel, -math.inf).amax(dim=1)
    worst = sim.masked_fill(~rel, math.inf).amin(dim=1)
    first = sim.gather(1, rel.double().argmax(dim=1, keepdim=True)).squeeze(1)
    mistakes = {
        "it matches ties counted in the query's favour: an irrelevant item that scores exactly as high as the best "
        "relevant one ranks ahead of it": lambda: found_with(best, lambda b: ((sim > b[:, None]) & ~rel).sum(dim=1)),
        "it matches 'at most k items ahead' (one too many): the query is found when fewer than k irrelevant "
        "items score at least as high": lambda: found_with(best, lambda b: pessimistic(b) - 1),
        "it matches using the first relevant item of each row; a query is found when its best-scoring relevant "
        "item is among the top k": lambda: found_with(first, pessimistic),
        "it matches requiring every relevant item in the top k; one is enough": lambda: found_with(worst, pessimistic),
        "it matches the best relevant score taken from similarity * relevant: the masked-out entries become 0, "
        "which beats negative similarities": lambda: found_with((sim * rel).amax(dim=1), pessimistic),
        "it matches counting the found queries instead of their fraction": lambda: expected * n,
    }
    if sim.shape[0] == sim.shape[1]:
        mistakes["it matches counting only the diagonal as relevant; use the relevant matrix"] = \
            lambda: recall_at_k(similarity, k)
        mistakes["it matches taking the columns as queries; row i is query i"] = \
            lambda: recall_at_k(similarity.T, k, relevant.T)
    return remember(expected, mistakes)


def _recall_compare(given: Any, expected: float) -> None:
    name = "Recall@K"
    if isinstance(given, Tensor):
        if given.numel() != 1:
            raise AnswerError(f"{name} should be a single number (the fraction of queries found), got a tensor of "
                              f"shape {tuple(given.shape)}")
        given = given.item()
    if isinstance(given, bool) or not isinstance(given, (int, float)):
        raise AnswerError(f"{name} should be a number, got {type(given).__name__}")
    if given != given:
        raise AnswerError(f"{name} is NaN")
    if abs(given - expected) <= 1e-6:
        return
    why = _diagnose(given, expected, atol=1e-6)
    shown = f"expected {expected:.6g}, got {given:.6g}"
    raise AnswerError(f"{name} is wrong: {why} ({shown})" if why else f"{name} should be {expected:.6g}, got {given:.6g}")


def _recall_cases(g: torch.Generator) -> list[Case]:
    # diagonal ranked 1st, 2nd, 3rd, 4th by construction
    staged = torch.tensor([[0.9, 0.1, 0.2, 0.0], [0.8, 0.7, 0.1, 0.0], [0.1, 0.9, 0.5, 0.8], [0.9, 0.8, 0.7, 0.6]])
    eye4 = torch.eye(4, dtype=torch.bool)
    # six images in three classes (two each, in the order 0 1 2 0 1 2): a query is found by its best relevant
    # item, which is neither always its own column nor the first relevant column of its row
    pairs = torch.tensor([[27, 6, 33, 2, 10, 21],
                          [5, 32, 14, 25, 26, 28],
                          [9, 1, 8, 19, 4, 20],
                          [13, 15, 31, 34, 22, 17],
                          [0, 16, 3, 23, 12, 11],
                          [7, 18, 29, 30, 24, 35]]) / 40
    cls6 = torch.tensor([0, 1, 2, 0, 1, 2])
    rel6 = cls6[:, None] == cls6[None, :]
    # negative similarities: a relevant item at -0.2 is the best of its row, the masked zeros must not beat it
    negative = -torch.rand(5, 7, generator=g) - 0.3
    rel_neg = torch.zeros(5, 7, dtype=torch.bool)
    rel_neg[torch.arange(5), torch.tensor([0, 2, 4, 6, 1])] = True
    negative[rel_neg] = -0.2
    negative[torch.arange(3), torch.tensor([3, 3, 5])] = -0.1  # two irrelevant items above the match in rows 0-2
    negative[torch.arange(3), torch.tensor([4, 5, 6])] = -0.15
    # a rectangular case: 3 queries against a gallery of 8
    rect = torch.randn(3, 8, generator=g)
    rel_rect = torch.zeros(3, 8, dtype=torch.bool)
    rel_rect[0, [1, 5]] = True
    rel_rect[1, 2] = True
    rel_rect[2, [0, 3, 7]] = True
    no_match = torch.randn(4, 4, generator=g)
    rel_none = torch.eye(4, dtype=torch.bool)
    rel_none[1, 1] = False  # query 1 has nothing relevant in the gallery
    cls40 = torch.randint(8, (40,), generator=g)
    return [
        Case("4 queries, 4 items, one relevant item each (the diagonal), k = 1", (staged, 1, eye4)),
        Case("the same, k = 2", (staged, 2, eye4)),
        Case("6 images in 3 classes: two relevant items per query, k = 1", (pairs, 1, rel6)),
        Case("the same, k = 2", (pairs, 2, rel6)),
        Case("all similarities negative, one relevant item per query, k = 1", (negative, 1, rel_neg)),
        Case("5 x 5, all similarities equal (ties count against the query), k = 2",
             (torch.zeros(5, 5), 2, torch.eye(5, dtype=torch.bool))),
        Case("3 queries against a gallery of 8 (rectangular), k = 3", (rect, 3, rel_rect)),
        Case("a query with no relevant item in the gallery is never found, k = 2", (no_match, 2, rel_none)),
        Case("40 images in 8 classes, random similarities, k = 5",
             (torch.randn(40, 40, generator=g), 5, cls40[:, None] == cls40[None, :])),
    ]


register(
    Exercise(
        id="01.recall",
        title="Recall@K with several relevant items",
        cases=_recall_cases,
        reference=_recall_reference,
        compare=_recall_compare,
        hint="for each row, find the best score among its relevant columns (set the irrelevant ones to -inf before "
        "taking the max, e.g. with masked_fill); count the irrelevant columns that score at least that much; the "
        "query is found when that count is below k and the row has a relevant item at all. Return the mean over "
        "the rows as a float (.item()).",
    )
)


# --------------------------------------------------------------------------------------- 01.arithmetic


def _arithmetic_reference(image_emb: Tensor, minus_emb: Tensor, plus_emb: Tensor, gallery_emb: Tensor, k: int) -> Tensor:
    expected = analogy_search(image_emb, minus_emb, plus_emb, gallery_emb, k)
    unit = lambda t: F.normalize(t, dim=1)  # noqa: E731
    query = unit(image_emb) - unit(minus_emb) + unit(plus_emb)

    def top(q: Tensor, gallery: Tensor, largest: bool = True) -> Tensor:
        return (q @ gallery.T).topk(k, dim=1, largest=largest).indices

    return remember(expected, {
        "it matches the three terms added as they are; scale each of them to unit length first, or the longest "
        "one decides": lambda: top(unit(image_emb - minus_emb + plus_emb), unit(gallery_emb)),
        "it matches image + minus - plus: the signs are swapped": lambda: top(unit(unit(image_emb) + unit(minus_emb)
                                                                                  - unit(plus_emb)), unit(gallery_emb)),
        "it matches ranking by dot product with the gallery; rank by cosine (long gallery vectors must not win)":
            lambda: top(query, gallery_emb),
        "it matches the least similar items first; the most similar come first": lambda: top(unit(query), unit(gallery_emb), largest=False),
        "it matches the nearest items to the image alone; the words must move the query": lambda: top(unit(image_emb), unit(gallery_emb)),
    })


def _arithmetic_compare(given: Any, expected: Tensor) -> None:
    name = "the retrieved indices"
    if isinstance(given, Tensor) and given.is_floating_point():
        raise AnswerError(f"{name} should be an integer tensor of gallery indices (e.g. torch.long), got dtype "
                          f"{given.dtype}: return the positions of the best items, not their similarities")
    if isinstance(given, Tensor) and given.ndim == 2 and tuple(given.shape) != tuple(expected.shape):
        q, k = expected.shape
        raise AnswerError(f"{name} should have shape {(q, k)} (one row of k gallery indices per query), got "
                          f"{tuple(given.shape)}")
    why = _diagnose(given, expected, atol=0)
    if why:
        raise AnswerError(f"{name} are wrong: {why}")
    expect_equal(given, expected, name=name)


def _arithmetic_cases(g: torch.Generator) -> list[Case]:
    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    # 2-d: the image is long, the words are short; added as they are, the image alone decides
    image, minus, plus = torch.tensor([[8.0, 0.0]]), torch.tensor([[0.5, 0.0]]), torch.tensor([[0.0, 0.5]])
    angles = torch.tensor([0.0, 0.6, 0.9, 1.3, 2.0])
    gallery2 = torch.stack([angles.cos(), angles.sin()], dim=1) * torch.tensor([[1.0], [2.0], [1.0], [0.5], [1.0]])
    return [
        Case("a batch of 6 queries, D = 16, gallery of 50, k = 5", (randn(6, 16), randn(6, 16), randn(6, 16), randn(50, 16), 5)),
        Case("3 queries, terms of very different lengths (images x 10, words x 0.1), gallery of 20, k = 3",
             (randn(3, 8) * 10, randn(3, 8) * 0.1, randn(3, 8) * 0.1, randn(20, 8), 3)),
        Case("gallery vectors of very different lengths (rank by cosine), k = 4",
             (randn(2, 6), randn(2, 6), randn(2, 6), randn(30, 6) * torch.logspace(-1, 1, 30, dtype=torch.float64)[:, None], 4)),
        Case("k = gallery size: the whole gallery of 7, ranked", (randn(2, 4), randn(2, 4), randn(2, 4), randn(7, 4), 7)),
        Case("one query, k = 1", (randn(1, 12), randn(1, 12), randn(1, 12), randn(25, 12), 1)),
        Case("2-d: one image of length 8, two words of length 0.5, a gallery of 5, k = 2",
             (image.double(), minus.double(), plus.double(), gallery2.double(), 2)),
    ]


register(
    Exercise(
        id="01.arithmetic",
        title="retrieval by vector arithmetic",
        cases=_arithmetic_cases,
        reference=_arithmetic_reference,
        compare=_arithmetic_compare,
        hint="scale each of image_emb, minus_emb and plus_emb to unit length (row by row), form the queries "
        "image - minus + plus (Q, D), take their cosine similarity with every gallery row (Q, G) and return "
        "torch.topk(..., k, dim=1).indices, which lists the most similar first.",
    )
)
