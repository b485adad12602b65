"""Notebook 05's pieces: French prompts, the TextTower conversion, the fine-tuning methods, the rank widget."""

from __future__ import annotations

import json
import time
from importlib import resources

import pytest
import torch

from mmcourse import new_language as nl
from mmcourse import pretrained
from mmcourse.data import french
from mmcourse.data.tokenizer import default_tokenizer
from mmcourse.models.text_tower import TextTower
from mmcourse.peft import count_parameters, lora_layers


def fresh_tower(clip):
    return TextTower.from_clip(clip, french.NEW_WORDS).requires_grad_(False)


@pytest.fixture(scope="module")
def clip():
    return pretrained.load("clip_shapes").eval()


@pytest.fixture(scope="module")
def features(clip):
    return nl.image_features(clip, 96, seed=5, split="train")


def test_french_prompts_agree_in_gender_and_words_are_new():
    assert french.prompt("green", "cross", "{un} {petit} {x}") == "une petite croix verte"
    assert french.prompt("green", "heart", "une photo {d_un} {x}") == "une photo d'un coeur vert"
    assert french.prompt("purple", "star", "{le} {x}") == "la etoile violette"
    vocab = default_tokenizer().stoi
    assert french.NEW_WORDS and not any(w in vocab for w in french.NEW_WORDS)
    assert {"orange", "rose", "triangle"} <= set(french.SHARED_WORDS)
    assert len(french.prompts(nl.all_classes())) == 64 * len(french.TEMPLATES)
    with pytest.raises(ValueError, match="unknown class"):
        french.phrase("mauve", "square")


def test_text_tower_computes_encode_text_and_new_words_start_as_unk(clip):
    tower = TextTower.from_clip(clip, french.NEW_WORDS).eval()
    texts = ["a photo of a red square", "there is a blue heart in the center"] + french.prompts([("green", "cross")])
    with torch.no_grad():
        torch.testing.assert_close(tower(texts), clip.encode_text(texts), rtol=1e-5, atol=1e-6)
    assert tower.tokenize("une croix verte")[0, 1].item() >= default_tokenizer().vocab_size  # a new id, not <unk>
    names = {n for n, _ in tower.named_modules()}
    assert {"blocks.0.attn.q_proj", "blocks.1.attn.v_proj"} <= names
    with pytest.raises(ValueError, match="must be new"):
        TextTower.from_clip(clip, ["red"])


@pytest.mark.parametrize("method, kwargs, expected", [
    ("head", {}, 64 * 64),
    ("words+head", {}, 64 * 64 + 27 * 64),
    ("lora-qv", {"r": 4}, 2 * 2 * 4 * (64 + 64) + 27 * 64),
    ("lora-all", {"r": 1}, 2 * (4 * 128 + (64 + 256) * 2) + 27 * 64),
    ("adapter", {"bottleneck": 4}, 4 * (64 * 4 + 4 + 4 * 64 + 64) + 27 * 64),
])
def test_methods_train_what_they_say(clip, method, kwargs, expected):
    tower = nl.prepare(fresh_tower(clip), method, **kwargs)
    assert count_parameters(tower) == expected
    if method.startswith("lora"):
        assert all(not m.base.weight.requires_grad for m in lora_layers(tower).values())


def test_prepare_bad_input(clip):
    with pytest.raises(ValueError, match="unknown method"):
        nl.prepare(fresh_tower(clip), "prefix")
    with pytest.raises(ValueError, match="r is for the LoRA methods"):
        nl.prepare(fresh_tower(clip), "lora-qv")
    with pytest.raises(ValueError, match="bottleneck"):
        nl.prepare(fresh_tower(clip), "adapter")


def test_fine_tuning_is_deterministic_and_learns(clip, features):
    x, y = features
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        tower = nl.prepare(fresh_tower(clip), "lora-qv", r=2)
        losses = nl.fine_tune(tower, x, y, steps=6, lr=3e-3, logit_scale=clip.scale().item(), seed=0, batch_size=32)
        runs.append((losses, [p.detach().clone() for p in tower.parameters() if p.requires_grad]))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))
    assert runs[0][0][-1] < runs[0][0][0]
    held = nl.image_features(clip, 16, seed=1, split="heldout")
    with pytest.raises(ValueError, match="seen classes"):
        nl.fine_tune(tower, *held, steps=1, lr=1e-3, logit_scale=1.0)


def test_training_memory_is_counted():
    layer = torch.nn.Linear(10, 5)
    assert nl.training_memory(layer) == {"trainable": 55, "gradient_bytes": 220, "optimizer_bytes": 440}


def _summary():
    path = resources.files("mmcourse.assets") / "results" / "lora_sweep.json"
    if not path.is_file():
        pytest.skip("benchmarks/lora_sweep.py has not written its results yet")
    return json.loads(path.read_text())["summary"]


def test_rank_widget_renders_every_rank_fast():
    from mmcourse.widgets.lora_rank import RankExplorer

    explorer = RankExplorer(_summary())
    explorer.widget()
    for r in explorer.ranks:
        start = time.perf_counter()
        fig = explorer.render(r)
        fig.canvas.draw()
        assert time.perf_counter() - start < 2.0  # 200 ms on a quiet machine; generous under load
    with pytest.raises(ValueError, match="no results for rank"):
        explorer.render(3)
    with pytest.raises(ValueError, match="no LoRA rows"):
        RankExplorer([e for e in _summary() if not e["method"].startswith("lora")])
