"""Contract of the shapes world, ``mmcourse.data.shapes.make_shapes``.

Image counts are kept small (at most 2 000) and the larger batches are generated once per module.
"""

from __future__ import annotations

import re

import pytest
import torch

from mmcourse.data.shapes import (
    ATTRIBUTES,
    COLOR_SYNONYMS,
    COLORS,
    COUNT_WORDS,
    HELDOUT_COMBOS,
    SHAPE_SYNONYMS,
    SHAPES,
    SIZES,
    SPLITS,
    STYLES,
    ShapesData,
    combos_for,
    make_shapes,
)
from mmcourse.data.tokenizer import default_tokenizer

HELD = set(HELDOUT_COMBOS)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # Rendering small images gains nothing from intra-op threads, and on a 2-core machine that is
    # busy elsewhere two torch threads oversubscribe badly; restore the setting afterwards.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def train_multi() -> ShapesData:
    return make_shapes(2000, seed=0, objects=(1, 3), split="train")


@pytest.fixture(scope="module")
def mixed() -> ShapesData:
    return make_shapes(400, seed=3, objects=(1, 3), style=STYLES, split="all")


def _pairs(data: ShapesData) -> set[tuple[str, str]]:
    return {(o.color, o.shape) for objs in data.objects for o in objs}


# --------------------------------------------------------------------------------------- the basics


def test_images_dtype_shape_range_and_quantisation():
    data = make_shapes(64, seed=1)
    x = data.images
    assert x.dtype == torch.float32
    assert x.shape == (64, 3, 32, 32)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    scaled = x.double() * 255
    assert torch.allclose(scaled, scaled.round(), atol=1e-4), "pixel values must be multiples of 1/255"
    assert len(data) == 64


def test_annotations_have_one_entry_per_image(mixed):
    n = len(mixed)
    for name in ("captions", "colors", "shapes", "sizes", "styles", "backgrounds", "objects"):
        assert len(getattr(mixed, name)) == n, name
    assert all(isinstance(c, str) and c for c in mixed.captions)
    assert set(mixed.colors) <= set(COLORS)
    assert set(mixed.shapes) <= set(SHAPES)
    assert set(mixed.sizes) <= set(SIZES)
    assert set(mixed.styles) <= set(STYLES)
    for name in ("counts", "color_ids", "shape_ids"):
        t = getattr(mixed, name)
        assert t.dtype == torch.long and t.shape == (n,), name
    assert mixed.attributes.shape == (n, len(ATTRIBUTES))


def test_subject_is_first_object_and_ids_match_names(mixed):
    for i, objs in enumerate(mixed.objects):
        assert (mixed.colors[i], mixed.shapes[i], mixed.sizes[i]) == (objs[0].color, objs[0].shape, objs[0].size)
    assert [COLORS[i] for i in mixed.color_ids.tolist()] == mixed.colors
    assert [SHAPES[i] for i in mixed.shape_ids.tolist()] == mixed.shapes
    assert mixed.combos == list(zip(mixed.colors, mixed.shapes))


def test_object_positions_are_inside_the_image(mixed):
    for objs in mixed.objects:
        for o in objs:
            assert 0.0 < o.x < 1.0 and 0.0 < o.y < 1.0


def test_vocabulary_sizes():
    assert len(COLORS) >= 8 and len(set(COLORS)) == len(COLORS)
    assert len(SHAPES) >= 6 and len(set(SHAPES)) == len(SHAPES)
    assert len(SIZES) == 3


# --------------------------------------------------------------------------------------- determinism


def test_same_arguments_give_identical_data():
    kw = dict(seed=7, objects=(1, 3), style=("photo", "sketch"), split="all")
    a, b = make_shapes(300, **kw), make_shapes(300, **kw)
    assert torch.equal(a.images, b.images)
    assert a.captions == b.captions
    assert a.objects == b.objects
    assert torch.equal(a.attributes, b.attributes)
    assert a.qa == b.qa


def test_different_seed_gives_different_data():
    a, b = make_shapes(50, seed=0), make_shapes(50, seed=1)
    assert not torch.equal(a.images, b.images)
    assert a.captions != b.captions


@pytest.mark.parametrize("objects", [1, (1, 3)])
def test_style_change_keeps_the_scene(objects):
    photo = make_shapes(200, seed=11, objects=objects, style="photo")
    for other in ("sketch", "flat", "cartoon", ("flat", "cartoon")):
        data = make_shapes(200, seed=11, objects=objects, style=other)
        assert data.objects == photo.objects, other
        assert not torch.equal(data.images, photo.images), other


# --------------------------------------------------------------------------------------- splits


