"""Checks for notebook 02 (the CLIP loss)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mmcourse.check.core import Case, Exercise, expect_close, expect_number, register
from mmcourse.losses import caption_targets, clip_loss


def _unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1)


def infonce_rows(logits: torch.Tensor) -> torch.Tensor:
    """Reference for 02.infonce: mean over rows of -log softmax(row)[i], the match at column i."""
    return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))


def _infonce_cases(g: torch.Generator) -> list[Case]:
    skew = torch.tensor([[5.0, 1.0, 0.0], [4.0, 3.0, 0.0], [9.0, 0.0, 1.0]])  # rows and columns disagree
    return [
        Case("random 6x6 logits", (torch.randn(6, 6, generator=g),)),
        Case("a 3x3 matrix whose row and column losses differ (rows are the images)", (skew,)),
        Case("N = 1 (a single pair: nothing to contrast with)", (torch.tensor([[2.5]]),)),
        Case("logit scale 100 on cosines: entries up to 100 (exp overflows in float32 without care)",
             (100 * torch.rand(8, 8, generator=g).mul(2).sub(1),)),
        Case("a batch of 64", (torch.randn(64, 64, generator=g) * 3,)),
    ]


register(
    Exercise(
        id="02.infonce",
        title="InfoNCE for one direction",
        cases=_infonce_cases,
        reference=infonce_rows,
        compare=lambda given, expected: expect_close(given, expected, name="the loss", atol=1e-4),
        hint="row i is a classification over N texts whose right answer is column i: labels = torch.arange(N), "
        "then F.cross_entropy(logits, labels) (it averages over rows and is stable for large logits).",
    )
)


def _pair_cases(g: torch.Generator) -> list[Case]:
    def pairs(n: int, d: int, noise: float):
        img = _unit(torch.randn(n, d, generator=g))
        return img, _unit(img + noise * torch.randn(n, d, generator=g))

    lopsided_img = _unit(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]))
    lopsided_txt = _unit(torch.tensor([[1.0, 0.2], [1.0, 0.0], [0.1, 1.0]]))
    return [
        Case("8 pairs, D=16, logit scale 1/0.07", (*pairs(8, 16, 0.5), 1 / 0.07)),
        Case("image->text and text->image losses differ (3 pairs, D=2)", (lopsided_img, lopsided_txt, 10.0)),
        Case("a single pair", (*pairs(1, 4, 0.1), 14.0)),
        Case("logit scale 100 (the clamp)", (*pairs(16, 8, 1.0), 100.0)),
        Case("logit scale given as a 0-d tensor", (*pairs(5, 8, 0.3), torch.tensor(3.0))),
    ]


register(
    Exercise(
        id="02.symmetric",
        title="the symmetric CLIP loss",
        cases=_pair_cases,
        reference=clip_loss,
        compare=lambda given, expected: expect_close(given, expected, name="the loss", atol=1e-4),
        hint="logits = logit_scale * image_features @ text_features.T; the loss is the mean of the cross-entropy over "
        "rows (image->text) and over columns (text->image: use logits.T), both with labels arange(N).",
    )
)


def chance_loss(n: int) -> float:
    """Reference for 02.chance: with all N logits of a row equal, each text gets 1/N, so the loss is ln N."""
    return math.log(n)


register(
    Exercise(
        id="02.chance",
        title="the loss of an untrained model",
        cases=lambda g: [Case(f"N = {n}", (n,)) for n in (2, 1, 10, 1024, 32_768)],
        reference=chance_loss,
        compare=lambda given, expected: expect_number(given, expected, name="the loss at uniform logits", atol=1e-5),
        hint="if every logit in a row is equal, softmax gives every column probability 1/N; the loss is "
        "-log(1/N) (natural log, as cross-entropy uses). It is the same for both directions and for their mean.",
    )
)


def softmax_with_temperature(similarities: torch.Tensor, tau: float) -> torch.Tensor:
    """Reference for 02.temperature: softmax(similarities / tau) over the last dimension."""
    return torch.softmax(similarities / tau, dim=-1)


def _temperature_cases(g: torch.Generator) -> list[Case]:
    row = torch.tensor([0.9, 0.7, 0.2, -0.1, 0.85])
    return [
        Case("one row of cosines, tau = 1", (row, 1.0)),
        Case("the same row, tau = 0.07 (CLIP's initial temperature)", (row, 0.07)),
        Case("tau = 10: nearly uniform", (row, 10.0)),
        Case("tau = 0.001: cosines / tau reach 900 (naive exp overflows)", (row, 0.001)),
        Case("a (4, 6) matrix: one softmax per row", (torch.rand(4, 6, generator=g) * 2 - 1, 0.1)),
    ]


register(
    Exercise(
        id="02.temperature",
        title="softmax with a temperature",
        cases=_temperature_cases,
        reference=softmax_with_temperature,
        compare=lambda given, expected: expect_close(given, expected, name="the probabilities", atol=1e-5),
        hint="divide by tau, then softmax over the last dimension (dim=-1); torch.softmax subtracts the row maximum "
        "first, so it never overflows, while exp(s / tau) / sum(...) does for small tau.",
    )
)


def _caption_cases(g: torch.Generator) -> list[Case]:
    return [
        Case("all captions different", (["a red square", "a blue circle", "a green star"],)),
        Case("two identical captions", (["a red square", "a blue circle", "a red square"],)),
        Case("a caption three times", (["a cyan cross", "a cyan cross", "a pink heart", "a cyan cross"],)),
        Case("a single caption", (["a purple crescent"],)),
        Case("captions that differ only in case or spacing are different strings",
             (["a red square", "A red square", "a red  square", "a red square"],)),
    ]


register(
    Exercise(
        id="02.false_negatives",
        title="caption-level targets",
        cases=_caption_cases,
        reference=caption_targets,
        compare=lambda given, expected: expect_close(given, expected, name="the target matrix", atol=1e-6),
        hint="entry (i, j) is 1/k when captions i and j are the same string and k captions share it, else 0; every "
        "row sums to 1 and the matrix is (N, N) float.",
    )
)
