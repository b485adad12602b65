"""Checks for notebook 03 (zero-shot classification).

Each exercise asks for something the notebook shows only after its check: choosing prompt templates on
labelled images by sequential forward selection (as CLIP's authors chose 7 of their 80), training a linear
probe on frozen features (the k-shot baseline zero-shot CLIP is measured against), and effective
robustness from a family of baselines.

A wrong answer gets a message naming the case and expected against given; for typical mistakes the
reference remembers what each would have returned on that case, and the message says which one the answer
matches. The linear probe is judged by what it must achieve (the minimum of its convex objective), not by
its parameters, so any optimiser that gets there passes.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F

from mmcourse.check.core import AnswerError, Case, Exercise, as_number, diagnosis, register, remember
from mmcourse.robustness import effective_robustness
from mmcourse.zeroshot import ensemble, linear_probe, logits_from_features, probe_objective, select_templates

Tensor = torch.Tensor

# References record what each typical mistake would return on their case (check.core.remember);
# compare functions name the one an answer matches (check.core.diagnosis).


# ---------------------------------------------------------------------------------- 03.select_templates


def _correct(template_embeddings: Tensor, chosen: list[int], features: Tensor, labels: Tensor) -> int:
    logits = logits_from_features(features, ensemble(template_embeddings[:, chosen]))
    return int((logits.argmax(dim=1) == labels).sum())


def _greedy(template_embeddings: Tensor, features: Tensor, labels: Tensor, *, combine: Callable[[Tensor], Tensor] = ensemble,
            prefer_high: bool = False, keep_on_tie: bool = False, repeats: bool = False) -> list[int]:
    """Forward selection with the rule changed the way a typical mistake changes it."""
    chosen: list[int] = []
    best = -1
    n_templates = template_embeddings.shape[1]
    for _ in range(n_templates):
        scores = {}
        for t in range(n_templates):
            if t in chosen and not repeats:
                continue
            logits = logits_from_features(features, combine(template_embeddings[:, chosen + [t]]))
            scores[t] = int((logits.argmax(dim=1) == labels).sum())
        pick = max(scores, key=lambda t: (scores[t], t if prefer_high else -t))
        if scores[pick] < best or (scores[pick] == best and not keep_on_tie):
            break
        chosen.append(pick)
        best = scores[pick]
    return chosen


def _select_reference(template_embeddings: Tensor, image_features: Tensor, labels: Tensor) -> list[int]:
    expected = select_templates(template_embeddings, image_features, labels)
    e, x, y = template_embeddings, image_features, labels
    n = len(expected)

    def top_singles() -> list[int]:
        single = {t: _correct(e, [t], x, y) for t in range(e.shape[1])}
        return sorted(single, key=lambda t: (-single[t], t))[:n]

    return remember(expected, {
        "it matches the templates that are best on their own: forward selection scores each candidate together "
        "with the templates already chosen": top_singles,
        "it matches averaging the raw embeddings; normalise each template's embedding before averaging (the "
        "ensemble of section 4)": lambda: _greedy(e, x, y, combine=lambda t: F.normalize(t.mean(dim=1), dim=-1)),
        "it matches breaking ties towards the higher template index; the lowest index wins a tie":
            lambda: _greedy(e, x, y, prefer_high=True),
        "it matches going on while the count of correct predictions stays equal; stop unless it grows":
            lambda: _greedy(e, x, y, keep_on_tie=True),
        "it matches choosing a template more than once; each template can be chosen only once":
            lambda: _greedy(e, x, y, repeats=True),
    }, features=x, labels=y, embeddings=e)


def _select_compare(given: Any, expected: list[int]) -> None:
    name = "the chosen templates"
    if isinstance(given, Tensor):
        if given.ndim != 1 or given.is_floating_point():
            raise AnswerError(f"{name} should be a list of template indices (ints), got a tensor of shape "
                              f"{tuple(given.shape)} and dtype {given.dtype}")
        given = given.tolist()
    if not isinstance(given, (list, tuple)) or not all(isinstance(t, int) and not isinstance(t, bool) for t in given):
        raise AnswerError(f"{name} should be a list of template indices (ints) in the order they were chosen, got "
                          f"{type(given).__name__}" + (f" {given!r:.80}" if isinstance(given, (list, tuple)) else ""))
    given = list(given)
    if given == list(expected):
        return
    mistakes, context = diagnosis(expected)
    matched = [why for why, wrong in mistakes.items() if given == (value := wrong()) and value != list(expected)]
    if matched:
        raise AnswerError(f"{name} are wrong: {'; or '.join(matched[:2])} (expected {list(expected)}, got {given})")
    shown = f"expected {list(expected)}, got {given}"
    step = next((i for i, (a, b) in enumerate(zip(given, expected)) if a != b), min(len(given), len(expected)))
    if context:
        e, x, y = context["embeddings"], context["features"], context["labels"]
        before = list(expected[:step])
        if step < len(expected) and step < len(given) and 0 <= given[step] < e.shape[1]:
            raise AnswerError(
                f"{name} differ at step {step + 1} ({shown}): after {before}, adding template {given[step]} gives "
                f"{_correct(e, before + [given[step]], x, y)} correct predictions, adding template {expected[step]} "
                f"gives {_correct(e, before + [expected[step]], x, y)}")
        if step == len(expected) and step < len(given):
            raise AnswerError(f"{name} go on too long ({shown}): after {before} no template raises the number of "
                              f"correct predictions above {_correct(e, before, x, y)}, so the selection stops there")
        if step == len(given) and step < len(expected):
            raise AnswerError(f"{name} stop too early ({shown}): after {before}, adding template {expected[step]} "
                              f"raises the correct predictions from {_correct(e, before, x, y) if before else 0} to "
                              f"{_correct(e, before + [expected[step]], x, y)}")
    raise AnswerError(f"{name} are wrong: {shown}")


def _select_cases(g: torch.Generator) -> list[Case]:
    def world(n_classes: int, n_templates: int, dim: int, n: int, *, quirk: float, noise: float) -> tuple:
        """Class directions; each template adds its own quirk (the same for every class) and some noise, and
        has its own length; labelled images near their class direction."""
        centres = F.normalize(torch.randn(n_classes, dim, generator=g), dim=1)
        quirks = quirk * torch.randn(1, n_templates, dim, generator=g)
        lengths = torch.logspace(-0.5, 0.5, n_templates)[torch.randperm(n_templates, generator=g)][None, :, None]
        emb = (centres[:, None, :] + quirks + noise * torch.randn(n_classes, n_templates, dim, generator=g)) * lengths
        labels = torch.randint(n_classes, (n,), generator=g)
        feats = centres[labels] + 0.6 * torch.randn(n, dim, generator=g)
        return emb, feats, labels

    return [
        Case("5 classes, 6 templates, 60 labelled images", world(5, 6, 8, 60, quirk=0.5, noise=0.5)),
        Case("4 classes, 8 templates of very different lengths, 40 images", world(4, 8, 6, 40, quirk=0.8, noise=0.6)),
        Case("one template: it is chosen, and the selection stops", world(3, 1, 5, 30, quirk=0.3, noise=0.3)),
        Case("easy images: one template is already right on all of them, so nothing is added",
             world(3, 5, 16, 20, quirk=0.05, noise=0.05)[:2] + (None,)),
        Case("8 classes, 10 templates, 200 images (a larger search)", world(8, 10, 12, 200, quirk=0.6, noise=0.6)),
    ]


def _fix_easy(cases: list[Case]) -> list[Case]:
    """The 'easy' case: labels are the nearest class centre of each image under the first template, so every
    template that keeps the classes apart gets them all right."""
    out = []
    for case in cases:
        if case.args[2] is None:
            emb, feats = case.args[0], case.args[1]
            labels = logits_from_features(feats, ensemble(emb[:, :1])).argmax(dim=1)
            case = Case(case.name, (emb, feats, labels))
        out.append(case)
    return out


register(
    Exercise(
        id="03.select_templates",
        title="choosing templates by forward selection",
        cases=lambda g: _fix_easy(_select_cases(g)),
        reference=_select_reference,
        compare=_select_compare,
        hint="keep a list `chosen = []` and the best count so far (start below 0). In a loop: for every template t "
        "not in chosen, build the classifier zeroshot.ensemble(template_features[:, chosen + [t]]), predict "
        "(cosine with the image features, argmax over classes) and count the correct predictions; take the t with "
        "the highest count (the lowest t on a tie); if its count is not higher than the best so far, stop; else "
        "append t and update the best. Return chosen.",
    )
)


# ---------------------------------------------------------------------------------------------- 03.probe


def _probe_reference(features: Tensor, labels: Tensor, num_classes: int, weight_decay: float) -> dict:
    """The minimiser, and everything ``compare`` needs to evaluate any answer's objective (plain data)."""
    weight, bias = linear_probe(features, labels, num_classes, weight_decay=weight_decay, max_iter=500)
    x, y = features.double(), labels.long()
    return {"weight": weight, "bias": bias, "features": x, "labels": y, "weight_decay": float(weight_decay),
            "objective": probe_objective(x, y, weight, bias, weight_decay).item()}