def test_heldout_combos_are_a_fair_holdout():
    colours = [c for c, _ in HELDOUT_COMBOS]
    shapes = [s for _, s in HELDOUT_COMBOS]
    assert len(set(colours)) == len(colours), "each colour is held out at most once"
    assert len(set(shapes)) == len(shapes), "each shape is held out at most once"
    assert HELD <= {(c, s) for c in COLORS for s in SHAPES}
    train = combos_for("train")
    assert {c for c, _ in train} == set(COLORS), "every colour is still seen in training"
    assert {s for _, s in train} == set(SHAPES), "every shape is still seen in training"


def test_combos_for_partitions_all_pairs():
    train, heldout, every = (set(combos_for(s)) for s in ("train", "heldout", "all"))
    assert heldout == HELD
    assert train.isdisjoint(heldout)
    assert train | heldout == every
    assert len(every) == len(COLORS) * len(SHAPES)


def test_train_split_never_shows_a_heldout_pair(train_multi):
    seen = _pairs(train_multi)
    assert seen.isdisjoint(HELD), sorted(seen & HELD)
    assert seen == set(combos_for("train")), "2 000 images should show every allowed pair"


def test_heldout_split_only_shows_heldout_pairs():
    data = make_shapes(500, seed=0, objects=(1, 3), split="heldout")
    assert _pairs(data) <= HELD
    assert set(data.combos) == HELD


def test_all_split_shows_both_kinds():
    data = make_shapes(1000, seed=0, split="all")
    combos = set(data.combos)
    assert combos & HELD and combos - HELD


def test_splits_differ_for_the_same_seed():
    a, b = make_shapes(50, seed=0, split="train"), make_shapes(50, seed=0, split="all")
    assert not torch.equal(a.images, b.images)


# --------------------------------------------------------------------------------------- annotations


def test_counts_match_objects(train_multi):
    counts = train_multi.counts.tolist()
    assert set(counts) == {1, 2, 3}
    assert all(len(objs) == k for objs, k in zip(train_multi.objects, counts))


def test_fixed_object_count():
    for k in (1, 2, 3):
        data = make_shapes(20, seed=0, objects=k)
        assert data.counts.tolist() == [k] * 20
        assert all(len(objs) == k for objs in data.objects)


def test_attributes_are_a_multi_hot_of_the_objects(mixed):
    assert len(set(ATTRIBUTES)) == len(ATTRIBUTES)
    assert {a.split(":")[0] for a in ATTRIBUTES} == {"color", "shape", "size", "count"}
    column = {name: j for j, name in enumerate(ATTRIBUTES)}
    for i, objs in enumerate(mixed.objects):
        names = {f"count:{COUNT_WORDS[len(objs) - 1]}"}
        for o in objs:
            names |= {f"color:{o.color}", f"shape:{o.shape}", f"size:{o.size}"}
        expected = torch.zeros(len(ATTRIBUTES))
        expected[[column[n] for n in names]] = 1.0
        assert torch.equal(mixed.attributes[i], expected), (i, objs)


def test_qa_answers_match_the_objects(mixed):
    for objs, qa in zip(mixed.objects, mixed.qa):
        assert qa, "every image has questions"
        present = {(o.color, o.shape) for o in objs}
        for q, a in qa:
            if q == "how many shapes are there?":
                assert a == COUNT_WORDS[len(objs) - 1]
            elif m := re.fullmatch(r"what color is the (\w+)\?", q):
                assert [o.color for o in objs if o.shape == m[1]] == [a]
            elif m := re.fullmatch(r"what shape is the (\w+) object\?", q):
                assert [o.shape for o in objs if o.color == m[1]] == [a]
            elif m := re.fullmatch(r"what size is the (\w+) (\w+)\?", q):
                assert a in {o.size for o in objs if (o.color, o.shape) == (m[1], m[2])}
            elif m := re.fullmatch(r"is there an? (\w+) (\w+)\?", q):
                assert a == ("yes" if (m[1], m[2]) in present else "no")
            else:
                pytest.fail(f"unexpected question {q!r}")


def test_qa_questions_have_a_single_answer(train_multi):
    for i, qa in enumerate(train_multi.qa):
        answers: dict[str, set[str]] = {}
        for q, a in qa:
            answers.setdefault(q, set()).add(a)
        ambiguous = {q: a for q, a in answers.items() if len(a) > 1}
        assert not ambiguous, (i, ambiguous, train_multi.objects[i])


def test_plain_captions_name_every_object():
    data = make_shapes(200, seed=2, objects=(1, 3), captions="plain")
    for objs, caption in zip(data.objects, data.captions):
        parts = [("an " if o.color[0] in "aeiou" else "a ") + f"{o.color} {o.shape}" for o in objs]
        expected = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        assert caption == expected


