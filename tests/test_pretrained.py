"""Bundled checkpoints: sha256-checked, pickle-free loading, clear errors, and their measured quality."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from mmcourse import pretrained
from mmcourse.course import load_course


def test_every_checkpoint_a_notebook_uses_is_bundled_or_planned():
    course = load_course()
    for nb in course.notebooks:
        if nb.written:
            for name in nb.checkpoints:
                assert (pretrained.checkpoint_dir() / f"{name}.safetensors").is_file(), name
                assert pretrained.card(name)["sha256"]


@pytest.mark.parametrize("name", sorted(pretrained.RECIPES))
def test_card_matches_file_and_file_is_small(name):
    info = pretrained.card(name)
    path = pretrained.checkpoint_dir() / f"{name}.safetensors"
    assert pretrained.sha256_of(path) == info["sha256"]
    assert path.stat().st_size < 5e6
    assert info["train"]["seconds"] < 15 * 60, "a checkpoint rebuilds in at most 15 minutes on 2 CPU cores"


def test_attributes_checkpoint_loads_and_still_recognises_held_out_pairs():
    from mmcourse.attributes import evaluate_attributes

    model = pretrained.load("attributes_shapes")
    assert not model.training
    metrics = evaluate_attributes(model, seed=777, n=300)  # fresh images, a seed training never used
    for key in ("seen_photo", "heldout_photo", "seen_sketch", "heldout_sketch"):
        assert metrics[key]["color"] >= 0.95, (key, metrics[key])
        assert metrics[key]["zero_shot_64way"] >= 0.75, (key, metrics[key])


@pytest.fixture
def assets_copy(tmp_path, monkeypatch):
    src = pretrained.checkpoint_dir()
    dst = tmp_path / "checkpoints"
    shutil.copytree(src, dst)
    monkeypatch.setattr(pretrained, "checkpoint_dir", lambda: dst)
    return dst


@pytest.mark.parametrize("name", sorted(pretrained.RECIPES))
def test_corrupt_file_is_refused_with_a_rebuild_hint(assets_copy, name):
    path = assets_copy / f"{name}.safetensors"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(pretrained.CheckpointError, match=f"mmcourse train {name}"):
        pretrained.load(name)


@pytest.mark.parametrize("name", sorted(pretrained.RECIPES))
def test_missing_file_and_broken_card_are_explained(assets_copy, name):
    (assets_copy / f"{name}.json").write_text("{not json")
    with pytest.raises(pretrained.CheckpointError, match="not valid JSON"):
        pretrained.load(name)
    (assets_copy / f"{name}.json").unlink()
    with pytest.raises(pretrained.CheckpointError, match="no card"):
        pretrained.load(name)


@pytest.mark.parametrize("name", sorted(pretrained.RECIPES))
def test_weights_that_do_not_fit_the_model_are_explained(assets_copy, name):
    from safetensors.torch import save_file

    path = assets_copy / f"{name}.safetensors"
    save_file({"bogus": torch.zeros(3)}, str(path))
    card = json.loads((assets_copy / f"{name}.json").read_text())
    card["sha256"] = pretrained.sha256_of(path)
    (assets_copy / f"{name}.json").write_text(json.dumps(card))
    with pytest.raises(pretrained.CheckpointError, match="does not fit"):
        pretrained.load(name)


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(KeyError, match="attributes_shapes"):
        pretrained.load("no_such_model")


def test_the_training_recipe_is_deterministic():
    """Same seed, same weights: a short run of the attributes recipe, twice."""
    from mmcourse.attributes import train_attribute_predictor

    a, _ = train_attribute_predictor(seed=3, steps=8, batch_size=16, progress=False)
    b, _ = train_attribute_predictor(seed=3, steps=8, batch_size=16, progress=False)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


def test_the_clip_recipe_is_deterministic():
    from mmcourse.pretraining import train_clip

    a, ma = train_clip(seed=5, steps=3, batch_size=16, progress=False, evaluate=False)
    b, mb = train_clip(seed=5, steps=3, batch_size=16, progress=False, evaluate=False)
    assert ma["history"] == mb["history"]
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


def test_clip_checkpoint_meets_its_zero_shot_targets_on_an_unseen_seed():
    """Issue 3's bar, on a seed neither training nor the card used: 64-way zero-shot with "a {colour} {shape}"."""
    from mmcourse.pretraining import evaluate_clip

    model = pretrained.load("clip_shapes")
    m = evaluate_clip(model, seed=9_090_909, n=1000)
    assert m["seen_photo"]["accuracy"] >= 0.98, m
    assert m["heldout_photo"]["accuracy"] >= 0.95, m
    assert m["seen_sketch"]["accuracy"] >= 0.90, m
    assert m["heldout_sketch"]["accuracy"] >= 0.90, m


