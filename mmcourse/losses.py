"""Contrastive losses: InfoNCE as N-way classification per row, made symmetric as in CLIP.

For a batch of N matching (image, text) pairs with L2-normalised features, the logits are the scaled
cosine similarities ``logits[i, j] = s * <I_i, T_j>`` (s = exp(t), the learned logit scale = 1/tau).
Row i is a classification problem over N texts whose right answer is text i, so the image->text loss
is ``F.cross_entropy(logits, arange(N))``; the text->image loss does the same on the columns.
"""

from __future__ import annotations

from typing import Sequence

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


def caption_groups(captions: Sequence[str]) -> Tensor:
    """(N,) long: one id per distinct caption, in order of first appearance ("a", "b", "a" -> 0, 1, 0)."""
    if isinstance(captions, str):
        raise TypeError("captions must be a list of strings, not a single string")
    ids: dict[str, int] = {}
    return torch.tensor([ids.setdefault(c, len(ids)) for c in captions], dtype=torch.long)


def grouped_targets(groups: Tensor) -> Tensor:
    """(N, N) soft targets: row i spreads probability 1 uniformly over every pair with i's caption id."""
    if groups.ndim != 1:
        raise ValueError(f"groups must be a (N,) tensor of caption ids, got shape {tuple(groups.shape)}")
    same = (groups[:, None] == groups[None, :]).float()  # symmetric, ones on the diagonal
    return same / same.sum(dim=1, keepdim=True)


def caption_targets(captions: Sequence[str]) -> Tensor:
    """(N, N) caption-level targets for a batch: identical captions are all positives of each other."""
    return grouped_targets(caption_groups(captions))


def clip_loss_grouped(
    image_features: Tensor, text_features: Tensor, logit_scale: Tensor | float, groups: Tensor
) -> Tensor:
    """CLIP loss with group-level targets: pairs in one group are all positives of each other.

    ``groups`` (N,) labels pairs that are interchangeable; each row's target is spread uniformly over
    its group (a soft label instead of ``arange(N)``). With all ids distinct this is ``clip_loss``.

    Which grouping matters: for *identical captions* (``caption_groups``), whose text embeddings are
    identical, the total loss equals the plain one, so nothing changes for the model. The false
    negatives that cost accuracy are different captions of the same content ("a red square" and "a
    small red square" for two red squares); grouping by content removes them, where content is known.
    """
    logits = clip_logits(image_features, text_features, logit_scale)  # (N, N)
    if groups.shape != (logits.shape[0],):
        raise ValueError(f"groups must be a (N,) tensor of caption ids, got shape {tuple(groups.shape)}")
    targets = grouped_targets(groups).to(logits.dtype)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))
