"""DALL-E's stage 2 (mmcourse.dalle, mmcourse.models.dalle, the dalle_shapes checkpoint): the joint sequence
and its weighted loss, cached sampling equal to uncached, top-k and temperature, re-ranking, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmcourse import dalle as DL
from mmcourse.models import DALLE, DiscreteVAE
from mmcourse.models.transformer import KVCache


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return DALLE(DiscreteVAE(64).eval(), text_length=12, width=32, layers=2, heads=2).eval()


def test_separate_embeddings_positions_and_heads(model):
    assert model.text_embedding.num_embeddings == model.tokenizer.vocab_size
    assert model.image_embedding.num_embeddings == 64 and model.image_position.num_embeddings == 64
    assert model.text_position.num_embeddings == 12
    ids = model.tokenize(["a red circle", "a blue square"])
    text_logits, image_logits = model(ids, torch.randint(0, 64, (2, 8, 8)))
    assert text_logits.shape == (2, 11, model.tokenizer.vocab_size) and image_logits.shape == (2, 64, 64)


def test_joint_loss_weights_text_one_eighth(model):
    ids = model.tokenize(["a red circle", "there is a pink dot in the top right"])
    codes = torch.randint(0, 64, (2, 8, 8))
    loss, text_ce, image_ce = DL.joint_loss(model, ids, codes)
    text_logits, image_logits = model(ids, codes)
    assert text_ce.item() == pytest.approx(F.cross_entropy(text_logits.flatten(0, 1), ids[:, 1:].flatten()).item(), rel=1e-5)
    assert image_ce.item() == pytest.approx(F.cross_entropy(image_logits.flatten(0, 1), codes.flatten()).item(), rel=1e-5)
    assert loss.item() == pytest.approx(text_ce.item() / 8 + 7 * image_ce.item() / 8, rel=1e-5)


def test_the_image_logits_are_causal(model):
    """Changing image token j changes no prediction of a token at or before j."""
    ids = model.tokenize(["a red circle"])
    codes = torch.randint(0, 64, (1, 64))
    other = codes.clone()
    other[0, 30] = (codes[0, 30] + 1) % 64
    _, a = model(ids, codes)
    _, b = model(ids, other)
    assert torch.allclose(a[0, :31], b[0, :31], atol=1e-5) and not torch.allclose(a[0, 31:], b[0, 31:])


def test_cached_steps_give_the_full_forward_logits(model):
    ids = model.tokenize(["a green heart"])
    codes = torch.randint(0, 64, (1, 64))
    _, full = model(ids, codes)
    cache = KVCache()
    h = model.transformer(model.embed_text(ids), cache=cache)
    steps = [model.image_head(h[:, -1])]
    for i in range(63):
        h = model.transformer(model.embed_image(codes[:, i : i + 1], start=i), cache=cache)
        steps.append(model.image_head(h[:, -1]))
    assert torch.allclose(torch.stack(steps, 1), full, atol=1e-4)


def test_cache_and_no_cache_draw_the_same_tokens(model):
    a = DL.sample_codes(model, ["a red circle", "a blue star"], seed=3, top_k=8)
    b = DL.sample_codes(model, ["a red circle", "a blue star"], seed=3, top_k=8, use_cache=False)
    assert a.shape == (2, 8, 8) and torch.equal(a, b)
    assert torch.equal(a, DL.sample_codes(model, ["a red circle", "a blue star"], seed=3, top_k=8)), "deterministic"


def test_generate_contract(model):
    images = DL.generate(model, ["a red circle", "a yellow cross"], seed=0, temperature=0.8, top_k=10)
    assert images.shape == (2, 3, 32, 32) and images.min() >= 0 and images.max() <= 1


def test_top_k_and_temperature():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0]]).expand(5000, -1)
    g = torch.Generator().manual_seed(0)
    drawn = DL.next_token(logits, top_k=2, generator=g)
    assert set(drawn.tolist()) <= {0, 1}
    cold = DL.next_token(logits, temperature=0.05, generator=g)
    assert (cold == 0).float().mean() > 0.99
    hot = DL.next_token(logits, temperature=1.0, generator=g)
    p = logits[0].softmax(0)
    assert torch.allclose(torch.bincount(hot, minlength=5).float() / 5000, p, atol=0.02)


@pytest.mark.parametrize("kwargs, match", [
    ({"temperature": 0.0}, "temperature"), ({"temperature": -1.0}, "temperature"),
    ({"temperature": float("nan")}, "temperature"), ({"top_k": 0}, "top_k"), ({"top_k": 65}, "exceeds"),
])
def test_bad_sampling_arguments_are_clear_errors(model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        DL.generate(model, ["a red circle"], seed=0, **kwargs)


def test_long_captions_are_truncated_with_a_warning(model):
    long = "there is a very small and shiny red circle in the top left of a white picture"
    with pytest.warns(UserWarning, match="truncated"):
        ids = model.tokenize([long])
    assert ids.shape == (1, 12) and ids[0, -1].item() == model.tokenizer.eos_id


def test_codes_out_of_range_and_too_many_positions_are_refused(model):
    with pytest.raises(ValueError, match="lie in"):
        model.embed_image(torch.tensor([[64]]))
    with pytest.raises(ValueError, match="at most 64"):
        model.embed_image(torch.zeros(1, 2, dtype=torch.long), start=63)


def test_rerank_orders_by_cosine_not_dot_product():
    text = torch.tensor([[1.0, 0.0]])
    images = torch.tensor([[[10.0, 10.0], [1.0, 0.1], [0.0, 1.0]]])  # the longest is not the best aligned
    assert DL.rerank(images, text).tolist() == [[1, 0, 2]]
    scores = torch.tensor([[0.1, 0.5, 0.3, 0.9]])
    assert DL.best_of(scores, 1).item() == 0 and DL.best_of(scores, 3).item() == 1 and DL.best_of(scores, 4).item() == 3
    with pytest.raises(ValueError, match="k must be"):
        DL.best_of(scores, 0)


def test_sample_and_rerank_refuses_k_of_zero(model):
    with pytest.raises(ValueError, match="K must be"):
        DL.sample_and_rerank(model, None, "a red circle", 0, seed=0)


def test_recipe_is_deterministic():
    from mmcourse.recipes.dalle_shapes import train_dalle

    torch.manual_seed(0)
    dvae = DiscreteVAE(64).eval()
    states = []
    for _ in range(2):
        m, _ = train_dalle(dvae, steps=3, batch_size=4, width=32, layers=1, heads=2, progress=False)
        states.append(m.state_dict())
    assert "dvae" not in " ".join(states[0]), "the frozen dVAE is not part of the checkpoint"
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_bundled_checkpoint():
    from mmcourse import pretrained

    if "dalle_shapes" not in pretrained.available():
        pytest.skip("dalle_shapes not built yet")
    m = pretrained.load("dalle_shapes")
    assert pretrained.card("dalle_shapes")["requires"].keys() == {"dvae_shapes"}
    images = DL.generate(m, ["a red circle", "a blue square"], seed=0)
    assert images.shape == (2, 3, 32, 32) and 0 <= images.min() and images.max() <= 1


class _StubClip(torch.nn.Module):
    """Scores an image by its mean colour against (1, 0, 0): redder is better."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def encode_image(self, images):
        return images.mean(dim=(2, 3)) + 1e-3

    def encode_text(self, texts):
        return torch.tensor([[1.0, 0.0, 0.0]]).expand(len(texts), -1)


def test_rerank_widget_orders_samples_by_score(model):
    from mmcourse.widgets.dalle import RerankExplorer

    explorer = RerankExplorer(model, _StubClip(), k=4, seed=0)
    fig = explorer.render("a red circle")
    scores = explorer.last_scores
    assert fig is not None and scores.shape == (4,) and torch.all(scores[:-1] >= scores[1:])
    red = F.normalize(explorer.last_images.mean(dim=(2, 3)) + 1e-3, dim=-1)[:, 0]
    assert torch.allclose(red, scores, atol=1e-5)
    with pytest.raises(ValueError, match="type a caption"):
        explorer.render("   ")
    with pytest.raises(ValueError, match="k must be"):
        RerankExplorer(model, _StubClip(), k=0)
    explorer.widget("a blue square")  # builds without error
