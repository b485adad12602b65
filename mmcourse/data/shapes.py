"""The shapes world: captioned images of coloured shapes, generated on the fly.

A toy stand-in for web image-text data that a laptop renders at tens of thousands of images per
second. Each image holds 1-3 objects; each object has a colour, a shape, a size and a position;
each image has a style (``photo``, ``sketch``, ``flat``, ``cartoon``) and a background. Captions
are drawn from varied templates with synonyms, so a model must learn that "crimson" and "red"
mean the same thing. ``HELDOUT_COMBOS`` lists colour-shape pairs that the ``train`` split never
shows, so a model can be tested on compositions it has never seen.

Everything is decided by a ``torch.Generator`` seeded from ``seed`` and ``split``: the same
arguments give identical tensors, and pixel values are quantised to multiples of 1/255.

>>> data = make_shapes(4, seed=0)
>>> data.images.shape
torch.Size([4, 3, 32, 32])
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

from mmcourse.data.sdf import SDF

Tensor = torch.Tensor

COLORS: tuple[str, ...] = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink")
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star", "cross", "heart", "crescent")
SIZES: tuple[str, ...] = ("small", "medium", "large")
STYLES: tuple[str, ...] = ("photo", "sketch", "flat", "cartoon")
# the style mix the course's checkpoints train on (web data mixes photos, drawings and clip art);
# photos are the hardest, so they come twice as often
TRAIN_STYLES: tuple[str, ...] = ("photo", "photo", "flat", "cartoon", "sketch")
BACKGROUNDS: tuple[str, ...] = ("dark", "grey", "light", "white")
SPLITS: tuple[str, ...] = ("train", "heldout", "all")
COUNT_WORDS: tuple[str, ...] = ("one", "two", "three")

# One pair per colour and per shape, so every colour and every shape is still seen in training.
HELDOUT_COMBOS: tuple[tuple[str, str], ...] = (
    ("red", "triangle"),
    ("orange", "star"),
    ("yellow", "circle"),
    ("green", "heart"),
    ("cyan", "square"),
    ("blue", "crescent"),
    ("purple", "cross"),
    ("pink", "diamond"),
)

RGB: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.10, 0.10),
    "orange": (0.97, 0.52, 0.05),
    "yellow": (0.96, 0.87, 0.08),
    "green": (0.12, 0.66, 0.18),
    "cyan": (0.08, 0.80, 0.86),
    "blue": (0.10, 0.24, 0.92),
    "purple": (0.55, 0.14, 0.76),
    "pink": (0.99, 0.47, 0.72),
}

COLOR_SYNONYMS: dict[str, tuple[str, ...]] = {
    "red": ("red", "crimson", "scarlet"),
    "orange": ("orange", "tangerine", "amber"),
    "yellow": ("yellow", "golden", "lemon"),
    "green": ("green", "emerald", "lime"),
    "cyan": ("cyan", "turquoise", "aqua"),
    "blue": ("blue", "cobalt", "navy"),
    "purple": ("purple", "violet", "plum"),
    "pink": ("pink", "rose", "fuchsia"),
}
SHAPE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc", "dot"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle", "wedge"),
    "diamond": ("diamond", "rhombus", "lozenge"),
    "star": ("star", "pentagram"),
    "cross": ("cross", "plus"),
    "heart": ("heart",),
    "crescent": ("crescent", "moon"),
}
SIZE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "small": ("small", "tiny", "little"),
    "medium": ("medium", "modest"),
    "large": ("large", "big", "huge"),
}
STYLE_NOUNS: dict[str, tuple[str, ...]] = {
    "photo": ("photo", "picture", "snapshot"),
    "sketch": ("sketch", "drawing", "doodle"),
    "flat": ("icon", "graphic", "clipart"),
    "cartoon": ("cartoon", "illustration"),
}
POSITION_WORDS: tuple[str, ...] = (
    "top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right",
)

ATTRIBUTES: tuple[str, ...] = (
    tuple(f"color:{c}" for c in COLORS)
    + tuple(f"shape:{s}" for s in SHAPES)
    + tuple(f"size:{z}" for z in SIZES)
    + tuple(f"count:{k}" for k in COUNT_WORDS)
)

_SINGLE_TEMPLATES = (
    "a {color} {shape}",
    "a {size} {color} {shape}",
    "a {style} of a {color} {shape}",
    "a {color} {shape} on a {bg} background",
    "there is a {color} {shape} in the {position}",
    "the {color} {shape}",
    "one {size} {color} {shape}",
    "a {style} of a {size} {color} {shape}",
)
_MULTI_TEMPLATES = (
    "{objects}",
    "{count} shapes: {objects}",
    "a {style} of {objects}",
    "{objects} on a {bg} background",
    "{relation}",
)

_SIZE_RANGES = {"small": (0.13, 0.17), "medium": (0.18, 0.23), "large": (0.24, 0.30)}  # radius / image size
_MULTI_SCALE = 0.8  # objects shrink when they share the canvas
_CHUNK = 256
_SEED_RANGE = 2**63  # seeds are reduced into torch.Generator's range, so any int works  # images rendered at once; fixed so results do not depend on n


@dataclass(frozen=True)
class ShapeObject:
    """One object in a scene. ``x``, ``y`` are the centre in [0, 1] image coordinates (y down)."""

    color: str
    shape: str
    size: str
    x: float
    y: float


@dataclass
class ShapesData:
    """A batch of the shapes world. ``colors[i]``/``shapes[i]``/``sizes[i]`` describe the first
    object of image ``i`` (its subject); ``objects[i]`` lists all of them."""

    images: Tensor  # (n, 3, size, size) float32 in [0, 1]
    captions: list[str]
    colors: list[str]
    shapes: list[str]
    sizes: list[str]
    styles: list[str]
    backgrounds: list[str]
    objects: list[tuple[ShapeObject, ...]]
    counts: Tensor  # (n,) long, number of objects
    color_ids: Tensor  # (n,) long, index into COLORS of the subject
    shape_ids: Tensor  # (n,) long, index into SHAPES of the subject
    attributes: Tensor  # (n, len(ATTRIBUTES)) float multi-hot over all objects
    _qa_seeds: list[int] = field(default_factory=list, repr=False)  # one per image, travels with subset
    _qa: list[list[tuple[str, str]]] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def combos(self) -> list[tuple[str, str]]:
        """(colour, shape) of each image's subject."""
        return list(zip(self.colors, self.shapes))

    @property
    def qa(self) -> list[list[tuple[str, str]]]:
        """Question-answer pairs per image (counting, colour, shape, size, yes/no), made on first use."""
        if self._qa is None:
            self._qa = [_questions(objs, s) for objs, s in zip(self.objects, self._qa_seeds)]
        return self._qa

    def subset(self, index: Sequence[int] | Tensor) -> "ShapesData":
        """The images at ``index`` (a list of ints or a long/bool tensor), with their annotations."""
        idx = torch.as_tensor(index)
        if idx.dtype == torch.bool:
            idx = idx.nonzero().flatten()
        ids = idx.tolist()
        pick = lambda xs: [xs[i] for i in ids]  # noqa: E731
        qa = None if self._qa is None else pick(self._qa)
        return ShapesData(
            self.images[idx], pick(self.captions), pick(self.colors), pick(self.shapes), pick(self.sizes),
            pick(self.styles), pick(self.backgrounds), pick(self.objects), self.counts[idx],
            self.color_ids[idx], self.shape_ids[idx], self.attributes[idx], pick(self._qa_seeds), qa,
        )


