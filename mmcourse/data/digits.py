"""Captioned handwritten digits from scikit-learn's bundled ``load_digits`` (no download).

1 797 greyscale 8x8 images of the digits 0-9. ``make_digits`` splits them deterministically
(stratified by label), captions each one ("a handwritten seven", "the digit 7", ...) and can resize
them to the shapes world's ``(3, size, size)`` format so the same image encoders read both.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

DIGIT_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_TEMPLATES = (
    "a handwritten {word}",
    "the digit {digit}",
    "a drawing of the number {word}",
    "a scribbled {digit}",
    "the number {digit} written by hand",
    "a sketch of the digit {word}",
)


@dataclass
class DigitsData:
    images: torch.Tensor  # (n, channels, size, size) float32 in [0, 1]
    labels: torch.Tensor  # (n,) long, the digit
    captions: list[str]

    def __len__(self) -> int:
        return self.images.shape[0]


@lru_cache(maxsize=1)
def _raw() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits  # bundled with scikit-learn; imported lazily (slow import)

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32) / 16.0  # pixel values are 0..16
    return images, torch.tensor(bunch.target, dtype=torch.long)


def make_digits(
    split: str = "train", *, seed: int = 0, size: int = 8, channels: int = 1, test_fraction: float = 0.25
) -> DigitsData:
    """The digits of ``split`` (``"train"``, ``"test"`` or ``"all"``), captioned.

    The split is stratified: each digit keeps ``test_fraction`` of its images for ``"test"``. ``size``
    resizes (bilinear) from the native 8x8; ``channels=3`` repeats the grey channel for RGB models.
    Images are white ink on black, as in the original data.
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"unknown split {split!r}; choose 'train', 'test' or 'all'")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an int >= 8, got {size!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    images, labels = _raw()
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=g)
    keep = []
    for digit in range(10):
        members = order[labels[order] == digit]
        n_test = round(len(members) * test_fraction)
        part = {"test": members[:n_test], "train": members[n_test:], "all": members}[split]
        keep.append(part)
    index = torch.cat(keep).sort().values
    x = images[index].unsqueeze(1)
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    x = x.expand(-1, channels, -1, -1).contiguous()
    y = labels[index]
    choice = torch.randint(len(_TEMPLATES), (len(y),), generator=g).tolist()
    captions = [
        _TEMPLATES[c].format(word=DIGIT_WORDS[d], digit=d) for c, d in zip(choice, y.tolist())
    ]
    return DigitsData(x, y, captions)
