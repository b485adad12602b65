"""DALL-E's stage 1 (mmcourse.dvae, mmcourse.models.dvae, the dvae_shapes checkpoint): the Gumbel-softmax
against torch's in distribution, the nearest-code lookup against vector-quantize-pytorch, the VQ
remedies, the model's contract and its bad-input errors, and a deterministic recipe."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmcourse import dvae as V
from mmcourse.models import DiscreteVAE

# ------------------------------------------------------------------------------ Gumbel-softmax


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_soft_gumbel_softmax_matches_torch_in_distribution(tau):
    logits = torch.tensor([[1.0, 0.0, -1.0, 0.5, 2.0]]).expand(40_000, -1)
    ours = V.gumbel_softmax(logits, tau, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    theirs = F.gumbel_softmax(logits, tau=tau)
    assert torch.allclose(ours.sum(-1), torch.ones(len(ours)), atol=1e-5)
    # the mean of every component and the quantiles of the largest one agree (40 000 draws each)
    assert torch.allclose(ours.mean(0), theirs.mean(0), atol=0.01), (ours.mean(0), theirs.mean(0))
    qs = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9])
    assert torch.allclose(ours[:, 4].quantile(qs), theirs[:, 4].quantile(qs), atol=0.015)


def test_hard_gumbel_softmax_matches_torch_and_the_categorical():
    logits = torch.tensor([[1.0, 0.0, -1.0, 0.5, 2.0]]).expand(40_000, -1)
    ours = V.gumbel_softmax(logits, 0.7, hard=True, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    theirs = F.gumbel_softmax(logits, tau=0.7, hard=True)
    assert set(ours.unique().tolist()) == {0.0, 1.0} and torch.equal(ours.sum(-1), torch.ones(len(ours)))
    p = logits[0].softmax(0)
    assert torch.allclose(ours.mean(0), p, atol=0.01) and torch.allclose(theirs.mean(0), p, atol=0.01)


def test_hard_sample_passes_the_soft_gradient_straight_through():
    logits = torch.randn(6, 8, requires_grad=True)
    w = torch.randn(6, 8)
    (V.gumbel_softmax(logits, 0.5, hard=True, generator=torch.Generator().manual_seed(3)) * w).sum().backward()
    grad_hard = logits.grad.clone()
    logits.grad = None
    (V.gumbel_softmax(logits, 0.5, generator=torch.Generator().manual_seed(3)) * w).sum().backward()
    assert torch.allclose(grad_hard, logits.grad)


@pytest.mark.parametrize("tau", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_temperature_is_a_clear_error(tau):
    with pytest.raises(ValueError, match="temperature"):
        V.gumbel_softmax(torch.randn(2, 4), tau)


def test_extreme_logits_give_no_nan_and_nan_logits_are_refused():
    out = V.gumbel_softmax(torch.tensor([[80.0, -80.0, 0.0]]).expand(1000, -1), 1 / 16)
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match="NaN"):
        V.gumbel_softmax(torch.tensor([[float("nan"), 0.0]]), 1.0)


def test_kl_to_uniform_and_the_schedules():
    assert V.kl_to_uniform(torch.zeros(3, 16, 2, 2), dim=1).abs() < 1e-6
    assert abs(V.kl_to_uniform(torch.tensor([[100.0] + [0.0] * 15]), dim=1).item() - math.log(16)) < 1e-4
    assert V.temperature_at(0, 100) == pytest.approx(1.0) and V.temperature_at(100, 100) == pytest.approx(1 / 16)
    assert V.temperature_at(500, 100) == pytest.approx(1 / 16)
    taus = [V.temperature_at(s, 100) for s in range(101)]
    assert all(a >= b for a, b in zip(taus, taus[1:]))
    assert V.beta_at(0, 10, 2.0) == 0 and V.beta_at(5, 10, 2.0) == 1.0 and V.beta_at(50, 10, 2.0) == 2.0


# ------------------------------------------------------------------------------ nearest code


@pytest.mark.parametrize("shape", [(50, 16), (4, 9, 16)])
def test_nearest_code_matches_vector_quantize_pytorch(shape):
    from vector_quantize_pytorch import VectorQuantize

    g = torch.Generator().manual_seed(0)
    codebook = torch.randn(64, 16, generator=g) * torch.rand(64, 1, generator=g) * 3  # codes of different norms
    x = torch.randn(*shape, generator=g) * 2
    vq = VectorQuantize(dim=16, codebook_size=64).eval()
    with torch.no_grad():
        vq._codebook.embed.copy_(codebook[None])
        quantized, indices, _ = vq(x.reshape(-1, *x.shape[-2:]) if x.ndim == 3 else x[None])
    ours = V.nearest_code(x, codebook)
    assert ours.shape == x.shape[:-1] and ours.dtype == torch.long
    assert torch.equal(ours.flatten(), indices.flatten())
    assert torch.allclose(codebook[ours].reshape(-1, 16), quantized.reshape(-1, 16), atol=1e-5)


def test_nearest_code_is_not_the_largest_dot_product():
    codebook = torch.tensor([[1.0, 0.0], [10.0, 0.0]])
    assert V.nearest_code(torch.tensor([[1.0, 0.0]]), codebook).item() == 0
    with pytest.raises(ValueError, match="share D"):
        V.nearest_code(torch.randn(3, 4), torch.randn(8, 5))


def test_codebook_usage():
    assert V.codebook_usage(torch.arange(64).repeat(3), 64) == {"perplexity": 64.0, "used": 64, "dead": 0}
    assert V.codebook_usage(torch.zeros(100, dtype=torch.long), 64) == {"perplexity": 1.0, "used": 1, "dead": 63}
    with pytest.raises(ValueError, match="lie in"):
        V.codebook_usage(torch.tensor([0, 64]), 64)
    with pytest.raises(ValueError, match="num_codes"):
        V.codebook_usage(torch.tensor([0]), 0)


def test_vector_quantizer_straight_through_kmeans_and_restarts():
    torch.manual_seed(0)
    q = V.VectorQuantizer(16, 4, restart_after=2)
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    z_q, codes, loss = q(z, generator=torch.Generator().manual_seed(0))
    assert bool(q.initialised), "k-means initialisation on the first training batch"
    assert torch.allclose(z_q.permute(0, 2, 3, 1).reshape(-1, 4), q.codebook[codes.flatten()])
    w = torch.randn_like(z)
    (z_q * w).sum().backward()
    assert torch.allclose(z.grad, w), "straight-through: the decoder's gradient reaches the encoder unchanged"
    e = q.codebook[codes.flatten()].detach()
    flat = z.detach().permute(0, 2, 3, 1).reshape(-1, 4)
    assert loss.item() == pytest.approx(1.25 * F.mse_loss(flat, e).item(), rel=1e-5)
    # codes that go unused for restart_after steps jump onto encoder outputs
    q.codebook.data[5] = 1e3
    for _ in range(3):
        q(torch.randn(2, 4, 3, 3), generator=torch.Generator().manual_seed(1))
    assert q.restarts > 0 and q.codebook[5].abs().max() < 100


# ------------------------------------------------------------------------------ the model


@pytest.mark.parametrize("quantizer", ["gumbel", "vq"])
def test_model_shapes_and_contract(quantizer):
    torch.manual_seed(0)
    m = DiscreteVAE(64, quantizer=quantizer)
    x = torch.rand(3, 3, 32, 32)
    recon, codes, extra = m(x)
    assert recon.shape == x.shape and codes.shape == (3, 8, 8) and extra.ndim == 0
    m.eval()
    c = m.encode(x)
    assert c.shape == (3, 8, 8) and c.dtype == torch.long and m.num_codes == 64
    out = m.decode(c)
    assert out.shape == (3, 3, 32, 32) and out.min() >= 0 and out.max() <= 1


def test_model_bad_input_is_a_clear_error():
    m = DiscreteVAE(64).eval()
    with pytest.raises(ValueError, match=r"lie in \[0, 64\)"):
        m.decode(torch.full((1, 8, 8), 64))
    with pytest.raises(ValueError, match=r"lie in \[0, 64\)"):
        m.decode(torch.full((1, 8, 8), -1))
    with pytest.raises(ValueError, match="8 x 8 grid"):
        m.decode(torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="long tensor"):
        m.decode(torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match=r"images must be \(N, 3, 32, 32\)"):
        m.encode(torch.rand(1, 3, 16, 16))
    for k in (0, 32, 1024):
        with pytest.raises(ValueError, match="between 64 and 512"):
            DiscreteVAE(k)


def test_recipe_is_deterministic():
    from mmcourse.recipes.dvae_shapes import train_dvae

    states = []
    for _ in range(2):
        model, metrics = train_dvae(steps=3, batch_size=8, progress=False)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_bundled_checkpoint():
    from mmcourse import pretrained
    from mmcourse.data import make_shapes

    if "dvae_shapes" not in pretrained.available():
        pytest.skip("dvae_shapes not built yet")
    m = pretrained.load("dvae_shapes")
    info = pretrained.card("dvae_shapes")
    assert 64 <= m.num_codes <= 512
    images = make_shapes(64, seed=123, style="flat").images
    codes = m.encode(images)
    assert codes.shape == (64, 8, 8) and codes.dtype == torch.long
    recon = m.decode(codes)
    assert recon.min() >= 0 and recon.max() <= 1 and F.mse_loss(recon, images) < 0.01
    ev = info["metrics"]["evaluation"]["seen"]
    assert ev["perplexity"] >= 0.3 * m.num_codes, ev
