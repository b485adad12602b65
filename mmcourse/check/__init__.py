"""Exercise checks: ``check.exercise("01.cosine", my_function)`` says what to fix; ``check.hint("01.cosine")`` helps.

Each notebook's exercises are registered by its own module here; the registry is what graders use too.
"""

from mmcourse.check import clip_loss, diffusion, joint_embeddings  # noqa: F401  (register the exercises of notebooks 01, 02, 08)
from mmcourse.check import zero_shot  # noqa: F401  (register the exercises of notebook 03)
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