def _as_pair(given: Any, expected: dict) -> tuple[Tensor, Tensor]:
    c, d = expected["weight"].shape
    if not isinstance(given, (tuple, list)) or len(given) != 2:
        got = f"a tensor of shape {tuple(given.shape)}" if isinstance(given, Tensor) else type(given).__name__
        raise AnswerError(f"your function should return a pair (weight, bias), weight of shape {(c, d)} and bias "
                          f"of shape {(c,)}; got {got}")
    weight, bias = given
    for name, value, shape in (("weight", weight, (c, d)), ("bias", bias, (c,))):
        if not isinstance(value, Tensor):
            raise AnswerError(f"the {name} should be a torch.Tensor, got {type(value).__name__}")
        if not value.is_floating_point():
            raise AnswerError(f"the {name} should be a floating-point tensor, got dtype {value.dtype}")
        if tuple(value.shape) != shape:
            extra = " (one row per class: it is transposed)" if name == "weight" and tuple(value.shape) == (d, c) else ""
            raise AnswerError(f"the {name} should have shape {shape}, got {tuple(value.shape)}{extra}")
        if not torch.isfinite(value.detach()).all():
            raise AnswerError(f"the {name} contains NaN or inf: training diverged (a smaller step size helps)")
    return weight.detach().double().cpu(), bias.detach().double().cpu()


