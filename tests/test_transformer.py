"""The shared transformer pieces (mmcourse.models.transformer): attention with separate projections equals
torch's fused nn.MultiheadAttention, the course CLIP's blocks convert without changing their function, and
the causal LM's key-value cache changes nothing but the cost."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmcourse.models.text import Block as TextBlock
from mmcourse.models.transformer import Attention, Block, CausalLM, KVCache


def _causal(length: int) -> torch.Tensor:
    return torch.full((length, length), float("-inf"), dtype=torch.float64).triu(1)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_from_multihead_is_the_same_function(causal):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(24, 3, batch_first=True).double()
    x = torch.randn(2, 7, 24, dtype=torch.float64)
    expected = mha(x, x, x, attn_mask=_causal(7) if causal else None, need_weights=False)[0]
    attn = Attention.from_multihead(mha)
    assert {"q_proj", "k_proj", "v_proj", "out_proj"} <= {n for n, _ in attn.named_children()}
    torch.testing.assert_close(attn(x, causal=causal), expected, rtol=1e-12, atol=1e-12)


def test_text_block_converts_without_changing_the_course_tower():
    torch.manual_seed(1)
    old = TextBlock(32, 4).double()
    x = torch.randn(3, 9, 32, dtype=torch.float64)
    new = Block.from_text_block(old)
    torch.testing.assert_close(new(x, causal=True), old(x, _causal(9)), rtol=1e-12, atol=1e-12)
    old.requires_grad_(False)
    assert not any(p.requires_grad for p in Block.from_text_block(old).parameters()), "a frozen block stays frozen"


def test_cross_attention_reads_a_context_of_another_width():
    torch.manual_seed(2)
    block = Block(16, 2, cross_width=40)
    x, ctx = torch.randn(2, 5, 16), torch.randn(2, 11, 40)
    assert block(x, context=ctx).shape == (2, 5, 16)
    with pytest.raises(ValueError, match="context"):
        block(x)


def _lm(**kw) -> CausalLM:
    torch.manual_seed(3)
    return CausalLM(vocab_size=50, width=32, layers=2, heads=4, context_length=24, **kw).double().eval()


def test_the_lm_is_causal_and_its_cache_changes_nothing():
    lm = _lm()
    ids = torch.randint(0, 50, (2, 10))
    full = lm(ids)
    changed = ids.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % 50
    torch.testing.assert_close(lm(changed)[:, :6], full[:, :6], rtol=1e-12, atol=1e-12)  # the future is unseen
    cache = KVCache()
    pieces = [lm(ids[:, :4], cache=cache), lm(ids[:, 4:5], cache=cache), lm(ids[:, 5:], cache=cache)]
    assert cache.length == 10
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-10, atol=1e-10)


def test_embeds_are_the_ids_path_with_a_prefix_in_front():
    lm = _lm()
    ids = torch.randint(0, 50, (2, 6))
    torch.testing.assert_close(lm(embeds=lm.token_embedding(ids)), lm(ids), rtol=0, atol=0)
    prefix = torch.randn(2, 3, 32, dtype=torch.float64)
    out = lm(embeds=torch.cat([prefix, lm.token_embedding(ids)], dim=1))
    assert out.shape == (2, 9, 50)


@pytest.mark.parametrize("temperature, top_k", [(0.0, None), (1.0, None), (0.8, 5)])
def test_generation_with_and_without_the_cache_gives_the_same_tokens(temperature, top_k):
    lm = _lm()
    ids = torch.randint(0, 50, (3, 4))
    prefix = torch.randn(3, 2, 32, dtype=torch.float64)
    runs = [
        lm.generate(ids, 12, embeds_prefix=prefix, temperature=temperature, top_k=top_k,
                    generator=torch.Generator().manual_seed(7), use_cache=use_cache)
        for use_cache in (True, False)
    ]
    assert runs[0].shape == (3, 16)
    assert torch.equal(runs[0], runs[1])
    assert torch.equal(runs[0][:, :4], ids)


def test_generation_stops_and_refuses_what_does_not_fit():
    lm = _lm()
    ids = torch.randint(0, 50, (4, 3))
    greedy = lm.generate(ids, 6)
    stop = int(greedy[0, 4])  # the second generated token of row 0: it must repeat after it appears
    out = lm.generate(ids, 6, stop_id=stop)
    first = (out[0, 3:] == stop).nonzero()[0, 0]
    assert (out[0, 3 + first:] == stop).all()
    with pytest.raises(ValueError, match="context length"):
        lm.generate(ids, 22)
    with pytest.raises(ValueError, match="context length"):
        lm(torch.zeros(1, 25, dtype=torch.long))
    with pytest.raises(ValueError, match="temperature"):
        lm.generate(ids, 2, temperature=-1.0)
    with pytest.raises(ValueError, match="exactly one"):
        lm()
