"""mmcourse.losses against open_clip's ClipLoss (the oracle), and the caption-level variant by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmcourse.losses import check_feature_pairs, clip_logits, clip_loss, clip_loss_grouped


def _pairs(n, d, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    txt = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    return img.to(dtype), txt.to(dtype)


def _value_and_grads(loss_fn, img, txt, scale):
    img, txt = img.clone().requires_grad_(), txt.clone().requires_grad_()
    loss = loss_fn(img, txt, torch.tensor(scale, dtype=img.dtype))
    loss.backward()
    return loss.detach(), img.grad, txt.grad


@pytest.mark.parametrize("n, d", [(1, 4), (2, 3), (7, 5), (64, 32)])
@pytest.mark.parametrize("scale", [1.0, 1 / 0.07, 100.0])
def test_value_and_gradients_equal_open_clip(n, d, scale):
    """Same formula as open_clip: compared in float64, where two correct implementations agree to
    ~1e-15 whatever the BLAS kernels (in float32, at scale 100, they differ by ~1e-5 on gradients of
    size ~40, and by how much depends on the torch build)."""
    open_clip_loss = pytest.importorskip("open_clip.loss")
    img, txt = _pairs(n, d, seed=n * 100 + d, dtype=torch.float64)
    ours = _value_and_grads(clip_loss, img, txt, scale)
    ref = _value_and_grads(open_clip_loss.ClipLoss(), img, txt, scale)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("n, d", [(2, 3), (64, 32), (512, 64)])
@pytest.mark.parametrize("scale", [1.0, 1 / 0.07, 100.0])
def test_float32_is_accurate_to_its_resolution(n, d, scale):
    """float32 against float64, with tolerances from the error analysis rather than from one run: the
    logits carry a rounding error of ~eps * scale, which the softmax turns into a relative error of the
    same size, and each gradient entry sums N such terms (rounding grows like sqrt(N)). So the loss may
    be off by a few eps * scale and each gradient by a few eps * scale * sqrt(N) times the largest
    gradient; a wrong formula, or a scale rounded to bf16, is off by far more."""
    img, txt = _pairs(n, d, seed=n * 100 + d)
    loss, d_img, d_txt = _value_and_grads(clip_loss, img, txt, scale)
    ref_loss, ref_img, ref_txt = _value_and_grads(clip_loss, img.double(), txt.double(), scale)
    eps = torch.finfo(torch.float32).eps * max(1.0, scale)
    torch.testing.assert_close(loss.double(), ref_loss, rtol=0, atol=8 * eps)
    for ours_g, ref_g in ((d_img, ref_img), (d_txt, ref_txt)):
        atol = 4 * eps * math.sqrt(n) * ref_g.abs().max().item()
        torch.testing.assert_close(ours_g.double(), ref_g, rtol=0, atol=atol)


def test_perfect_alignment_at_high_scale_is_near_zero_and_chance_is_log_n():
    img, _ = _pairs(16, 16, seed=0, dtype=torch.float64)
    assert clip_loss(img, img, 100.0).item() < 1e-3
    assert clip_loss(img, img, 0.0).item() == pytest.approx(math.log(16), rel=1e-12)


def test_logits_are_scaled_cosines():
    img, txt = _pairs(5, 8, seed=1)
    torch.testing.assert_close(clip_logits(img, txt, 2.0), 2.0 * img @ txt.T)


def test_grouped_equals_plain_without_duplicates():
    img, txt = _pairs(9, 6, seed=2, dtype=torch.float64)
    torch.testing.assert_close(clip_loss_grouped(img, txt, 10.0, torch.arange(9)), clip_loss(img, txt, 10.0))


def test_grouped_does_not_push_duplicate_captions_apart():
    """Two pairs share a caption: their texts are identical. The plain loss has a floor above zero
    (it must tell identical captions apart); the grouped loss can reach it."""
    img, txt = _pairs(4, 8, seed=3)
    txt[1] = txt[0]
    img[1] = img[0]
    groups = torch.tensor([0, 0, 1, 2])
    aligned_img = txt.clone()
    plain = clip_loss(aligned_img, txt, 100.0).item()
    grouped = clip_loss_grouped(aligned_img, txt, 100.0, groups).item()
    assert plain == pytest.approx(0.5 * torch.log(torch.tensor(2.0)).item(), abs=1e-3)  # half the rows are 50/50
    assert grouped == pytest.approx(plain, abs=1e-3)  # uniform targets over a duplicate pair: same entropy...
    # ...but its gradient no longer pushes the duplicate caption away
    x = aligned_img.clone().requires_grad_()
    clip_loss_grouped(x, txt, 100.0, groups).backward()
    assert x.grad.abs().max() < 1e-3


@pytest.mark.parametrize(
    "img, txt, error, match",
    [
        (torch.zeros(3, 4), torch.zeros(4, 4), ValueError, "must be paired.*N = 3 images and N = 4 texts"),
        (torch.zeros(3, 4), torch.zeros(3, 5), ValueError, "one embedding space.*D = 4 and D = 5"),
        (torch.zeros(4), torch.zeros(4), ValueError, r"image_features must be an \(N, D\) matrix"),
        (torch.zeros(3, 4), torch.zeros(2, 3, 4), ValueError, r"text_features must be an \(N, D\) matrix"),
        (torch.zeros(0, 4), torch.zeros(0, 4), ValueError, "at least one"),
        (torch.zeros(3, 4), torch.zeros(3, 4, dtype=torch.float64), TypeError, "one dtype"),
        (torch.zeros(3, 4, dtype=torch.long), torch.zeros(3, 4), TypeError, "image_features must be floating point"),
        ([[1.0]], torch.zeros(1, 1), TypeError, "torch.Tensor, got list"),
    ],
)
def test_unpaired_shapes_are_explained(img, txt, error, match):
    """One validator (``check_feature_pairs``) serves clip_loss, the fused kernels and the distributed loss."""
    from mmcourse.distributed import distributed_clip_loss
    from mmcourse.kernels import fused_clip_loss

    for loss_fn in (clip_loss, fused_clip_loss, distributed_clip_loss):
        with pytest.raises(error, match=match):
            loss_fn(img, txt, 1.0)
    with pytest.raises(error, match=match):
        check_feature_pairs(img, txt)


def test_identical_captions_make_caption_level_targets_equal_the_plain_loss():
    """Copies of one caption share one text embedding; grouping them changes neither loss nor gradients."""
    from mmcourse.losses import caption_groups, clip_loss_grouped

    captions = ["a red square", "a blue circle", "a red square", "a star", "a red square", "a blue circle"]
    groups = caption_groups(captions)
    g = torch.Generator().manual_seed(0)
    table = torch.randn(3, 8, generator=g, dtype=torch.float64, requires_grad=True)  # a "text encoder": one row per caption
    images = torch.randn(6, 8, generator=g, dtype=torch.float64, requires_grad=True)
    results = []
    for grouped in (False, True):
        img, txt = F.normalize(images, dim=1), F.normalize(table[groups], dim=1)
        loss = clip_loss_grouped(img, txt, 20.0, groups) if grouped else clip_loss(img, txt, 20.0)
        results.append((loss, *torch.autograd.grad(loss, (images, table))))
    for a, b in zip(*results):
        assert torch.allclose(a, b, atol=1e-12)


def test_content_level_groups_change_the_loss():
    from mmcourse.losses import clip_loss_grouped

    g = torch.Generator().manual_seed(1)
    img = F.normalize(torch.randn(4, 8, generator=g), dim=1)
    txt = F.normalize(torch.randn(4, 8, generator=g), dim=1)  # four different captions
    assert not torch.allclose(clip_loss_grouped(img, txt, 10.0, torch.tensor([0, 0, 1, 2])), clip_loss(img, txt, 10.0))
    assert torch.allclose(clip_loss_grouped(img, txt, 10.0, torch.arange(4)), clip_loss(img, txt, 10.0))