def _probe_compare(given: Any, expected: dict) -> None:
    weight, bias = _as_pair(given, expected)
    x, y, wd = expected["features"], expected["labels"], expected["weight_decay"]
    best = expected["objective"]
    w = weight.clone().requires_grad_()
    b = bias.clone().requires_grad_()
    value = probe_objective(x, y, w, b, wd)
    grad_w, grad_b = torch.autograd.grad(value, (w, b))
    value = value.item()
    if value <= best + 1e-4 * max(1.0, abs(best)):
        return
    grad = math.sqrt(grad_w.pow(2).sum().item() + grad_b.pow(2).sum().item())
    shown = (f"the objective (mean cross-entropy + {wd:g} * ||weight||^2) is {value:.6f} at your weight and bias, "
             f"its minimum is {best:.6f}; the gradient there has norm {grad:.2e} (0 at the minimum)")
    norm_given, norm_best = weight.pow(2).sum().item(), expected["weight"].pow(2).sum().item()
    ce_given = F.cross_entropy(x @ weight.T + bias, y).item()
    ce_best = F.cross_entropy(x @ expected["weight"].T + expected["bias"], y).item()
    if bias.abs().max().item() == 0 and expected["bias"].abs().max().item() > 1e-3:
        raise AnswerError(f"your probe is not at the minimum: {shown}. Your bias is all zeros: it is a parameter "
                          "too, trained with the weight (and not penalised)")
    if norm_given > 1.5 * norm_best + 1e-6 and ce_given < ce_best:
        raise AnswerError(f"your probe is not at the minimum: {shown}. Your weights are larger than the "
                          f"minimiser's (||weight||^2 = {norm_given:.4g}, not {norm_best:.4g}) and fit the training "
                          f"examples better: is the penalty {wd:g} * ||weight||^2 in your loss, next to the mean "
                          "(not the sum) of the cross-entropy?")
    if norm_given < norm_best / 1.5 and grad < 1e-3:
        raise AnswerError(f"your probe is not at the minimum: {shown}. Your weights are smaller than the "
                          f"minimiser's (||weight||^2 = {norm_given:.4g}, not {norm_best:.4g}): is the penalty "
                          f"stronger than {wd:g} * ||weight||^2, or is the bias penalised too?")
    raise AnswerError(f"your probe is not at the minimum: {shown}. Train longer, with a suitable step size, or use "
                      "an optimiser made for this (the objective is convex: every road leads to the same minimum)")


