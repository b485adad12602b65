"""The image tokenizer of DALL-E's stage 1: a discrete autoencoder between 32 x 32 images and an
8 x 8 grid of tokens over K codes, with either quantiser of :mod:`mmcourse.dvae` in the middle.

    image (N, 3, 32, 32) --encoder--> (N, K, 8, 8) logits  [dVAE]  --Gumbel-softmax--> (N, D, 8, 8) --decoder--> image
                                  or  (N, D, 8, 8) vectors [VQ]    --nearest code-->

Everything but the quantiser is shared, so the two can be compared with one module swapped. The
decoder ends in a sigmoid: pixels in [0, 1], the reconstruction loss is MSE (see the notebook).
"""

from __future__ import annotations

import torch
from torch import nn

from mmcourse.dvae import GumbelQuantizer, VectorQuantizer, nearest_code

Tensor = torch.Tensor


class ResBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.net = nn.Sequential(nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)


class DiscreteVAE(nn.Module):
    """``num_codes`` (K, 64..512) codes of ``code_dim`` numbers; ``quantizer`` "gumbel" (DALL-E's dVAE)
    or "vq" (VQ-VAE). Each token covers a 4 x 4 patch of a 32 x 32 image."""

    def __init__(self, num_codes: int = 128, *, quantizer: str = "gumbel", width: int = 64, code_dim: int = 32,
                 image_size: int = 32):
        super().__init__()
        if not 64 <= num_codes <= 512:
            raise ValueError(f"num_codes must be between 64 and 512, got {num_codes}")
        if quantizer not in ("gumbel", "vq"):
            raise ValueError(f"quantizer must be 'gumbel' or 'vq', got {quantizer!r}")
        if image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4, got {image_size}")
        self.config = {"num_codes": num_codes, "quantizer": quantizer, "width": width, "code_dim": code_dim,
                       "image_size": image_size}
        self.num_codes, self.image_size, self.grid = num_codes, image_size, image_size // 4
        out = num_codes if quantizer == "gumbel" else code_dim
        self.encoder = nn.Sequential(
            nn.Conv2d(3, width // 2, 4, stride=2, padding=1), nn.ReLU(),  # 32 -> 16
            nn.Conv2d(width // 2, width, 4, stride=2, padding=1),  # 16 -> 8
            ResBlock(width), nn.ReLU(),
            nn.Conv2d(width, out, 1),  # (N, K, 8, 8) logits or (N, D, 8, 8) vectors
        )
        self.quantizer = GumbelQuantizer(num_codes, code_dim) if quantizer == "gumbel" else VectorQuantizer(num_codes, code_dim)
        self.decoder = nn.Sequential(
            nn.Conv2d(code_dim, width, 3, padding=1),
            ResBlock(width), nn.ReLU(),
            nn.ConvTranspose2d(width, width // 2, 2, stride=2), nn.ReLU(),  # 8 -> 16
            nn.Conv2d(width // 2, width // 2, 3, padding=1), nn.ReLU(),
            nn.Upsample(scale_factor=2, mode="nearest"),  # 16 -> 32
            nn.Conv2d(width // 2, 3, 3, padding=1),
        )

    @property
    def codebook(self) -> Tensor:
        return self.quantizer.codebook

    def forward(self, images: Tensor, *, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """images (N, 3, S, S) in [0, 1] -> (reconstruction (N, 3, S, S) in [0, 1], codes (N, h, w), the
        quantiser's extra loss: KL to the uniform prior (gumbel) or codebook + commitment (vq))."""
        self._check_images(images)
        z_q, codes, extra = self.quantizer(self.encoder(images * 2 - 1), generator=generator)
        return torch.sigmoid(self.decoder(z_q)), codes, extra

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """images (N, 3, S, S) in [0, 1] -> codes (N, S/4, S/4) long: the most likely code of every cell
        (gumbel) or the nearest one (vq)."""
        self._check_images(images)
        h = self.encoder(images * 2 - 1)
        if self.config["quantizer"] == "gumbel":
            return h.argmax(1)
        return nearest_code(h.permute(0, 2, 3, 1), self.codebook)

    def decode(self, codes: Tensor) -> Tensor:
        """codes (N, h, w) long in [0, K) -> images (N, 3, 4h, 4w) in [0, 1]."""
        if not isinstance(codes, Tensor) or codes.is_floating_point() or codes.ndim != 3:
            raise ValueError(f"codes must be a long tensor (N, {self.grid}, {self.grid}), got "
                             f"{getattr(codes, 'dtype', type(codes).__name__)} of shape {tuple(getattr(codes, 'shape', ()))}")
        if tuple(codes.shape[1:]) != (self.grid, self.grid):
            raise ValueError(f"codes must form a {self.grid} x {self.grid} grid, got {tuple(codes.shape[1:])}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.num_codes):
            raise ValueError(f"codes must lie in [0, {self.num_codes}), got values in [{int(codes.min())}, {int(codes.max())}]")
        z_q = self.codebook[codes.long()].permute(0, 3, 1, 2)  # (N, D, h, w)
        return torch.sigmoid(self.decoder(z_q))

    def _check_images(self, images: Tensor) -> None:
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[2:]) != (self.image_size,) * 2:
            raise ValueError(f"images must be (N, 3, {self.image_size}, {self.image_size}), got {tuple(images.shape)}")
