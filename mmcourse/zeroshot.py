"""Zero-shot classification with a CLIP model: a classifier written in words.

CLIP's recipe, in five steps: (1) encode the image; (2) put the name of every class into a prompt
("a photo of a {}"); (3) encode the prompts; (4) take the cosine similarity of the image with each
prompt; (5) predict the class with the highest one. Steps 2-3 build the classifier: C normalised
text embeddings, the rows of a linear layer. With several prompt templates, average each class's
normalised template embeddings and normalise again (prompt ensembling), exactly as open_clip's
``build_zero_shot_classifier`` does (it returns the transpose, (D, C)).

Words a prompt uses that the tokenizer does not know become ``<unk>`` (the tokenizer never fails on
text); ``build_classifier`` encodes them that way and warns, naming the words.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import torch
import torch.nn.functional as F

from mmcourse.data.shapes import combos_for, make_shapes
from mmcourse.data.tokenizer import default_tokenizer

Tensor = torch.Tensor

# The course's templates: each has one "{}" for the class name ("red square"). The first twelve use
# words the course CLIP read in its training captions; the last four come from CLIP's ImageNet list
# and use words our CLIP's vocabulary holds but its training captions never contained ("blurry",
# "itap", "video game", "tattoo"), so their embeddings are untrained: templates that can hurt.
TEMPLATES: tuple[str, ...] = (
    "a {}",
    "a photo of a {}",
    "a sketch of a {}",
    "a drawing of a {}",
    "a cartoon of a {}",
    "an icon of a {}",
    "a {} on a grey background",
    "there is a {} in the center",
    "a small {}",
    "a large {}",
    "the {}",
    "one {}",
    "a blurry photo of a {}",
    "itap of a {}",
    "a {} in a video game",
    "a tattoo of a {}",
)


def prompts(classnames: Sequence[str], templates: Sequence[str]) -> list[str]:
    """The C * T prompts, class-major: every template for class 0, then for class 1, ..."""
    _check_names(classnames)
    _check_templates(templates)
    return [t.format(name) for name in classnames for t in templates]


def unknown_words(model, texts: Sequence[str]) -> list[str]:
    """The words of ``texts`` that ``model``'s tokenizer maps to ``<unk>`` (each once, in order of appearance)."""
    tokenizer = _tokenizer_of(model)
    if tokenizer is None:
        return []
    return list(dict.fromkeys(w for t in texts for w in tokenizer.unknown_words(t)))


def ensemble(template_embeddings: Tensor) -> Tensor:
    """(C, T, D) text embeddings of C classes under T templates -> (C, D) class embeddings:
    normalise each, average over the templates, normalise again."""
    if not isinstance(template_embeddings, Tensor) or template_embeddings.ndim != 3:
        shape = tuple(template_embeddings.shape) if isinstance(template_embeddings, Tensor) else type(template_embeddings).__name__
        raise ValueError(f"expected template embeddings (C, T, D), got {shape}")
    return F.normalize(F.normalize(template_embeddings.float(), dim=-1).mean(dim=1), dim=-1)


def build_classifier(model, classnames: Sequence[str], templates: Sequence[str] = ("a {}",), *,
                     warn_unknown: bool = True) -> Tensor:
    """(C, D) L2-normalised class embeddings: for each class, the mean of its normalised template
    embeddings, renormalised. ``model`` needs ``encode_text(list_of_str)`` -> (N, D).

    Warns (``UserWarning``) when prompts contain words the tokenizer maps to ``<unk>``.
    """
    texts = prompts(classnames, templates)
    if warn_unknown:
        lost = unknown_words(model, texts)
        if lost:
            warnings.warn(f"prompt words not in the vocabulary, encoded as <unk>: {', '.join(lost[:10])}", stacklevel=2)
    with torch.no_grad():
        emb = model.encode_text(texts).float()
    return ensemble(emb.view(len(classnames), len(templates), -1))


def encode_images(model, images: Tensor, *, batch_size: int = 512) -> Tensor:
    """(N, D) L2-normalised image embeddings, on the CPU; ``images`` (N, 3, H, W) in [0, 1]."""
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"expected images (N, 3, H, W) in [0, 1], got {shape}")
    device = _device_of(model)
    out = []
    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            batch = images[start:start + batch_size].to(device)
            out.append(F.normalize(model.encode_image(batch).float(), dim=-1).cpu())
    return torch.cat(out)