def _probe_cases(g: torch.Generator) -> list[Case]:
    def clustered(counts: list[int], dim: int, spread: float, *, unit: bool = False) -> tuple[Tensor, Tensor]:
        centres = torch.randn(len(counts), dim, generator=g)
        labels = torch.cat([torch.full((c,), i) for i, c in enumerate(counts)])
        labels = labels[torch.randperm(len(labels), generator=g)]
        x = centres[labels] + spread * torch.randn(len(labels), dim, generator=g)
        return (F.normalize(x, dim=1) if unit else x), labels

    one_shot = clustered([1, 1, 1, 1], 8, 0.3)
    four_shot = clustered([4] * 5, 16, 0.8, unit=True)
    unbalanced = clustered([3, 10, 25], 6, 1.0)
    strong = clustered([8, 8, 8, 8], 8, 0.5)
    overlap = clustered([50, 50], 3, 1.5)
    return [
        Case("1-shot: one example of each of 4 classes, D = 8, weight decay 0.01", (*one_shot, 4, 0.01)),
        Case("4-shot: 5 classes, unit-length features (like CLIP's), weight decay 0.001", (*four_shot, 5, 0.001)),
        Case("unbalanced classes (3, 10 and 25 examples) in shuffled order, weight decay 0.01", (*unbalanced, 3, 0.01)),
        Case("strong weight decay 1.0: the weights stay small", (*strong, 4, 1.0)),
        Case("two overlapping classes, 100 examples in 3 dimensions, weight decay 0.01", (*overlap, 2, 0.01)),
    ]


register(
    Exercise(
        id="03.probe",
        title="training a linear probe",
        cases=_probe_cases,
        reference=_probe_reference,
        compare=_probe_compare,
        hint="make weight = torch.zeros(C, D, requires_grad=True) and bias = torch.zeros(C, requires_grad=True); "
        "the loss is F.cross_entropy(features @ weight.T + bias, labels) + weight_decay * weight.pow(2).sum(). "
        "Minimise it: torch.optim.LBFGS([weight, bias], max_iter=500, line_search_fn='strong_wolfe') with a "
        "closure that zeroes the gradients, computes the loss, calls backward and returns it; or Adam (lr 0.05) "
        "for about 1000 steps. Return (weight.detach(), bias.detach()).",
    )
)


# ------------------------------------------------------------------------------ 03.effective_robustness


def _logit(p: Any) -> Tensor:
    p = torch.as_tensor(p, dtype=torch.float64)
    return torch.log(p / (1 - p))


