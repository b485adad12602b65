"""mmcourse.robustness (effective robustness, the supervised baseline) and mmcourse.filtering (CLIP filtering)."""

from __future__ import annotations

import math

import pytest
import torch

from mmcourse import filtering, pretrained, robustness
from mmcourse.data.shapes import make_shapes
from mmcourse.models import PhotoClassifier

sig = torch.sigmoid


# --------------------------------------------------------------------------------------- effective robustness


def test_logit_is_the_inverse_of_the_sigmoid_and_stays_finite():
    p = torch.tensor([0.1, 0.5, 0.9])
    torch.testing.assert_close(robustness.logit(p), torch.tensor([math.log(1 / 9), 0.0, math.log(9)], dtype=torch.float64))
    assert torch.isfinite(robustness.logit(torch.tensor([0.0, 1.0]))).all()


def test_fit_recovers_a_line_in_logit_space():
    x = torch.tensor([-2.0, -0.5, 1.0, 2.5])
    slope, intercept = robustness.robustness_fit(sig(x), sig(0.7 * x - 1.1))
    assert slope == pytest.approx(0.7, abs=1e-6) and intercept == pytest.approx(-1.1, abs=1e-6)


def test_effective_robustness_hand_cases():
    base_id, base_ood = sig(torch.tensor([-1.0, 0.0, 1.0])), sig(torch.tensor([-2.0, -1.0, 0.0]))  # logit(ood) = logit(id) - 1
    # on the line: 0
    assert robustness.effective_robustness(base_id, base_ood, sig(torch.tensor(0.5)).item(), sig(torch.tensor(-0.5)).item()) \
        == pytest.approx(0.0, abs=1e-6)
    # id accuracy 0.5 -> the line predicts sigmoid(-1) = 0.2689; a model at 0.5 is 0.2311 above it
    assert robustness.predicted_ood(base_id, base_ood, 0.5) == pytest.approx(1 / (1 + math.e), abs=1e-6)
    assert robustness.effective_robustness(base_id, base_ood, 0.5, 0.5) == pytest.approx(0.5 - 1 / (1 + math.e), abs=1e-6)
    # not the plain drop: two models with the same drop differ in effective robustness
    a = robustness.effective_robustness(base_id, base_ood, 0.9, 0.8)
    b = robustness.effective_robustness(base_id, base_ood, 0.6, 0.5)
    assert abs(a - b) > 0.05


def test_effective_robustness_agrees_with_the_exercise_reference():
    from mmcourse.check import EXERCISES

    ex = EXERCISES["03.effective_robustness"]
    for case in ex.cases(torch.Generator().manual_seed(1)):
        assert ex.reference(*case.args) == robustness.effective_robustness(*case.args)


@pytest.mark.parametrize("ids, oods, match", [
    ([0.5], [0.4], "at least 2"),
    ([0.5, 0.6], [0.4], "equally long"),
    ([0.5, 0.5, 0.5], [0.1, 0.2, 0.3], "same in-distribution accuracy"),
])
def test_bad_baselines_are_explained(ids, oods, match):
    with pytest.raises(ValueError, match=match):
        robustness.effective_robustness(torch.tensor(ids), torch.tensor(oods), 0.9, 0.8)


# --------------------------------------------------------------------------------------- the supervised baseline


def test_supervised_checkpoint_is_good_on_photos_and_bad_on_sketches():
    """The property notebook 03 relies on, on a seed neither training nor the card used."""
    model = pretrained.load("supervised_shapes")
    photo = make_shapes(500, seed=8_080_808, split="train", style="photo")
    sketch = make_shapes(500, seed=8_080_808, split="train", style="sketch")
    acc_photo, acc_sketch = model.accuracy(photo.images, photo.combos), model.accuracy(sketch.images, sketch.combos)
    assert acc_photo >= 0.95 and acc_sketch <= 0.5, (acc_photo, acc_sketch)
    first = model.accuracy(photo.images, photo.combos, snapshot=0)
    assert first < acc_photo - 0.3, "the snapshots span a range of photo accuracies"
    assert len(model.snapshot_steps) == len(model.snapshots) >= 5


