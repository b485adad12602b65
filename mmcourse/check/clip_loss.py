"""Checks for notebook 02 (the CLIP loss).

Every exercise asks for something the notebook shows only after its check: InfoNCE from the lecture's
equation (positive and negatives given apart, stable at CLIP's clamp), the gradient of the symmetric loss
with respect to the logits, the loss at a margin (the chance level is its margin-0 case), the temperature
at which the right caption reaches a given probability, the loss with content-level targets, and the share
of the loss one of W processes computes.

A wrong answer gets a message that names the case, expected against given, and, for the typical mistakes
(the positive left out of the denominator, a missing 1/N, the row half only, labels without the rank's
offset, ...), what the answer looks like instead. The references return plain values (graders ship them
between processes); the typical mistakes of the latest case are remembered beside it for ``compare``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from mmcourse.check.core import AnswerError, Case, Exercise, as_number, diagnosis, expect_tensor, register, remember
from mmcourse.distributed import local_clip_loss
from mmcourse.losses import caption_targets, clip_loss

Tensor = torch.Tensor

# ----------------------------------------------------------------------------- diagnosing typical mistakes

# References record what each typical mistake would return on their case (check.core.remember);
# compare functions name the one an answer matches (check.core.diagnosis).


def _close(a: Any, b: Any, atol: float, rtol: float) -> bool:
    try:
        a = torch.as_tensor(a, dtype=torch.float64)
        b = torch.as_tensor(b, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        return False
    if a.shape != b.shape or not torch.isfinite(a).all() or not torch.isfinite(b).all():
        return False
    return bool(((a - b).abs() <= atol + rtol * b.abs()).all())


def _where(given: Tensor, expected: Tensor, atol: float, rtol: float) -> str:
    g, e = given.detach().double().cpu(), expected.detach().double().cpu()
    if e.ndim == 0:
        return f"expected {e.item():.6g}, got {g.item():.6g}"
    err = (g - e).abs()
    bad = err > atol + rtol * e.abs()
    if bad.any():
        where = tuple(bad.nonzero()[0].tolist())
    else:  # within tolerance everywhere: show the largest difference
        where = tuple(int(i) for i in torch.unravel_index(err.flatten().argmax(), tuple(err.shape)))
    return (f"at index {where} expected {e[where].item():.6g}, got {g[where].item():.6g} "
            f"({int(bad.sum())} of {e.numel()} entries off)")


def _judge(given: Any, expected: Any, name: str, *, atol: float, rtol: float, extra: Callable | None = None) -> None:
    """Pass when ``given`` is within tolerance of ``expected`` (a tensor or a number); otherwise say which
    typical mistake it matches, or fall back to ``extra`` (a property check) and expected against given."""
    if isinstance(expected, Tensor):
        given = expect_tensor(given, name=name, shape=tuple(expected.shape), dtype="float")
        shown = _where(given, expected, atol, rtol)
    else:
        given = as_number(given, name)
        shown = f"expected {expected:.6g}, got {given:.6g}"
    if _close(given, expected, atol, rtol):
        return
    mistakes, context = diagnosis(expected)
    for why, wrong in mistakes.items():
        value = wrong()
        if _close(given, value, atol, rtol) and not _close(value, expected, atol, rtol):
            raise AnswerError(f"{name} has wrong values: {why} ({shown})")
    if extra is not None:
        extra(given, expected, context, shown)
    raise AnswerError(f"{name} has wrong values: {shown}")


# ------------------------------------------------------------------------------------------- 02.infonce


def infonce(positive: Tensor, negatives: Tensor, tau: float) -> Tensor:
    """Reference for 02.infonce: -log( e^{s+/tau} / (e^{s+/tau} + sum_k e^{s_k/tau}) ) per anchor, (B,)."""
    s = torch.cat([positive[:, None], negatives], dim=1).double() / tau  # (B, 1 + K): the positive is class 0
    loss = torch.logsumexp(s, dim=1) - s[:, 0]

    def decoupled() -> Tensor:
        neg = negatives.double() / tau
        return torch.logsumexp(neg, dim=1) - positive.double() / tau if negatives.shape[1] else loss * float("nan")

    def times_tau() -> Tensor:
        st = torch.cat([positive[:, None], negatives], dim=1).double() * tau
        return torch.logsumexp(st, dim=1) - st[:, 0]

    def no_tau() -> Tensor:
        st = torch.cat([positive[:, None], negatives], dim=1).double()
        return torch.logsumexp(st, dim=1) - st[:, 0]

    return remember(loss, {
        "it matches the loss with the positive left out of the denominator; the softmax runs over all K + 1 "
        "candidates, the positive among them": decoupled,
        "it matches the loss with the cosines multiplied by tau; the temperature divides them": times_tau,
        "it matches the loss at tau = 1; the cosines must be divided by tau": no_tau,
        "it matches the probability of the positive, not its negative log": lambda: torch.exp(-loss),
        "it matches minus the right loss: the loss is -log p, which is never negative": lambda: -loss,
    })


def _infonce_cases(g: torch.Generator) -> list[Case]:
    def cosines(*shape: int, low: float = -1.0, high: float = 1.0) -> Tensor:
        return low + (high - low) * torch.rand(*shape, generator=g)

    return [
        Case("4 anchors with 3 negatives each, tau = 1", (cosines(4), cosines(4, 3), 1.0)),
        Case("one anchor whose hardest negative beats its positive, tau = 0.07 (CLIP's start)",
             (torch.tensor([0.30]), torch.tensor([[0.45, 0.10, -0.20, 0.28]]), 0.07)),
        Case("K = 0: no negatives, the positive is the only candidate", (cosines(3), torch.empty(3, 0), 0.5)),
        Case("all 8 candidates equally similar: the chance level", (torch.full((2,), 0.3), torch.full((2, 7), 0.3), 0.07)),
        Case("tau = 0.01 (the clamp, logit scale 100) with cosines near 1: e^(s/tau) overflows float32 without care",
             (cosines(5, low=0.9, high=0.99), cosines(5, 6, low=0.85, high=0.99), 0.01)),
        Case("64 anchors, 255 negatives each (a batch of 256), tau = 0.01",
             (cosines(64, low=0.2), cosines(64, 255), 0.01)),
    ]


register(
    Exercise(
        id="02.infonce",
        title="InfoNCE from its equation",
        cases=_infonce_cases,
        reference=infonce,
        compare=lambda given, expected: _judge(given, expected, "the loss per anchor", atol=1e-4, rtol=1e-4),
        hint="put the positive and the negatives side by side, (B, 1 + K), divide by tau, and compute "
        "log(sum_j exp(x_j)) - x_0 for each row. To keep exp finite, subtract each row's maximum m first: "
        "log(sum_j exp(x_j)) = m + log(sum_j exp(x_j - m)). Return one loss per anchor, shape (B,).",
    )
)


# ------------------------------------------------------------------------------------------ 02.gradient


def _symmetric_loss_of_logits(logits: Tensor) -> Tensor:
    labels = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def clip_loss_grad(logits: Tensor) -> Tensor:
    """Reference for 02.gradient: d(symmetric CLIP loss)/d(logits), by autograd in float64, (N, N)."""
    z = logits.detach().double().requires_grad_()
    (grad,) = torch.autograd.grad(_symmetric_loss_of_logits(z), z)
    n = z.shape[0]
    eye = torch.eye(n, dtype=torch.float64)
    rows, cols = torch.softmax(z.detach(), dim=1), torch.softmax(z.detach(), dim=0)
    return remember(grad, {
        "it matches the gradient of the image -> text half alone (the softmax over each row); the text -> image "
        "half, the softmax over each column, is missing": lambda: (rows - eye) / n,
        "it matches half the gradient of the image -> text loss; the text -> image half (the softmax over each "
        "column) is missing": lambda: (rows - eye) / (2 * n),
        "it has the opposite sign: raising a matching pair's logit lowers the loss, so the diagonal of the "
        "gradient must be negative": lambda: -grad,
        "it is N times too large: each direction's loss is a mean over N rows (or columns)": lambda: n * grad,
        "it is twice too large: the CLIP loss is the mean of the two directions, not their sum": lambda: 2 * grad,
        "the text -> image part is transposed: the softmax of column j belongs in column j": lambda: (rows + cols.T - 2 * eye) / (2 * n),
        "the one-hot targets are missing: the softmaxes alone are the gradient of a loss that ignores which pair "
        "matches": lambda: (rows + cols) / (2 * n),
    })


def _gradient_property(given: Tensor, expected: Tensor, context: dict, shown: str) -> None:
    total = given.detach().double().sum().item()
    if abs(total) > 1e-4 * max(1, given.shape[0]):
        raise AnswerError(
            f"the gradient has wrong values: its entries should add up to 0 (adding one number to every logit "
            f"changes no softmax, so the loss cannot change), yours add up to {total:.4g} ({shown})")


def _gradient_cases(g: torch.Generator) -> list[Case]:
    skew = torch.tensor([[5.0, 1.0, 0.0], [4.0, 3.0, 0.0], [9.0, 0.0, 1.0]])  # rows and columns disagree
    cos = 2 * torch.rand(8, 8, generator=g) - 1
    return [
        Case("random 5x5 logits", (torch.randn(5, 5, generator=g) * 2,)),
        Case("a 3x3 matrix whose row and column softmaxes differ", (skew,)),
        Case("N = 1: a single pair, nothing to contrast with", (torch.tensor([[2.5]]),)),
        Case("all logits equal (an untrained model)", (torch.full((4, 4), 3.0),)),
        Case("logit scale 100 on cosines: entries up to 100 (e^100 overflows float32)", (100 * cos,)),
        Case("a batch of 32", (torch.randn(32, 32, generator=g) * 4,)),
    ]


register(
    Exercise(
        id="02.gradient",
        title="the gradient of the CLIP loss",
        cases=_gradient_cases,
        reference=clip_loss_grad,
        compare=lambda given, expected: _judge(given, expected, "the gradient", atol=1e-6, rtol=1e-4,
                                               extra=_gradient_property),
        hint="for one row, d/dz_j of -log softmax(z)_i is softmax(z)_j - [j == i]. The image -> text loss is the mean "
        "of N such rows (divide by N); the text -> image loss is the same on the columns (softmax over dim 0). "
        "The CLIP loss is the mean of the two directions. No autograd needed.",
    )
)


# -------------------------------------------------------------------------------------------- 02.margin


def margin_loss(n: int, margin: float, tau: float) -> float:
    """Reference for 02.margin: ln(1 + (N - 1) e^{-margin / tau}) for both directions, hence for their mean."""
    n, margin, tau = int(n), float(margin), float(tau)
    if n == 1:
        value = 0.0
    else:
        value = torch.logaddexp(torch.tensor(0.0, dtype=torch.float64),
                                torch.tensor(math.log(n - 1) - margin / tau, dtype=torch.float64)).item()

    def softplus(x: float) -> float:
        return torch.logaddexp(torch.tensor(0.0, dtype=torch.float64), torch.tensor(x, dtype=torch.float64)).item()

    return remember(value, {
        "it matches N negatives per row; a row holds one positive and N - 1 negatives":
            lambda: softplus(math.log(n) - margin / tau),
        "it matches the loss in bits (log base 2); cross-entropy uses the natural log":
            lambda: value / math.log(2),
        "it matches the margin multiplied by tau; the temperature divides the cosines":
            lambda: 0.0 if n == 1 else softplus(math.log(n - 1) - margin * tau),
        "it matches a margin of the wrong sign: the positive is the larger cosine, so a bigger margin must "
        "lower the loss": lambda: 0.0 if n == 1 else softplus(math.log(n - 1) + margin / tau),
        "it does not depend on the margin (it is the chance level ln N)": lambda: math.log(n),
        "it matches the probability of the positive, not the loss -log p": lambda: math.exp(-value),
    })


register(
    Exercise(
        id="02.margin",
        title="the loss at a margin and at chance",
        cases=lambda g: [
            Case("N = 8 pairs, margin 0.2, tau = 0.07", (8, 0.2, 0.07)),
            Case("margin 0: a model that cannot tell the pairs apart, N = 1024", (1024, 0.0, 0.07)),
            Case("N = 1: a single pair, nothing to contrast with", (1, 0.3, 0.07)),
            Case("CLIP's batch: N = 32768, margin 0.1, tau = 0.01 (the clamp)", (32_768, 0.1, 0.01)),
            Case("a negative margin (the negatives beat the positive), N = 16, tau = 0.05", (16, -0.1, 0.05)),
            Case("a large temperature, tau = 10: nearly chance, N = 100, margin 0.5", (100, 0.5, 10.0)),
        ],
        reference=margin_loss,
        compare=lambda given, expected: _judge(given, expected, "the loss", atol=1e-6, rtol=1e-6),
        hint="every row has the same logits: the positive at (s + margin) / tau and N - 1 negatives at s / tau. "
        "Its loss is -log of the positive's softmax probability; divide numerator and denominator by "
        "e^((s + margin) / tau) and s drops out. The columns give the same number, so does their mean.",
    )
)


# --------------------------------------------------------------------------------------- 02.temperature


def _positive_probability(similarities: Tensor, positive: int, tau: float) -> float:
    return torch.softmax(similarities.double() / tau, dim=-1)[positive].item()


def temperature_for(similarities: Tensor, positive: int, p: float) -> float:
    """Reference for 02.temperature: the tau > 0 with softmax(similarities / tau)[positive] = p.

    The positive is the row's unique largest entry and 1/N < p < 1, so its probability falls from 1
    (tau -> 0) to 1/N (tau -> infinity) monotonically: bisection on log tau finds the one solution.
    """
    s = similarities.double()
    lo, hi = math.log(1e-6), math.log(1e6)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _positive_probability(s, positive, math.exp(mid)) > p:
            lo = mid  # still too peaked: a larger tau
        else:
            hi = mid
    tau = math.exp(0.5 * (lo + hi))
    return remember(tau, {
        "it matches the logit scale 1/tau, not the temperature tau": lambda: 1 / tau,
    }, similarities=s, positive=positive, p=p)


def _temperature_property(given: float, expected: float, context: dict, shown: str) -> None:
    if not context:
        return
    if given <= 0:
        raise AnswerError(f"the temperature should be positive, got {given:.6g}")
    at_given = _positive_probability(context["similarities"], context["positive"], given)
    raise AnswerError(
        f"the temperature has wrong values: at tau = {given:.6g} the positive's probability is {at_given:.6g}, "
        f"not {context['p']} ({shown})")


def _temperature_cases(g: torch.Generator) -> list[Case]:
    row = torch.tensor([0.31, 0.12, 0.55, 0.72, 0.05, 0.60, -0.20, 0.44])  # the positive, 0.72, at index 3
    batch_row = 2 * torch.rand(64, generator=g) - 1
    batch_row[17] = batch_row.max() + 0.05
    return [
        Case("two candidates, the positive 0.2 above the negative, p = 0.9", (torch.tensor([0.5, 0.3]), 0, 0.9)),
        Case("a row of 8 cosines, the positive at index 3, p = 0.5", (row, 3, 0.5)),
        Case("p = 0.999 with a close hard negative: tau far below the clamp, cosines / tau in the hundreds",
             (torch.tensor([0.90, 0.88, 0.50, 0.10]), 0, 0.999)),
        Case("p just above chance (1/5): a large tau", (torch.tensor([0.1, 0.4, 0.3, 0.0, -0.3]), 1, 0.21)),
        Case("a row of 64 cosines, the positive at index 17, p = 0.7", (batch_row, 17, 0.7)),
    ]


register(
    Exercise(
        id="02.temperature",
        title="the temperature for a given confidence",
        cases=_temperature_cases,
        reference=temperature_for,
        compare=lambda given, expected: _judge(given, expected, "the temperature", atol=0.0, rtol=1e-3,
                                               extra=_temperature_property),
        hint="the positive's probability falls steadily as tau grows (from 1 near tau = 0 to 1/N for a huge tau), "
        "so bisect: keep an interval [lo, hi] of log tau (say log 1e-6 to log 1e6), evaluate the probability at "
        "the midpoint with a stable softmax, and keep the half that still brackets p; 100 halvings are plenty.",
    )
)


# ------------------------------------------------------------------------------------ 02.false_negatives


def grouped_clip_loss(logits: Tensor, keys: Sequence[str]) -> Tensor:
    """Reference for 02.false_negatives: the symmetric CLIP loss whose row (and column) i spreads its target
    evenly over every pair with key i's value (a soft label instead of arange(N))."""
    z = logits.double()
    n = z.shape[0]
    targets = caption_targets(list(keys)).double()  # (N, N), symmetric, rows sum to 1
    loss = 0.5 * (F.cross_entropy(z, targets) + F.cross_entropy(z.T, targets))
    labels = torch.arange(n)
    same = (targets > 0).double()
    first = torch.tensor([list(keys).index(k) for k in keys])

    def group_probability() -> Tensor:  # -log of the probability mass on the group (a different loss)
        rows = -(torch.logsumexp(z.masked_fill(same == 0, -math.inf), 1) - torch.logsumexp(z, 1)).mean()
        cols = -(torch.logsumexp(z.T.masked_fill(same == 0, -math.inf), 1) - torch.logsumexp(z.T, 1)).mean()
        return 0.5 * (rows + cols)

    return remember(loss, {
        "it matches the plain CLIP loss (targets arange(N)): pairs with equal keys are still pushed apart as "
        "negatives": lambda: 0.5 * (F.cross_entropy(z, labels) + F.cross_entropy(z.T, labels)),
        "it matches the image -> text half alone; the CLIP loss is the mean of both directions":
            lambda: F.cross_entropy(z, targets),
        "it matches targets of 1 on every pair with an equal key; each row's targets must add up to 1 (1/k for k "
        "equal keys)": lambda: 0.5 * (F.cross_entropy(z, same) + F.cross_entropy(z.T, same)),
        "it matches hard labels pointing at the first pair with each key; the target is spread evenly over all "
        "of them": lambda: 0.5 * (F.cross_entropy(z, first) + F.cross_entropy(z.T, first)),
        "it matches -log of the total probability of each group (the probabilities summed inside the log); this "
        "exercise asks for the cross-entropy with the soft targets, the mean of -log p over the group":
            group_probability,
    })


