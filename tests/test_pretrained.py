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


def test_corrupt_file_is_refused_with_a_rebuild_hint(assets_copy):
    path = assets_copy / "attributes_shapes.safetensors"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(pretrained.CheckpointError, match="mmcourse train attributes_shapes"):
        pretrained.load("attributes_shapes")


def test_missing_file_and_broken_card_are_explained(assets_copy):
    (assets_copy / "attributes_shapes.json").write_text("{not json")
    with pytest.raises(pretrained.CheckpointError, match="not valid JSON"):
        pretrained.load("attributes_shapes")
    (assets_copy / "attributes_shapes.json").unlink()
    with pytest.raises(pretrained.CheckpointError, match="no card"):
        pretrained.load("attributes_shapes")


def test_weights_that_do_not_fit_the_model_are_explained(assets_copy):
    from safetensors.torch import save_file

    path = assets_copy / "attributes_shapes.safetensors"
    save_file({"bogus": torch.zeros(3)}, str(path))
    card = json.loads((assets_copy / "attributes_shapes.json").read_text())
    card["sha256"] = pretrained.sha256_of(path)
    (assets_copy / "attributes_shapes.json").write_text(json.dumps(card))
    with pytest.raises(pretrained.CheckpointError, match="does not fit"):
        pretrained.load("attributes_shapes")


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