def combos_for(split: str) -> list[tuple[str, str]]:
    """All (colour, shape) pairs a split may show, in COLORS x SHAPES order."""
    _check_choice("split", split, SPLITS)
    held = set(HELDOUT_COMBOS)
    every = [(c, s) for c in COLORS for s in SHAPES]
    if split == "heldout":
        return [p for p in every if p in held]
    if split == "train":
        return [p for p in every if p not in held]
    return every


def make_shapes(
    n: int,
    *,
    seed: int,
    size: int = 32,
    style: str | Sequence[str] = "photo",
    split: str = "train",
    objects: int | tuple[int, int] = 1,
    combos: Sequence[tuple[str, str]] | None = None,
    captions: str = "varied",
) -> ShapesData:
    """Generate ``n`` captioned images of the shapes world.

    Args:
        n: number of images (> 0).
        seed: the seed; the same arguments always give identical tensors.
        size: image side in pixels (>= 8).
        style: one of ``STYLES``, or a sequence of them to draw a style per image (a mixture).
            The style is drawn after the scene, so two calls that differ only in style show the same
            objects in the same places (useful for measuring robustness to a style shift).
        split: ``"train"`` never shows a pair of ``HELDOUT_COMBOS``; ``"heldout"`` shows only those
            pairs; ``"all"`` shows every pair.
        objects: objects per image, an int in 1..3 or an inclusive range ``(lo, hi)``.
        combos: restrict the (colour, shape) pairs further, e.g. to a few classes; every pair must be
            allowed by ``split``.
        captions: ``"varied"`` (templates with synonyms) or ``"plain"`` ("a red square and a blue circle").

    Returns:
        ShapesData with ``images`` of shape ``(n, 3, size, size)``, float32 in [0, 1].
    """
    n = _check_int("n", n, low=1)
    seed = _check_int("seed", seed)
    size = _check_int("size", size, low=8)
    styles = (style,) if isinstance(style, str) else tuple(style)
    if not styles:
        raise ValueError("style must be one of %s or a non-empty sequence of them" % (STYLES,))
    for s in styles:
        _check_choice("style", s, STYLES)
    allowed = combos_for(split)
    if combos is not None:
        pairs = [tuple(p) for p in combos]
        bad = [p for p in pairs if p not in allowed]
        if bad or not pairs:
            raise ValueError(
                f"combos must be a non-empty list of (colour, shape) pairs allowed by split={split!r}; "
                f"not allowed: {bad[:3]}"
            )
        allowed = list(dict.fromkeys(pairs))
    lo, hi = (objects, objects) if isinstance(objects, int) else tuple(objects)
    if not (1 <= lo <= hi <= 3):
        raise ValueError(f"objects must be an int in 1..3 or a range (lo, hi) within it, got {objects!r}")
    _check_choice("captions", captions, ("varied", "plain"))

    g = torch.Generator().manual_seed((seed * len(SPLITS) + SPLITS.index(split)) % _SEED_RANGE)
    scene = _draw_scene(n, lo, hi, allowed, len(styles), g)
    images = torch.empty(n, 3, size, size)
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        noise_gen = torch.Generator().manual_seed((seed * 1_000_003 + SPLITS.index(split) * 7919 + start) % _SEED_RANGE)
        images[start:stop] = _render(scene, slice(start, stop), size, styles, noise_gen)

    return _annotate(images, scene, styles, captions, seed)