def _grouped_cases(g: torch.Generator) -> list[Case]:
    return [
        Case("all keys different: the plain CLIP loss", (torch.randn(4, 4, generator=g) * 3,
                                                         ["red square", "blue circle", "green star", "red circle"])),
        Case("two equal keys among three", (torch.randn(3, 3, generator=g) * 3, ["red square", "blue circle", "red square"])),
        Case("a key three times among five, logits at scale 100",
             (100 * (2 * torch.rand(5, 5, generator=g) - 1), ["cyan cross", "cyan cross", "pink heart", "cyan cross", "red ring"])),
        Case("N = 1", (torch.tensor([[4.0]]), ["purple crescent"])),
        Case("keys that differ only in case or spacing are different keys",
             (torch.randn(4, 4, generator=g) * 3, ["red square", "Red square", "red  square", "red square"])),
        Case("every key the same", (torch.randn(4, 4, generator=g) * 3, ["blue star"] * 4)),
    ]


register(
    Exercise(
        id="02.false_negatives",
        title="the CLIP loss with content-level targets",
        cases=_grouped_cases,
        reference=grouped_clip_loss,
        compare=lambda given, expected: _judge(given, expected, "the loss", atol=1e-4, rtol=1e-4),
        hint="build the (N, N) target matrix: entry (i, j) is 1/k when keys i and j are equal and k keys share that "
        "value, else 0 (every row sums to 1). F.cross_entropy accepts such soft targets (a float matrix) in place of "
        "labels; apply it to the logits and to their transpose (the matrix is symmetric) and average the two.",
    )
)


