"""Checks for notebook 04 (prompt learning).

The exercises ask for what the notebook builds only for one case before them: the prompt embeddings with
the class token at any of CoOp's three positions, CoCoOp's image-conditioned context (the meta-net's
shift added to every context vector), and decoding context vectors to their nearest vocabulary words.

A wrong answer gets a message naming the case and expected against given; for typical mistakes the
reference remembers what each would have returned on that case, and the message says which one the answer
matches.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from mmcourse.check.core import (AnswerError, Case, Exercise, diagnosis, expect_close, expect_equal, expect_tensor,
                                 register, remember)
from mmcourse.prompting import context_slots

Tensor = torch.Tensor


def _matches(given: Tensor, expected: Tensor, mistakes: dict[str, Callable[[], Any]], *, exact: bool = False) -> list[str]:
    out = []
    for why, wrong in mistakes.items():
        value = wrong()
        if not isinstance(value, Tensor) or value.shape != given.shape or value.shape != expected.shape:
            if isinstance(value, Tensor) and value.shape == given.shape and value.shape != expected.shape:
                out.append(why)
            continue
        same = torch.equal(value, given) if exact else torch.allclose(value.double(), given.double(), atol=1e-5)
        differs = not (torch.equal(value, expected) if exact else torch.allclose(value.double(), expected.double(), atol=1e-5))
        if same and differs:
            out.append(why)
    return out


# ------------------------------------------------------------------------------------------- 04.assemble


def _assemble(sos: Tensor, ctx: Tensor, name: Tensor, eos: Tensor, position: str, *, half: Callable[[int], int] = lambda m: m // 2,
              ends: bool = True) -> Tensor:
    m = ctx.shape[0]
    if position == "end":
        parts = [ctx, name]
    elif position == "front":
        parts = [name, ctx]
    else:
        h = half(m)
        parts = [ctx[:h], name, ctx[h:]]
    if ends:
        parts = [sos[None]] + parts + [eos[None]]
    return torch.cat(parts)


def _assemble_reference(sos: Tensor, ctx: Tensor, name: Tensor, eos: Tensor, position: str) -> Tensor:
    ctx_index, name_index, eos_index = context_slots(ctx.shape[0], [name.shape[0]], position)
    out = torch.empty(int(eos_index[0]) + 1, sos.shape[0], dtype=ctx.dtype)
    out[0], out[eos_index[0]] = sos, eos
    out[ctx_index[0]] = ctx
    out[name_index[0]] = name
    args = (sos, ctx, name, eos)
    other = {"end": "front", "front": "end", "middle": "end"}[position]
    return remember(out, {
        "the first half of the context rounds up; with an odd M the class goes after the first M // 2 vectors "
        "(rounded down)": lambda: _assemble(*args, position, half=lambda m: (m + 1) // 2),
        "the [SOS] and [EOS] embeddings are missing; the prompt starts with [SOS] and ends with [EOS]":
            lambda: _assemble(*args, position, ends=False),
        f"it matches position '{other}'; check which side of the context the class name goes":
            lambda: _assemble(*args, other),
        "the class name is reversed (its tokens keep their order)":
            lambda: _assemble(sos, ctx, name.flip(0), eos, position),
        "the context vectors are reversed (they keep their order)":
            lambda: _assemble(sos, ctx.flip(0), name, eos, position),
    })


def _assemble_compare(given: Any, expected: Tensor) -> None:
    name = "the prompt embeddings"
    mistakes, _ = diagnosis(expected)
    if isinstance(given, Tensor) and given.shape != expected.shape:
        matched = _matches(given, expected, mistakes)
        extra = f": {matched[0]}" if matched else ""
        raise AnswerError(f"{name} should have shape {tuple(expected.shape)} ([SOS] + M context vectors + K name tokens "
                          f"+ [EOS], by width), got {tuple(given.shape)}{extra}")
    expect_tensor(given, name=name, shape=tuple(expected.shape), dtype="float")
    if torch.equal(given, expected):
        return
    matched = _matches(given, expected, mistakes, exact=True)
    if matched:
        raise AnswerError(f"{name} are wrong: {'; or '.join(matched[:2])}")
    rows = [i for i in range(expected.shape[0]) if not torch.equal(given[i], expected[i])]
    raise AnswerError(f"{name} are wrong at positions {rows[:6]} (of {expected.shape[0]}); compare which embedding "
                      "each position holds with the layout in the exercise (no arithmetic: the vectors are copied)")


def _assemble_cases(g: torch.Generator) -> list[Case]:
    def parts(m: int, k: int, w: int) -> tuple:
        return (torch.randn(w, generator=g), torch.randn(m, w, generator=g), torch.randn(k, w, generator=g),
                torch.randn(w, generator=g))

    return [
        Case("M = 4, a one-token class name, position 'end'", (*parts(4, 1, 6), "end")),
        Case("M = 4, a two-token class name, position 'middle'", (*parts(4, 2, 6), "middle")),
        Case("M = 5 (odd), a two-token class name, position 'middle'", (*parts(5, 2, 8), "middle")),
        Case("M = 3, a three-token class name, position 'front'", (*parts(3, 3, 5), "front")),
        Case("M = 1, position 'middle' (no context before the class)", (*parts(1, 2, 4), "middle")),
        Case("M = 16, width 64, position 'end'", (*parts(16, 2, 64), "end")),
    ]


register(
    Exercise(
        id="04.assemble",
        title="prompt embeddings with the class token at a given position",
        cases=_assemble_cases,
        reference=_assemble_reference,
        compare=_assemble_compare,
        hint="build a list of pieces and torch.cat them along dim 0: sos[None], then for 'end' ctx and name, for "
        "'front' name and ctx, for 'middle' ctx[:M // 2], name, ctx[M // 2:]; then eos[None].",
    )
)


# ----------------------------------------------------------------------------------------------- 04.shift


def _shift(ctx: Tensor, x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, *, normalise: bool = True,
           relu: bool = True, first_only: bool = False, bias: bool = True) -> Tensor:
    if normalise:
        x = F.normalize(x, dim=-1)
    h = x @ w1.T + (b1 if bias else 0)
    if relu:
        h = h.relu()
    pi = h @ w2.T + (b2 if bias else 0)  # (B, W)
    if first_only:
        out = ctx.unsqueeze(0).repeat(x.shape[0], 1, 1)
        out[:, 0] += pi
        return out
    return ctx.unsqueeze(0) + pi[:, None, :]


def _shift_reference(ctx: Tensor, image_features: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> Tensor:
    args = (ctx, image_features, w1, b1, w2, b2)
    expected = _shift(*args)
    return remember(expected, {
        "the image features are not L2-normalised before the meta-net (CoCoOp feeds it the normalised feature)":
            lambda: _shift(*args, normalise=False),
        "the ReLU between the two layers is missing": lambda: _shift(*args, relu=False),
        "only the first context vector is shifted; pi(x) is added to every one of the M vectors":
            lambda: _shift(*args, first_only=True),
        "the biases b1 and b2 are left out": lambda: _shift(*args, bias=False),
    })


def _shift_compare(given: Any, expected: Tensor) -> None:
    name = "the conditional context"
    mistakes, _ = diagnosis(expected)
    if isinstance(given, Tensor) and given.shape != expected.shape:
        B, M, W = expected.shape
        raise AnswerError(f"{name} should have shape (B, M, W) = {tuple(expected.shape)}: one set of M context vectors "
                          f"per image, got {tuple(given.shape)}")
    expect_tensor(given, name=name, shape=tuple(expected.shape), dtype="float")
    matched = _matches(given, expected, mistakes)
    if matched:
        raise AnswerError(f"{name} is wrong: {'; or '.join(matched[:2])}")
    expect_close(given, expected, name=name, atol=1e-5, rtol=1e-4)


def _shift_cases(g: torch.Generator) -> list[Case]:
    def case(b: int, m: int, w: int, d: int, scale: float = 1.0) -> tuple:
        h = max(d // 16, 1)
        return (torch.randn(m, w, generator=g) * 0.02, scale * torch.randn(b, d, generator=g),
                torch.randn(h, d, generator=g) / d ** 0.5, torch.randn(h, generator=g) * 0.1,
                torch.randn(w, h, generator=g) / h ** 0.5, torch.randn(w, generator=g) * 0.1)

    return [
        Case("2 images, M = 4, width 8, image features of size 32", case(2, 4, 8, 32, scale=3.0)),
        Case("one image, M = 1", case(1, 1, 6, 16, scale=2.0)),
        Case("5 images, M = 4, width 64, features of size 64 (the course CLIP's sizes)", case(5, 4, 64, 64, scale=4.0)),
        Case("3 images, M = 8, width 16, features of size 48", case(3, 8, 16, 48, scale=0.5)),
    ]


register(
    Exercise(
        id="04.shift",
        title="CoCoOp's image-conditioned context",
        cases=_shift_cases,
        reference=_shift_reference,
        compare=_shift_compare,
        hint="x = F.normalize(image_features, dim=-1); pi = relu(x @ w1.T + b1) @ w2.T + b2, shape (B, W); "
        "return ctx[None] + pi[:, None, :], shape (B, M, W).",
    )
)


# --------------------------------------------------------------------------------------------- 04.nearest


def _nearest(vectors: Tensor, embedding: Tensor, k: int, *, how: str = "euclidean") -> Tensor:
    if how == "euclidean":
        score = -(vectors[:, None, :] - embedding[None]).norm(dim=-1)
    elif how == "cosine":
        score = F.normalize(vectors, dim=-1) @ F.normalize(embedding, dim=-1).T
    elif how == "dot":
        score = vectors @ embedding.T
    else:  # farthest
        score = (vectors[:, None, :] - embedding[None]).norm(dim=-1)
    return score.topk(k, dim=1).indices


def _nearest_reference(vectors: Tensor, embedding: Tensor, k: int) -> Tensor:
    dist = (vectors.double()[:, None, :] - embedding.double()[None]).norm(dim=-1)  # (M, V)
    expected = dist.topk(k, dim=1, largest=False).indices
    args = (vectors, embedding, k)
    return remember(expected, {
        "it matches the largest cosine similarity; CoOp decodes by Euclidean distance, and the embedding rows "
        "have different lengths": lambda: _nearest(*args, how="cosine"),
        "it matches the largest dot product; use the Euclidean distance": lambda: _nearest(*args, how="dot"),
        "these are the farthest words; take the k smallest distances": lambda: _nearest(*args, how="far"),
    })


def _nearest_compare(given: Any, expected: Tensor) -> None:
    name = "the nearest word ids"
    if isinstance(given, list):
        raise AnswerError(f"{name} should be a tensor of ids (M, k), got a list")
    mistakes, _ = diagnosis(expected)
    if isinstance(given, Tensor) and given.shape == expected.shape and not given.is_floating_point():
        for why, wrong in mistakes.items():
            value = wrong()
            if torch.equal(value, given.cpu()) and not torch.equal(value, expected):
                raise AnswerError(f"{name} are wrong: {why}")
    if isinstance(given, Tensor) and given.is_floating_point():
        raise AnswerError(f"{name} should be integer ids (M, k) of rows of the embedding table, got floats "
                          "(distances?); topk(...).indices gives ids")
    expect_equal(given, expected, name=name)


def _nearest_cases(g: torch.Generator) -> list[Case]:
    def table(v: int, w: int) -> Tensor:
        lengths = torch.logspace(-0.7, 0.7, v)[torch.randperm(v, generator=g)][:, None]
        return F.normalize(torch.randn(v, w, generator=g), dim=1) * lengths

    e1 = table(30, 8)
    e2 = table(50, 16)
    e3 = table(233, 64)
    return [
        Case("3 vectors near words 4, 7 and 20 (k = 1)", (e1[[4, 7, 20]] + 0.05 * torch.randn(3, 8, generator=g), e1, 1)),
        Case("4 random vectors, rows of very different lengths (k = 3)", (0.8 * torch.randn(4, 16, generator=g), e2, 3)),
        Case("a vector exactly on a word: it comes first, at distance 0 (k = 2)", (e2[11:12].clone(), e2, 2)),
        Case("the course's sizes: 4 vectors, 233 words of width 64 (k = 5)", (torch.randn(4, 64, generator=g) * 0.5, e3, 5)),
    ]


register(
    Exercise(
        id="04.nearest",
        title="decoding context vectors to their nearest words",
        cases=_nearest_cases,
        reference=_nearest_reference,
        compare=_nearest_compare,
        hint="distances (M, V): (vectors[:, None, :] - embedding[None]).norm(dim=-1) (or torch.cdist); then "
        ".topk(k, dim=1, largest=False).indices.",
    )
)
