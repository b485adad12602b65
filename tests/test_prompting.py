"""mmcourse.prompting: the learner reads the frozen tower exactly as encode_text does, only the learner
trains, CoCoOp's shapes and cost, reading the prompt, and clear errors for bad input."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F

from mmcourse import pretrained, prompting
from mmcourse.data.shapes import SHAPES

NAMES = ["small circle", "large star", "medium heart", "small crescent"]


@pytest.fixture(scope="module")
def clip():
    return pretrained.load("clip_shapes")


@pytest.fixture()
def fresh(clip):
    return copy.deepcopy(clip)


# ------------------------------------------------------------------------- one path through the text tower


def _old_encode_text(clip, texts):
    """encode_text as the text tower computed it before it learned to read embeddings (ids -> embeddings +
    positions -> blocks -> norm -> <eos>), kept here to prove the refactor changed no bit."""
    text = clip.text
    ids = clip.tokenize(texts)
    ids = ids[:, : int((ids != text.tokenizer.pad_id).sum(dim=1).max().clamp(min=1))]
    length = ids.shape[1]
    x = text.token_embedding(ids) + text.position_embedding[:length]
    mask = text.causal_mask[:length, :length]
    for block in text.blocks:
        x = block(x, mask)
    h = text.norm(x)
    eos = (ids == text.tokenizer.eos_id).int().argmax(dim=1)
    return clip.text_projection(h[torch.arange(ids.shape[0]), eos])


def test_encode_text_is_bit_identical_to_the_old_path(clip):
    texts = ["a red square", "a photo of a small blue crescent on a dark background", "the star", "a"]
    with torch.no_grad():
        assert torch.equal(clip.encode_text(texts), _old_encode_text(clip, texts))
        ids = clip.tokenize(texts)
        assert torch.equal(clip.text.token_features(ids), clip.text.embedding_features(clip.text.token_embedding(ids)))


# --------------------------------------------------------------------------------------------- the learner


@pytest.mark.parametrize("names", [NAMES, [f"red {s}" for s in SHAPES], ["star"]])
def test_at_init_the_learner_is_encode_text_exactly(clip, names):
    """torch.equal, not a tolerance: the learner builds the very embedding tensor encode_text builds."""
    learner = prompting.PromptLearner(clip, names)
    with torch.no_grad():
        assert torch.equal(learner(), clip.encode_text([f"a photo of a {c}" for c in names]))


@pytest.mark.parametrize("position, arrange", [
    ("middle", lambda c: f"a photo {c} of a"), ("front", lambda c: f"{c} a photo of a"), ("end", lambda c: f"a photo of a {c}")])
def test_class_token_positions(clip, position, arrange):
    learner = prompting.PromptLearner(clip, NAMES, position=position)
    with torch.no_grad():
        assert torch.equal(learner(), clip.encode_text([arrange(c) for c in NAMES]))


def test_class_specific_context_and_other_phrases(clip):
    learner = prompting.PromptLearner(clip, NAMES, n_ctx=2, init="a sketch", class_specific=True)
    assert learner.context.shape == (len(NAMES), 2, clip.text.width)
    with torch.no_grad():
        assert torch.equal(learner(), clip.encode_text([f"a sketch {c}" for c in NAMES]))
        learner.context[1] += torch.randn(2, clip.text.width)  # class 1's context changes class 1 only
        # (not a constant: every block's LayerNorm removes a shift shared by all dimensions)
        out = learner()
        ref = clip.encode_text([f"a sketch {c}" for c in NAMES])
    assert torch.equal(out[[0, 2, 3]], ref[[0, 2, 3]]) and not torch.allclose(out[1], ref[1])


def test_random_init_is_seeded_and_small(clip):
    a = prompting.PromptLearner(clip, NAMES, n_ctx=8, init=None, seed=3)
    b = prompting.PromptLearner(clip, NAMES, n_ctx=8, init=None, seed=3)
    assert a.context.shape == (8, clip.text.width) and torch.equal(a.context, b.context)
    assert 0.01 < a.context.std().item() < 0.03
    assert a().shape == (len(NAMES), clip.embed_dim)


def test_only_the_context_trains_and_no_clip_weight_changes(fresh):
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    learner = prompting.PromptLearner(fresh, NAMES)
    assert [n for n, p in learner.named_parameters() if p.requires_grad] == ["context"]
    g = torch.Generator().manual_seed(0)
    feats, labels = F.normalize(torch.randn(16, fresh.embed_dim, generator=g), dim=1), torch.arange(16) % 4
    start = learner.context.detach().clone()
    losses = prompting.train_prompts(learner, feats, labels, steps=10, batch_size=8)
    assert losses[-1] < losses[0] and not torch.equal(learner.context, start)
    after = fresh.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a CLIP weight changed"


def test_cocoop_shapes_shift_and_transfer(fresh):
    learner = prompting.CoCoOpLearner(fresh, NAMES)
    assert sorted(n for n, p in learner.named_parameters() if p.requires_grad) == [
        "context", "meta_net.0.bias", "meta_net.0.weight", "meta_net.2.bias", "meta_net.2.weight"]
    assert learner.meta_net[0].out_features == fresh.embed_dim // 16
    x = torch.randn(5, fresh.embed_dim)
    out = learner(x)
    assert out.shape == (5, len(NAMES), fresh.embed_dim)
    assert learner.logits(x).shape == (5, len(NAMES))
    with torch.no_grad():  # a zero shift gives CoOp's prompt back, exactly
        shifted = learner.encode(learner.prompts(torch.zeros(2, fresh.text.width)))
        plain = prompting.PromptLearner.forward(learner)
    assert torch.equal(shifted[0], plain) and torch.equal(shifted[1], plain)
    # each image's row depends on its own shift: image 0 alone gives the same row
    with torch.no_grad():
        assert torch.allclose(learner(x[:1])[0], out[0], atol=1e-5)
    new = learner.with_classnames(["large circle", "small star"])
    assert torch.equal(new.context, learner.context) and torch.equal(new.meta_net[0].weight, learner.meta_net[0].weight)
    assert new(x).shape == (5, 2, fresh.embed_dim)


def test_unified_context_transfers_to_new_classes(clip):
    learner = prompting.PromptLearner(clip, NAMES)
    with torch.no_grad():
        learner.context.add_(0.1)
    new = learner.with_classnames(["large circle"])
    assert torch.equal(new.context, learner.context) and new.classnames == ["large circle"]
    with pytest.raises(ValueError, match="class-specific"):
        prompting.PromptLearner(clip, NAMES, class_specific=True).with_classnames(["large circle"])


# ------------------------------------------------------------------------------------------ reading it


def test_nearest_words_of_an_initial_phrase_are_the_phrase(clip):
    learner = prompting.PromptLearner(clip, NAMES)
    words = prompting.nearest_words(learner.context, clip.text.token_embedding.weight, clip.text.tokenizer.itos, k=2)
    assert [w[0][0] for w in words] == ["a", "photo", "of", "a"]
    assert all(w[0][1] == 0.0 and w[1][1] > 0 for w in words)


def test_word_search_keeps_a_scored_history(clip):
    names = ["circle", "square", "star"]
    g = torch.Generator().manual_seed(0)
    from mmcourse.data.shapes import make_shapes

    data = make_shapes(30, seed=5, combos=[("red", "circle"), ("red", "square"), ("red", "star")])
    with torch.no_grad():
        feats = clip.encode_image(data.images)
    labels = torch.tensor([names.index(s) for s in data.shapes])
    history = prompting.search_words(clip, names, feats, labels, ["a", "photo", "red", "of"], n_words=2, beam=2)
    scores = [s for _, s in history]
    assert scores == sorted(scores, reverse=True)
    assert "{}" in dict(history) and all(t.count("{}") == 1 for t, _ in history)
    assert len(history) == 1 + 4 + 2 * 4  # the empty prompt, 4 one-word prompts, 2 beams x 4 words
    del g


def test_few_shot_and_harmonic_mean():
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    idx = prompting.few_shot(labels, 2, seed=0)
    assert torch.bincount(labels[idx]).tolist() == [2, 2, 2]
    assert torch.equal(idx, prompting.few_shot(labels, 2, seed=0))
    assert prompting.harmonic_mean(0.8, 0.6) == pytest.approx(2 * 0.8 * 0.6 / 1.4)
    assert prompting.harmonic_mean(0.0, 0.0) == 0.0


# ------------------------------------------------------------------------------------------ bad input


def test_bad_input_is_a_clear_error(clip):
    with pytest.raises(ValueError, match="n_ctx"):
        prompting.PromptLearner(clip, NAMES, n_ctx=0, init=None)
    with pytest.raises(ValueError, match="has 4 tokens but n_ctx=2"):
        prompting.PromptLearner(clip, NAMES, n_ctx=2)
    with pytest.raises(ValueError, match="duplicates: 'large star'"):
        prompting.PromptLearner(clip, NAMES + ["large star"])
    with pytest.raises(ValueError, match="non-empty"):
        prompting.PromptLearner(clip, [])
    with pytest.raises(ValueError, match="position"):
        prompting.PromptLearner(clip, NAMES, position="back")
    with pytest.raises(ValueError, match="longer than the text tower's context"):
        prompting.PromptLearner(clip, NAMES, n_ctx=30, init=None)
    with pytest.raises(ValueError, match="only 3 images"):
        prompting.few_shot(torch.tensor([0, 0, 0, 1, 1, 1, 1]), 4, seed=0)
    with pytest.raises(TypeError, match="course CLIP"):
        prompting.PromptLearner(torch.nn.Linear(2, 2), NAMES)


def test_unknown_words_warn_and_are_named(clip):
    with pytest.warns(UserWarning, match="vermilion"):
        learner = prompting.PromptLearner(clip, ["vermilion square", "red circle"])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.equal(learner(), clip.encode_text(["a photo of a vermilion square", "a photo of a red circle"]))


# ------------------------------------------------------------------------------------------ the widget


def test_few_shot_explorer_renders_updates_and_rejects_bad_input():
    import json
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    from mmcourse.widgets.prompt_learning import FewShotExplorer

    bench = json.loads((Path(__file__).parent.parent / "benchmarks/results/prompt_learning.json").read_text())
    images, labels = prompting.night_photos(480, seed=402)
    assert labels[:8].tolist() == bench["test_labels_first8"], "the widget's images are the benchmark's first 8"
    ex = FewShotExplorer(bench, prompting.at_night(images[:8]), labels[:8], list(prompting.NIGHT_CLASSES))
    fig = ex.render(16, "CoOp")
    assert ex.render(1, "CoCoOp") is fig, "later calls update the same figure"
    mean, sd = ex.point(1, "CoCoOp")
    assert fig.axes[0].get_title().startswith(f"CoCoOp, 1 shots: {100 * mean:.1f}")
    assert [t.get_text() for t in ex._titles] == ex.predicted(1, "CoCoOp")
    with pytest.raises(ValueError, match="unknown method"):
        ex.render(4, "CLIP-Adapter")
    with pytest.raises(ValueError, match="shots must be one of"):
        ex.render(3, "CoOp")
    view = ex.widget(4, "linear probe")
    slider, buttons = view.children[0].children[0], view.children[1]
    slider.value = 8
    buttons.value = "CoOp"
    assert ex._ax.get_title().startswith("CoOp, 8 shots")