# ----------------------------------------------------------------------------------------- 02.local_loss


def rank_loss(image_features: Tensor, text_features: Tensor, logit_scale, rank: int, world_size: int) -> Tensor:
    """Reference for 02.local_loss: the loss rank ``rank`` of ``world_size`` computes from the gathered
    (N, D) features: its N / W images against all N texts and its texts against all N images."""
    n = image_features.shape[0]
    per = n // world_size
    lo = rank * per
    img, txt = image_features.double(), text_features.double()
    scale = torch.as_tensor(logit_scale, dtype=torch.float64)
    mine = slice(lo, lo + per)
    loss = local_clip_loss(img[mine], txt[mine], scale, img, txt, offset=lo)

    def no_offset() -> Tensor:
        labels = torch.arange(per)
        return 0.5 * (F.cross_entropy(scale * img[mine] @ txt.T, labels) + F.cross_entropy(scale * txt[mine] @ img.T, labels))

    def image_side() -> Tensor:
        return F.cross_entropy(scale * img[mine] @ txt.T, torch.arange(per) + lo)

    return remember(loss, {
        "it matches the loss of the whole batch; rank r computes only the rows of its own images and texts":
            lambda: clip_loss(img, txt, scale),
        "it matches the loss of this rank's pairs alone (N / W - 1 negatives each); with the gathered features "
        "every image meets all N - 1 other texts": lambda: clip_loss(img[mine], txt[mine], scale),
        "it matches labels 0 .. N/W - 1; in the gathered batch this rank's pairs sit at columns rank * N/W + i":
            no_offset,
        "it matches the image -> text half alone; the rank's texts must also be scored against all N images":
            image_side,
        "it is W times too small: each rank returns the mean over its own pairs (DDP averages over ranks)":
            lambda: loss / world_size,
    })


