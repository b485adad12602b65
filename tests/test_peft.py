"""mmcourse.peft: LoRA and bottleneck adapters, against peft (LoraConfig + get_peft_model) in float64."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from mmcourse.peft import (
    Adapted, BottleneckAdapter, LoRALinear, apply_adapters, apply_lora, count_parameters, disable_lora, lora_layers,
    merge_lora, unload_lora, unmerge_lora,
)


class Toy(nn.Module):
    """Plain torch: two 'blocks' with attention-like projections and an MLP, odd sizes."""

    def __init__(self, width: int = 11, hidden: int = 19) -> None:
        super().__init__()
        self.blocks = nn.ModuleList()
        for _ in range(2):
            block = nn.Module()
            block.q_proj, block.k_proj = nn.Linear(width, width), nn.Linear(width, width)
            block.v_proj, block.out_proj = nn.Linear(width, width), nn.Linear(width, width, bias=False)
            block.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))
            self.blocks.append(block)
        self.head = nn.Linear(width, 3)

    def forward(self, x):  # (B, L, width)
        for b in self.blocks:
            q, k, v = b.q_proj(x), b.k_proj(x), b.v_proj(x)
            att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
            x = x + b.out_proj(att @ v)
            x = x + b.mlp(x)
        return self.head(x.mean(1))


def _toy(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return Toy().to(dtype)


def _randomise_lora(layers: dict, seed: int = 1):
    """Non-zero B (and fresh A) so the LoRA branch matters; returns {name: (A, B)}."""
    g = torch.Generator().manual_seed(seed)
    weights = {}
    for name, layer in layers.items():
        a = torch.randn(layer.lora_A.weight.shape, generator=g, dtype=torch.float64)
        b = torch.randn(layer.lora_B.weight.shape, generator=g, dtype=torch.float64)
        weights[name] = (a, b)
    return weights


def _peft_pair(target, r, alpha, seed=0, use_rslora=False):
    """(mine, peft's) on the same base weights and the same (non-zero) adapter weights."""
    peft = pytest.importorskip("peft")
    base = _toy(seed)
    mine = apply_lora(copy.deepcopy(base), target, r=r, alpha=alpha)
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=target,
                                                                      use_rslora=use_rslora))
    weights = _randomise_lora(lora_layers(mine))
    with torch.no_grad():
        for name, (a, b) in weights.items():
            layer = lora_layers(mine)[name]
            layer.lora_A.weight.copy_(a), layer.lora_B.weight.copy_(b)
            peft_layer = theirs.base_model.model.get_submodule(name)
            peft_layer.lora_A["default"].weight.copy_(a), peft_layer.lora_B["default"].weight.copy_(b)
    return mine, theirs


CONFIGS = [(["q_proj", "v_proj"], 1, 1.0), (["q_proj", "v_proj"], 4, 16.0), ("all-linear", 3, 5.0),
           (r"blocks\.1\.(k_proj|mlp\.2)", 2, 7.0)]


@pytest.mark.parametrize("target,r,alpha", CONFIGS)
def test_outputs_and_gradients_equal_peft(target, r, alpha):
    mine, theirs = _peft_pair(target, r, alpha)
    assert set(lora_layers(mine)) == {n.removeprefix("base_model.model.") for n, m in theirs.named_modules()
                                      if hasattr(m, "lora_A") and hasattr(m, "base_layer")}
    x = torch.randn(4, 5, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = mine(x1), theirs(x2)
    torch.testing.assert_close(y1, y2, rtol=1e-12, atol=1e-12)
    upstream = torch.randn_like(y1)
    (y1 * upstream).sum().backward(), (y2 * upstream).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-12, atol=1e-12)
    for name, layer in lora_layers(mine).items():
        p = theirs.base_model.model.get_submodule(name)
        torch.testing.assert_close(layer.lora_A.weight.grad, p.lora_A["default"].weight.grad, rtol=1e-11, atol=1e-11)
        torch.testing.assert_close(layer.lora_B.weight.grad, p.lora_B["default"].weight.grad, rtol=1e-11, atol=1e-11)
    # the same parameters train (peft freezes everything but LoRA too)
    assert count_parameters(mine) == sum(p.numel() for p in theirs.parameters() if p.requires_grad)


@pytest.mark.parametrize("target,r,alpha", CONFIGS)
def test_merge_equals_peft_merge_and_unload(target, r, alpha):
    mine, theirs = _peft_pair(target, r, alpha)
    x = torch.randn(3, 4, 11, dtype=torch.float64)
    with torch.no_grad():
        before = mine(x)
        merged = theirs.merge_and_unload()
        unload_lora(mine, merge=True)
        assert not lora_layers(mine)
        torch.testing.assert_close(mine(x), merged(x), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(mine(x), before, rtol=1e-12, atol=1e-12)
        theirs_state = merged.state_dict()
        for k, v in mine.state_dict().items():
            torch.testing.assert_close(v, theirs_state[k], rtol=1e-13, atol=1e-13)


def test_scaling_is_alpha_over_r_not_rslora():
    peft = pytest.importorskip("peft")
    mine, theirs = _peft_pair(["q_proj"], 4, 8.0)
    layer = lora_layers(mine)["blocks.0.q_proj"]
    assert layer.scaling == 2.0 == theirs.base_model.model.blocks[0].q_proj.scaling["default"]
    rs = peft.get_peft_model(_toy(), peft.LoraConfig(r=4, lora_alpha=8.0, target_modules=["q_proj"], use_rslora=True))
    assert rs.base_model.model.blocks[0].q_proj.scaling["default"] == pytest.approx(8.0 / math.sqrt(4)) != layer.scaling


def test_initialisation_matches_peft_distribution_and_start_is_bit_identical():
    torch.manual_seed(0)
    base = nn.Linear(300, 200)
    layer = LoRALinear(base, r=64, alpha=16)
    assert torch.count_nonzero(layer.lora_B.weight) == 0
    bound = 1 / math.sqrt(300)  # kaiming_uniform(a=sqrt(5)) on fan_in=300
    assert layer.lora_A.weight.abs().max() <= bound and layer.lora_A.weight.abs().max() > 0.9 * bound
    x = torch.randn(7, 300)
    assert torch.equal(layer(x), base(x))
    model = _toy(dtype=torch.float32)
    reference = copy.deepcopy(model)
    apply_lora(model, "all-linear", r=2, alpha=4)
    x = torch.randn(2, 3, 11)
    assert torch.equal(model(x), reference(x))


def test_base_frozen_only_lora_trains_and_count():
    model = apply_lora(_toy(), ["q_proj", "v_proj"], r=4, alpha=4)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert count_parameters(model) == 2 * 2 * (11 * 4 + 4 * 11)
    assert count_parameters(model, trainable=False) == count_parameters(_toy(), trainable=False) + 2 * 2 * 88
    # one gradient step changes no base weight
    before = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(torch.randn(2, 3, 11, dtype=torch.float64)).sum().backward()
    opt.step()
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters() if n in before)
    assert lora_layers(model)["blocks.0.q_proj"].lora_B.weight.abs().sum() > 0


