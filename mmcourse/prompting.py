"""Prompt learning: CoOp's learned context vectors, CoCoOp's image-conditioned context, and prompts you can read.

A hand-written prompt "a photo of a {class}" is a sequence of word embeddings that the frozen text tower
reads. CoOp (Zhou et al., IJCV 2022) keeps the tower frozen and learns the *embeddings* of the context
words instead, by gradient descent on a few labelled images::

    t_c = [SOS] [V]_1 [V]_2 ... [V]_M [CLASS_c] [EOS]        (position "end")

The class feature is the tower's output at [EOS] (``CLIP.encode_text``'s own read-out), projected into the
joint space; the classifier is the cosine of the image with each class feature, times CLIP's scale. One set
of M vectors for all classes is the *unified* context; one set per class is *class-specific*. The class
token may also sit in the middle of the context or at its front.

CoCoOp (Zhou et al., CVPR 2022) adds a small meta-net, Linear(d, d/16) -> ReLU -> Linear(d/16, width),
whose output pi(x) is added to every context vector, per image: [V]_m(x) = [V]_m + pi(x). The text tower
then runs once per image *and* class, which is what it costs.

Reading the prompt: ``nearest_words`` decodes each context vector to its nearest vocabulary words (CoOp's
own analysis, Euclidean distance in the embedding table), and ``search_words`` is a discrete alternative in
the spirit of IPO without a language model: a beam search over vocabulary words with a scored history.

Only the learner trains: building one freezes every CLIP parameter (``requires_grad=False``), so an
optimiser over ``learner.parameters()`` with ``requires_grad`` moves the context (and the meta-net) alone.
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mmcourse.training import batches_of, fit

Tensor = torch.Tensor

POSITIONS: tuple[str, ...] = ("end", "middle", "front")


# ------------------------------------------------------------------------------------------ the learner


def context_slots(n_ctx: int, name_lengths: Sequence[int], position: str) -> tuple[Tensor, Tensor, Tensor]:
    """Where everything sits in each class's prompt, counted in tokens from ``<bos>`` at 0.

    Returns ``(ctx_index (C, M), name_index list as a padded (C, K) tensor with -1 for absent, eos (C,))``.
    ``position``: ``"end"`` = [SOS] V1..VM [CLASS] [EOS]; ``"middle"`` = [SOS] V1..V(M/2) [CLASS] V(M/2+1)..VM
    [EOS] (the first half rounds down, as in CoOp's code); ``"front"`` = [SOS] [CLASS] V1..VM [EOS]."""
    if position not in POSITIONS:
        raise ValueError(f"unknown position {position!r}; choose one of {', '.join(map(repr, POSITIONS))}")
    ctx_rows, name_rows, eos = [], [], []
    width = max(name_lengths)
    for k in name_lengths:
        half = n_ctx // 2 if position == "middle" else (n_ctx if position == "end" else 0)
        ctx = list(range(1, 1 + half)) + list(range(1 + half + k, 1 + n_ctx + k))
        names = list(range(1 + half, 1 + half + k))
        ctx_rows.append(ctx)
        name_rows.append(names + [-1] * (width - k))
        eos.append(1 + n_ctx + k)
    return torch.tensor(ctx_rows, dtype=torch.long), torch.tensor(name_rows, dtype=torch.long), torch.tensor(eos)


def insert_context(base: Tensor, ctx_index: Tensor, ctx: Tensor) -> Tensor:
    """Put context vectors into prompt embeddings: ``base`` (C, L, W) with ``ctx`` (..., C, M, W) written at
    the positions ``ctx_index`` (C, M) of each class -> (..., C, L, W). Gradients flow to ``ctx`` only."""
    batch = ctx.shape[:-3]
    x = base.expand(*batch, *base.shape)
    index = ctx_index.expand(*batch, *ctx_index.shape).unsqueeze(-1).expand(*batch, *ctx_index.shape, base.shape[-1])
    return x.scatter(-2, index, ctx)


class PromptLearner(nn.Module):
    """CoOp: learned context vectors in front of (or around) each class name, read by a frozen CLIP.

    ``PromptLearner(clip, classnames, n_ctx=4, init="a photo of a", class_specific=False, position="end")``;
    calling it returns the ``(C, D)`` class text features (unnormalised, like ``clip.encode_text``). With the
    context taken from ``init`` (its token embeddings, copied), they are exactly
    ``clip.encode_text([f"{init} {c}" for c in classnames])`` (position ``"end"``). ``init=None`` starts from
    N(0, 0.02^2) instead (seeded by ``seed``), as CoOp does without an initial phrase.

    ``class_specific``: one context (C, M, W) per class instead of one shared (M, W). Every CLIP parameter
    is frozen on construction; ``context`` is the only trainable parameter.
    """

    def __init__(self, clip: nn.Module, classnames: Sequence[str], *, n_ctx: int = 4, init: str | None = "a photo of a",
                 class_specific: bool = False, position: str = "end", seed: int = 0) -> None:
        super().__init__()
        text = getattr(clip, "text", None)
        if text is None or not hasattr(text, "features_from_embeddings"):
            raise TypeError("PromptLearner needs the course CLIP (a text transformer that reads token embeddings); "
                            f"got {type(clip).__name__}")
        classnames = _check_classnames(classnames)
        if isinstance(n_ctx, bool) or not isinstance(n_ctx, int) or n_ctx < 1:
            raise ValueError(f"n_ctx (the number of context vectors M) must be an int >= 1, got {n_ctx!r}: "
                             "with no context there is nothing to learn (that is the hand prompt '{class}')")
        if position not in POSITIONS:
            raise ValueError(f"unknown position {position!r}; choose one of {', '.join(map(repr, POSITIONS))}")
        tok = text.tokenizer
        lost = list(dict.fromkeys(w for c in classnames for w in tok.unknown_words(c)))
        if init is not None:
            if not isinstance(init, str) or not tok.split(init):
                raise ValueError(f"init must be a phrase (str) of n_ctx words, or None for random vectors; got {init!r}")
            init_ids = tok.encode(init, add_special=False)
            if len(init_ids) != n_ctx:
                raise ValueError(f"init {init!r} has {len(init_ids)} tokens but n_ctx={n_ctx}; make them agree, or "
                                 "pass init=None for random context vectors")
            lost += [w for w in tok.unknown_words(init) if w not in lost]
        if lost:
            warnings.warn(f"words not in the vocabulary, encoded as <unk>: {', '.join(lost[:10])}", stacklevel=2)

        clip.requires_grad_(False)  # only the learner trains
        self.clip = clip
        self.classnames, self.n_ctx, self.init = classnames, n_ctx, init
        self.class_specific, self.position = class_specific, position

        names = [tok.encode(c, add_special=False) for c in classnames]
        ctx_index, name_index, eos = context_slots(n_ctx, [len(n) for n in names], position)
        length = int(eos.max()) + 1
        if length > text.context_length:
            raise ValueError(f"a prompt of {length} tokens is longer than the text tower's context ({text.context_length})")
        placeholder = init_ids if init is not None else [tok.pad_id] * n_ctx
        ids = torch.full((len(classnames), length), tok.pad_id, dtype=torch.long)  # pad after <eos>, as tokenize does
        for c, name in enumerate(names):
            ids[c, 0] = tok.bos_id
            ids[c, ctx_index[c]] = torch.tensor(placeholder)
            ids[c, name_index[c, : len(name)]] = torch.tensor(name, dtype=torch.long)
            ids[c, eos[c]] = tok.eos_id
        device = clip.logit_scale.device
        with torch.no_grad():
            base = text.token_embedding(ids.to(device))  # (C, L, W), frozen
        self.register_buffer("ids", ids.to(device), persistent=False)
        self.register_buffer("base", base, persistent=False)
        self.register_buffer("ctx_index", ctx_index.to(device), persistent=False)
        self.register_buffer("eos_index", eos.to(device), persistent=False)

        width = text.width
        if init is not None:
            ctx = base[0, ctx_index[0]].clone()  # (M, W): the phrase's own embeddings, copied
        else:
            g = torch.Generator().manual_seed(seed)
            ctx = (0.02 * torch.randn(n_ctx, width, generator=g)).to(device=device, dtype=base.dtype)
        if class_specific:
            ctx = ctx.unsqueeze(0).repeat(len(classnames), 1, 1)  # (C, M, W)
        self.context = nn.Parameter(ctx)

    # -------------------------------------------------------------------------------- the forward pass

    def prompts(self, shift: Tensor | None = None) -> Tensor:
        """The prompt embeddings (C, L, W), or (B, C, L, W) with a per-image ``shift`` (B, W) added to every
        context vector (CoCoOp)."""
        C = len(self.classnames)
        ctx = self.context if self.class_specific else self.context.unsqueeze(0).expand(C, -1, -1)  # (C, M, W)
        if shift is not None:
            ctx = ctx.unsqueeze(0) + shift[:, None, None, :]  # (B, C, M, W)
        return insert_context(self.base, self.ctx_index, ctx)

    def encode(self, prompts: Tensor) -> Tensor:
        """(..., C, L, W) prompt embeddings -> (..., C, D) class features through the frozen tower."""
        lead = prompts.shape[:-2]
        flat = prompts.reshape(-1, *prompts.shape[-2:])
        eos = self.eos_index.expand(*lead[:-1], -1).reshape(-1)
        return self.clip.text_projection(self.clip.text.features_from_embeddings(flat, eos)).view(*lead, -1)

    def forward(self) -> Tensor:
        """(C, D) class text features (unnormalised)."""
        return self.encode(self.prompts())

    def logits(self, image_features: Tensor) -> Tensor:
        """(N, C): CLIP's scale times the cosine of each image with each class feature."""
        return self.clip.scale() * F.normalize(image_features, dim=-1) @ F.normalize(self(), dim=-1).T

    def with_classnames(self, classnames: Sequence[str]) -> "PromptLearner":
        """A learner for other classes with this one's learned parts copied in (the unified context, and
        CoCoOp's meta-net), e.g. for the new classes of a base-to-new split."""
        if self.class_specific:
            raise ValueError("class-specific context belongs to its classes; only a unified context transfers to "
                             "new classes")
        kwargs = {"n_ctx": self.n_ctx, "init": self.init, "position": self.position}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the phrase was checked when this learner was built
            other = type(self)(self.clip, classnames, **kwargs)
        learned = {k: v for k, v in self.state_dict().items() if not k.startswith("clip.")}
        other.load_state_dict(learned, strict=False)
        return other

    def __repr__(self) -> str:  # the frozen CLIP inside is not part of what the learner is
        extra = f", meta_net={self.meta_net}" if hasattr(self, "meta_net") else ""
        return f"{type(self).__name__}({self.extra_repr()}{extra})".replace("\n", " ")

    def extra_repr(self) -> str:
        kind = "class-specific" if self.class_specific else "unified"
        return f"classes={len(self.classnames)}, n_ctx={self.n_ctx}, {kind}, position={self.position!r}, init={self.init!r}"


class CoCoOpLearner(PromptLearner):
    """CoCoOp: CoOp's unified context plus a per-image shift pi(x) from a meta-net, added to every vector.

    ``meta_net``: Linear(D, D // 16) -> ReLU -> Linear(D // 16, W), D the image-feature size (CLIP's joint
    space), W the token width. Calling it with L2-normalised image features (B, D) returns (B, C, D) class
    features: the text tower runs B * C times.
    """

    def __init__(self, clip: nn.Module, classnames: Sequence[str], *, n_ctx: int = 4, init: str | None = "a photo of a",
                 position: str = "end", seed: int = 0) -> None:
        super().__init__(clip, classnames, n_ctx=n_ctx, init=init, class_specific=False, position=position, seed=seed)
        d, width = clip.embed_dim, clip.text.width
        hidden = max(d // 16, 1)
        with _seeded(seed):
            self.meta_net = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, width))
        self.meta_net.to(clip.logit_scale.device)

    def shift(self, image_features: Tensor) -> Tensor:
        """(B, D) image features -> (B, W): the meta-net's token pi(x), added to every context vector."""
        return self.meta_net(F.normalize(image_features, dim=-1))

    def forward(self, image_features: Tensor) -> Tensor:  # type: ignore[override]
        """(B, D) image features -> (B, C, D) class features, one classifier per image."""
        if image_features.ndim != 2 or image_features.shape[1] != self.clip.embed_dim:
            raise ValueError(f"CoCoOp needs image features (B, {self.clip.embed_dim}), got {tuple(image_features.shape)}")
        return self.encode(self.prompts(self.shift(image_features)))

    def logits(self, image_features: Tensor) -> Tensor:
        """(B, C): each image against its own classifier."""
        text = F.normalize(self(image_features), dim=-1)  # (B, C, D)
        return self.clip.scale() * torch.einsum("bd,bcd->bc", F.normalize(image_features, dim=-1), text)


