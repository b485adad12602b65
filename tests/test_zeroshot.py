"""mmcourse.zeroshot: the classifier from label text equals open_clip's, hand-computed cases, helpers, errors."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from mmcourse import pretrained, zeroshot
from mmcourse.data.shapes import COLORS, SHAPES, make_shapes


@pytest.fixture(scope="module")
def clip():
    return pretrained.load("clip_shapes")


@pytest.fixture(scope="module")
def clip64(clip):
    """The course CLIP in float64, for oracle comparisons: two correct implementations then agree to
    ~1e-15, while in float32 encoding the prompts in batches of different sizes (open_clip batches by
    class) already differs by ~1e-7, more or less with every torch build."""
    return copy.deepcopy(clip).double()


class TableModel(torch.nn.Module):
    """A stand-in CLIP whose text embeddings are looked up in a table (hand-computable)."""

    def __init__(self, table: dict[str, list[float]], scale: float = 10.0):
        super().__init__()
        self.table = table
        self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(scale)))

    def encode_text(self, texts):
        return torch.tensor([self.table[t] for t in texts])

    def scale(self):
        return self.logit_scale.exp()

    def encode_image(self, images):
        return images.flatten(1)[:, :2]


class OpenClipAdapter:
    """What open_clip's build_zero_shot_classifier expects: encode_text(token_ids, normalize=...)."""

    def __init__(self, model):
        self.model = model

    def encode_text(self, ids, normalize: bool = False):
        x = self.model.encode_text(ids)
        return F.normalize(x, dim=-1) if normalize else x


# --------------------------------------------------------------------------------------- open_clip oracle


@pytest.mark.parametrize("templates", [("a {}",), zeroshot.TEMPLATES[:5], zeroshot.TEMPLATES])
@pytest.mark.parametrize("per_batch", [10, None])
def test_build_classifier_equals_open_clip_on_the_course_clip(clip64, templates, per_batch):
    oracle = pytest.importorskip("open_clip.zero_shot_classifier")
    names = [f"{c} {s}" for c, s in zeroshot.color_shape_classes()]
    ours = zeroshot.build_classifier(clip64, names, templates)
    theirs = oracle.build_zero_shot_classifier(OpenClipAdapter(clip64), clip64.tokenize, names, list(templates),
                                               num_classes_per_batch=per_batch, device="cpu")
    assert theirs.shape == (clip64.embed_dim, len(names)) and ours.shape == (len(names), clip64.embed_dim)
    # ours is returned in float32 (rounded from the fp64 embeddings): equal at float32's resolution
    torch.testing.assert_close(ours, theirs.T.float())


def test_build_classifier_equals_open_clips_legacy_version(clip64):
    oracle = pytest.importorskip("open_clip.zero_shot_classifier")
    names = ["red circle", "blue crescent", "pink diamond"]
    theirs = oracle.build_zero_shot_classifier_legacy(OpenClipAdapter(clip64), clip64.tokenize, names,
                                                      list(zeroshot.TEMPLATES[:7]))
    torch.testing.assert_close(zeroshot.build_classifier(clip64, names, zeroshot.TEMPLATES[:7]), theirs.T.float())


# --------------------------------------------------------------------------------------- hand-computed cases


def _table():
    return TableModel({
        "a cat": [3.0, 4.0], "a photo of a cat": [0.0, 2.0],
        "a dog": [-5.0, 0.0], "a photo of a dog": [-1.0, -1.0],
    })


def test_one_template_gives_the_normalised_text_embeddings():
    out = zeroshot.build_classifier(_table(), ["cat", "dog"], ["a {}"])
    torch.testing.assert_close(out, torch.tensor([[0.6, 0.8], [-1.0, 0.0]]))