def _rank_cases(g: torch.Generator) -> list[Case]:
    def pairs(n: int, d: int, noise: float) -> tuple[Tensor, Tensor]:
        img = F.normalize(torch.randn(n, d, generator=g), dim=1)
        return img, F.normalize(img + noise * torch.randn(n, d, generator=g), dim=1)

    return [
        Case("N = 8 pairs on W = 4 ranks, rank 1, logit scale 10", (*pairs(8, 16, 0.8), 10.0, 1, 4)),
        Case("W = 1: one process holds the whole batch", (*pairs(6, 8, 0.5), 14.3, 0, 1)),
        Case("the last rank, 3 of 4", (*pairs(12, 8, 0.8), 10.0, 3, 4)),
        Case("one pair per rank (W = N = 6), rank 2", (*pairs(6, 8, 0.6), 10.0, 2, 6)),
        Case("64 pairs on 8 ranks, rank 5, logit scale 100 (the clamp)", (*pairs(64, 32, 1.0), 100.0, 5, 8)),
        Case("logit scale given as a 0-d tensor, rank 0 of 2", (*pairs(10, 8, 0.7), torch.tensor(20.0), 0, 2)),
    ]


register(
    Exercise(
        id="02.local_loss",
        title="one rank's share of the gathered CLIP loss",
        cases=_rank_cases,
        reference=rank_loss,
        compare=lambda given, expected: _judge(given, expected, "the loss", atol=1e-4, rtol=1e-4),
        hint="with n = N / W and offset = rank * n, the rank's rows are image_features[offset:offset + n] and "
        "text_features[offset:offset + n]. Its (n, N) logits are logit_scale * my_images @ all_texts.T and "
        "logit_scale * my_texts @ all_images.T; image i's right answer is column offset + i. Average the two "
        "cross-entropies.",
    )
)
