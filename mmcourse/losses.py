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


def check_feature_pairs(image_features: Tensor, text_features: Tensor) -> None:
    """Raise a ``TypeError``/``ValueError`` that says what is wrong unless the two tensors are a batch
    of N (image, text) pairs: floating-point (N, D) matrices, N >= 1, row i of each forming pair i,
    with one D (one embedding space), one dtype and one device.

    The one validator of every CLIP loss in the package (``clip_loss``, ``fused_clip_loss``, the
    distributed loss).
    """
    for name, x in (("image_features", image_features), ("text_features", text_features)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{name} must be floating point (fp32, fp16, bf16 or fp64), got {x.dtype}")
        if x.ndim != 2:
            raise ValueError(f"{name} must be an (N, D) matrix of L2-normalised features, got shape {tuple(x.shape)}")
    if image_features.shape[0] != text_features.shape[0]:
        raise ValueError(
            f"image and text features must be paired, row i of each forming pair i: got N = {image_features.shape[0]} "
            f"images and N = {text_features.shape[0]} texts"
        )
    if image_features.shape[1] != text_features.shape[1]:
        raise ValueError(
            f"image and text features must live in one embedding space: got D = {image_features.shape[1]} and "
            f"D = {text_features.shape[1]}"
        )
    if image_features.shape[0] == 0:
        raise ValueError("the CLIP loss needs at least one (image, text) pair, got N = 0")
    if image_features.dtype != text_features.dtype:
        raise TypeError(
            f"image and text features must have one dtype, got {image_features.dtype} and {text_features.dtype}"
        )
    if image_features.device != text_features.device:
        raise ValueError(
            f"image and text features must be on one device, got {image_features.device} and {text_features.device}"
        )


def clip_logits(image_features: Tensor, text_features: Tensor, logit_scale: Tensor | float) -> Tensor:
    """(N, N) logits: ``logit_scale * image_features @ text_features.T`` (rows: images, columns: texts)."""
    check_feature_pairs(image_features, text_features)
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


def contrastive_loss(model, images: Tensor, captions: Sequence[str]) -> Tensor:
    """The symmetric CLIP loss of one batch of (image, caption) pairs under a CLIP ``model`` (whose
    forward returns the normalised image and text embeddings and the logit scale)."""
    image_emb, text_emb, scale = model(images, captions)
    return clip_loss(image_emb, text_emb, scale)