def test_merge_unmerge_and_disable():
    model = apply_lora(_toy(), "all-linear", r=3, alpha=6)
    reference = _toy()
    for layer in lora_layers(model).values():
        nn.init.normal_(layer.lora_B.weight)
    x = torch.randn(2, 3, 11, dtype=torch.float64)
    with torch.no_grad():
        unmerged = model(x)
        with disable_lora(model):
            assert torch.equal(model(x), reference(x))  # exactly the base model
        merge_lora(model)
        torch.testing.assert_close(model(x), unmerged, rtol=1e-12, atol=1e-12)
        with pytest.raises(RuntimeError, match="already merged"):
            merge_lora(model)
        with pytest.raises(RuntimeError, match="unmerge_lora first"):
            with disable_lora(model):
                pass
        unmerge_lora(model)
        with pytest.raises(RuntimeError, match="not merged"):
            unmerge_lora(model)
        torch.testing.assert_close(model(x), unmerged, rtol=1e-12, atol=1e-12)
        for name, layer in lora_layers(model).items():
            torch.testing.assert_close(layer.base.weight, reference.get_submodule(name).weight, rtol=0, atol=1e-13)
        unload_lora(model, merge=False)
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=1e-13)


def test_bad_input():
    model = _toy()
    with pytest.raises(ValueError, match="at least 1"):
        apply_lora(_toy(), ["q_proj"], r=0, alpha=1)
    with pytest.raises(ValueError, match="exceeds min"):
        apply_lora(_toy(), ["q_proj"], r=12, alpha=1)
    with pytest.raises(ValueError, match=r"matches no module.*blocks\.0\.q_proj"):
        apply_lora(_toy(), ["query"], r=2, alpha=1)
    with pytest.raises(TypeError, match=r"nn\.Linear layers only.*blocks\.0\.mlp \(Sequential\)"):
        apply_lora(_toy(), ["mlp"], r=2, alpha=1)
    with pytest.raises(ValueError, match="alpha"):
        apply_lora(_toy(), ["q_proj"], r=2, alpha=0)
    apply_lora(model, ["q_proj"], r=2, alpha=1)
    with pytest.raises(ValueError, match="already has LoRA"):
        apply_lora(model, ["v_proj"], r=2, alpha=1)
    with pytest.raises(ValueError, match="already has LoRA"):
        LoRALinear(model.blocks[0].q_proj, 2, 1)
    with pytest.raises(TypeError, match="wraps an nn.Linear"):
        LoRALinear(nn.Conv1d(3, 3, 1), 1, 1)
    with pytest.raises(ValueError, match="no LoRA layers"):
        merge_lora(_toy())
    mha = nn.Module()
    mha.attn = nn.MultiheadAttention(8, 2, batch_first=True)
    with pytest.raises(ValueError, match="from_multihead"):
        apply_lora(mha, ["out_proj"], r=2, alpha=1)
    with pytest.raises(ValueError, match="at least 1"):
        LoRALinear(nn.Linear(3, 3), -1, 1)


def test_failed_apply_changes_nothing():
    model = _toy()
    with pytest.raises(ValueError, match="exceeds"):
        apply_lora(model, ["q_proj", "head"], r=4, alpha=1)  # head has 3 outputs
    assert not lora_layers(model) and all(p.requires_grad for p in model.parameters())


def test_adapters_start_as_identity_and_train():
    model, reference = _toy(), _toy()
    apply_adapters(model, ["out_proj", "mlp"], bottleneck=3)
    assert sum(isinstance(m, Adapted) for m in model.modules()) == 4
    x = torch.randn(2, 3, 11, dtype=torch.float64)
    assert torch.equal(model(x), reference(x))
    per_adapter = 11 * 3 + 3 + 3 * 11 + 11
    assert count_parameters(model) == 4 * per_adapter
    model(x).sum().backward()
    ups = [m.adapter.up.weight.grad for m in model.modules() if isinstance(m, Adapted)]
    assert all(g is not None and g.abs().sum() > 0 for g in ups)
    with pytest.raises(ValueError, match="already has adapters"):
        apply_adapters(model, ["mlp"], bottleneck=3)
    with pytest.raises(ValueError, match="bottleneck"):
        BottleneckAdapter(8, 0)