def _fit(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
    return slope, y.mean() - slope * x.mean()


def _robustness_reference(baseline_id: Tensor, baseline_ood: Tensor, model_id: float, model_ood: float) -> float:
    expected = effective_robustness(baseline_id, baseline_ood, model_id, model_ood)
    bi, bo = torch.as_tensor(baseline_id, dtype=torch.float64), torch.as_tensor(baseline_ood, dtype=torch.float64)

    def on_accuracies() -> float:
        a, b = _fit(bi, bo)
        return model_ood - (a * model_id + b).item()

    def in_logits() -> float:
        a, b = _fit(_logit(bi), _logit(bo))
        return (_logit(model_ood) - (a * _logit(model_id) + b)).item()

    def swapped() -> float:
        a, b = _fit(_logit(bo), _logit(bi))  # id = a * ood + b, solved for ood
        return model_ood - torch.sigmoid((_logit(model_id) - b) / a).item()

    return remember(expected, {
        "it matches the plain drop model_ood - model_id; effective robustness compares with the baselines' trend "
        "at the model's own in-distribution accuracy": lambda: model_ood - model_id,
        "it matches a line fitted to the accuracies themselves; fit it to their logits": on_accuracies,
        "it matches the difference in logit units; map the trend's prediction back to an accuracy (sigmoid) "
        "before subtracting": in_logits,
        "it matches the line fitted the other way round (in-distribution from shifted); regress the shifted "
        "accuracy on the original one": swapped,
        "it matches the distance to the baselines' mean shifted accuracy; use the fitted line at the model's "
        "own in-distribution accuracy": lambda: model_ood - bo.mean().item(),
    })


def _robustness_compare(given: Any, expected: float) -> None:
    name = "the effective robustness"
    given = as_number(given, name)
    if abs(given - expected) <= 1e-4:
        return
    mistakes, _ = diagnosis(expected)
    shown = f"expected {expected:.6g}, got {given:.6g}"
    matched = [why for why, wrong in mistakes.items()
               if abs(given - (value := wrong())) <= 1e-4 and abs(value - expected) > 1e-4]
    if matched:
        raise AnswerError(f"{name} is wrong: {'; or '.join(matched[:2])} ({shown})")
    raise AnswerError(f"{name} should be {expected:.6g}, got {given:.6g}")


def _robustness_cases(g: torch.Generator) -> list[Case]:
    sig = torch.sigmoid
    line = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0])  # logit(id) of five baselines, ood on logit(ood) = 0.8 logit(id) - 1.5
    on_line = (sig(line), sig(0.8 * line - 1.5))
    noisy_id = torch.rand(7, generator=g) * 0.6 + 0.3
    x = torch.logit(noisy_id)
    noisy_ood = sig(0.9 * x - 1.2 + 0.2 * torch.randn(7, generator=g))
    return [
        Case("a model on the baselines' line (logit axes): effective robustness 0",
             (*on_line, sig(torch.tensor(0.5)).item(), sig(torch.tensor(0.8 * 0.5 - 1.5)).item())),
        Case("a model above the line, inside the baselines' range", (*on_line, 0.7, 0.6)),
        Case("a model beyond the best baseline (the fit extrapolates), like zero-shot CLIP", (*on_line, 0.97, 0.9)),
        Case("a less robust model: below the line", (*on_line, 0.6, 0.1)),
        Case("7 scattered baselines (least squares in logit space)", (noisy_id, noisy_ood, 0.8, 0.55)),
        Case("two baselines define the line", (torch.tensor([0.2, 0.8]), torch.tensor([0.05, 0.3]), 0.5, 0.5)),
    ]


register(
    Exercise(
        id="03.effective_robustness",
        title="effective robustness",
        cases=_robustness_cases,
        reference=_robustness_reference,
        compare=_robustness_compare,
        hint="transform every accuracy with logit(p) = log(p / (1 - p)); fit ood = slope * id + intercept over the "
        "baselines by least squares (in logit units): slope = sum((x - mean x)(y - mean y)) / sum((x - mean x)^2), "
        "intercept = mean y - slope * mean x; predict the model's ood accuracy as "
        "sigmoid(slope * logit(model_id) + intercept); return model_ood minus that prediction, as a float.",
    )
)
