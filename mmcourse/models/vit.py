"""A tiny Vision Transformer: the image cut into patches, each patch a token, a class token on top.

The patch tokens are exposed (``patch_tokens``) because vision-language adapters (LLaVA's projector,
Flamingo's resampler, BLIP-2's Q-Former) read the grid of patch features, not only the pooled one.
"""

from __future__ import annotations

import torch
from torch import nn

from mmcourse.models.text import Block

Tensor = torch.Tensor


class TinyViT(nn.Module):
    """Images (B, 3, S, S) -> features (B, width) from the class token.

    ``S / patch`` patches per side, each flattened by a strided convolution into one token, plus
    learned position embeddings and a class token; pre-norm blocks with bidirectional attention.
    """

    def __init__(self, image_size: int = 32, patch: int = 4, width: int = 64, layers: int = 4, heads: int = 4) -> None:
        super().__init__()
        if image_size % patch:
            raise ValueError(f"image_size {image_size} must be a multiple of patch {patch}")
        self.grid = image_size // patch
        self.patch_embed = nn.Conv2d(3, width, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.position_embedding = nn.Parameter(torch.randn(1 + self.grid**2, width) * 0.02)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.width = self.out_dim = width
        self.config = {"image_size": image_size, "patch": patch, "width": width, "layers": layers, "heads": heads}

    def tokens(self, images: Tensor) -> Tensor:
        """(B, 1 + P, width): the class token followed by the P = grid**2 patch tokens, after the last block."""
        x = self.patch_embed(images).flatten(2).transpose(1, 2)  # (B, P, width), patches row by row
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.position_embedding
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def patch_tokens(self, images: Tensor) -> Tensor:
        """(B, P, width): one feature per patch, in row-major order over the (grid, grid) patches."""
        return self.tokens(images)[:, 1:]

    def forward(self, images: Tensor) -> Tensor:
        return self.tokens(images)[:, 0]
