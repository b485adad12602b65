"""The course's data: the generated shapes world, captioned digits, and the shared tokenizer."""

from mmcourse.data.digits import DigitsData, make_digits
from mmcourse.data.shapes import (
    ATTRIBUTES,
    COLORS,
    HELDOUT_COMBOS,
    SHAPES,
    SIZES,
    STYLES,
    ShapesData,
    make_shapes,
)
from mmcourse.data.tokenizer import Tokenizer, default_tokenizer

__all__ = [
    "ATTRIBUTES", "COLORS", "HELDOUT_COMBOS", "SHAPES", "SIZES", "STYLES", "ShapesData", "make_shapes",
    "DigitsData", "make_digits", "Tokenizer", "default_tokenizer",
]