def test_clip_checkpoint_follows_the_design_contract():
    model = pretrained.load("clip_shapes")
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        img, txt = model.encode_image(images), model.encode_text(["a red square", "a blue circle", "a sketch of a star"])
    assert img.shape == txt.shape == (3, model.embed_dim)
    assert not torch.allclose(img.norm(dim=1), torch.ones(3)), "encode_image returns unnormalised embeddings"
    assert isinstance(model.logit_scale, torch.nn.Parameter) and model.logit_scale.ndim == 0
    assert 1.0 <= model.logit_scale.exp().item() <= 100.0 + 1e-4


def test_a_sha256_mismatch_names_the_file_and_loads_nothing(assets_copy, monkeypatch):
    card = json.loads((assets_copy / "clip_shapes.json").read_text())
    card["sha256"] = "0" * 64
    (assets_copy / "clip_shapes.json").write_text(json.dumps(card))
    built = []
    original = pretrained.RECIPES["clip_shapes"]
    monkeypatch.setitem(pretrained.RECIPES, "clip_shapes", pretrained.Recipe(
        lambda cfg: built.append(cfg) or original.build(cfg), original.train, original.description))
    with pytest.raises(pretrained.CheckpointError, match=r"clip_shapes\.safetensors does not match its card"):
        pretrained.load("clip_shapes")
    assert built == [], "no model may be built from a checkpoint that failed its checksum"


def test_diffusion_checkpoint_meets_the_guidance_bar_on_an_unseen_seed():
    """Issue 8's bar on a seed neither training nor the card used, judged by attributes_shapes (trained on
    real images only): at w = 3 colour-and-shape accuracy >= 0.7 and >= 0.10 above w = 0, and diversity
    lower than at w = 0, which itself stays near the real images' spread."""
    from mmcourse import diffusion as D

    model = pretrained.load("diffusion_shapes")
    out = D.evaluate_guidance(model, (0.0, 3.0), per_caption=8, steps=50, seed=4_242_424)
    real = D.real_reference(per_caption=8, seed=4_242_424, style="flat", size=model.image_size)
    assert out[3.0]["both"] >= 0.7, out
    assert out[3.0]["both"] - out[0.0]["both"] >= 0.10 or min(out[0.0]["both"], out[3.0]["both"]) >= 0.9, out
    assert out[3.0]["diversity"] < out[0.0]["diversity"], out
    assert 0.7 <= out[0.0]["diversity"] / real["diversity"] <= 1.4, (out, real)


def test_diffusion_checkpoint_follows_the_design_contract():
    from mmcourse import diffusion as D

    model = pretrained.load("diffusion_shapes")
    images = D.sample(model, ["a red circle", "a blue star"], guidance_scale=1.5, steps=5, seed=0)
    size = model.image_size
    assert images.shape == (2, 3, size, size) and 0 <= images.min() and images.max() <= 1
    assert torch.equal(images, D.sample(model, ["a red circle", "a blue star"], guidance_scale=1.5, steps=5, seed=0))
    info = pretrained.card("diffusion_shapes")
    assert info["config"]["encoder_sha256"] == pretrained.card("clip_shapes")["sha256"]
    assert not any(k.startswith("encoder") for k in model.state_dict()), "clip_shapes is loaded by name, not stored twice"


def test_diffusion_checkpoint_refuses_a_changed_text_encoder(assets_copy):
    """The denoiser only understands the embeddings of the clip_shapes it was trained with."""
    card = json.loads((assets_copy / "clip_shapes.json").read_text())
    card["sha256"] = "f" * 64  # as if clip_shapes had been retrained since
    (assets_copy / "clip_shapes.json").write_text(json.dumps(card))
    with pytest.raises(pretrained.CheckpointError, match=r"clip_shapes.*sha256 ffffffffffff.*mmcourse train diffusion_shapes"):
        pretrained.load("diffusion_shapes")
