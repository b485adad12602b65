"""Exercise checks: ``check.exercise("01.cosine", my_function)`` says what to fix; ``check.hint("01.cosine")`` helps.

Each notebook's exercises are registered by its own module here; the registry is what graders use too.
"""

import importlib as _importlib
import pkgutil as _pkgutil

from mmcourse.check.core import (
    EXERCISES,
    AnswerError,
    Case,
    Exercise,
    exercise,
    hint,
    mode,
    expect_close,
    expect_equal,
    expect_number,
    expect_tensor,
    register,
)

__all__ = [
    "EXERCISES", "AnswerError", "Case", "Exercise", "exercise", "expect_close", "expect_equal", "expect_number",
    "expect_tensor", "hint", "mode", "register",
]

# each notebook's module here registers its exercises when imported (joint_embeddings: 01, clip_loss: 02, ...)
for _module in _pkgutil.iter_modules(__path__):
    if _module.name != "core" and not _module.name.startswith("_"):
        _importlib.import_module(f"{__name__}.{_module.name}")
