"""A vision-language model in the lecture's three parts: perception -> adapter -> language.

* perception: ``VisionTower``, the frozen course CLIP's image tower (a CNN) read *before* its global
  pool: its last feature map is a 4 x 4 grid of 64-dim features on a 32 x 32 image, 16 patch tokens
  (a ViT's patch tokens play this part in LLaVA). The CLIP's pooled embedding would throw away where
  things are, and several questions are about where things are;
* adapter: a connector of :mod:`mmcourse.connectors` (LLaVA's linear or MLP projector, the Perceiver
  resampler, the Q-Former), or Flamingo's gated cross-attention inside the LM;
* language: the frozen course language model (``lm_shapes``, a :class:`~mmcourse.models.transformer.CausalLM`),
  optionally with LoRA on its attention projections (stage 2).

The chat is ``<system> ... <user> [visual tokens] question <assistant> answer <stop>``: the visual tokens
sit where ``<image>`` stands in :mod:`mmcourse.data.chat`. ``answer(images, questions)`` answers greedily.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mmcourse.connectors import FlamingoLM, PerceiverResampler, build_connector, pool_patches
from mmcourse.data.chat import DESCRIBE, chat_prefix, chat_tokenizer, chat_turn
from mmcourse.peft import apply_lora, lora_layers
from mmcourse.vlm import answer_mask, chat_loss, check_questions, greedy

Tensor = torch.Tensor


def grid_position_embedding(side: int, dim: int) -> Tensor:
    """Fixed 2-D sine-cosine position features ``(side * side, dim)`` in raster order (MAE's recipe):
    half the channels encode the row, half the column, each with sines and cosines of several frequencies."""
    if dim % 4:
        raise ValueError(f"dim must be divisible by 4, got {dim}")
    freqs = 1.0 / (100.0 ** (torch.arange(dim // 4) / (dim // 4)))  # (dim/4,)
    coords = torch.arange(side, dtype=torch.float32)
    ang = coords[:, None] * freqs[None]  # (side, dim/4)
    one = torch.cat([ang.sin(), ang.cos()], dim=1)  # (side, dim/2)
    rows = one[:, None, :].expand(side, side, dim // 2)
    cols = one[None, :, :].expand(side, side, dim // 2)
    return torch.cat([rows, cols], dim=-1).reshape(side * side, dim)


class VisionTower(nn.Module):
    """Frozen CLIP image tower -> patch tokens ``(B, N, D_v)``: the CNN's last feature map, one token per
    cell, plus fixed 2-D position features (a CNN's features say *what* is in a cell, not *which* cell)."""

    def __init__(self, clip: nn.Module, image_size: int = 32) -> None:
        super().__init__()
        if not hasattr(clip.visual, "feature_map"):
            raise TypeError("the vision tower reads a CNN's feature map (clip.visual.feature_map)")
        self.clip = clip.eval().requires_grad_(False)
        self.image_size = image_size
        with torch.no_grad():
            fmap = clip.visual.feature_map(torch.zeros(1, 3, image_size, image_size))
        self.dim, self.side = fmap.shape[1], fmap.shape[2]
        self.register_buffer("position", grid_position_embedding(self.side, self.dim), persistent=False)

    def train(self, mode: bool = True) -> "VisionTower":
        super().train(mode)
        self.clip.eval()  # frozen: batch norm keeps its statistics while the connector trains
        return self

    def forward(self, images: Tensor) -> Tensor:
        check_images(images, self.image_size)
        with torch.no_grad():
            fmap = self.clip.visual.feature_map(images)  # (B, D_v, s, s)
        return fmap.flatten(2).transpose(1, 2) + self.position  # (B, s*s, D_v)


def check_images(images: Tensor, size: int) -> None:
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a float tensor (N, 3, {size}, {size}), got {shape}")
    if tuple(images.shape[2:]) != (size, size):
        raise ValueError(f"images must be {size} x {size} pixels (the vision tower's size), got "
                         f"{tuple(images.shape[2:])}; resize them first")
    if not images.is_floating_point():
        raise ValueError(f"images must be floats in [0, 1], got dtype {images.dtype}")
    lo, hi = images.min().item(), images.max().item()
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(f"images must lie in [0, 1] (the shapes world's range), got values in [{lo:.3g}, {hi:.3g}]")


class VLM(nn.Module):
    """Frozen vision tower + connector + frozen LM (with LoRA from stage 2 on).

    ``connector``: ``"linear"``, ``"mlp"``, ``"resampler"``, ``"qformer"`` (their visual tokens are placed
    in the text) or ``"flamingo"`` (a resampler whose tokens the LM reads through gated cross-attention).
    ``visual_tokens``: for the projectors, average the patch grid down to this many tokens (a square
    number; None keeps every patch). ``options`` go to the connector (e.g. ``num_latents``).
    ``lora``: ``{"targets": [...], "r": r, "alpha": alpha}`` or None.
    """

    def __init__(self, clip: nn.Module, lm: nn.Module, *, connector: str = "mlp", visual_tokens: int | None = None,
                 options: dict | None = None, lora: dict | None = None, image_size: int = 32) -> None:
        super().__init__()
        options = dict(options or {})
        self.vision = VisionTower(clip, image_size)
        lm.eval().requires_grad_(False)
        width = lm.token_embedding.embedding_dim
        self.kind = connector
        if connector == "flamingo":  # options["every"]: a gated block before every k-th LM block (default 1)
            self.connector = PerceiverResampler(self.vision.dim, width, **{k: v for k, v in options.items() if k != "every"})
            self.flamingo = FlamingoLM(lm, width, every=int(options.get("every", 1)), heads=lm.blocks[0].attn.heads)
        else:
            self.connector = build_connector(connector, self.vision.dim, width, **options)
            self.language = lm
        self.visual_tokens = visual_tokens
        if lora is not None:
            apply_lora(self.lm, list(lora["targets"]), r=int(lora["r"]), alpha=float(lora["alpha"]))
        self.tokenizer = chat_tokenizer()
        self.register_buffer("prefix", torch.tensor(chat_prefix(self.tokenizer)), persistent=False)
        self.config = {"connector": connector, "visual_tokens": visual_tokens, "options": options, "lora": lora,
                       "image_size": image_size}

    @property
    def lm(self) -> nn.Module:
        return self.flamingo.lm if self.kind == "flamingo" else self.language

    def train(self, mode: bool = True) -> "VLM":
        super().train(mode)
        self.vision.train(mode)
        self.lm.eval()
        return self

    # ---------------------------------------------------------------------------------- parameters

    def connector_parameters(self) -> list[nn.Parameter]:
        params = list(self.connector.parameters())
        if self.kind == "flamingo":
            params += list(self.flamingo.xattn.parameters())
        return params

    def lora_parameters(self) -> list[nn.Parameter]:
        return [p for layer in lora_layers(self.lm).values() for p in (*layer.lora_A.parameters(), *layer.lora_B.parameters())]

    # --------------------------------------------------------------------------------- the forward pass

    def encode_images(self, images: Tensor | None = None, *, patches: Tensor | None = None) -> Tensor:
        """Images (B, 3, S, S) in [0, 1] -> visual tokens (B, T, width) (for Flamingo: the resampler's
        latents, which the LM reads by cross-attention). ``patches``: the vision tower's output, if already
        computed (the tower is frozen, so training may compute it once per image)."""
        if patches is None:
            patches = self.vision(images)
        if self.visual_tokens is not None and self.kind in ("linear", "mlp"):
            patches = pool_patches(patches, self.visual_tokens)
        return self.connector(patches)

    def logits(self, images: Tensor | None, after: Tensor, *, patches: Tensor | None = None) -> Tensor:
        """Logits (B, L, V) predicting each token of ``after`` (B, L), the ids after the image, from everything
        before it: the system prompt, the visual tokens and the earlier tokens of ``after``."""
        visual = self.encode_images(images, patches=patches)
        b = after.shape[0]
        prefix = self.prefix.expand(b, -1)
        if self.kind == "flamingo":
            image_marker = torch.full((b, 1), self.tokenizer.image_id, device=after.device)
            ids = torch.cat([prefix, image_marker, after], dim=1)
            return self.flamingo(ids, visual)[:, -after.shape[1] - 1 : -1]
        emb = self.lm.token_embedding
        x = torch.cat([emb(prefix), visual, emb(after)], dim=1)
        return self.lm(embeds=x)[:, -after.shape[1] - 1 : -1]

    def loss(self, images: Tensor | None, after: Tensor, *, patches: Tensor | None = None) -> Tensor:
        """Chat loss on the answers only (``after``: padded ``question <assistant> answer <stop>`` ids)."""
        mask = answer_mask(after, self.tokenizer.assistant_id, self.tokenizer.stop_id)
        return chat_loss(self.logits(images, after, patches=patches), after, mask)

    # --------------------------------------------------------------------------------------- answering

    @torch.no_grad()
    def generate(self, images: Tensor, after: Tensor, max_new_tokens: int, *, use_cache: bool = True) -> Tensor:
        """Greedy continuation of ``after`` (B, L) (same length for every row) after the images: the new ids."""
        stop = self.tokenizer.stop_id
        visual = self.encode_images(images)
        b = after.shape[0]
        prefix = self.prefix.expand(b, -1)
        if self.kind == "flamingo":
            # no cache here: the gated layers sit between the LM's blocks, so decode step by step in full
            marker = torch.full((b, 1), self.tokenizer.image_id, device=after.device)
            ids = torch.cat([prefix, marker, after], dim=1)
            room = self.lm.context_length - ids.shape[1]
            return greedy(lambda x: self.flamingo(x, visual)[:, -1], ids, min(max_new_tokens, room), stop)
        embeds = torch.cat([self.lm.token_embedding(prefix), visual], dim=1)
        room = self.lm.context_length - embeds.shape[1] - after.shape[1]
        if room < 1:
            raise ValueError(f"the question is too long: {embeds.shape[1]} visual and prompt tokens + {after.shape[1]} "
                             f"question tokens leave no room in the context of {self.lm.context_length}")
        out = self.lm.generate(after, min(max_new_tokens, room), embeds_prefix=embeds, stop_id=stop, use_cache=use_cache)
        return out[:, after.shape[1]:]

    @torch.no_grad()
    def answer(self, images: Tensor, questions: Sequence[str], *, max_new_tokens: int = 24) -> list[str]:
        """One answer per (image, question), greedy and deterministic. Questions are phrased as the shapes
        world's ``.qa`` phrases them; unknown words are read as ``<unk>`` (with a warning); an empty question
        is an error. Answers end at ``<stop>`` or after ``max_new_tokens`` (fewer if the context is full)."""
        questions = check_questions(questions, self.tokenizer)
        check_images(images, self.vision.image_size)
        if len(questions) != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {len(questions)} questions: give one question per image")
        device = self.prefix.device
        images = images.to(device)
        turns = [chat_turn(q, None, self.tokenizer)[0] for q in questions]
        answers: list[str] = [""] * len(questions)
        for length in sorted({len(t) for t in turns}):  # rows of one length generate together, no padding
            rows = [i for i, t in enumerate(turns) if len(t) == length]
            after = torch.tensor([turns[i] for i in rows], device=device)
            new = self.generate(images[rows], after, max_new_tokens)
            for i, ids in zip(rows, new):
                answers[i] = self.tokenizer.decode_answer(ids)
        return answers

    def caption(self, images: Tensor) -> list[str]:
        """The model's description of each image (the stage-1 task)."""
        return self.answer(images, [DESCRIBE] * images.shape[0])


__all__ = ["VLM", "VisionTower", "check_images", "grid_position_embedding"]
