"""Stage 2 of DALL-E and its test-time procedure (notebook 07): the loss over the joint sequence of
text and image tokens, sampling image tokens one at a time (temperature, top-k, a key-value cache),
and sample-then-re-rank with CLIP.

The functions take the models as arguments (a ``mmcourse.models.DALLE``, the course CLIP); nothing
here loads a checkpoint.

* ``joint_loss``: cross-entropy of the next token over [text ; image], the text term weighted
  1/8 and the image term 7/8 as in DALL-E (the image tokens are what we want to generate; the text
  term is kept as a language-modelling signal);
* ``sample_codes`` / ``generate``: ancestral sampling of the 64 image tokens given the caption;
  ``use_cache=False`` recomputes the whole sequence at each step (same tokens, for the speedup);
* ``clip_scores``, ``rerank``, ``sample_and_rerank``: draw K images per caption and order them by
  the cosine similarity CLIP gives the caption, best first.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

TEXT_WEIGHT = 1 / 8  # DALL-E's weights: 1/8 for the text tokens, 7/8 for the image tokens


def joint_loss(model, text_ids: Tensor, codes: Tensor, *, text_weight: float = TEXT_WEIGHT) -> tuple[Tensor, Tensor, Tensor]:
    """text ids (N, T), image codes (N, h, w) -> (weighted loss, text cross-entropy, image cross-entropy).

    loss = text_weight * CE(text tokens 1..T-1) + (1 - text_weight) * CE(image tokens 0..hw-1).
    Padding after ``<eos>`` is predicted too (it tells where the caption ends, as DALL-E's padding
    tokens do)."""
    text_logits, image_logits = model(text_ids, codes)
    text_ce = F.cross_entropy(text_logits.flatten(0, 1), text_ids[:, 1:].flatten())
    image_ce = F.cross_entropy(image_logits.flatten(0, 1), codes.flatten())
    return text_weight * text_ce + (1 - text_weight) * image_ce, text_ce, image_ce


def _check_sampling(temperature: float, top_k: int | None, num_codes: int) -> None:
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature} (logits / 0 is not a distribution)")
    if top_k is not None and not (isinstance(top_k, int) and 1 <= top_k):
        raise ValueError(f"top_k must be None or an int >= 1, got {top_k!r}")
    if top_k is not None and top_k > num_codes:
        raise ValueError(f"top_k = {top_k} exceeds the {num_codes} image codes")


def next_token(logits: Tensor, *, temperature: float = 1.0, top_k: int | None = None,
               generator: torch.Generator | None = None) -> Tensor:
    """logits (N, K) -> (N,) a draw from softmax(logits / temperature), restricted to the ``top_k`` most
    likely codes when given (the others get probability 0)."""
    scaled = logits.float() / temperature
    if top_k is not None:
        kth = scaled.topk(top_k, dim=-1).values[:, -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = scaled.softmax(dim=-1)
    return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(logits.device)


@torch.no_grad()
def sample_codes(model, captions: Sequence[str] | str, *, seed: int, temperature: float = 1.0, top_k: int | None = None,
                 use_cache: bool = True) -> Tensor:
    """Image tokens (N, h, w) for the captions, drawn one at a time in raster order.

    With the cache, each step runs the transformer on one new token and reads the keys and values of
    all earlier ones from the cache; without it, each step reruns the whole sequence so far. Both
    draw the same tokens from the same generator (``seed``)."""
    _check_sampling(temperature, top_k, model.num_codes)
    text = model.tokenize(captions)  # (N, T)
    g = torch.Generator().manual_seed(seed)
    cache = model.new_cache() if use_cache else None
    x_text = model.embed_text(text)
    h = model.transformer(x_text, cache=cache)  # (N, T, W)
    codes = torch.empty(len(text), 0, dtype=torch.long, device=text.device)
    for i in range(model.image_length):
        token = next_token(model.image_head(h[:, -1]), temperature=temperature, top_k=top_k, generator=g)
        codes = torch.cat([codes, token[:, None]], dim=1)
        if i + 1 == model.image_length:
            break
        if use_cache:
            h = model.transformer(model.embed_image(token[:, None], start=i), cache=cache)
        else:
            h = model.transformer(torch.cat([x_text, model.embed_image(codes)], dim=1))
    return codes.view(len(text), model.grid, model.grid)


@torch.no_grad()
def generate(model, captions: Sequence[str] | str, *, seed: int, temperature: float = 1.0, top_k: int | None = None,
             use_cache: bool = True) -> Tensor:
    """Images (N, 3, H, W) in [0, 1] for the captions: image tokens from ``sample_codes``, decoded by the
    model's frozen dVAE."""
    return model.decode(sample_codes(model, captions, seed=seed, temperature=temperature, top_k=top_k,
                                     use_cache=use_cache)).clamp(0, 1)