class _seeded:
    """Initialise modules from a fixed seed without disturbing the caller's random state."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __enter__(self) -> None:
        self.state = torch.random.get_rng_state()
        torch.manual_seed(self.seed)

    def __exit__(self, *exc) -> None:
        torch.random.set_rng_state(self.state)


# --------------------------------------------------------------------------------------------- training


def train_prompts(learner: PromptLearner, features: Tensor, labels: Tensor, *, steps: int = 100, batch_size: int = 32,
                  lr: float = 0.1, seed: int = 0, after_step=None, progress: bool = False) -> list[float]:
    """Fit the learner's context (and CoCoOp's meta-net) by cross-entropy on cached image features; returns
    the loss of every step.

    ``features`` (N, D) image features (augmented views included), ``labels`` (N,) class indices.
    Choices against CoOp's reference code, and why: AdamW through the course's one loop (``training.fit``)
    at ``lr`` with a cosine schedule and no warm-up, for a fixed number of steps, instead of SGD at 0.002
    with a warm-up epoch for 50-200 epochs: our learners have a few hundred parameters and must train in
    seconds on a laptop CPU, and Adam gets there in ~50 steps. ``lr`` is large because the context lives
    at the scale of word embeddings (rows of norm ~7 in the course CLIP, entries ~1), and Adam's step per
    coordinate is about ``lr``; at 0.005 the unified context barely moved in 50 steps. The images are cached features of augmented
    views, so the image tower never runs during training. CoCoOp trained with batch 1 for 10 epochs (its text
    tower runs once per image and class); we use small batches of images (``batch_size``) for the same loss.
    ``after_step(step)`` runs after every update (e.g. to evaluate while training).
    """
    features, labels = torch.as_tensor(features).float(), torch.as_tensor(labels).long()
    if features.ndim != 2 or labels.shape != features.shape[:1]:
        raise ValueError(f"expected features (N, D) and labels (N,), got {tuple(features.shape)} and {tuple(labels.shape)}")
    if labels.min() < 0 or labels.max() >= len(learner.classnames):
        raise ValueError(f"labels must lie in [0, {len(learner.classnames)}) (the learner's classes)")
    device = learner.base.device
    features, labels = features.to(device), labels.to(device)

    def loss_fn(model, xy):
        x, y = xy
        return F.cross_entropy(model.logits(x), y)

    def cosine(opt):
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))

    return fit(learner, loss_fn, batches_of((features, labels), min(batch_size, len(labels)), seed=seed), steps=steps,
               lr=lr, schedule=cosine, after_step=after_step, progress=progress, desc="prompt learning")


@torch.no_grad()
def predict(learner: PromptLearner, features: Tensor, *, batch_size: int = 256) -> Tensor:
    """(N, C) logits of a CoOp or CoCoOp learner on image features (N, D), in chunks (CoCoOp runs the text tower
    once per image and class)."""
    features = torch.as_tensor(features).float().to(learner.base.device)
    return torch.cat([learner.logits(features[i:i + batch_size]) for i in range(0, len(features), batch_size)]).cpu()


# ------------------------------------------------------------------------------------ reading the prompt


def nearest_words(vectors: Tensor, embedding: Tensor, itos: Sequence[str], *, k: int = 3,
                  skip: int = 7) -> list[list[tuple[str, float]]]:
    """For each vector (M, W), its ``k`` nearest vocabulary words by Euclidean distance in the token
    embedding table ``embedding`` (V, W), as CoOp decodes its context; the first ``skip`` ids (special
    tokens) are left out. Returns M lists of (word, distance)."""
    if vectors.ndim != 2 or embedding.ndim != 2 or vectors.shape[1] != embedding.shape[1]:
        raise ValueError(f"vectors (M, W) and embedding (V, W) must share W; got {tuple(vectors.shape)} and "
                         f"{tuple(embedding.shape)}")
    diff = vectors.detach().float()[:, None, :] - embedding[skip:].detach().float()[None]  # (M, V - skip, W)
    dist = diff.norm(dim=-1)  # exact (cdist's matrix-product form is not 0 for a word and itself)
    top = dist.topk(k, dim=1, largest=False)
    return [[(itos[skip + int(j)], float(d)) for d, j in zip(ds, js)] for ds, js in zip(top.values, top.indices)]


def search_words(clip: nn.Module, classnames: Sequence[str], features: Tensor, labels: Tensor, words: Sequence[str], *,
                 n_words: int = 4, beam: int = 3) -> list[tuple[str, float]]:
    """A readable prompt by beam search over words: prompts "w1 ... wk {class}", grown one word at a time on
    the left of the class name, scored on labelled features (N, D) by accuracy, ties broken by the mean
    log-probability of the right class. Keeps the ``beam`` best prompts of each length, up to ``n_words``.

    Returns the history: every prompt tried, as (template with '{}', score), best first. ``score`` =
    accuracy + 1e-3 * mean log-probability (so accuracy decides)."""
    classnames = _check_classnames(classnames)
    labels = torch.as_tensor(labels).long()
    feats = F.normalize(torch.as_tensor(features).float(), dim=-1)
    scale = clip.scale().detach().float().cpu()
    history: dict[str, float] = {}

    def score_all(templates: list[str]) -> list[float]:
        texts = [t.format(c) for t in templates for c in classnames]
        with torch.no_grad():
            emb = F.normalize(clip.encode_text(texts).float().cpu(), dim=-1).view(len(templates), len(classnames), -1)
        logits = scale * torch.einsum("nd,tcd->tnc", feats, emb)  # (T, N, C)
        acc = (logits.argmax(-1) == labels).float().mean(-1)
        logp = logits.log_softmax(-1).gather(-1, labels.expand(len(templates), -1).unsqueeze(-1)).squeeze(-1).mean(-1)
        return (acc + 1e-3 * logp).tolist()

    frontier = ["{}"]
    history["{}"] = score_all(["{}"])[0]
    for _ in range(n_words):
        candidates = [f"{w} {t}" for t in frontier for w in words if f"{w} {t}" not in history]
        for t, s in zip(candidates, score_all(candidates)):
            history[t] = s
        frontier = sorted(candidates, key=lambda t: -history[t])[:beam]
    return sorted(history.items(), key=lambda kv: -kv[1])


# ------------------------------------------------------------------------------------------ few-shot data


# The course's task far from pre-training: photos of red and orange shapes taken at night (every pixel at
# 30 % of its brightness). The course CLIP never saw a dark picture, and red and orange come close in the
# dark; the frozen image features still tell the 16 classes apart (a 16-shot linear probe), the words do not.
NIGHT_COLORS: tuple[str, ...] = ("red", "orange")
NIGHT_SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star", "cross", "heart", "crescent")
NIGHT_CLASSES: tuple[str, ...] = tuple(f"{c} {s}" for s in NIGHT_SHAPES for c in NIGHT_COLORS)
NIGHT_BRIGHTNESS = 0.3


def at_night(images: Tensor) -> Tensor:
    """Images (N, 3, H, W) in [0, 1] as photographed at night: every pixel at 30 % of its brightness."""
    return NIGHT_BRIGHTNESS * images


def night_photos(n: int, *, seed: int) -> tuple[Tensor, Tensor]:
    """``n`` fresh photos of the night task, still bright (apply ``at_night`` after any augmentation), and
    their labels (N,) indexing ``NIGHT_CLASSES``."""
    from mmcourse.data.shapes import make_shapes

    combos = [tuple(c.split()) for c in NIGHT_CLASSES]
    data = make_shapes(n, seed=seed, split="all", style="photo", combos=combos)
    labels = torch.tensor([NIGHT_CLASSES.index(f"{c} {s}") for c, s in data.combos])
    return data.images, labels


def augmented_views(images: Tensor, views: int, *, seed: int) -> Tensor:
    """(views * N, 3, H, W): the images themselves, then ``views - 1`` random augmentations of each (a
    random resized crop keeping 60-100 % of the area, a horizontal flip), drawn per image with
    ``torchvision.transforms.v2``, seeded. CoOp augments its few shots the same way."""
    from torchvision.transforms import v2

    size = images.shape[-1]
    augment = v2.Compose([v2.RandomResizedCrop(size, scale=(0.6, 1.0), antialias=True), v2.RandomHorizontalFlip()])
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        out = [images] + [torch.stack([augment(im) for im in images]) for _ in range(views - 1)]
    finally:
        torch.random.set_rng_state(state)
    return torch.cat(out)



def few_shot(labels: Tensor, shots: int, *, seed: int) -> Tensor:
    """Indices of ``shots`` examples of every class, drawn at random (seeded)."""
    labels = torch.as_tensor(labels).long()
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        raise ValueError(f"shots must be an int >= 1, got {shots!r}")
    g = torch.Generator().manual_seed(seed)
    out = []
    for c in range(int(labels.max()) + 1):
        idx = (labels == c).nonzero().flatten()
        if len(idx) < shots:
            raise ValueError(f"{shots} shots asked, but class {c} has only {len(idx)} images")
        out.append(idx[torch.randperm(len(idx), generator=g)[:shots]])
    return torch.cat(out)


def harmonic_mean(base: float, new: float) -> float:
    """H = 2BN / (B + N), the CoCoOp paper's summary of base and new accuracy (0 when both are 0)."""
    return 0.0 if base + new == 0 else 2 * base * new / (base + new)


def _check_classnames(classnames: Sequence[str]) -> list[str]:
    if isinstance(classnames, str) or not isinstance(classnames, Sequence) or not len(classnames):
        raise ValueError("classnames must be a non-empty list of strings")
    bad = [c for c in classnames if not isinstance(c, str) or not c.strip()]
    if bad:
        raise ValueError(f"every class name must be a non-empty string; not so: {bad[:3]}")
    seen, dup = set(), []
    for c in classnames:
        if c in seen and c not in dup:
            dup.append(c)
        seen.add(c)
    if dup:
        raise ValueError(f"the class list has duplicates: {', '.join(map(repr, dup[:5]))}; each class must appear once")
    return list(classnames)
