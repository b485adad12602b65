"""A new scope for the course CLIP: classifying shapes from **French** prompts, and the ways to teach it.

The frozen CLIP reads French badly (most words are ``<unk>``, and the colour follows the noun), so its
zero-shot classifier fails. This module sets up the comparison the notebook and
``benchmarks/lora_sweep.py`` make on a :class:`mmcourse.models.text_tower.TextTower` (the course CLIP's text
side with separate q/k/v projections and the French new words), on the text side only (the image encoder stays frozen and its
features are computed once):

    method       what trains (besides nothing else: the rest of the text tower is frozen)
    zero-shot    nothing
    head         the text projection (a linear head on frozen features; new words stay <unk>)
    words+head   the new words' embeddings and the text projection
    full         the whole text tower (embeddings, blocks, projection)
    adapter      Houlsby adapters after each attention and MLP sublayer, and the new words
    lora-qv      LoRA on the query and value projections (the LoRA paper's choice), and the new words
    lora-all     LoRA on every linear layer of the blocks (q, k, v, out, both MLP layers), and the new words

The new words' embeddings train in every method but ``head``: a word the model has never seen has no
meaning a frozen network could recover, whatever else adapts.

Training is CoOp-style classification with text-derived classifiers: each step encodes one randomly
chosen French prompt per training class and applies cross-entropy to CLIP's scaled cosines between a
batch of image features and those class embeddings. Training sees the 56 seen colour-shape pairs; the
test asks for all 64 (the 8 held-out pairs included, named only in French).
"""

from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from mmcourse.data import french
from mmcourse.data.shapes import combos_for, make_shapes
from mmcourse.peft import apply_adapters, apply_lora, count_parameters
from mmcourse.training import fit
from mmcourse.zeroshot import TEMPLATES, encode_images

Tensor = torch.Tensor

METHODS: tuple[str, ...] = ("zero-shot", "head", "words+head", "full", "adapter", "lora-qv", "lora-all")
LORA_TARGETS: dict[str, list[str] | str] = {
    "lora-qv": ["q_proj", "v_proj"],
    "lora-all": r"blocks\.\d+\.(attn\.(q|k|v|out)_proj|mlp\.[02])",
}
ADAPTER_TARGETS = ["attn.out_proj", "mlp"]  # Houlsby: after the attention sublayer and after the MLP
ENGLISH_TEMPLATES: tuple[str, ...] = TEMPLATES[:12]  # the ones the course CLIP read in training


def all_classes() -> list[tuple[str, str]]:
    """The 64 (colour, shape) classes, in the order labels index them."""
    return combos_for("all")


def seen_classes() -> list[tuple[str, str]]:
    """The 56 classes training may use (the held-out pairs excluded)."""
    return combos_for("train")


def image_features(clip: nn.Module, n: int, *, seed: int, split: str, style: str = "photo") -> tuple[Tensor, Tensor]:
    """(N, D) L2-normalised image features of fresh shapes images from the frozen image encoder, and
    (N,) labels indexing :func:`all_classes`."""
    data = make_shapes(n, seed=seed, split=split, style=style)
    index = {c: i for i, c in enumerate(all_classes())}
    return encode_images(clip, data.images), torch.tensor([index[c] for c in data.combos])


def english_prompts(classes: list[tuple[str, str]]) -> list[str]:
    """The course's English prompts for ``classes``, class-major (as :func:`mmcourse.data.french.prompts`)."""
    return [t.format(f"{c} {s}") for c, s in classes for t in ENGLISH_TEMPLATES]


def class_embeddings(tower: nn.Module, prompts: list[str], num_classes: int) -> Tensor:
    """(C, D) class embeddings from C * T class-major prompts: normalise, average over templates, normalise."""
    emb = F.normalize(tower(prompts).float(), dim=-1)
    return F.normalize(emb.view(num_classes, -1, emb.shape[-1]).mean(dim=1), dim=-1)