# --------------------------------------------------------------------------------------- scene


def _draw_scene(n: int, lo: int, hi: int, allowed: list, n_styles: int, g: torch.Generator) -> dict:
    """Every random choice of a batch, drawn in one fixed order from ``g``."""
    k_max = 3
    counts = torch.randint(lo, hi + 1, (n,), generator=g)
    combo = torch.randint(len(allowed), (n, k_max), generator=g)
    pair = torch.tensor([[COLORS.index(c), SHAPES.index(s)] for c, s in allowed])
    size_id = torch.randint(len(SIZES), (n, k_max), generator=g)
    size_u = torch.rand(n, k_max, generator=g)
    cells = torch.rand(n, 4, generator=g).argsort(dim=1)[:, :k_max]  # distinct cells of a 2x2 grid
    jitter = torch.rand(n, k_max, 2, generator=g)
    rotation = (torch.rand(n, k_max, generator=g) - 0.5) * math.radians(30)
    tint = (torch.rand(n, k_max, 3, generator=g) - 0.5) * 0.12
    light = torch.rand(n, generator=g) * 2 * math.pi
    bg_id = torch.randint(3, (n,), generator=g)  # dark / grey / light (sketches are drawn on white)
    bg_level = torch.rand(n, generator=g)
    bg_tilt = torch.rand(n, 2, generator=g) - 0.5
    style_id = torch.randint(n_styles, (n,), generator=g)
    caption_u = torch.rand(n, 8, generator=g)
    scene = dict(
        counts=counts, color=pair[combo][..., 0], shape=pair[combo][..., 1], size_id=size_id, size_u=size_u,
        cells=cells, jitter=jitter, rotation=rotation, tint=tint, light=light, bg_id=bg_id,
        bg_level=bg_level, bg_tilt=bg_tilt, style_id=style_id, caption_u=caption_u,
    )
    scene["centre"], scene["radius"] = _geometry(scene)
    return scene


