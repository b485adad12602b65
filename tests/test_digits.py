"""Captioned digits, ``mmcourse.data.digits.make_digits`` (scikit-learn's bundled 8x8 digits)."""

from __future__ import annotations

import re

import pytest
import torch

from mmcourse.data.digits import DIGIT_WORDS, make_digits

N_DIGITS = 1797


@pytest.fixture(scope="module")
def splits():
    return {s: make_digits(s) for s in ("train", "test", "all")}


def _rows(images: torch.Tensor) -> set[bytes]:
    return {img.numpy().tobytes() for img in images}


def test_sizes(splits):
    assert len(splits["all"]) == N_DIGITS
    assert len(splits["train"]) + len(splits["test"]) == N_DIGITS
    assert len(splits["all"].captions) == N_DIGITS


def test_default_format(splits):
    data = splits["train"]
    assert data.images.dtype == torch.float32
    assert data.images.shape == (len(data), 1, 8, 8)
    assert data.labels.dtype == torch.long and data.labels.shape == (len(data),)
    assert set(data.labels.tolist()) == set(range(10))


def test_train_and_test_are_disjoint_and_cover_all(splits):
    # "all" keeps the original order; train and test are subsequences of it, so match by content
    every = splits["all"]
    index = {}
    for i, img in enumerate(every.images):
        index.setdefault(img.numpy().tobytes(), []).append(i)
    picked = []
    for name in ("train", "test"):
        for img in splits[name].images:
            picked.append(index[img.numpy().tobytes()].pop(0))
    assert sorted(picked) == list(range(N_DIGITS)), "train and test together are every image exactly once"
    # labels agree: the multiset of (image, label) pairs is the same
    pairs = lambda d: sorted(zip((x.numpy().tobytes() for x in d.images), d.labels.tolist()))  # noqa: E731
    assert pairs(every) == sorted(pairs(splits["train"]) + pairs(splits["test"]))


def test_split_is_stratified(splits):
    all_counts = torch.bincount(splits["all"].labels, minlength=10)
    test_counts = torch.bincount(splits["test"].labels, minlength=10)
    frac = test_counts.double() / all_counts.double()
    assert ((frac - 0.25).abs() < 0.01).all(), frac
    assert all(abs(int(t) - 0.25 * int(a)) <= 0.5 for t, a in zip(test_counts, all_counts))


def test_test_fraction():
    data = make_digits("test", test_fraction=0.5)
    assert abs(len(data) - N_DIGITS / 2) <= 10


def test_deterministic():
    a, b = make_digits("train", seed=3), make_digits("train", seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels) and a.captions == b.captions


def test_seed_changes_the_split():
    a, b = make_digits("test", seed=0), make_digits("test", seed=1)
    assert _rows(a.images) != _rows(b.images)


def test_resized_rgb_format():
    data = make_digits("test", size=32, channels=3)
    assert data.images.shape == (len(data), 3, 32, 32)
    assert data.images.dtype == torch.float32
    assert torch.equal(data.images[:, 0], data.images[:, 1]) and torch.equal(data.images[:, 0], data.images[:, 2])
    small = make_digits("test")
    assert torch.equal(data.labels, small.labels)


@pytest.mark.parametrize("kw", [{}, {"size": 32, "channels": 3}, {"size": 12}])
def test_values_in_unit_interval(kw):
    x = make_digits("all", **kw).images
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert float(x.max()) == pytest.approx(1.0)  # white ink


def test_captions_mention_the_digit(splits):
    for caption, label in zip(splits["all"].captions, splits["all"].labels.tolist()):
        words = re.findall(r"[a-z]+|[0-9]+", caption)
        assert DIGIT_WORDS[label] in words or str(label) in words, (caption, label)
        others = [w for w in words if w in DIGIT_WORDS or w.isdigit()]
        assert set(others) <= {DIGIT_WORDS[label], str(label)}, (caption, label)


def test_captions_use_words_the_tokenizer_knows(splits):
    from mmcourse.data.tokenizer import default_tokenizer

    tok = default_tokenizer()
    for caption in set(splits["all"].captions):
        assert tok.unknown_words(caption) == [], caption


@pytest.mark.parametrize("split", ["val", "Train", ""])
def test_bad_split(split):
    with pytest.raises(ValueError, match="split"):
        make_digits(split)


@pytest.mark.parametrize("channels", [0, 2, 4])
def test_bad_channels(channels):
    with pytest.raises(ValueError, match="channels"):
        make_digits(channels=channels)


@pytest.mark.parametrize("size", [4, 7, 0, 16.0])
def test_bad_size(size):
    with pytest.raises(ValueError, match="size"):
        make_digits(size=size)


@pytest.mark.parametrize("test_fraction", [0.0, 1.0, -0.1])
def test_bad_test_fraction(test_fraction):
    with pytest.raises(ValueError, match="test_fraction"):
        make_digits(test_fraction=test_fraction)