def test_ensemble_normalises_before_averaging_and_after():
    out = zeroshot.build_classifier(_table(), ["cat", "dog"], ["a {}", "a photo of a {}"])
    # cat: (0.6, 0.8) and (0, 1) -> mean (0.3, 0.9) -> / sqrt(0.9)
    cat = torch.tensor([0.3, 0.9]) / math.sqrt(0.9)
    # dog: (-1, 0) and (-1/sqrt2, -1/sqrt2) -> mean (-(1 + 1/sqrt2)/2, -1/(2 sqrt2))
    r = 1 / math.sqrt(2)
    dog = torch.tensor([-(1 + r) / 2, -r / 2])
    torch.testing.assert_close(out, torch.stack([cat, dog / dog.norm()]))
    # averaging the raw embeddings instead would give a different direction for cat: (1.5, 3) / |.|
    assert not torch.allclose(out[0], F.normalize(torch.tensor([1.5, 3.0]), dim=0), atol=1e-3)


def test_ensemble_of_a_tensor_matches_hand_numbers():
    emb = torch.tensor([[[3.0, 4.0], [0.0, 2.0]]])  # one class, two templates
    torch.testing.assert_close(zeroshot.ensemble(emb), (torch.tensor([0.3, 0.9]) / math.sqrt(0.9))[None])
    with pytest.raises(ValueError, match=r"\(C, T, D\)"):
        zeroshot.ensemble(torch.zeros(3, 4))


def test_prompts_are_class_major():
    assert zeroshot.prompts(["cat", "dog"], ["a {}", "the {}"]) == ["a cat", "the cat", "a dog", "the dog"]


def test_classify_is_scale_times_cosine_and_predict_its_argmax():
    model = _table()
    classifier = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    images = torch.zeros(2, 3, 2, 2)
    images[0, 0, 0, :] = torch.tensor([3.0, 4.0])  # image feature (3, 4): cos = (0.6, 0.8, -0.6)
    images[1, 0, 0, :] = torch.tensor([-2.0, 0.1])
    logits = zeroshot.classify(model, images, classifier)
    torch.testing.assert_close(logits[0], torch.tensor([6.0, 8.0, -6.0]))
    assert zeroshot.predict(model, images, classifier).tolist() == [1, 2]
    probs = zeroshot.probabilities(model, images, classifier)
    torch.testing.assert_close(probs[0], torch.tensor([6.0, 8.0, -6.0]).softmax(0))


def test_classify_uses_the_models_capped_scale():
    """The multiplier is the model's ``scale()``: exp(t), capped at 100 as CLIP's is."""
    from mmcourse.models import CLIP

    torch.manual_seed(0)
    model = CLIP(image={"kind": "cnn", "out_dim": 8, "width": 4}, text={"kind": "bow", "width": 8}, embed_dim=8).eval()
    with torch.no_grad():
        model.logit_scale.fill_(7.0)  # exp(7) ~ 1097
    images = torch.rand(3, 3, 32, 32)
    classifier = zeroshot.build_classifier(model, ["red square", "blue circle"])
    cos = zeroshot.logits_from_features(zeroshot.encode_images(model, images), classifier)
    torch.testing.assert_close(zeroshot.classify(model, images, classifier), 100.0 * cos)


