"""Contrastive losses: InfoNCE as N-way classification per row, made symmetric as in CLIP.

For a batch of N matching (image, text) pairs with L2-normalised features, the logits are the scaled
cosine similarities ``logits[i, j] = s * <I_i, T_j>`` (s = exp(t), the learned logit scale = 1/tau).
Row i is a classification problem over N texts whose right answer is text i, so the image->text loss
is ``F.cross_entropy(logits, arange(N))``; the text->image loss does the same on the columns.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def _check_pairs(image_features: Tensor, text_features: Tensor) -> None:
    if image_features.ndim != 2 or text_features.ndim != 2:
        raise ValueError(
            f"features must be (N, D) matrices, got image {tuple(image_features.shape)} and text {tuple(text_features.shape)}"
        )
    if image_features.shape != text_features.shape:
        raise ValueError(
            f"image and text features must be paired, the same (N, D); got {tuple(image_features.shape)} and "
            f"{tuple(text_features.shape)}"
        )


def clip_logits(image_features: Tensor, text_features: Tensor, logit_scale: Tensor | float) -> Tensor:
    """(N, N) logits: ``logit_scale * image_features @ text_features.T`` (rows: images, columns: texts)."""
    _check_pairs(image_features, text_features)
    return logit_scale * image_features @ text_features.T


def clip_loss(image_features: Tensor, text_features: Tensor, logit_scale: Tensor | float) -> Tensor:
    """The symmetric CLIP loss: mean of the image->text and text->image cross-entropies.

    ``image_features``, ``text_features``: (N, D), L2-normalised, row i of each forms a pair.
    ``logit_scale``: the multiplier, already exponentiated (CLIP's ``exp(t)``, at most 100).
    Equal to ``open_clip.loss.ClipLoss()(image_features, text_features, logit_scale)``.
    """
    logits = clip_logits(image_features, text_features, logit_scale)  # (N, N)
    labels = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def clip_loss_grouped(
    image_features: Tensor, text_features: Tensor, logit_scale: Tensor | float, groups: Tensor
) -> Tensor:
    """CLIP loss with caption-level targets, for batches that contain duplicate captions.

    With plain ``clip_loss``, two images captioned "a red square" push each other's caption away: a
    false negative. Here ``groups`` (N,) gives each pair a caption id; every pair in the same group
    counts as a positive, and the target of each row is spread uniformly over its group.
    """
    logits = clip_logits(image_features, text_features, logit_scale)  # (N, N)
    if groups.shape != (logits.shape[0],):
        raise ValueError(f"groups must be a (N,) tensor of caption ids, got shape {tuple(groups.shape)}")
    same = (groups[:, None] == groups[None, :]).to(logits.dtype)  # (N, N), symmetric
    targets = same / same.sum(dim=1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))
