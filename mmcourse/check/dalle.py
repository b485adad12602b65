"""Checks for notebook 07 (DALL-E: a discrete VAE, a transformer over text and image tokens, re-ranking).

Every exercise asks for something the notebook shows only after its check:

* ``07.gumbel``: a Gumbel-softmax sample at temperature tau, from the logits and given uniform noise
  (the notebook shows the Gumbel-max trick, not the relaxation's formula with its noise);
* ``07.straight_through``: the gradient a VQ-VAE encoder output receives: the decoder's gradient
  copied straight through the nearest-code lookup, plus the commitment term's (derived by hand);
* ``07.rerank``: ordering K samples per caption by CLIP's cosine similarity with their own caption.

The exercises take plain tensors, so a student's function is the formula and nothing else; the
references use :mod:`mmcourse.dvae` and :mod:`mmcourse.dalle`. Wrong answers get the case, expected
against given, and for the typical mistakes what the answer matches instead.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from mmcourse import dalle as DL
from mmcourse import dvae as V
from mmcourse.check.core import AnswerError, Case, Exercise, judge_close, diagnosis, expect_equal, expect_tensor, register, remember

Tensor = torch.Tensor


def _judge(given: Any, expected: Tensor, name: str, *, atol: float = 1e-5, rtol: float = 1e-4) -> None:
    """Within tolerance of ``expected``; else the typical mistake it matches, or where it differs (notebook
    08's judge), after saying why a result that is not finite is not (e.g. an exp that overflowed)."""
    if isinstance(given, Tensor) and given.is_floating_point() and given.shape == expected.shape \
            and not torch.isfinite(given.detach()).all():
        context = diagnosis(expected)[1]
        extra = f" {context['nonfinite']}" if "nonfinite" in context else ""
        raise AnswerError(f"{name} contains NaN or inf ({int((~torch.isfinite(given.detach())).sum())} of "
                          f"{given.numel()} entries).{extra}")
    judge_close(given, expected, name, atol=atol, rtol=rtol)


# ------------------------------------------------------------------------------------ 07.gumbel


def gumbel_sample(logits: Tensor, uniform: Tensor, tau: float) -> Tensor:
    """Reference for 07.gumbel: softmax((logits + g) / tau) over the last dimension, g = -log(-log u)."""
    g = -torch.log(-torch.log(uniform))
    out = torch.softmax((logits + g) / tau, dim=-1)
    return remember(out, {
        "its noise matches -log(u), which is exponential noise; the Gumbel noise of the Gumbel-max trick is "
        "-log(-log(u))": lambda: torch.softmax((logits - torch.log(uniform)) / tau, dim=-1),
        "its noise has the wrong sign: g = -log(-log(u)) is added to the logits (log(-log(u)) is its negative)":
            lambda: torch.softmax((logits - g) / tau, dim=-1),
        "it matches logits / tau + g: the noise must be divided by tau too, or the temperature changes which "
        "code the noise favours": lambda: torch.softmax(logits / tau + g, dim=-1),
        "it matches the sample at tau = 1: divide (logits + g) by the temperature": lambda: torch.softmax(logits + g, dim=-1),
        "it matches (logits + g) * tau: a small temperature must sharpen the sample, so divide by it":
            lambda: torch.softmax((logits + g) * tau, dim=-1),
        "it matches a log-softmax: the relaxed sample is a probability vector (entries in [0, 1] that sum to 1)":
            lambda: torch.log_softmax((logits + g) / tau, dim=-1),
        "it matches the hard one-hot of argmax(logits + g): that is the Gumbel-max sample, the limit tau -> 0; "
        "the relaxation is the softmax at temperature tau": lambda: F.one_hot((logits + g).argmax(-1), logits.shape[-1]).to(logits.dtype),
        "the softmax runs over the wrong dimension: the K codes are the last one": lambda: torch.softmax((logits + g) / tau, dim=0),
    }, nonfinite="With large logits or a small tau, exp overflows: subtract each row's maximum before exponentiating "
                 "(torch.softmax does).")


def _gumbel_cases(g: torch.Generator) -> list[Case]:
    def u(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=g).clamp(1e-6, 1 - 1e-6)

    return [
        Case("4 rows over K = 5 codes, tau = 1", (torch.randn(4, 5, generator=g), u(4, 5), 1.0)),
        Case("tau = 0.5", (torch.randn(3, 8, generator=g), u(3, 8), 0.5)),
        Case("equal logits, tau = 1: the noise alone decides", (torch.zeros(2, 6), u(2, 6), 1.0)),
        Case("tau = 1/16 (DALL-E's final temperature): nearly one-hot", (2 * torch.randn(3, 16, generator=g), u(3, 16), 1 / 16)),
        Case("tau = 10: nearly uniform", (torch.randn(2, 4, generator=g), u(2, 4), 10.0)),
        Case("a grid of cells (N, H, W, K): the codes are the last dimension", (torch.randn(2, 3, 3, 8, generator=g), u(2, 3, 3, 8), 0.7)),
        Case("large logits (about 100) at tau = 0.1: no overflow", (100 * torch.randn(3, 6, generator=g), u(3, 6), 0.1)),
    ]


register(
    Exercise(
        id="07.gumbel",
        title="a Gumbel-softmax sample at temperature tau",
        cases=_gumbel_cases,
        reference=gumbel_sample,
        compare=lambda given, expected: _judge(given, expected, "the relaxed sample", atol=1e-5),
        hint="turn the uniform noise into Gumbel noise with g = -log(-log(u)), add it to the logits, divide the sum "
        "by tau and take the softmax over the last dimension (torch.softmax(..., dim=-1) is stable for large values).",
    )
)


# --------------------------------------------------------------------------- 07.straight_through


def encoder_gradient(z: Tensor, codebook: Tensor, grad_zq: Tensor, commitment: float) -> Tensor:
    """Reference for 07.straight_through: with e = codebook[nearest_code(z)], the gradient of
    <grad_zq, z_q> + commitment * ||z - sg[e]||^2 with respect to z under the straight-through
    estimator: grad_zq + 2 * commitment * (z - e)."""
    e = codebook[V.nearest_code(z, codebook)]
    out = grad_zq + 2 * commitment * (z - e)
    by_dot = codebook[(z @ codebook.t()).argmax(-1)]
    by_cos = codebook[(F.normalize(z, dim=-1) @ F.normalize(codebook, dim=-1).t()).argmax(-1)]
    return remember(out, {
        "it matches the commitment term's gradient alone: with the straight-through estimator the decoder's gradient "
        "grad_zq reaches z unchanged, as if z_q were z": lambda: 2 * commitment * (z - e),
        "it matches grad_zq alone: the commitment loss pulls z towards its code too": lambda: grad_zq,
        "the commitment term has the wrong sign: the gradient of ||z - e||^2 with respect to z is 2 (z - e), so a "
        "descent step moves z towards e": lambda: grad_zq + 2 * commitment * (e - z),
        "the commitment term lacks its factor 2 (the derivative of a square)": lambda: grad_zq + commitment * (z - e),
        "it matches the commitment term without its weight (use the commitment argument)": lambda: grad_zq + 2 * (z - e),
        "it matches the codes picked by the largest dot product z . e: nearest means the smallest distance "
        "||z - e||, and codes of different lengths make the two differ": lambda: grad_zq + 2 * commitment * (z - by_dot),
        "it matches the codes picked by cosine similarity: nearest means the smallest Euclidean distance ||z - e||":
            lambda: grad_zq + 2 * commitment * (z - by_cos),
        "it matches the gradient of the codebook loss ||sg[z] - e||^2 added as well: that term's gradient goes to the "
        "code e, not to z (the stop-gradient is on z)": lambda: grad_zq + 2 * commitment * (z - e) + 2 * (z - e),
    })


def _st_cases(g: torch.Generator) -> list[Case]:
    def codebook(k: int, d: int, spread: bool = False) -> Tensor:
        c = torch.randn(k, d, generator=g)
        return c * (0.2 + 3 * torch.rand(k, 1, generator=g)) if spread else c

    z1, c1 = torch.randn(6, 4, generator=g), codebook(8, 4)
    z2, c2 = torch.randn(5, 3, generator=g) * 2, codebook(16, 3, spread=True)
    z3, c3 = torch.randn(2, 3, 3, 4, generator=g), codebook(10, 4, spread=True)
    return [
        Case("grad_zq = 0 (the commitment term alone), 6 vectors, 8 codes, commitment 0.25",
             (z1, c1, torch.zeros(6, 4), 0.25)),
        Case("z on a code exactly (the commitment term vanishes), commitment 0.25",
             (c1[[2, 5, 7]].clone(), c1, torch.randn(3, 4, generator=g), 0.25)),
        Case("6 vectors, 8 codes, commitment 0.25", (z1, c1, torch.randn(6, 4, generator=g), 0.25)),
        Case("codes of very different lengths (nearest is not the largest dot product), commitment 0.25",
             (z2, c2, torch.randn(5, 3, generator=g), 0.25)),
        Case("commitment 1.0", (z2, c2, torch.randn(5, 3, generator=g), 1.0)),
        Case("a grid of vectors (N, H, W, D), commitment 0.25", (z3, c3, torch.randn(2, 3, 3, 4, generator=g), 0.25)),
    ]


register(
    Exercise(
        id="07.straight_through",
        title="the gradient through the nearest-code lookup",
        cases=_st_cases,
        reference=encoder_gradient,
        compare=lambda given, expected: _judge(given, expected, "the gradient with respect to z", atol=1e-5),
        hint="first the lookup: squared distances ||z||^2 - 2 z.e + ||e||^2 to every code, argmin over the codes, "
        "e = codebook[codes] (keep the leading dimensions of z). Then the two terms: straight-through treats z_q as z "
        "in the backward pass, so grad_zq passes unchanged; the commitment term commitment * ||z - e||^2 (e a "
        "constant) adds 2 * commitment * (z - e).",
    )
)


# ------------------------------------------------------------------------------------ 07.rerank


def rerank(image_features: Tensor, text_features: Tensor) -> Tensor:
    """Reference for 07.rerank: ``mmcourse.dalle.rerank``: (C, K) indices, cosine with the row's own
    caption, best first."""
    order = DL.rerank(image_features, text_features)
    dots = torch.einsum("ckd,cd->ck", image_features, text_features)
    cos = torch.einsum("ckd,cd->ck", F.normalize(image_features, dim=-1), F.normalize(text_features, dim=-1))
    return remember(order, {
        "it matches the order of raw dot products: CLIP compares embeddings by cosine, so normalise both sides "
        "(an image with a long feature vector is not a better match)": lambda: dots.argsort(1, descending=True),
        "it matches the worst sample first: sort by descending similarity": lambda: cos.argsort(1),
    })


def _compare_order(given: Any, expected: Tensor) -> None:
    given = expect_tensor(given, name="the order", dtype="integer")
    if tuple(given.shape) != tuple(expected.shape):
        hint = (" (one row per caption and one column per sample, all K of them in order, not only the best)"
                if given.ndim == 1 else "")
        raise AnswerError(f"the order should have shape {tuple(expected.shape)}, got {tuple(given.shape)}{hint}")
    if torch.equal(given.cpu(), expected.cpu()):
        return
    for why, wrong in diagnosis(expected)[0].items():
        value = wrong()
        if torch.equal(given.cpu(), value.cpu()) and not torch.equal(value.cpu(), expected.cpu()):
            raise AnswerError(f"the order is wrong: {why}")
    expect_equal(given, expected, name="the order")


def _rerank_cases(g: torch.Generator) -> list[Case]:
    def feats(c: int, k: int, d: int) -> tuple[Tensor, Tensor]:
        img = torch.randn(c, k, d, generator=g) * (0.3 + 3 * torch.rand(c, k, 1, generator=g))  # varied lengths
        return img, torch.randn(c, d, generator=g) * 2

    one_img = torch.tensor([[[4.0, 4.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.2]]])
    return [
        Case("one caption, 4 samples in 2-d", (one_img, torch.tensor([[1.0, 0.0]]))),
        Case("3 captions, 8 samples each, features of different lengths", feats(3, 8, 16)),
        Case("each caption has its own samples: 2 captions pointing opposite ways",
             (torch.randn(2, 5, 4, generator=g), torch.tensor([[1.0, 0.0, 0.0, 0.0], [-1.0, 0.0, 0.0, 0.0]]))),
        Case("K = 1: nothing to choose", feats(4, 1, 8)),
        Case("5 captions, 32 samples each", feats(5, 32, 32)),
    ]


register(
    Exercise(
        id="07.rerank",
        title="re-ranking samples by CLIP",
        cases=_rerank_cases,
        reference=rerank,
        compare=_compare_order,
        hint="normalise the image features (C, K, D) and the text features (C, D) to unit length, take for every "
        "sample the dot product with its own caption (torch.einsum('ckd,cd->ck', ...)), and argsort each row in "
        "descending order.",
    )
)