@torch.no_grad()
def accuracy(tower: nn.Module, features: Tensor, labels: Tensor, *, language: str = "french") -> float:
    """64-way accuracy of the classifier built from ``language``'s prompts ("french" or "english")."""
    classes = all_classes()
    texts = french.prompts(classes) if language == "french" else english_prompts(classes)
    was_training = tower.training
    tower.eval()
    pred = (features @ class_embeddings(tower, texts, len(classes)).T).argmax(dim=1)
    tower.train(was_training)
    return (pred == labels).float().mean().item()


def prepare(tower: nn.Module, method: str, *, r: int | None = None, bottleneck: int | None = None) -> nn.Module:
    """Make ``method``'s parameters the only trainable ones (adding LoRA or adapters), in place; returns the tower.

    LoRA uses α = r (scaling 1 at every rank, so ranks compare at one learning rate)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if (r is not None) != method.startswith("lora"):
        raise ValueError(f"r is for the LoRA methods only (method {method!r}, r={r!r})")
    if (bottleneck is not None) != (method == "adapter"):
        raise ValueError(f"bottleneck is for method 'adapter' only (method {method!r}, bottleneck={bottleneck!r})")
    tower.requires_grad_(method == "full")
    if method.startswith("lora"):
        apply_lora(tower, LORA_TARGETS[method], r=r, alpha=float(r))
    if method == "adapter":
        apply_adapters(tower, ADAPTER_TARGETS, bottleneck=bottleneck)
    if method in ("head", "words+head"):
        tower.projection.requires_grad_(True)
    if method not in ("zero-shot", "head"):
        tower.new_embedding.requires_grad_(True)
    return tower


def _batches(features: Tensor, labels: Tensor, batch_size: int, num_templates: int, num_classes: int,
             seed: int) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    g = torch.Generator().manual_seed(seed)
    while True:
        idx = torch.randint(features.shape[0], (batch_size,), generator=g)
        yield features[idx], labels[idx], torch.randint(num_templates, (num_classes,), generator=g)


def fine_tune(tower: nn.Module, features: Tensor, labels: Tensor, *, steps: int, lr: float, logit_scale: float,
              seed: int = 0, batch_size: int = 128, progress: bool = False) -> list[float]:
    """Train ``tower``'s trainable parameters on French prompts of the seen classes (``features``,
    ``labels`` from :func:`image_features` with ``split="train"``); returns the loss of every step."""
    classes = seen_classes()
    position = {c: i for i, c in enumerate(all_classes())}
    to_seen = torch.full((len(all_classes()),), -1, dtype=torch.long)
    to_seen[[position[c] for c in classes]] = torch.arange(len(classes))
    targets = to_seen[labels]
    if (targets < 0).any():
        raise ValueError("training features must come from the seen classes (split='train')")
    ids = tower.tokenize(french.prompts(classes)).view(len(classes), len(french.TEMPLATES), -1)  # (C, T, L)
    rows = torch.arange(len(classes))

    def loss_fn(model: nn.Module, batch: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        feats, y, choice = batch
        text = F.normalize(model(ids[rows, choice]), dim=-1)  # (C, D): one prompt per class
        return F.cross_entropy(logit_scale * feats @ text.T, y)

    torch.manual_seed(seed)  # dropout, if any
    batches = _batches(features, targets, batch_size, len(french.TEMPLATES), len(classes), seed)
    return fit(tower, loss_fn, batches, steps=steps, lr=lr, progress=progress, desc="fine-tuning")


def training_memory(tower: nn.Module) -> dict[str, int]:
    """Bytes of what training adds for the trainable parameters (counted, not measured): their gradients
    and AdamW's two moment estimates, in the parameters' dtype."""
    n = count_parameters(tower)
    size = next(tower.parameters()).element_size()
    return {"trainable": n, "gradient_bytes": n * size, "optimizer_bytes": 2 * n * size}