def _geometry(scene: dict) -> tuple[Tensor, Tensor]:
    """Centres (n, 3, 2) and radii (n, 3), both as fractions of the image side."""
    lows = torch.tensor([_SIZE_RANGES[s][0] for s in SIZES])
    highs = torch.tensor([_SIZE_RANGES[s][1] for s in SIZES])
    sid = scene["size_id"]
    radius = lows[sid] + (highs[sid] - lows[sid]) * scene["size_u"]
    single = (scene["counts"] == 1)[:, None]
    radius = torch.where(single, radius, radius * _MULTI_SCALE)
    # single objects roam the whole canvas; several objects each keep to a cell of a 2x2 grid
    margin = radius[..., None] + 0.02
    free = (1 - 2 * margin).clamp(min=0)
    centre_single = margin + free * scene["jitter"]
    cell = scene["cells"]
    cell_xy = torch.stack([cell % 2, cell // 2], dim=-1).float() * 0.5
    cell_free = (0.5 - 2 * margin).clamp(min=0)
    centre_multi = cell_xy + margin + cell_free * scene["jitter"]
    centre = torch.where(single[..., None], centre_single, centre_multi)
    return centre, radius


# --------------------------------------------------------------------------------------- render


def _render(scene: dict, sl: slice, size: int, styles: tuple, g: torch.Generator) -> Tensor:
    """Draw the images ``sl`` of a scene: background, then each object slot over it."""
    centre, radius = scene["centre"][sl] * size, scene["radius"][sl] * size
    style = torch.tensor([STYLES.index(s) for s in styles])[scene["style_id"][sl]]
    is_photo, is_sketch, is_cartoon = (style == 0), (style == 1), (style == 3)
    m = centre.shape[0]
    col = (torch.arange(size, dtype=torch.float32) + 0.5).view(1, 1, size)  # pixel centres, x
    row = col.view(1, size, 1)  # y

    # background: a grey level with a tilted gradient and film grain in photos; white paper in sketches
    level = torch.tensor([0.12, 0.42, 0.72])[scene["bg_id"][sl]] + 0.16 * scene["bg_level"][sl]
    level = torch.where(is_sketch, 0.93 + 0.06 * scene["bg_level"][sl], level)
    tilt = scene["bg_tilt"][sl] * torch.where(is_photo, 0.25 / size, 0.0)[:, None]
    grain = torch.randn(m, 1, size, size, generator=g).mul_(is_photo.view(m, 1, 1, 1).float())
    canvas = (level.view(m, 1, 1) + tilt[:, 0, None, None] * (col - size / 2) + tilt[:, 1, None, None] * (row - size / 2))
    canvas = canvas.clamp_(0, 1).unsqueeze(1).add(0.04 * grain).expand(m, 3, size, size).contiguous()

    palette = torch.tensor([RGB[c] for c in COLORS])
    light_u = torch.cos(scene["light"][sl]).view(m, 1, 1) * 0.28
    light_v = torch.sin(scene["light"][sl]).view(m, 1, 1) * 0.28
    any_photo, any_stroke = bool(is_photo.any()), bool((is_sketch | is_cartoon).any())
    for k in range(int(scene["counts"][sl].max())):
        active = scene["counts"][sl] > k
        r = radius[:, k].view(m, 1, 1)
        rot = scene["rotation"][sl, k].view(m, 1, 1)
        cos, sin = torch.cos(rot) / r, torch.sin(rot) / r
        dx, dy = col - centre[:, k, 0].view(m, 1, 1), row - centre[:, k, 1].view(m, 1, 1)
        u = dx * cos + dy * sin  # (m, S, S) object coordinates, in units of the radius
        v = dy * cos - dx * sin
        dist = torch.full((m, size, size), 1e3)
        shape_k = scene["shape"][sl, k]
        for s_id, s_name in enumerate(SHAPES):
            idx = (active & (shape_k == s_id)).nonzero().flatten()
            if idx.numel():
                dist[idx] = SDF[s_name](u[idx], v[idx])
        dist.mul_(r)  # signed distance in pixels

        alpha = (0.5 - dist).clamp_(0, 1)  # anti-aliased fill
        if any_stroke:
            stroke = (1.1 - dist.abs_()).clamp_(0, 1)  # a ~1.2 px line along the outline
            alpha = torch.where(is_sketch.view(m, 1, 1), stroke, alpha)
        base = (palette[scene["color"][sl, k]] + scene["tint"][sl, k] * is_photo[:, None]).view(m, 3, 1, 1)
        if any_photo:  # photos are lit from one side and textured; other styles use flat colour
            shade = (u.mul_(light_u).add_(v.mul_(light_v)).add_(1.0)).clamp_(0.65, 1.3)
            shade = torch.where(is_photo.view(m, 1, 1), shade, 1.0).unsqueeze(1)
            colour = (base * shade).clamp_(0, 1).add_(0.05 * grain)
        else:
            colour = base.expand(m, 3, size, size)
        canvas.lerp_(colour, alpha.unsqueeze(1))
        if any_stroke and bool(is_cartoon.any()):  # cartoons get a dark ink outline
            ink = (stroke * is_cartoon.view(m, 1, 1)).unsqueeze(1)
            canvas.lerp_(torch.full_like(canvas, 0.08), ink)

    return canvas.clamp_(0, 1).mul_(255).round_().div_(255)


# --------------------------------------------------------------------------------------- text


def _pick(options: Sequence[str], u: float) -> str:
    return options[min(int(u * len(options)), len(options) - 1)]


def _position_word(x: float, y: float) -> str:
    col = min(int(x * 3), 2)
    row = min(int(y * 3), 2)
    return POSITION_WORDS[row * 3 + col]


def _relation(a: ShapeObject, b: ShapeObject, plain_a: str, plain_b: str) -> str:
    dx, dy = b.x - a.x, b.y - a.y
    if abs(dx) >= abs(dy):
        rel = "to the left of" if dx > 0 else "to the right of"
    else:
        rel = "above" if dy > 0 else "below"
    return f"{plain_a} {rel} {plain_b}"


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _annotate(images: Tensor, scene: dict, styles: tuple, caption_mode: str, seed: int) -> ShapesData:
    n = images.shape[0]
    centre = scene["centre"]
    counts = scene["counts"].tolist()
    color = scene["color"].tolist()
    shape = scene["shape"].tolist()
    size_id = scene["size_id"].tolist()
    centre_l = centre.tolist()
    style_names = [styles[i] for i in scene["style_id"].tolist()]
    bg_names = [
        "white" if st == "sketch" else BACKGROUNDS[b] for st, b in zip(style_names, scene["bg_id"].tolist())
    ]
    u = scene["caption_u"].tolist()

    objects, captions = [], []
    for i in range(n):
        objs = tuple(
            ShapeObject(COLORS[color[i][k]], SHAPES[shape[i][k]], SIZES[size_id[i][k]], *centre_l[i][k])
            for k in range(counts[i])
        )
        objects.append(objs)
        captions.append(_caption(objs, style_names[i], bg_names[i], u[i], caption_mode))

    # multi-hot over every object present: colours, shapes, sizes, then the count
    active = (torch.arange(3) < scene["counts"][:, None]).float()  # (n, 3)
    parts = [
        (F.one_hot(scene[key], len(vocab)).float() * active[..., None]).amax(1)
        for key, vocab in (("color", COLORS), ("shape", SHAPES), ("size_id", SIZES))
    ]
    parts.append(F.one_hot(scene["counts"] - 1, len(COUNT_WORDS)).float())
    attributes = torch.cat(parts, dim=1)

    subject_color = scene["color"][:, 0].clone()
    subject_shape = scene["shape"][:, 0].clone()
    return ShapesData(
        images=images,
        captions=captions,
        colors=[o[0].color for o in objects],
        shapes=[o[0].shape for o in objects],
        sizes=[o[0].size for o in objects],
        styles=style_names,
        backgrounds=bg_names,
        objects=objects,
        counts=scene["counts"].clone(),
        color_ids=subject_color,
        shape_ids=subject_shape,
        attributes=attributes,
        _qa_seeds=[(seed * 100_003 + i) % _SEED_RANGE for i in range(n)],
    )


def _caption(objs: tuple[ShapeObject, ...], style: str, bg: str, u: list[float], mode: str) -> str:
    return _ARTICLE.sub("an ", _raw_caption(objs, style, bg, u, mode))


_ARTICLE = re.compile(r"\ba (?=[aeiou])")


def _raw_caption(objs: tuple[ShapeObject, ...], style: str, bg: str, u: list[float], mode: str) -> str:
    plain = [f"a {o.color} {o.shape}" for o in objs]
    if mode == "plain":
        return _join(plain)
    words = [
        (_pick(COLOR_SYNONYMS[o.color], u[1 + k]), _pick(SHAPE_SYNONYMS[o.shape], u[4 + k]), o) for k, o in enumerate(objs)
    ]
    style_word = _pick(STYLE_NOUNS[style], u[7])
    if len(objs) == 1:
        c, s, o = words[0]
        template = _pick(_SINGLE_TEMPLATES, u[0])
        return template.format(
            color=c, shape=s, size=_pick(SIZE_SYNONYMS[o.size], u[7]), style=style_word, bg=bg,
            position=_position_word(o.x, o.y),
        )
    phrases = [f"a {c} {s}" for c, s, _ in words]
    template = _pick(_MULTI_TEMPLATES, u[0])
    if template == "{relation}":
        rel = _relation(objs[0], objs[1], phrases[0], phrases[1])
        return rel if len(objs) == 2 else f"{rel}, and {phrases[2]}"
    return template.format(objects=_join(phrases), count=COUNT_WORDS[len(objs) - 1], style=style_word, bg=bg)


def _questions(objs: tuple[ShapeObject, ...], seed: int) -> list[tuple[str, str]]:
    g = torch.Generator().manual_seed(seed)
    qa = [("how many shapes are there?", COUNT_WORDS[len(objs) - 1])]
    shape_counts = {s: sum(o.shape == s for o in objs) for s in {o.shape for o in objs}}
    color_counts = {c: sum(o.color == c for o in objs) for c in {o.color for o in objs}}
    pair_counts = {p: sum((o.color, o.shape) == p for o in objs) for p in {(o.color, o.shape) for o in objs}}
    for o in objs:
        if shape_counts[o.shape] == 1:
            qa.append((f"what color is the {o.shape}?", o.color))
        if color_counts[o.color] == 1:
            qa.append((f"what shape is the {o.color} object?", o.shape))
        if pair_counts[(o.color, o.shape)] == 1:
            qa.append((f"what size is the {o.color} {o.shape}?", o.size))
    present = {(o.color, o.shape) for o in objs}
    c, s = COLORS[int(torch.randint(len(COLORS), (1,), generator=g))], SHAPES[int(torch.randint(len(SHAPES), (1,), generator=g))]
    qa.append((f"is there a {c} {s}?", "yes" if (c, s) in present else "no"))
    o = objs[int(torch.randint(len(objs), (1,), generator=g))]
    qa.append((f"is there a {o.color} {o.shape}?", "yes"))
    return qa


# --------------------------------------------------------------------------------------- input checks


def _check_int(name: str, value: object, low: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return value


def _check_choice(name: str, value: object, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(map(repr, choices))}")


def stream_shapes(batch_size: int, *, seed: int, block: int = 64, **kwargs) -> Iterator[ShapesData]:
    """Endless batches of fresh images: every ``block`` batches are generated with the next seed.

    Training on a stream instead of a fixed set means a model never sees the same picture twice,
    so it cannot memorise texture noise. ``kwargs`` go to :func:`make_shapes`.
    """
    _check_int("batch_size", batch_size, low=1)
    k = 0
    while True:
        data = make_shapes(batch_size * block, seed=seed + k, **kwargs)
        k += 1
        for start in range(0, len(data), batch_size):
            yield data.subset(torch.arange(start, start + batch_size))