def test_varied_captions_mention_every_object(mixed):
    for objs, caption in zip(mixed.objects, mixed.captions):
        words = set(re.findall(r"[a-z]+", caption))
        for o in objs:
            assert words & set(COLOR_SYNONYMS[o.color]), (caption, o)
            assert words & set(SHAPE_SYNONYMS[o.shape]), (caption, o)


def test_varied_captions_use_the_right_article(mixed):
    for caption in mixed.captions:
        assert not re.search(r"\ba [aeiou]", caption), caption
        assert not re.search(r"\ban [^aeiou\W]", caption), caption


def test_spatial_relations_in_captions_match_positions(mixed):
    checked = 0
    for objs, caption in zip(mixed.objects, mixed.captions):
        m = re.search(r" (to the left of|to the right of|above|below) ", caption)
        if not m or len(objs) < 2:
            continue
        a, b = objs[0], objs[1]
        ok = {
            "to the left of": a.x < b.x,
            "to the right of": a.x > b.x,
            "above": a.y < b.y,
            "below": a.y > b.y,
        }[m[1]]
        assert ok, (caption, a, b)
        checked += 1
    assert checked > 0


def test_every_caption_word_is_in_the_tokenizer_vocabulary(mixed):
    tok = default_tokenizer()
    plain = make_shapes(100, seed=4, objects=(1, 3), captions="plain", split="all")
    for caption in mixed.captions + plain.captions:
        assert tok.unknown_words(caption) == [], caption
    for qa in mixed.qa:
        for q, a in qa:
            assert tok.unknown_words(q) == [] and tok.unknown_words(a) == [], (q, a)


# --------------------------------------------------------------------------------------- subset