def logits_from_features(image_features: Tensor, classifier: Tensor, logit_scale: float | Tensor = 1.0) -> Tensor:
    """(N, C) = logit_scale * cosine(image i, class c); features need not be normalised."""
    if image_features.ndim != 2 or classifier.ndim != 2 or image_features.shape[1] != classifier.shape[1]:
        raise ValueError(f"image features (N, D) and classifier (C, D) must share D; got {tuple(image_features.shape)} "
                         f"and {tuple(classifier.shape)}")
    cos = F.normalize(image_features.float(), dim=-1) @ F.normalize(classifier.float(), dim=-1).T
    return torch.as_tensor(logit_scale, dtype=cos.dtype) * cos


def classify(model, images: Tensor, classifier: Tensor, *, batch_size: int = 512) -> Tensor:
    """Zero-shot logits (N, C): cosine similarity of each image to each class embedding, times the
    model's multiplier ``model.scale()`` (exp(t), at most 100)."""
    features = encode_images(model, images, batch_size=batch_size)
    with torch.no_grad():
        scale = model.scale().float().cpu()
    return logits_from_features(features, classifier.cpu(), scale)


def predict(model, images: Tensor, classifier: Tensor, *, batch_size: int = 512) -> Tensor:
    """(N,) index of the most similar class for each image (step 5)."""
    return classify(model, images, classifier, batch_size=batch_size).argmax(dim=1)


def probabilities(model, images: Tensor, classifier: Tensor) -> Tensor:
    """(N, C) softmax over the classes of the zero-shot logits."""
    return classify(model, images, classifier).softmax(dim=1)


def accuracy(predictions: Tensor, labels: Tensor) -> float:
    """Share of ``predictions`` (N,) equal to ``labels`` (N,); logits (N, C) are reduced by argmax first."""
    if predictions.ndim == 2:
        predictions = predictions.argmax(dim=1)
    labels = torch.as_tensor(labels)
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions {tuple(predictions.shape)} and labels {tuple(labels.shape)} differ in shape")
    return (predictions.cpu() == labels.cpu()).float().mean().item()


def template_accuracies(model, image_features: Tensor, labels: Tensor, classnames: Sequence[str],
                        templates: Sequence[str] = TEMPLATES) -> dict[str, float]:
    """Accuracy of the one-template classifier of every template, plus ``"ensemble"`` (all of them).

    ``image_features`` (N, D) from ``encode_images``; ``labels`` (N,) index into ``classnames``.
    """
    texts = prompts(classnames, templates)
    with torch.no_grad():
        emb = model.encode_text(texts).float().cpu().view(len(classnames), len(templates), -1)
    out = {t: accuracy(logits_from_features(image_features, ensemble(emb[:, i:i + 1])), labels)
           for i, t in enumerate(templates)}
    out["ensemble"] = accuracy(logits_from_features(image_features, ensemble(emb)), labels)
    return out


def select_templates(template_embeddings: Tensor, image_features: Tensor, labels: Tensor) -> list[int]:
    """Sequential forward selection of prompt templates on labelled images, as CLIP's authors chose 7 of
    their 80 ImageNet templates.

    ``template_embeddings`` (C, T, D) text embeddings of C classes under T templates; ``image_features``
    (N, D) and ``labels`` (N,) a labelled validation set. Start with no template; at each step add the
    template whose addition gives the ensembled classifier (``ensemble``) the most correct predictions
    (ties: the lowest template index); stop when no template adds a correct prediction. Returns the
    chosen template indices in the order they were chosen.
    """
    if not isinstance(template_embeddings, Tensor) or template_embeddings.ndim != 3:
        raise ValueError("template_embeddings must be (C, T, D)")
    labels = torch.as_tensor(labels)
    chosen: list[int] = []
    best = -1
    while len(chosen) < template_embeddings.shape[1]:
        correct = {}
        for t in range(template_embeddings.shape[1]):
            if t not in chosen:
                logits = logits_from_features(image_features, ensemble(template_embeddings[:, chosen + [t]]))
                correct[t] = int((logits.argmax(dim=1).cpu() == labels.cpu()).sum())
        pick = max(correct, key=lambda t: (correct[t], -t))
        if correct[pick] <= best:
            break
        chosen.append(pick)
        best = correct[pick]
    return chosen


def probe_objective(features: Tensor, labels: Tensor, weight: Tensor, bias: Tensor, weight_decay: float) -> Tensor:
    """The linear probe's training objective: mean cross-entropy of ``features @ weight.T + bias`` over the
    N examples, plus ``weight_decay * ||weight||^2`` (the bias is not penalised). (N, D), (N,), (C, D), (C,).

    With a leading batch dimension (B probes: (B, N, D), (B, N), (B, C, D), (B, C)) it is the sum of the B
    probes' objectives."""
    labels = torch.as_tensor(labels)
    logits = features @ weight.transpose(-1, -2) + bias.unsqueeze(-2)  # (..., N, C)
    fit = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="sum") / labels.shape[-1]
    return fit + weight_decay * weight.pow(2).sum()