def test_supervised_classifier_has_no_output_for_held_out_pairs():
    model = pretrained.load("supervised_shapes")
    assert len(model.classes) == 56 and ("red", "triangle") not in model.classes
    with pytest.raises(ValueError, match="held-out pair"):
        model.labels([("red", "triangle")])
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model(torch.zeros(3, 32, 32))


def test_the_supervised_recipe_is_deterministic():
    from mmcourse.recipes import supervised_shapes

    a, ma = supervised_shapes.train(seed=2, progress=False, snapshot_steps=(2, 3), batch_size=8, evaluate=False)
    b, mb = supervised_shapes.train(seed=2, progress=False, snapshot_steps=(2, 3), batch_size=8, evaluate=False)
    assert ma == mb
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
    assert not torch.equal(a.snapshots[0].proj.weight, a.snapshots[1].proj.weight), "snapshots are taken at different steps"
    with pytest.raises(ValueError, match="increasing"):
        PhotoClassifier(snapshot_steps=(5, 2))


# --------------------------------------------------------------------------------------- CLIP filtering


def test_corrupt_captions_corrupts_the_share_asked_for_in_every_kind():
    data = make_shapes(300, seed=5, split="all", style=("photo", "sketch"))
    caps, kind = filtering.corrupt_captions(data.captions, data.combos, share=0.3, seed=6)
    assert len(caps) == 300 and sum(k != "clean" for k in kind) == 90
    assert {k: kind.count(k) for k in filtering.KINDS} == {"swapped": 30, "wrong word": 30, "boilerplate": 30}
    for c, new, k, combo in zip(data.captions, caps, kind, data.combos):
        if k == "clean":
            assert new == c
        elif k == "boilerplate":
            assert new in filtering.BOILERPLATE
        elif k == "wrong word":
            assert new != c and len(new.split(" ")) == len(c.split(" "))
            assert sum(a != b for a, b in zip(new.split(" "), c.split(" "))) == 1
        else:
            owner = data.captions.index(new)
            assert data.combos[owner] != combo, "a swapped caption comes from an image of another subject"
    again = filtering.corrupt_captions(data.captions, data.combos, share=0.3, seed=6)
    assert again == (caps, kind)
    with pytest.raises(ValueError, match="share"):
        filtering.corrupt_captions(data.captions, data.combos, share=1.5, seed=6)
    with pytest.raises(ValueError, match="kinds"):
        filtering.corrupt_captions(data.captions, data.combos, share=0.1, seed=6, kinds=["typo"])


def test_precision_recall_hand_case():
    keep = torch.tensor([True, True, True, False, False])
    clean = torch.tensor([True, True, False, True, False])
    r = filtering.precision_recall(keep, clean)
    assert r["precision"] == pytest.approx(2 / 3) and r["recall"] == pytest.approx(2 / 3) and r["kept"] == pytest.approx(0.6)
    with pytest.raises(ValueError, match="equal length"):
        filtering.precision_recall(keep, clean[:3])


def test_best_threshold_maximises_f1():
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    clean = torch.tensor([True, True, True, False, True, False])
    # keep top 3: tp 3, F1 = 6 / (3 + 4) = 0.857; top 5: tp 4, F1 = 8 / (5 + 4) = 0.889 -> threshold 0.5
    assert filtering.best_threshold(scores, clean) == pytest.approx(0.5)
    assert filtering.best_threshold(scores, torch.tensor([True, True, False, False, False, False])) == pytest.approx(0.8)


def test_clip_scores_separate_matching_from_swapped_captions():
    clip = pretrained.load("clip_shapes")
    data = make_shapes(64, seed=9, split="all")
    right = filtering.clip_scores(clip, data.images, data.captions, batch_size=20)
    wrong = filtering.clip_scores(clip, data.images, data.captions[1:] + data.captions[:1])
    assert right.shape == (64,) and (right.abs() <= 1 + 1e-5).all()
    assert right.mean() > wrong.mean() + 0.3
    with pytest.raises(ValueError, match="N captions"):
        filtering.clip_scores(clip, data.images, data.captions[:3])
