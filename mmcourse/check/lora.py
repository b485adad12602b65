"""Checks for notebook 05 (LoRA and adapters).

Every exercise asks for something the notebook shows only after its check:

* ``05.lora_forward``: a LoRA layer's forward from plain tensors, under both scalings (peft's α/r and
  rsLoRA's α/√r), the rank read off the shapes;
* ``05.lora_params``: the number of trainable parameters LoRA adds to a model, from its layers' shapes and
  the target names, matched by peft's rule (the full name or its last dotted parts);
* ``05.low_rank``: the best rank-r factors B, A of a full fine-tuning update ΔW (what LoRA could at best
  represent at rank r).

A wrong answer gets a message naming the case, expected against given, and, for the typical mistakes
(α instead of α/r, the bias left out, r·in·out parameters, the smallest singular values, ...), what the
answer matches instead. References return plain values (graders ship them between processes).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from mmcourse.check.core import (
    AnswerError, Case, Exercise, as_number, diagnosis, expect_close, expect_tensor, register, remember,
)

Tensor = torch.Tensor


def _near(a: Any, b: Tensor, atol: float, rtol: float) -> bool:
    if not isinstance(a, Tensor) or a.shape != b.shape:
        return False
    a, b = a.detach().double(), b.detach().double()
    return bool(torch.isfinite(a).all()) and bool(((a - b).abs() <= atol + rtol * b.abs()).all())


def _named(given: Any, expected: Tensor, name: str, *, atol: float, rtol: float, mistakes: dict | None = None) -> None:
    """Pass when close; else name the typical mistake ``given`` matches (``mistakes``, by default those
    recorded with ``expected``); else say where it differs, expected against given."""
    given = expect_tensor(given, name=name, shape=tuple(expected.shape), dtype="float")
    if _near(given, expected, atol, rtol):
        return
    for why, wrong in (diagnosis(expected)[0] if mistakes is None else mistakes).items():
        value = wrong()
        if _near(given, value, atol, rtol) and not _near(value, expected, atol, rtol):
            raise AnswerError(f"{name} has wrong values: {why}")
    expect_close(given, expected, name=name, atol=atol, rtol=rtol)


# ------------------------------------------------------------------------------------- 05.lora_forward


def lora_forward(x: Tensor, weight: Tensor, bias: Tensor | None, lora_A: Tensor, lora_B: Tensor, alpha: float,
                 rslora: bool = False) -> Tensor:
    """Reference for 05.lora_forward: x Wᵀ + b + s (x Aᵀ) Bᵀ with s = α/r (or α/√r with ``rslora``)."""
    x, weight, lora_A, lora_B = x.double(), weight.double(), lora_A.double(), lora_B.double()
    bias = None if bias is None else bias.double()
    r = lora_A.shape[0]
    base = x @ weight.T + (0 if bias is None else bias)
    low = (x @ lora_A.T) @ lora_B.T

    def with_scale(s: float) -> Tensor:
        return base + s * low

    out = with_scale(alpha / math.sqrt(r) if rslora else alpha / r)
    mistakes = {
        "it matches scaling by α alone; the update is multiplied by α/r (α/√r with rslora)": lambda: with_scale(alpha),
        "it matches the LoRA branch without any scaling": lambda: with_scale(1.0),
        "it matches the base layer alone; add the low-rank branch": lambda: base,
        "it matches the low-rank branch alone; add the frozen layer's output x Wᵀ + b": lambda: out - base,
    }
    if rslora:
        mistakes["it matches peft's α/r; with rslora=True the scaling is α/√r"] = lambda: with_scale(alpha / r)
    else:
        mistakes["it matches rsLoRA's α/√r; without rslora the scaling is α/r"] = lambda: with_scale(alpha / math.sqrt(r))
    if bias is not None:
        mistakes["it matches the output without the bias b"] = lambda: out - bias
    return remember(out, mistakes)


def _forward_cases(g: torch.Generator) -> list[Case]:
    def case(name, lead, k, n, r, alpha, *, bias=True, rslora=False):
        x = torch.randn(*lead, k, generator=g)
        w = torch.randn(n, k, generator=g) / math.sqrt(k)
        b = torch.randn(n, generator=g) if bias else None
        a = torch.randn(r, k, generator=g) / math.sqrt(k)
        bb = torch.randn(n, r, generator=g)
        return Case(name, (x, w, b, a, bb, alpha, rslora))

    return [
        case("x (4, 6), W (5, 6), r = 2, alpha = 4", (4,), 6, 5, 2, 4.0),
        case("r = 1, alpha = 1, no bias (bias=None)", (3,), 7, 4, 1, 1.0, bias=False),
        case("x (2, 3, 8): a batch of sequences, r = 4, alpha = 16", (2, 3), 8, 6, 4, 16.0),
        case("rslora=True, r = 9, alpha = 6", (5,), 10, 9, 9, 6.0, rslora=True),
        case("r = 8, alpha = 8 (scaling 1)", (4,), 12, 10, 8, 8.0),
    ]


register(
    Exercise(
        id="05.lora_forward",
        title="a LoRA layer's forward with its scaling",
        cases=_forward_cases,
        reference=lora_forward,
        compare=lambda given, expected: _named(given, expected, "the output", atol=1e-5, rtol=1e-4),
        hint="read r from lora_A.shape[0]; s = alpha / r, or alpha / math.sqrt(r) when rslora; the frozen part is "
        "x @ weight.T (+ bias unless it is None), the low-rank part (x @ lora_A.T) @ lora_B.T; return frozen + s * low-rank.",
    )
)


# ------------------------------------------------------------------------------------- 05.lora_params


def _matches(name: str, targets: list[str]) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def lora_params(layers: dict[str, tuple[int, int]], targets: list[str], r: int) -> int:
    """Reference for 05.lora_params: sum over matched layers (out, in) of r * (in + out)."""
    return remember(sum(r * (i + o) for name, (o, i) in layers.items() if _matches(name, targets)), {}, layers=layers,
                    targets=targets, r=r)


def _params_mistakes(given: int, layers: dict, targets: list[str], r: int) -> str | None:
    matched = [(o, i) for name, (o, i) in layers.items() if _matches(name, targets)]
    loose = [(o, i) for name, (o, i) in layers.items() if any(name.endswith(t) for t in targets)]
    candidates = {
        "it counts r * in * out per layer: A is (r, in) and B is (out, r), so a layer adds r * (in + out)":
            sum(r * i * o for o, i in matched),
        "it counts only A (r * in) per layer; B (out x r) trains too": sum(r * i for o, i in matched),
        "it counts only B (out * r) per layer; A (r x in) trains too": sum(r * o for o, i in matched),
        "it counts 2 * r * in per layer, as if every layer were square; use each layer's in and out":
            sum(2 * r * i for o, i in matched),
        "it counts every layer of the model; only those the target names select get LoRA":
            sum(r * (i + o) for o, i in layers.values()),
        "it counts the full weights (in * out) of the selected layers, as full fine-tuning would":
            sum(i * o for o, i in matched),
        "it matches names by their last characters; a target selects a name equal to it or ending in '.' + target":
            sum(r * (i + o) for o, i in loose),
    }
    for why, value in candidates.items():
        if value == given and value != sum(r * (i + o) for o, i in matched):
            return why
    return None


def _params_compare(given: Any, expected: int) -> None:
    if isinstance(given, bool) or not isinstance(given, (int, Tensor)) or (isinstance(given, Tensor) and given.is_floating_point()):
        value = as_number(given, "the count")
        if value != int(value):
            raise AnswerError(f"the count should be a whole number, got {value}")
    given = int(as_number(given, "the count"))
    if given == expected:
        return
    context = diagnosis(expected)[1]
    why = _params_mistakes(given, **context) if context else None
    raise AnswerError(f"the count should be {expected:,}, got {given:,}" + (f": {why}" if why else ""))


def _tower(width: int, layers: int, ratio: int = 4) -> dict[str, tuple[int, int]]:
    shapes = {}
    for i in range(layers):
        for p in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[f"blocks.{i}.attn.{p}"] = (width, width)
        shapes[f"blocks.{i}.mlp.0"] = (ratio * width, width)
        shapes[f"blocks.{i}.mlp.2"] = (width, ratio * width)
    return shapes


def _params_cases(g: torch.Generator) -> list[Case]:
    course = {**_tower(64, 2), "projection": (64, 64)}
    gpt = {**_tower(96, 3), "head": (500, 96)}
    cross = {"blocks.0.attn.q_proj": (32, 32), "blocks.0.attn.kv_proj": (64, 48), "blocks.0.attn.v_proj": (32, 48),
             "blocks.0.mlp.0": (128, 32), "blocks.0.mlp.2": (32, 128)}
    r = int(torch.randint(3, 7, (1,), generator=g))
    return [
        Case("the course text tower, targets ['q_proj', 'v_proj'], r = 2", (course, ["q_proj", "v_proj"], 2)),
        Case(f"the course text tower, every linear layer of the blocks, r = {r}",
             (course, ["q_proj", "k_proj", "v_proj", "out_proj", "mlp.0", "mlp.2"], r)),
        Case("a 3-layer model with a 500-word output head, targets ['mlp.0', 'head'], r = 8", (gpt, ["mlp.0", "head"], 8)),
        Case("cross-attention with keys and values from a 48-wide context, targets ['v_proj'], r = 4",
             (cross, ["v_proj"], 4)),
        Case("the course text tower, targets ['v_proj'], r = 1", (course, ["v_proj"], 1)),
    ]


register(
    Exercise(
        id="05.lora_params",
        title="the trainable parameters LoRA adds",
        cases=_params_cases,
        reference=lora_params,
        compare=_params_compare,
        hint="a layer is selected when its name equals a target or ends with '.' + target; a selected layer with "
        "weight shape (out, in) gets A (r, in) and B (out, r): r * (in + out) parameters. Sum over the selected layers.",
    )
)


# ---------------------------------------------------------------------------------------- 05.low_rank


def low_rank(delta: Tensor, r: int) -> tuple[Tensor, Tensor]:
    """Reference for 05.low_rank: B = U_r diag(S_r), A = Vh_r (any split of S between them is right)."""
    u, s, vh = torch.linalg.svd(delta.double(), full_matrices=False)
    return remember((u[:, :r] * s[:r], vh[:r]), {
        "it matches the product with the r *smallest* singular values; the best approximation keeps the largest":
            lambda: (u[:, -r:] * s[-r:]) @ vh[-r:],
        "it matches U_r Vh_r without the singular values; they must sit in B or A (or split between them)":
            lambda: u[:, :r] @ vh[:r],
        "it matches U_r diag(S_r)^2 Vh_r: the singular values were put in both B and A":
            lambda: (u[:, :r] * s[:r] ** 2) @ vh[:r],
    })


def _low_rank_compare(given: Any, expected: tuple[Tensor, Tensor]) -> None:
    b_ref, a_ref = expected
    out, r, k = b_ref.shape[0], a_ref.shape[0], a_ref.shape[1]
    if not isinstance(given, (tuple, list)) or len(given) != 2:
        raise AnswerError(f"return a pair (B, A): B of shape ({out}, {r}) and A of shape ({r}, {k})")
    b = expect_tensor(given[0], name="B", shape=(out, r), dtype="float")
    a = expect_tensor(given[1], name="A", shape=(r, k), dtype="float")
    # a float32 SVD is exact only to about eps32 times the largest singular value (1.9e-6 was seen in grading's
    # kernel for a spectrum up to 6): the tolerance scales with it; every named mistake is off by far more
    target = b_ref @ a_ref
    atol = 2e-5 * max(1.0, float(torch.linalg.matrix_norm(target, ord=2)))
    _named(b.double() @ a.double(), target, "B @ A", atol=atol, rtol=1e-4, mistakes=diagnosis(expected)[0])


def _low_rank_cases(g: torch.Generator) -> list[Case]:
    def update(out: int, k: int, spectrum: list[float]) -> Tensor:
        # distinct singular values, so the best rank-r product is unique
        q1, _ = torch.linalg.qr(torch.randn(out, len(spectrum), generator=g, dtype=torch.float64))
        q2, _ = torch.linalg.qr(torch.randn(k, len(spectrum), generator=g, dtype=torch.float64))
        return ((q1 * torch.tensor(spectrum, dtype=torch.float64)) @ q2.T).float()

    return [
        Case("ΔW (6, 5) with singular values 5, 3, 2, 1, 0.5, r = 2", (update(6, 5, [5, 3, 2, 1, 0.5]), 2)),
        Case("ΔW (4, 7), r = 1", (update(4, 7, [2.0, 1.5, 0.7, 0.1]), 1)),
        Case("ΔW (8, 8) of rank 3 (five zero singular values), r = 3", (update(8, 8, [4.0, 2.0, 1.0]), 3)),
        Case("ΔW (10, 6), r = 6 = min(out, in): the exact ΔW", (update(10, 6, [6, 5, 4, 3, 2, 1]), 6)),
    ]


register(
    Exercise(
        id="05.low_rank",
        title="the best rank-r factors of an update",
        cases=_low_rank_cases,
        reference=low_rank,
        compare=_low_rank_compare,
        hint="U, S, Vh = torch.linalg.svd(delta, full_matrices=False) gives delta = U diag(S) Vh with S sorted from the "
        "largest. Keep the first r: B = U[:, :r] * S[:r] (each column times its singular value), A = Vh[:r]. By the "
        "Eckart-Young theorem B @ A is the closest rank-r matrix to delta.",
    )
)
