"""The course CLIP's parts: text transformer (causal, end-of-text pooling), bag of words, tiny ViT, CLIP."""

from __future__ import annotations

import math

import pytest
import torch

from mmcourse.data.tokenizer import SPECIAL_TOKENS, default_tokenizer
from mmcourse.losses import clip_loss
from mmcourse.models import CLIP, BagOfWordsEncoder, TextTransformer, TinyViT
from mmcourse.models.bow import bag_of_words


@pytest.fixture(scope="module")
def text():
    """In float64: the tests below compare the same function computed over different lengths or word
    orders, which float32 rounds differently (by ~1e-7, depending on the kernels a torch build picks)."""
    torch.manual_seed(0)
    return TextTransformer(width=32, layers=2, heads=4).double().eval()


def test_text_transformer_pools_at_the_end_of_text_token(text):
    ids = text.tokenize(["a red square", "a small blue circle on a grey background"])
    assert ids.shape == (2, text.context_length)
    out = text(ids)
    h = text.token_features(ids[:, :12])
    eos = [ids[i].tolist().index(text.tokenizer.eos_id) for i in range(2)]
    torch.testing.assert_close(out, torch.stack([h[0, eos[0]], h[1, eos[1]]]))


def test_causal_attention_ignores_what_follows_the_end_of_text(text):
    ids = text.tokenize(["a red square"])
    junk = ids.clone()
    eos = ids[0].tolist().index(text.tokenizer.eos_id)
    junk[0, eos + 1 : eos + 5] = torch.tensor([10, 11, 12, 13])  # garbage after <eos> instead of padding
    torch.testing.assert_close(text(ids), text(junk))


def test_transformer_sees_word_order_and_bag_of_words_does_not(text):
    a, b = ["a red square left of a blue circle"], ["a blue square left of a red circle"]
    assert not torch.allclose(text(text.tokenize(a)), text(text.tokenize(b)), atol=1e-4)
    bow = BagOfWordsEncoder(width=16).double()  # fp64: the mean adds the same words in another order
    torch.testing.assert_close(bow(bow.tokenize(a)), bow(bow.tokenize(b)))


def test_bag_of_words_ignores_special_and_unknown_tokens():
    bow = BagOfWordsEncoder(width=8)
    assert torch.allclose(bow(bow.tokenize(["a red square"])), bow(bow.tokenize(["a red square zzzunknown"])))


def test_word_counts_follow_the_same_rule_as_the_encoder():
    """One bag of words: the counts keep vocabulary words only (no <unk>, no special tokens), and the
    encoder's output is the count-weighted mean of the embeddings of exactly those words."""
    tok = default_tokenizer()
    texts = ["a red red square", "a red square zzzunknown <eos>", "vermilion chartreuse", "A Red, square."]
    counts = bag_of_words(texts)
    assert counts.shape == (4, tok.vocab_size)
    assert counts[0, tok.stoi["red"]] == 2 and counts[0].sum() == 4
    assert torch.equal(counts[1], bag_of_words("a red square")[0])  # unknown words (typed "<eos>" too) not counted
    assert counts[2].sum() == 0 and counts[:, : len(SPECIAL_TOKENS)].sum() == 0
    assert counts[3, tok.stoi[","]] == 1 and counts[3, tok.stoi["."]] == 1  # punctuation marks are vocabulary words
    assert bag_of_words(" ".join(["red"] * 50))[0, tok.stoi["red"]] == 50  # the whole text, no context length

    bow = BagOfWordsEncoder(width=8).double()
    known = counts[[0, 1, 3]].double()
    expected = known @ bow.embedding.weight / known.sum(dim=1, keepdim=True)
    torch.testing.assert_close(bow(bow.tokenize([texts[0], texts[1], texts[3]])), expected)


def test_vit_exposes_one_patch_token_per_patch_in_row_major_order():
    torch.manual_seed(0)
    vit = TinyViT(image_size=32, patch=4, width=16, layers=0, heads=2).eval()  # no mixing: token k sees patch k only
    x = torch.rand(2, 3, 32, 32)
    tokens = vit.patch_tokens(x)
    assert tokens.shape == (2, 64, 16)
    y = x.clone()
    y[:, :, 8:12, 20:24] += 1.0  # patch row 2, column 5 -> index 2 * 8 + 5
    changed = (vit.patch_tokens(y) - tokens).abs().amax(dim=(0, 2)) > 1e-6
    assert changed.nonzero().flatten().tolist() == [21]


def test_vit_features_and_errors():
    vit = TinyViT(width=16, layers=1, heads=2)
    assert vit(torch.rand(3, 3, 32, 32)).shape == (3, 16)
    with pytest.raises(ValueError, match="multiple of patch"):
        TinyViT(image_size=30, patch=4)


@pytest.mark.parametrize("image", [{"kind": "cnn", "out_dim": 32, "width": 8}, {"kind": "vit", "width": 16, "layers": 1, "heads": 2}])
def test_clip_encodes_both_modalities_into_one_space(image):
    torch.manual_seed(0)
    model = CLIP(image=image, text={"kind": "transformer", "width": 16, "layers": 1, "heads": 2}, embed_dim=24)
    assert math.isclose(model.logit_scale.item(), math.log(1 / 0.07), rel_tol=1e-6)
    images = torch.rand(4, 3, 32, 32)
    captions = ["a red square", "a blue circle", "a green star", "a pink heart"]
    assert model.encode_image(images).shape == (4, 24) and model.encode_text(captions).shape == (4, 24)
    img, txt, scale = model(images, captions)
    assert torch.allclose(img.norm(dim=1), torch.ones(4)) and torch.allclose(txt.norm(dim=1), torch.ones(4))
    loss = clip_loss(img, txt, scale)
    loss.backward()
    assert model.logit_scale.grad is not None and model.image_projection.weight.grad is not None


def test_logit_scale_is_clamped_at_100():
    model = CLIP(image={"kind": "cnn", "out_dim": 8, "width": 4}, text={"kind": "bow", "width": 8}, embed_dim=8)
    with torch.no_grad():
        model.logit_scale.fill_(7.0)  # exp(7) ~ 1097
    assert model.scale().item() == pytest.approx(100.0)
    model.clamp_logit_scale_()
    assert model.logit_scale.item() == pytest.approx(math.log(100.0))


def test_clip_explains_bad_inputs():
    model = CLIP(image={"kind": "cnn", "out_dim": 8, "width": 4}, text={"kind": "bow", "width": 8}, embed_dim=8)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model.encode_image(torch.rand(3, 32, 32))
    with pytest.raises(TypeError, match="list of strings"):
        model.encode_text(42)
    with pytest.raises(ValueError, match="unknown image encoder"):
        CLIP(image={"kind": "resnet"}, text={"kind": "bow"})


def test_the_contrastive_step_lowers_the_loss_on_a_fixed_batch():
    from mmcourse.data import make_shapes
    from mmcourse.losses import contrastive_loss

    torch.manual_seed(0)
    model = CLIP(image={"kind": "cnn", "out_dim": 32, "width": 8}, text={"kind": "bow", "width": 16}, embed_dim=16)
    data = make_shapes(32, seed=3, captions="plain")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(30):
        loss = contrastive_loss(model, data.images, data.captions)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first - 0.5, (first, loss.item())