def linear_probe(features: Tensor, labels: Tensor, num_classes: int, *, weight_decay: float = 1e-3,
                 max_iter: int = 200) -> tuple[Tensor, Tensor]:
    """A linear probe (multinomial logistic regression on frozen features), as CLIP's paper evaluates
    representations: the (C, D) weight and (C,) bias that minimise ``probe_objective``, by L-BFGS from zero
    in float64 (the objective is convex, so any good optimiser reaches the same minimum).

    ``features`` (N, D), ``labels`` (N,) long in [0, num_classes). Every class needs at least one example
    (an absent class's best bias is minus infinity). Several probes of the same size fit at once when the
    inputs carry a batch dimension, (B, N, D) and (B, N) -> (B, C, D) and (B, C): their objectives are
    independent, so minimising the sum minimises each, in one optimiser run instead of B."""
    x = features.detach().double().cpu()
    y = torch.as_tensor(labels).long().cpu()
    if x.ndim not in (2, 3) or y.shape != x.shape[:-1]:
        raise ValueError(f"expected features (N, D) and labels (N,) (or (B, N, D) and (B, N)), got {tuple(x.shape)} "
                         f"and {tuple(y.shape)}")
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{int(y.min())}, {int(y.max())}]")
    batch = x.shape[:-2]
    weight = torch.zeros(*batch, num_classes, x.shape[-1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(*batch, num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], max_iter=max_iter, line_search_fn="strong_wolfe", history_size=20)

    def closure() -> Tensor:
        opt.zero_grad()
        loss = probe_objective(x, y, weight, bias, weight_decay)
        loss.backward()
        return loss

    opt.step(closure)
    return weight.detach(), bias.detach()


def color_shape_classes() -> list[tuple[str, str]]:
    """The 64 (colour, shape) classes of the shapes world, seen and held-out alike."""
    return combos_for("all")


def color_shape_accuracy(model, *, style: str = "photo", split: str = "train", n: int = 1000, seed: int = 20_261_122,
                         templates: Sequence[str] = ("a {}",)) -> dict:
    """64-way zero-shot accuracy over all colour-shape classes on fresh single-object images, plus
    how often the colour and the shape of the predicted class are right."""
    classes = color_shape_classes()
    classifier = build_classifier(model, [f"{c} {s}" for c, s in classes], templates)
    data = make_shapes(n, seed=seed, split=split, style=style)
    pred = classify(model, data.images, classifier).argmax(dim=1)
    truth = torch.tensor([classes.index(p) for p in data.combos])
    color_right = torch.tensor([classes[p][0] == c for p, c in zip(pred.tolist(), data.colors)])
    shape_right = torch.tensor([classes[p][1] == s for p, s in zip(pred.tolist(), data.shapes)])
    return {
        "accuracy": round((pred == truth).float().mean().item(), 4),
        "color": round(color_right.float().mean().item(), 4),
        "shape": round(shape_right.float().mean().item(), 4),
    }


# --------------------------------------------------------------------------------------- input checks


def _check_names(classnames: Sequence[str]) -> None:
    if isinstance(classnames, str) or not isinstance(classnames, Sequence) or not len(classnames):
        raise ValueError("classnames must be a non-empty list of strings")
    bad = [c for c in classnames if not isinstance(c, str) or not c.strip()]
    if bad:
        raise ValueError(f"every class name must be a non-empty string; not so: {bad[:3]}")


def _check_templates(templates: Sequence[str]) -> None:
    if isinstance(templates, str) or not isinstance(templates, Sequence) or not len(templates):
        raise ValueError("templates must be a non-empty list of strings, each with one '{}'")
    bad = [t for t in templates if not isinstance(t, str) or t.count("{}") != 1 or t.replace("{}", "").count("{")
           or t.replace("{}", "").count("}")]
    if bad:
        raise ValueError(f"every template needs exactly one '{{}}' for the class name (and no other braces); "
                         f"not so: {bad[:3]}")


def _tokenizer_of(model):
    text = getattr(model, "text", None)
    tokenizer = getattr(text, "tokenizer", None) or getattr(model, "tokenizer", None)
    if tokenizer is None or not hasattr(tokenizer, "unknown_words"):
        return default_tokenizer() if hasattr(model, "tokenize") else None
    return tokenizer


def _device_of(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")
