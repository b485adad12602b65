"""mmcourse.losses against open_clip's ClipLoss (the oracle), and the caption-level variant by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmcourse.losses import clip_logits, clip_loss, clip_loss_grouped

open_clip_loss = pytest.importorskip("open_clip.loss")


def _pairs(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=1), F.normalize(torch.randn(n, d, generator=g), dim=1)


@pytest.mark.parametrize("n, d", [(1, 4), (2, 3), (7, 5), (64, 32)])
@pytest.mark.parametrize("scale", [1.0, 1 / 0.07, 100.0])
def test_value_and_gradients_equal_open_clip(n, d, scale):
    img, txt = _pairs(n, d, seed=n * 100 + d)
    ours_i, ours_t = img.clone().requires_grad_(), txt.clone().requires_grad_()
    ref_i, ref_t = img.clone().requires_grad_(), txt.clone().requires_grad_()
    ours = clip_loss(ours_i, ours_t, torch.tensor(scale))
    ref = open_clip_loss.ClipLoss()(ref_i, ref_t, torch.tensor(scale))
    torch.testing.assert_close(ours, ref)
    ours.backward()
    ref.backward()
    torch.testing.assert_close(ours_i.grad, ref_i.grad)
    torch.testing.assert_close(ours_t.grad, ref_t.grad)


def test_perfect_alignment_at_high_scale_is_near_zero_and_chance_is_log_n():
    img, _ = _pairs(16, 16, seed=0)
    assert clip_loss(img, img, 100.0).item() < 1e-3
    assert clip_loss(img, img, 0.0).item() == pytest.approx(torch.log(torch.tensor(16.0)).item(), rel=1e-6)


def test_logits_are_scaled_cosines():
    img, txt = _pairs(5, 8, seed=1)
    torch.testing.assert_close(clip_logits(img, txt, 2.0), 2.0 * img @ txt.T)


def test_grouped_equals_plain_without_duplicates():
    img, txt = _pairs(9, 6, seed=2)
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
    "img, txt",
    [(torch.zeros(3, 4), torch.zeros(4, 4)), (torch.zeros(3, 4), torch.zeros(3, 5)), (torch.zeros(4), torch.zeros(4))],
)
def test_unpaired_shapes_are_explained(img, txt):
    with pytest.raises(ValueError, match="paired|matrices"):
        clip_loss(img, txt, 1.0)


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
