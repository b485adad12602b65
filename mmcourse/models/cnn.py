"""A small convolutional image encoder, cheap enough to train on a laptop CPU."""

from __future__ import annotations

import torch
from torch import nn


def _block(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


class ConvEncoder(nn.Module):
    """Images (B, C, S, S) -> features (B, out_dim).

    Four 3x3 convolutions, three of them with stride 2 (S -> S/8), then a global average pool:
    strided convolutions keep the cost low on a CPU, and pooling makes the features ignore where
    an object sits. ``feature_map`` exposes the (B, 2w, S/8, S/8) grid before pooling.
    """

    def __init__(self, out_dim: int = 64, width: int = 32, in_channels: int = 3) -> None:
        super().__init__()
        w = width
        self.body = nn.Sequential(
            *_block(in_channels, w, 2),  # (B, w, S/2, S/2)
            *_block(w, w, 1),
            *_block(w, 2 * w, 2),  # (B, 2w, S/4, S/4)
            *_block(2 * w, 2 * w, 2),  # (B, 2w, S/8, S/8)
        )
        self.proj = nn.Linear(2 * w, out_dim)
        self.out_dim = out_dim

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(self.body(images).mean(dim=(2, 3)))
