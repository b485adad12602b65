"""Checks for notebook 03 (zero-shot classification)."""

from __future__ import annotations

import torch

from mmcourse.check.core import Case, Exercise, expect_close, expect_number, register
from mmcourse.robustness import effective_robustness
from mmcourse.zeroshot import ensemble, logits_from_features


def zero_shot_probs(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale) -> torch.Tensor:
    """Reference for 03.classifier: softmax over classes of logit_scale * cosine(image, class text)."""
    return logits_from_features(image_features, text_features, logit_scale).softmax(dim=1)


def _varied_norms(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Rows rescaled by factors between 0.1 and 10, so a missing normalisation changes the answer."""
    return x * torch.logspace(-1, 1, x.shape[0])[torch.randperm(x.shape[0], generator=g)][:, None]


def _classifier_cases(g: torch.Generator) -> list[Case]:
    img = _varied_norms(torch.randn(6, 8, generator=g), g)
    txt = torch.randn(4, 8, generator=g)
    def randn(*shape):
        return torch.randn(*shape, generator=g)

    return [
        Case("6 images, 4 classes, D = 8, unnormalised images of very different lengths, logit scale 10",
             (img, torch.nn.functional.normalize(txt, dim=1), 10.0)),
        Case("text embeddings of different lengths too (normalise both sides)", (img, _varied_norms(txt, g), 10.0)),
        Case("logit scale 100 (CLIP's cap): a peaky softmax", (randn(5, 16), randn(7, 16), 100.0)),
        Case("logit scale given as a 0-d tensor", (randn(3, 4), randn(2, 4), torch.tensor(30.0))),
        Case("more images than classes: 10 images, 3 classes", (randn(10, 6) * 4, randn(3, 6), 20.0)),
        Case("one image, one class: probability 1", (randn(1, 5), randn(1, 5), 14.0)),
    ]


register(
    Exercise(
        id="03.classifier",
        title="zero-shot classifier from label text",
        cases=_classifier_cases,
        reference=zero_shot_probs,
        compare=lambda given, expected: expect_close(given, expected, name="the probabilities", atol=1e-5),
        hint="L2-normalise the image features (N, D) and the text features (C, D) along D, take "
        "logits = logit_scale * image @ text.T (N, C), and softmax over the classes (dim=1).",
    )
)


def _ensemble_cases(g: torch.Generator) -> list[Case]:
    hand = torch.tensor([[[3.0, 4.0], [0.0, 2.0]], [[-5.0, 0.0], [-1.0, -1.0]]])
    lengths = torch.logspace(-1, 1, 5)[None, :, None]
    return [
        Case("3 classes, 5 templates of very different lengths, D = 8", (torch.randn(3, 5, 8, generator=g) * lengths,)),
        Case("2 classes, 2 templates, D = 2 (the hand example)", (hand,)),
        Case("one template: the normalised embeddings", (torch.randn(4, 1, 6, generator=g) * 3,)),
        Case("one class, 8 templates", (torch.randn(1, 8, 4, generator=g) * 5,)),
        Case("64 classes x 16 templates x 64 dimensions (notebook sizes)", (torch.randn(64, 16, 64, generator=g) * 2,)),
    ]


register(
    Exercise(
        id="03.ensemble",
        title="prompt ensembling",
        cases=_ensemble_cases,
        reference=ensemble,
        compare=lambda given, expected: expect_close(given, expected, name="the class embeddings", atol=1e-5),
        hint="for each class: L2-normalise each template's embedding (along D, the last dimension), average over the "
        "templates (dim=1), then L2-normalise the average again; the result is (C, D).",
    )
)


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
        reference=effective_robustness,
        compare=lambda given, expected: expect_number(given, expected, name="the effective robustness", atol=1e-4),
        hint="transform every accuracy with logit(p) = log(p / (1 - p)); fit ood = slope * id + intercept over the "
        "baselines by least squares (in logit units); predict the model's ood accuracy as "
        "sigmoid(slope * logit(model_id) + intercept); return model_ood minus that prediction.",
    )
)