@torch.no_grad()
def clip_scores(clip, images: Tensor, captions: Sequence[str]) -> Tensor:
    """Cosine similarity (N,) between each image (N, 3, S, S) and its caption under ``clip``
    (``encode_image``, ``encode_text``)."""
    if len(images) != len(captions):
        raise ValueError(f"one caption per image: {len(images)} images, {len(captions)} captions")
    dev = next(clip.parameters()).device
    img = F.normalize(clip.encode_image(images.to(dev)), dim=-1)
    txt = F.normalize(clip.encode_text(list(captions)), dim=-1)
    return (img * txt).sum(-1).cpu()


def rerank(image_features: Tensor, text_features: Tensor) -> Tensor:
    """image features (C, K, D) of K samples per caption, text features (C, D) of the C captions ->
    (C, K) long: the samples of each caption ordered by cosine similarity with it, best first."""
    sims = torch.einsum("ckd,cd->ck", F.normalize(image_features, dim=-1), F.normalize(text_features, dim=-1))
    return sims.argsort(dim=1, descending=True, stable=True)


@torch.no_grad()
def sample_and_rerank(model, clip, caption: str, k: int, *, seed: int, temperature: float = 1.0,
                      top_k: int | None = None) -> tuple[Tensor, Tensor]:
    """K samples of one caption, best first by CLIP: (images (K, 3, H, W), cosine scores (K,) descending)."""
    if not isinstance(k, int) or k <= 0:
        raise ValueError(f"the number of samples K must be an int >= 1, got {k!r}")
    images = generate(model, [caption] * k, seed=seed, temperature=temperature, top_k=top_k)
    scores = clip_scores(clip, images, [caption] * k)
    order = scores.argsort(descending=True, stable=True)
    return images[order], scores[order]


def best_of(scores: Tensor, k: int) -> Tensor:
    """scores (C, M) of M >= k samples per caption -> (C,) the index of the best among the first k:
    the sample a re-ranker keeps when it draws only k (the prefixes of one draw give a curve in k)."""
    if k <= 0 or k > scores.shape[1]:
        raise ValueError(f"k must be in 1..{scores.shape[1]}, got {k}")
    return scores[:, :k].argmax(dim=1)


@torch.no_grad()
def rerank_curve(model, clip, classifier, pairs: Sequence[tuple[str, str]], ks: Sequence[int] = (1, 2, 4, 8, 16, 32), *,
                 groups: int = 4, seed: int = 0, temperature: float = 1.0, top_k: int | None = None,
                 batch: int = 256) -> dict[int, dict[str, float]]:
    """Sample-then-re-rank, judged independently: for every (colour, shape) pair, ``groups`` independent
    draws of max(ks) samples of "a {colour} {shape}"; for each k the re-ranker keeps, in every draw, the
    sample among its first k that CLIP scores highest; ``classifier`` (trained on real images only, not
    CLIP) then reads the kept images (``mmcourse.fidelity.score_images``: colour, shape, both, diversity).
    k = 1 is no re-ranking; the prefixes of one draw make the curve monotone in expectation."""
    from mmcourse.fidelity import score_images

    if groups < 2:
        raise ValueError("groups must be >= 2 (the diversity of the kept images needs two per pair)")
    if not ks or min(ks) < 1:
        raise ValueError(f"every K must be >= 1, got {list(ks)}")
    m = max(ks)
    captions = [f"a {c} {s}" for c, s in pairs for _ in range(groups * m)]
    images = torch.cat([generate(model, captions[i : i + batch], seed=seed + i, temperature=temperature, top_k=top_k)
                        for i in range(0, len(captions), batch)])  # (P * groups * m, 3, S, S)
    scores = torch.cat([clip_scores(clip, images[i : i + batch], captions[i : i + batch])
                        for i in range(0, len(captions), batch)])
    images = images.view(len(pairs) * groups, m, *images.shape[1:])
    scores = scores.view(len(pairs) * groups, m)
    out = {}
    for k in ks:
        kept = images[torch.arange(len(images)), best_of(scores, k)]  # (P * groups, 3, S, S)
        out[int(k)] = {**score_images(kept.view(len(pairs), groups, *kept.shape[1:]), pairs, classifier),
                       "clip": round(scores[torch.arange(len(scores)), best_of(scores, k)].mean().item(), 4)}
    return out
