"""A second language for the shapes world: French prompts for the (colour, shape) classes.

The course CLIP read English captions only. French is a new scope for its text tower in two ways:

- **new words**: most French words ("cercle", "carre", "rouge", "une", ...) are not in the course
  vocabulary, so the frozen tokenizer turns them into ``<unk>``. A few are spelled as English words the
  model knows, some with the same meaning ("orange", "rose", "cyan", "violet", "triangle", "photo",
  "image") and one, "a" ("il y a", *there is*), with another. :data:`NEW_WORDS` lists the rest;
- **another grammar**: the colour follows the noun ("un carre rouge", *a square red*) and agrees with its
  gender ("un coeur vert", "une croix verte"; "un", "une", "le", "la", "d'un", "d'une").

Accents are dropped (the course tokenizer splits words at non-ASCII letters): "carre" for *carré*,
"etoile" for *étoile*.
"""

from __future__ import annotations

from mmcourse.data.shapes import COLORS, SHAPES
from mmcourse.data.tokenizer import default_tokenizer

# noun and gender (True: feminine)
SHAPE_NOUNS: dict[str, tuple[str, bool]] = {
    "circle": ("cercle", False),
    "square": ("carre", False),
    "triangle": ("triangle", False),
    "diamond": ("losange", False),
    "star": ("etoile", True),
    "cross": ("croix", True),
    "heart": ("coeur", False),
    "crescent": ("croissant", False),
}
# masculine and feminine forms
COLOR_ADJECTIVES: dict[str, tuple[str, str]] = {
    "red": ("rouge", "rouge"),
    "orange": ("orange", "orange"),
    "yellow": ("jaune", "jaune"),
    "green": ("vert", "verte"),
    "cyan": ("cyan", "cyan"),
    "blue": ("bleu", "bleue"),
    "purple": ("violet", "violette"),
    "pink": ("rose", "rose"),
}
# {un} is the indefinite article, {le} the definite one, {d_un} "d'un"/"d'une", {petit} "petit"/"petite";
# {x} is the noun phrase, "carre rouge"
TEMPLATES: tuple[str, ...] = (
    "{un} {x}",
    "une photo {d_un} {x}",
    "une image {d_un} {x}",
    "un dessin {d_un} {x}",
    "{le} {x}",
    "il y a {un} {x}",
    "{un} {x} sur un fond gris",
    "{un} {petit} {x}",
)


def phrase(color: str, shape: str) -> str:
    """The noun phrase for a class: ``phrase("green", "cross")`` -> ``"croix verte"``."""
    if color not in COLOR_ADJECTIVES or shape not in SHAPE_NOUNS:
        raise ValueError(f"unknown class ({color!r}, {shape!r}); colours: {', '.join(COLORS)}; shapes: {', '.join(SHAPES)}")
    noun, feminine = SHAPE_NOUNS[shape]
    return f"{noun} {COLOR_ADJECTIVES[color][feminine]}"


def prompt(color: str, shape: str, template: str) -> str:
    """One French prompt: ``prompt("green", "cross", TEMPLATES[1])`` -> ``"une photo d'une croix verte"``."""
    feminine = SHAPE_NOUNS[shape][1] if shape in SHAPE_NOUNS else False
    return template.format(x=phrase(color, shape), un="une" if feminine else "un", le="la" if feminine else "le",
                           d_un="d'une" if feminine else "d'un", petit="petite" if feminine else "petit")


def prompts(classes: list[tuple[str, str]], templates: tuple[str, ...] = TEMPLATES) -> list[str]:
    """The C * T prompts, class-major (every template for class 0, then class 1, ...)."""
    return [prompt(c, s, t) for c, s in classes for t in templates]


def _all_words() -> list[str]:
    tok = default_tokenizer()
    words = [w for c in COLORS for s in SHAPES for t in TEMPLATES for w in tok.split(prompt(c, s, t))]
    return list(dict.fromkeys(words))


ALL_WORDS: tuple[str, ...] = tuple(_all_words())
NEW_WORDS: tuple[str, ...] = tuple(w for w in ALL_WORDS if w not in default_tokenizer().stoi)
SHARED_WORDS: tuple[str, ...] = tuple(w for w in ALL_WORDS if w in default_tokenizer().stoi)