def test_logits_from_features_and_accuracy():
    feats = torch.tensor([[2.0, 0.0], [0.0, -3.0]])
    cls = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    torch.testing.assert_close(zeroshot.logits_from_features(feats, cls, 5.0), torch.tensor([[5.0, 0.0], [0.0, -5.0]]))
    assert zeroshot.accuracy(torch.tensor([1, 0, 2]), torch.tensor([1, 1, 2])) == pytest.approx(2 / 3)
    assert zeroshot.accuracy(torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([1, 1])) == 0.5
    with pytest.raises(ValueError, match="share D"):
        zeroshot.logits_from_features(torch.zeros(2, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="differ in shape"):
        zeroshot.accuracy(torch.zeros(3), torch.zeros(4))


def test_template_accuracies_hand_case():
    model = TableModel({"a cat": [1.0, 0.0], "a dog": [0.0, 1.0], "the cat": [0.0, 1.0], "the dog": [1.0, 0.0]})
    feats = torch.tensor([[1.0, 0.1], [0.1, 1.0], [1.0, 0.2]])
    labels = torch.tensor([0, 1, 0])  # "a {}" is right on all, "the {}" (swapped) on none
    out = zeroshot.template_accuracies(model, feats, labels, ["cat", "dog"], ["a {}", "the {}"])
    assert out["a {}"] == 1.0 and out["the {}"] == 0.0 and set(out) == {"a {}", "the {}", "ensemble"}


# --------------------------------------------------------------------------------------- the course CLIP


def test_zero_shot_on_the_course_clip_beats_chance_by_far(clip):
    data = make_shapes(200, seed=4711, split="all", style="photo")
    classes = zeroshot.color_shape_classes()
    classifier = zeroshot.build_classifier(clip, [f"{c} {s}" for c, s in classes], zeroshot.TEMPLATES[:4])
    truth = torch.tensor([classes.index(p) for p in data.combos])
    assert zeroshot.accuracy(zeroshot.predict(clip, data.images, classifier), truth) > 0.9


def test_templates_are_the_course_list():
    assert len(zeroshot.TEMPLATES) >= 5 and len(set(zeroshot.TEMPLATES)) == len(zeroshot.TEMPLATES)
    assert all(t.count("{}") == 1 for t in zeroshot.TEMPLATES)


def test_unknown_words_become_unk_and_are_named(clip):
    # the tokenizer maps every unknown word to the same <unk> id, so two unknown colours are one prompt
    assert torch.equal(clip.tokenize(["a vermilion square"]), clip.tokenize(["a chartreuse square"]))
    with torch.no_grad():
        a, b = clip.encode_text(["a vermilion square", "a chartreuse square"])
    torch.testing.assert_close(a, b)
    assert zeroshot.unknown_words(clip, ["a vermilion square", "a photo of a vermilion disc"]) == ["vermilion"]
    with pytest.warns(UserWarning, match="vermilion"):
        out = zeroshot.build_classifier(clip, ["vermilion square", "red square"], ["a {}"])
    assert out.shape == (2, clip.embed_dim) and torch.isfinite(out).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        zeroshot.build_classifier(clip, ["red square"], ["a {}"])  # known words: no warning
        zeroshot.build_classifier(clip, ["vermilion square"], ["a {}"], warn_unknown=False)


def test_encode_images_is_normalised_and_batch_independent(clip, clip64):
    images = make_shapes(10, seed=3, style="sketch").images
    # in float32, convolutions over batches of 3 and of 10 may round differently (by ~1e-7, depending
    # on the kernels chosen); in float64 that is ~1e-16, and only the final cast to float32 rounds
    a = zeroshot.encode_images(clip64, images.double(), batch_size=3)
    b = zeroshot.encode_images(clip64, images.double())
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(10))
    # the float32 model, in batches of 3: within ~100 float32 roundings of the float64 features (~1e-7 seen)
    c = zeroshot.encode_images(clip, images, batch_size=3)
    torch.testing.assert_close(c, b, rtol=0, atol=1e-5)


# --------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("classnames, templates, match", [
    ("red square", ["a {}"], "non-empty list of strings"),
    ([], ["a {}"], "non-empty list of strings"),
    (["red square", ""], ["a {}"], "non-empty string"),
    (["red square", 3], ["a {}"], "non-empty string"),
    (["red square"], "a {}", "templates must be"),
    (["red square"], [], "templates must be"),
    (["red square"], ["a photo"], r"exactly one '\{\}'"),
    (["red square"], ["a {} and a {}"], r"exactly one '\{\}'"),
    (["red square"], ["a {0}"], r"exactly one '\{\}'"),
    (["red square"], ["a {} {"], "no other braces"),
])
def test_bad_input_is_explained(clip, classnames, templates, match):
    with pytest.raises(ValueError, match=match):
        zeroshot.build_classifier(clip, classnames, templates)


def test_bad_images_are_explained(clip):
    classifier = zeroshot.build_classifier(clip, list(COLORS), ["a {} square"])
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        zeroshot.classify(clip, torch.zeros(3, 32, 32), classifier)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        zeroshot.encode_images(clip, [[0.0]])
    with pytest.raises(ValueError, match="share D"):
        zeroshot.classify(clip, torch.zeros(2, 3, 32, 32), torch.zeros(len(SHAPES), 7))


# --------------------------------------------------------------------------------------- labelled images: templates, probes


