"""The attribute predictor of notebook 01 (bundled as ``attributes_shapes``): colour and shape,
each from its own evidence, so that unseen colour-shape pairs are recognised from their attributes."""

from __future__ import annotations

import torch

from mmcourse.data.shapes import COLORS, SHAPES
from mmcourse.models.cnn import ConvEncoder

Tensor = torch.Tensor


class AttributePredictor(torch.nn.Module):
    """Predicts colour (8-way) and shape (8-way) attributes, each from its own evidence.

    * the colour branch sees one pixel at a time (1x1 convolutions, then max- and mean-pooling), so
      it can only use colour;
    * the shape branch sees a contrast-normalised grey image through a small CNN, so it can only
      use form.

    A single shared CNN learns the training set's colour-shape correlations (no red triangles in
    training, so "red" votes against "triangle") and then fails on exactly the unseen pairs that
    attribute-based zero-shot is for; keeping the evidence apart is the classical remedy.
    ``forward`` returns logits (B, 16) = [colour | shape]; ``features`` the (B, 2*dim) representation.
    """

    def __init__(self, dim: int = 64, width: int = 32) -> None:
        super().__init__()
        self.color_branch = torch.nn.Sequential(  # per pixel of a 2x2-pooled image: colour, not form
            torch.nn.AvgPool2d(2), torch.nn.Conv2d(3, width, 1), torch.nn.ReLU(), torch.nn.Conv2d(width, width, 1), torch.nn.ReLU()
        )
        self.color_proj = torch.nn.Linear(2 * width, dim)
        self.shape_branch = ConvEncoder(out_dim=dim, width=width, in_channels=1)
        self.color_head = torch.nn.Linear(dim, len(COLORS))
        self.shape_head = torch.nn.Linear(dim, len(SHAPES))
        self.config = {"dim": dim, "width": width}

    @staticmethod
    def grey(images: Tensor) -> Tensor:
        """(B, 3, S, S) -> (B, 1, S, S) luminance, normalised to zero mean and unit std per image."""
        g = images.mean(dim=1, keepdim=True)
        return (g - g.mean(dim=(2, 3), keepdim=True)) / (g.std(dim=(2, 3), keepdim=True) + 1e-3)

    def _branches(self, images: Tensor) -> tuple[Tensor, Tensor]:
        c = self.color_branch(images)  # (B, width, S/2, S/2), per pixel
        c = self.color_proj(torch.cat([c.amax(dim=(2, 3)), c.mean(dim=(2, 3))], dim=1))
        s = self.shape_branch(self.grey(images))
        return c, s

    def features(self, images: Tensor) -> Tensor:
        """(B, 2*dim): colour features then shape features."""
        return torch.cat(self._branches(images), dim=1)

    def forward(self, images: Tensor) -> Tensor:
        c, s = self._branches(images)
        return torch.cat([self.color_head(torch.relu(c)), self.shape_head(torch.relu(s))], dim=1)

    @staticmethod
    def attribute_probs(logits: Tensor) -> Tensor:
        """Per-group softmax of (B, 16) logits: colour probabilities then shape probabilities."""
        n = len(COLORS)
        return torch.cat([logits[:, :n].softmax(1), logits[:, n:].softmax(1)], dim=1)

    @staticmethod
    def loss(logits: Tensor, color_ids: Tensor, shape_ids: Tensor) -> Tensor:
        """Cross-entropy of each attribute group, summed."""
        n = len(COLORS)
        return torch.nn.functional.cross_entropy(logits[:, :n], color_ids) + torch.nn.functional.cross_entropy(
            logits[:, n:], shape_ids
        )
