"""Notebook 06's package: the chat text, the connectors, the answer-only loss, the VLM and its bad input.

Oracles: transformers' ``LlavaMultiModalProjector`` (built from a config, no download) for the MLP
projector; the frozen LM itself for Flamingo's gate-0 identity.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from mmcourse.connectors import (
    FlamingoLM, GatedCrossAttention, LinearProjector, MLPProjector, PerceiverResampler, QFormer, build_connector,
    pool_patches,
)
from mmcourse.data.chat import (
    QUESTION_TYPES, chat_prefix, chat_tokenizer, chat_turn, describe, lm_text_ids, question_type, questions, scenes,
)
from mmcourse.data.shapes import make_shapes
from mmcourse.data.tokenizer import default_tokenizer
from mmcourse.models import CLIP, VLM, CausalLM
from mmcourse.vlm import answer_mask, batch_chats, caption_scores, chat_loss, set_stage, vqa_accuracy

TOK = chat_tokenizer()


def tiny_lm(seed: int = 0) -> CausalLM:
    torch.manual_seed(seed)
    return CausalLM(TOK.vocab_size, width=32, layers=2, heads=4, context_length=64).eval()


def tiny_clip(seed: int = 0) -> CLIP:
    torch.manual_seed(seed)
    return CLIP(image={"kind": "cnn", "out_dim": 32, "width": 8}, text={"kind": "bow", "width": 16}, embed_dim=16).eval()


# ------------------------------------------------------------------------------------------- the text


def test_chat_tokens_are_appended_and_keep_every_course_id():
    course = default_tokenizer()
    assert TOK.itos[: len(course)] == course.itos
    assert {TOK.system_id, TOK.user_id, TOK.assistant_id, TOK.stop_id} == set(range(len(course), len(course) + 4))
    text = "a small red circle on the left"
    assert TOK.encode(text) == course.encode(text)


def test_questions_cover_every_type_and_position_answers_are_right():
    data = make_shapes(200, seed=3, objects=(1, 3))
    qas = questions(data, seed=1)
    kinds = {qa.kind for per in qas for qa in per}
    assert kinds == set(QUESTION_TYPES)
    for objs, per in zip(data.objects, qas):
        for qa in per:
            if qa.question.startswith("where"):
                o = next(o for o in objs if f"the {o.color} {o.shape}?" in qa.question)
                assert qa.answer == ("left" if o.x < 1 / 3 else "center" if o.x < 2 / 3 else "right")
            assert not TOK.unknown_words(qa.question) and not TOK.unknown_words(qa.answer)
    assert questions(data, seed=1) == qas, "deterministic"


def test_question_type_rejects_other_questions():
    assert question_type("What color is the star?") == "color"
    with pytest.raises(ValueError, match="not a question"):
        question_type("why is the sky blue?")


def test_scenes_match_make_shapes_without_pixels():
    a, b = scenes(48, seed=5, objects=(1, 3)), make_shapes(48, seed=5, objects=(1, 3), size=8)
    assert a.objects == b.objects and a.captions == b.captions and a.qa == b.qa


def test_lm_text_has_every_form_and_known_words():
    data = scenes(30, seed=2)
    seqs = lm_text_ids(data, seed=0)
    assert len(seqs) == 30
    assert any(s[0] == TOK.bos_id for s in seqs) and any(s[0] == TOK.system_id for s in seqs)
    assert all(TOK.unk_id not in s for s in seqs)
    assert max(len(s) for s in seqs) <= 64
    assert describe(data.objects[0]).startswith("a ")


# ----------------------------------------------------------------------------------------- loss mask


def test_answer_mask_marks_answers_and_their_stop_only():
    ids, _ = chat_turn("how many shapes are there?", "two", TOK)
    full = torch.tensor([chat_prefix(TOK) + ids + [TOK.pad_id] * 3])
    mask = answer_mask(full, TOK.assistant_id, TOK.stop_id)[0]
    marked = [TOK.itos[i] for i, m in zip(full[0].tolist(), mask.tolist()) if m]
    assert marked == ["two", "<stop>"]


def test_answer_mask_handles_several_turns_and_batch_rows():
    a, s, u = TOK.assistant_id, TOK.stop_id, TOK.user_id
    ids = torch.tensor([[u, 10, a, 11, 12, s, u, 13, a, 14, s, 0],
                        [u, 10, 10, 10, a, 15, s, 0, 0, 0, 0, 0]])
    expected = torch.tensor([[0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 0],
                             [0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(answer_mask(ids, a, s), expected)


def test_chat_loss_ignores_masked_positions():
    logits = torch.randn(2, 5, 11)
    targets = torch.randint(0, 11, (2, 5))
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[0, 3] = mask[1, 1] = True
    expected = torch.nn.functional.cross_entropy(torch.stack([logits[0, 3], logits[1, 1]]), torch.stack([targets[0, 3], targets[1, 1]]))
    assert torch.allclose(chat_loss(logits, targets, mask), expected)


# -------------------------------------------------------------------------------------------- connectors


def test_mlp_projector_equals_transformers_llava_projector():
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    config = LlavaConfig(vision_config=CLIPVisionConfig(hidden_size=64, intermediate_size=64, num_hidden_layers=1,
                                                        num_attention_heads=4),
                         text_config=LlamaConfig(hidden_size=96, intermediate_size=96, num_hidden_layers=1,
                                                 num_attention_heads=4, vocab_size=50),
                         projector_hidden_act="gelu", vision_feature_layer=-1)
    oracle = LlavaMultiModalProjector(config).eval()
    ours = MLPProjector(64, 96)
    ours.load_state_dict(oracle.state_dict())  # the same parameter names
    x = torch.randn(3, 16, 64)
    assert torch.allclose(ours(x), oracle(x), atol=1e-6)


def test_linear_projector_is_one_matrix_per_patch():
    proj = LinearProjector(8, 12)
    x = torch.randn(2, 5, 8)
    assert torch.allclose(proj(x), x @ proj.linear_1.weight.T + proj.linear_1.bias)


@pytest.mark.parametrize("n_patches", [1, 4, 16, 49])
def test_resampler_and_qformer_output_size_is_independent_of_the_number_of_patches(n_patches):
    torch.manual_seed(0)
    resampler = PerceiverResampler(64, 32, num_latents=6, dim=32)
    qformer = QFormer(64, 32, num_queries=5, dim=32)
    x = torch.randn(2, n_patches, 64)
    assert resampler(x).shape == (2, 6, 32)
    assert qformer(x).shape == (2, 5, 32)


def test_resampler_latents_attend_to_patches_and_to_themselves():
    torch.manual_seed(0)
    resampler = PerceiverResampler(8, 8, num_latents=3, dim=8, depth=1, heads=1)
    seen = {}
    attn = resampler.layers[0]["attn"]
    attn.register_forward_hook(lambda m, args, out: seen.update(context=args[1]))
    resampler(torch.randn(1, 4, 8))
    assert seen["context"].shape == (1, 4 + 3, 8), "keys and values are cat(patches, latents)"


def test_gated_cross_attention_is_the_identity_at_gate_zero():
    torch.manual_seed(0)
    block = GatedCrossAttention(32, 16)
    x = torch.randn(2, 7, 32)
    assert torch.equal(block(x, torch.randn(2, 5, 16)), x)


def test_flamingo_lm_logits_are_bit_identical_to_the_frozen_lm_at_initialisation():
    lm = tiny_lm()
    flamingo = FlamingoLM(lm, visual_dim=24)
    ids = torch.randint(7, TOK.vocab_size, (3, 12))
    with torch.no_grad():
        assert torch.equal(flamingo(ids, torch.randn(3, 5, 24)), lm(ids))
        for block in flamingo.xattn:  # open the gates: now the image changes the logits
            block.attn_gate.fill_(0.5)
        assert not torch.allclose(flamingo(ids, torch.randn(3, 5, 24)), lm(ids))


def test_pool_patches_averages_the_grid():
    x = torch.arange(16.0).view(1, 16, 1)
    assert pool_patches(x, 4).flatten().tolist() == [2.5, 4.5, 10.5, 12.5]
    assert pool_patches(x, 1).item() == 7.5
    with pytest.raises(ValueError, match="square"):
        pool_patches(x, 3)


def test_unknown_connector_is_named():
    with pytest.raises(ValueError, match="unknown connector"):
        build_connector("magic", 4, 4)


# ------------------------------------------------------------------------------------------------ the VLM


@pytest.fixture(scope="module")
def vlm() -> VLM:
    torch.manual_seed(0)
    return VLM(tiny_clip(), tiny_lm(), connector="mlp", lora={"targets": ["q_proj", "v_proj"], "r": 2, "alpha": 4}).eval()


@pytest.mark.parametrize("connector", ["linear", "mlp", "resampler", "qformer", "flamingo"])
def test_every_connector_trains_and_answers(connector):
    torch.manual_seed(0)
    model = VLM(tiny_clip(), tiny_lm(), connector=connector, options={} if connector in ("linear", "mlp") else {"dim": 16})
    data = make_shapes(4, seed=1, objects=(1, 2))
    ids, _ = batch_chats([(qa.question, qa.answer) for qa in (q[0] for q in questions(data))])
    names = set_stage(model, 1)
    assert names and all(n.startswith(("connector", "flamingo.xattn")) for n in names)
    loss = model.loss(data.images, ids)
    loss.backward()
    assert all(p.grad is not None for p in model.connector_parameters())
    assert model.vision.clip.visual.body[1].training is False, "the frozen CNN keeps its batch-norm statistics"
    answers = model.eval().answer(data.images, ["how many shapes are there?"] * 4, max_new_tokens=3)
    assert len(answers) == 4 and all(isinstance(a, str) for a in answers)


def test_stage_2_trains_connector_and_lora_only(vlm):
    names = set_stage(vlm, 2)
    assert any("lora_A" in n for n in names) and any(n.startswith("connector") for n in names)
    assert not any(n.startswith("vision") for n in names)
    assert all("lora" in n for n in names if n.startswith("language"))
    with pytest.raises(ValueError, match="stage"):
        set_stage(vlm, 3)
    vlm.requires_grad_(False)


def test_answer_is_deterministic_and_cached_generation_matches_recomputing(vlm):
    data = make_shapes(5, seed=2, objects=(1, 3))
    qs = ["how many shapes are there?", "what color is the star?", "is there a red circle?",
          "where is the blue heart?", "how many shapes are there?"]
    assert vlm.answer(data.images, qs) == vlm.answer(data.images, qs)
    after = torch.tensor([chat_turn(qs[0], None, TOK)[0]] * 5)
    assert torch.equal(vlm.generate(data.images, after, 6), vlm.generate(data.images, after, 6, use_cache=False))


def test_bad_input_gets_clear_errors(vlm):
    images = make_shapes(2, seed=0).images
    with pytest.raises(ValueError, match="empty"):
        vlm.answer(images, ["how many shapes are there?", "  "])
    with pytest.raises(ValueError, match="one question per image"):
        vlm.answer(images, ["how many shapes are there?"])
    with pytest.raises(TypeError, match="list of strings"):
        vlm.answer(images, "how many shapes are there?")
    with pytest.raises(ValueError, match="32 x 32"):
        vlm.answer(make_shapes(2, seed=0, size=16).images, ["how many shapes are there?"] * 2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        vlm.answer(images * 255, ["how many shapes are there?"] * 2)
    with pytest.raises(ValueError, match="images must be"):
        vlm.answer(images[0], ["how many shapes are there?"])
    with pytest.warns(UserWarning, match="vermilion"):
        vlm.answer(images, ["what color is the vermilion star?", "how many shapes are there?"])
    with pytest.raises(ValueError, match="too long"):
        vlm.answer(images[:1], [" ".join(["red"] * 60)])


def test_answers_stop_at_the_context_length(vlm):
    images = make_shapes(1, seed=0).images
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = vlm.answer(images, [" ".join(["red"] * 30)], max_new_tokens=100)  # documented truncation
    assert len(out[0].split()) <= 64


# ------------------------------------------------------------------------------------------- measuring


def test_vqa_accuracy_and_caption_scores():
    data = make_shapes(3, seed=0)
    items = [q for per in questions(data) for q in per[:2]]
    acc = vqa_accuracy([qa.answer for qa in items], items)
    assert acc["all"] == 1.0
    assert caption_scores(["a small red circle on the left"], ["a small red circle on the left"]) == {"exact": 1.0, "recall": 1.0}
    s = caption_scores(["a large red circle on the left"], ["a small red circle on the left"])
    assert s["exact"] == 0.0 and s["recall"] == pytest.approx(3 / 4)


# ------------------------------------------------------------------------------------------ determinism


def _state(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_lm_recipe_is_deterministic():
    from mmcourse.recipes import lm_shapes

    a, _ = lm_shapes.train(steps=3, progress=False, evaluate=False)
    b, _ = lm_shapes.train(steps=3, progress=False, evaluate=False)
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_vlm_training_is_deterministic_and_trains_only_connector_and_lora():
    from mmcourse.recipes.vlm_shapes import train_vlm, training_pool

    pool = training_pool(64, seed=0)
    runs = []
    for _ in range(2):
        clip, lm = tiny_clip(), tiny_lm()
        before = _state(lm)
        model, metrics = train_vlm(clip, lm, lora={"targets": ["q_proj", "v_proj"], "r": 2, "alpha": 4}, stage1_steps=3,
                                   stage2_steps=3, batch_size=8, pool_data=pool, progress=False)
        runs.append(_state(model))
        for k, v in before.items():  # the LM's own weights never move (LoRA lives beside them)
            key = k.replace("q_proj.", "q_proj.base.").replace("v_proj.", "v_proj.base.")
            assert torch.equal(model.lm.state_dict()[key], v), k
        assert set(metrics["loss_curves"]) == {"stage1", "stage2"}
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