def test_select_templates_is_greedy_forward_selection_with_a_strict_stop():
    # 2 classes, 3 templates; template 1 alone gets the most right, and 1 + 0 improves on it, 2 never helps
    emb = torch.tensor([[[1.0, 0.2], [1.0, 0.0], [0.0, 1.0]],
                        [[0.2, 1.0], [0.5, 1.0], [1.0, 0.0]]])
    feats = torch.tensor([[1.0, 0.1], [0.9, 0.3], [0.3, 1.0], [0.6, 1.0], [1.0, 0.5]])
    labels = torch.tensor([0, 0, 1, 1, 0])

    def correct(chosen):
        pred = zeroshot.logits_from_features(feats, zeroshot.ensemble(emb[:, chosen])).argmax(1)
        return int((pred == labels).sum())

    chosen = zeroshot.select_templates(emb, feats, labels)
    assert chosen and len(set(chosen)) == len(chosen)
    # each step takes the best candidate (lowest index on ties), and every step strictly improves
    for step in range(len(chosen)):
        before = chosen[:step]
        scores = {t: correct(before + [t]) for t in range(3) if t not in before}
        assert chosen[step] == max(scores, key=lambda t: (scores[t], -t))
        assert step == 0 or scores[chosen[step]] > correct(before)
    rest = [t for t in range(3) if t not in chosen]
    assert all(correct(chosen + [t]) <= correct(chosen) for t in rest), "the search stops only when nothing helps"


def test_linear_probe_matches_scikit_learns_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    g = torch.Generator().manual_seed(0)
    n, d, c, wd = 60, 5, 3, 0.01
    labels = torch.arange(n) % c
    feats = torch.randn(c, d, generator=g)[labels] + 0.8 * torch.randn(n, d, generator=g)
    weight, bias = zeroshot.linear_probe(feats, labels, c, weight_decay=wd)
    assert weight.shape == (c, d) and bias.shape == (c,)
    # mean CE + wd ||W||^2 is scikit-learn's objective C * sum CE + ||W||^2 / 2 with C = 1 / (2 wd n)
    sk = LogisticRegression(C=1 / (2 * wd * n), tol=1e-10, max_iter=10_000).fit(feats.double().numpy(), labels.numpy())
    ours = zeroshot.probe_objective(feats.double(), labels, weight, bias, wd).item()
    theirs = zeroshot.probe_objective(feats.double(), labels, torch.tensor(sk.coef_), torch.tensor(sk.intercept_), wd).item()
    assert ours == pytest.approx(theirs, abs=1e-7)
    torch.testing.assert_close(weight, torch.tensor(sk.coef_), atol=1e-3, rtol=1e-3)
    logits = feats.double() @ weight.T + bias
    assert (logits.argmax(1).numpy() == sk.predict(feats.double().numpy())).all()


def test_linear_probe_explains_bad_labels():
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        zeroshot.linear_probe(torch.zeros(3, 4), torch.tensor([0, 1, 2]), 2)
    with pytest.raises(ValueError, match="features \\(N, D\\) and labels \\(N,\\)"):
        zeroshot.linear_probe(torch.zeros(3, 4), torch.tensor([0, 1]), 2)


def test_linear_probes_of_a_batch_equal_the_probes_fitted_one_by_one():
    g = torch.Generator().manual_seed(1)
    labels = torch.stack([torch.randperm(12, generator=g) % 4 for _ in range(3)])  # (3, 12)
    feats = torch.randn(3, 12, 5, generator=g)
    weight, bias = zeroshot.linear_probe(feats, labels, 4, weight_decay=0.01)
    assert weight.shape == (3, 4, 5) and bias.shape == (3, 4)
    total = zeroshot.probe_objective(feats.double(), labels, weight, bias, 0.01)
    parts = 0.0
    for i in range(3):
        w, b = zeroshot.linear_probe(feats[i], labels[i], 4, weight_decay=0.01)
        one = zeroshot.probe_objective(feats[i].double(), labels[i], weight[i], bias[i], 0.01).item()
        assert one == pytest.approx(zeroshot.probe_objective(feats[i].double(), labels[i], w, b, 0.01).item(), abs=1e-6)
        parts += one
    assert total.item() == pytest.approx(parts, abs=1e-9), "the batched objective is the sum of the probes' objectives"