def _same(a: ShapesData, b: ShapesData) -> None:
    assert torch.equal(a.images, b.images)
    for name in ("captions", "colors", "shapes", "sizes", "styles", "backgrounds", "objects"):
        assert getattr(a, name) == getattr(b, name), name
    for name in ("counts", "color_ids", "shape_ids", "attributes"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


@pytest.mark.parametrize(
    "index",
    [
        [4, 0, 7],
        torch.tensor([4, 0, 7]),
        torch.tensor([i in (0, 4, 7) for i in range(10)]),
    ],
    ids=["list", "long-tensor", "bool-tensor"],
)
def test_subset(index):
    data = make_shapes(10, seed=9, objects=(1, 3), style=STYLES)
    qa = data.qa  # made before subsetting, so the subset keeps these questions
    sub = data.subset(index)
    order = [0, 4, 7] if isinstance(index, torch.Tensor) and index.dtype == torch.bool else [4, 0, 7]
    assert len(sub) == 3
    assert torch.equal(sub.images, data.images[order])
    assert sub.captions == [data.captions[i] for i in order]
    assert sub.objects == [data.objects[i] for i in order]
    assert torch.equal(sub.counts, data.counts[order])
    assert torch.equal(sub.attributes, data.attributes[order])
    assert sub.qa == [qa[i] for i in order]
    assert sub.styles == [data.styles[i] for i in order]


def test_subset_of_everything_is_the_same_data():
    data = make_shapes(12, seed=9, objects=(1, 3))
    _same(data.subset(list(range(12))), data)
    _same(data.subset(torch.ones(12, dtype=torch.bool)), data)


def test_subset_qa_does_not_depend_on_access_order():
    fresh = make_shapes(30, seed=1, objects=(1, 3))
    first_qa = make_shapes(30, seed=1, objects=(1, 3))
    _ = first_qa.qa  # computed before subsetting
    index = [5, 7, 20]
    assert fresh.subset(index).qa == first_qa.subset(index).qa


# --------------------------------------------------------------------------------------- options


def test_combos_restrict_the_pairs():
    keep = [("red", "circle"), ("blue", "square")]
    data = make_shapes(200, seed=0, objects=(1, 3), combos=keep)
    assert _pairs(data) == set(keep)


def test_combos_work_with_the_heldout_split():
    keep = [HELDOUT_COMBOS[0]]
    data = make_shapes(20, seed=0, split="heldout", combos=keep)
    assert set(data.combos) == set(keep)


@pytest.mark.parametrize(
    "split, combos",
    [
        ("train", [HELDOUT_COMBOS[0]]),
        ("train", [("red", "circle"), HELDOUT_COMBOS[1]]),
        ("heldout", [("red", "circle")]),
        ("train", [("magenta", "circle")]),
        ("train", []),
    ],
)
def test_combos_not_allowed_by_the_split_are_rejected(split, combos):
    with pytest.raises(ValueError, match="combos"):
        make_shapes(4, seed=0, split=split, combos=combos)


@pytest.mark.parametrize("size", [8, 16, 48])
def test_other_sizes(size):
    data = make_shapes(6, seed=0, size=size, objects=(1, 3), style=STYLES)
    assert data.images.shape == (6, 3, size, size)
    assert data.images.dtype == torch.float32
    assert 0.0 <= float(data.images.min()) and float(data.images.max()) <= 1.0


def test_size_changes_only_the_resolution():
    small, big = make_shapes(20, seed=0, size=16), make_shapes(20, seed=0, size=48)
    assert small.objects == big.objects
    assert small.captions == big.captions


def test_style_mixture_draws_from_the_given_styles_only():
    data = make_shapes(200, seed=0, style=("sketch", "cartoon"))
    assert set(data.styles) == {"sketch", "cartoon"}
    single = make_shapes(20, seed=0, style="flat")
    assert set(single.styles) == {"flat"}


def test_sketches_are_drawn_on_white_paper():
    data = make_shapes(100, seed=0, objects=(1, 3), style="sketch")
    corners = data.images[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]  # (n, 3, 4)
    assert (corners.mean(dim=(1, 2)) > 0.85).all()
    assert set(data.backgrounds) == {"white"}


def test_photos_have_darker_backgrounds_than_sketches():
    photo = make_shapes(100, seed=0, style="photo").images.mean()
    sketch = make_shapes(100, seed=0, style="sketch").images.mean()
    assert photo < sketch


def test_each_object_colour_shows_in_flat_images():
    # flat style: a single object painted in its colour, so the object's pixels are closest to that colour
    from mmcourse.data.shapes import RGB

    data = make_shapes(40, seed=0, style="flat")
    palette = torch.tensor([RGB[c] for c in COLORS])
    for img, obj in zip(data.images, data.objects):
        o = obj[0]
        size = img.shape[-1]
        px = img[:, int(o.y * size), int(o.x * size)]  # the object's centre
        nearest = COLORS[int((palette - px).norm(dim=1).argmin())]
        if o.shape in ("crescent", "cross"):  # the centre may be outside these shapes
            continue
        assert nearest == o.color, (o, px)


# --------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("style", ["oil", ("photo", "oil"), "Photo"])
def test_unknown_style_is_a_value_error_naming_the_choices(style):
    bad = "oil" if "oil" in style else style
    with pytest.raises(ValueError) as info:
        make_shapes(4, seed=0, style=style)
    msg = str(info.value)
    assert repr(bad) in msg
    assert all(s in msg for s in STYLES)


def test_empty_style_mixture_is_rejected():
    with pytest.raises(ValueError, match="style"):
        make_shapes(4, seed=0, style=())


@pytest.mark.parametrize("split", ["test", "val", "Train"])
def test_unknown_split_is_a_value_error_naming_the_choices(split):
    with pytest.raises(ValueError) as info:
        make_shapes(4, seed=0, split=split)
    msg = str(info.value)
    assert repr(split) in msg
    assert all(s in msg for s in SPLITS)
    with pytest.raises(ValueError, match=repr(split)):
        combos_for(split)


@pytest.mark.parametrize("n", [0, -1])
def test_non_positive_n_is_a_value_error(n):
    with pytest.raises(ValueError, match="n must be >= 1"):
        make_shapes(n, seed=0)


@pytest.mark.parametrize("n", [2.5, "3", 3.0, True, None])
def test_non_int_n_is_a_type_error(n):
    with pytest.raises(TypeError, match="n must be an int"):
        make_shapes(n, seed=0)


@pytest.mark.parametrize("seed", [1.5, "0", None])
def test_non_int_seed_is_a_type_error(seed):
    with pytest.raises(TypeError, match="seed"):
        make_shapes(4, seed=seed)


def test_seed_is_keyword_only():
    with pytest.raises(TypeError):
        make_shapes(4, 0)  # type: ignore[misc]


@pytest.mark.parametrize("size", [0, 4, 7])
def test_too_small_size_is_a_value_error(size):
    with pytest.raises(ValueError, match="size"):
        make_shapes(4, seed=0, size=size)


@pytest.mark.parametrize("objects", [0, 4, -1, (0, 2), (2, 1), (1, 4)])
def test_bad_object_count_is_a_value_error(objects):
    with pytest.raises(ValueError, match="objects"):
        make_shapes(4, seed=0, objects=objects)


def test_captions_mode_is_checked():
    with pytest.raises(ValueError) as info:
        make_shapes(4, seed=0, captions="weird")
    assert "'weird'" in str(info.value) and "varied" in str(info.value) and "plain" in str(info.value)
