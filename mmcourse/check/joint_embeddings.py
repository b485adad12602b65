"""Checks for notebook 01 (joint embeddings)."""

from __future__ import annotations

import torch

from mmcourse.attributes import class_signatures, predict_by_signature
from mmcourse.check.core import Case, Exercise, expect_close, expect_equal, expect_number, register
from mmcourse.retrieval import cosine_similarity, recall_at_k


def _cosine_cases(g: torch.Generator) -> list[Case]:
    return [
        Case("random (5, 8) vs (7, 8)", (torch.randn(5, 8, generator=g), torch.randn(7, 8, generator=g))),
        Case("rows of very different lengths", (torch.randn(4, 3, generator=g) * torch.tensor([[1e-2], [1.0], [30.0], [5.0]]), torch.randn(6, 3, generator=g) * 7)),
        Case("a single pair (1, 2) vs (1, 2)", (torch.tensor([[3.0, 4.0]]), torch.tensor([[-4.0, 3.0]]))),
        Case("identical sets (6, 16)", (x := torch.randn(6, 16, generator=g), x.clone())),
    ]


register(
    Exercise(
        id="01.cosine",
        title="cosine similarity matrix",
        cases=_cosine_cases,
        reference=cosine_similarity,
        compare=lambda given, expected: expect_close(given, expected, name="the similarity matrix", atol=1e-5),
        hint="normalise every row of a and of b to unit length (dim=1), then take a @ b.T; the result is (N, M).",
    )
)


def _recall_cases(g: torch.Generator) -> list[Case]:
    # diagonal ranked 1st, 2nd, ... by construction, then random matrices (no ties)
    staged = torch.tensor([[0.9, 0.1, 0.2, 0.0], [0.8, 0.7, 0.1, 0.0], [0.1, 0.9, 0.5, 0.8], [0.9, 0.8, 0.7, 0.6]])
    rand = torch.randn(20, 20, generator=g)
    rand_eye = torch.randn(12, 12, generator=g) + 2.0 * torch.eye(12)
    return [
        Case("4x4, diagonal ranked 1st, 2nd, 3rd, 4th, k=1", (staged, 1)),
        Case("4x4, diagonal ranked 1st, 2nd, 3rd, 4th, k=2", (staged, 2)),
        Case("4x4, k=4 (everything is found)", (staged, 4)),
        Case("random 20x20, k=5", (rand, 5)),
        Case("random 12x12 with a strong diagonal, k=1", (rand_eye, 1)),
        Case("random 12x12 with a strong diagonal, k=3", (rand_eye, 3)),
        Case("5x5, all similarities equal (ties count against the match), k=2", (torch.zeros(5, 5), 2)),
    ]


register(
    Exercise(
        id="01.recall",
        title="Recall@K",
        cases=_recall_cases,
        reference=recall_at_k,
        compare=lambda given, expected: expect_number(given, expected, name="Recall@K", atol=1e-6),
        hint="row i is query i and its match is column i; a query is found when fewer than k other entries of its "
        "row score at least as high as the match (ties count against it); return the found fraction as a float.",
    )
)


def _attribute_cases(g: torch.Generator) -> list[Case]:
    classes = [("red", "square"), ("red", "triangle"), ("blue", "square"), ("green", "circle")]
    sig = class_signatures(classes)
    perfect = sig[[1, 0, 3, 2]]
    noisy = (sig[[2, 2, 1, 0, 3]] + 0.3 * torch.rand(5, sig.shape[1], generator=g)).softmax(1)
    scaled = sig[[3, 1]] * torch.tensor([[5.0], [0.2]])
    # signatures of different lengths: a dot product prefers the class with more attributes
    uneven = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    uneven_scores = torch.tensor([[1.0, 0.2, 0.0, 0.0], [0.1, 0.0, 0.9, 0.8], [0.9, 0.8, 0.7, 0.0]])
    big = class_signatures([(c, s) for c in ("red", "blue", "pink") for s in ("star", "heart", "cross")])
    scores = torch.rand(10, big.shape[1], generator=g)
    return [
        Case("perfect attribute predictions, 4 classes", (perfect, sig)),
        Case("noisy probabilities, 4 classes", (noisy, sig)),
        Case("scores of different magnitudes", (scaled, sig)),
        Case("signatures with different numbers of attributes (cosine, not dot product)", (uneven_scores, uneven)),
        Case("random scores, 9 classes", (scores, big)),
    ]


register(
    Exercise(
        id="01.attributes",
        title="attribute-based zero-shot prediction",
        cases=_attribute_cases,
        reference=predict_by_signature,
        compare=lambda given, expected: expect_equal(given, expected, name="the predicted class indices"),
        hint="compare each row of attribute scores (N, A) with every class signature (C, A) by cosine similarity, "
        "giving (N, C), and return the argmax over classes as a long tensor of shape (N,).",
    )
)
