"""The machinery behind the exercise checks: hidden cases, a reference answer, helpful messages.

An :class:`Exercise` knows how to draw its test cases, the reference solution and how to compare
an answer with it. ``exercise(id, answer)`` runs the student's function on every case; a wrong
answer gets a message that says which case failed, what was expected and what came instead, never
the code. What happens then depends on who runs the notebook (``MMCOURSE_CHECKS``):

* ``show`` (the default, a student's notebook): the message appears in a red box in place and the
  notebook goes on, so "Run All" shows the whole lesson with each unsolved exercise marked;
* ``raise`` (the test suite, nbval, ``mmcourse run``): :class:`AnswerError` is raised (an
  ``AssertionError``, so nbval marks the cell as failed), its traceback shown as the message alone.

Hints come in two steps: ``hint(id)`` on request, or appended by itself once the same exercise has
failed ``HINT_AFTER`` times in this kernel.
"""

from __future__ import annotations

import html
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

Tensor = torch.Tensor


MODES = ("show", "raise")
HINT_AFTER = 3  # failures of one exercise in one kernel before its hint is shown unasked
_failures: dict[str, int] = {}


class AnswerError(AssertionError):
    """A wrong (or missing) answer to an exercise; the message says what to fix."""

    def _render_traceback_(self) -> list[str]:
        """IPython shows this instead of a traceback: the message alone, no package internals."""
        return [f"{type(self).__name__}: {self}"]


def mode() -> str:
    """What a failing check does: ``MMCOURSE_CHECKS`` = ``show`` (default) or ``raise``."""
    value = os.environ.get("MMCOURSE_CHECKS", "show").strip().lower() or "show"
    if value not in MODES:
        raise ValueError(f"MMCOURSE_CHECKS must be one of {', '.join(MODES)}, not {value!r}")
    return value


@dataclass(frozen=True)
class Case:
    """One hidden test input. ``name`` is shown to the student when the case fails."""

    name: str
    args: tuple
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Exercise:
    id: str
    title: str
    cases: Callable[[torch.Generator], list[Case]]
    reference: Callable[..., Any]
    compare: Callable[[Any, Any], None]  # raises AnswerError (without the case prefix)
    hint: str = ""


EXERCISES: dict[str, Exercise] = {}


def register(ex: Exercise) -> Exercise:
    if ex.id in EXERCISES:
        raise ValueError(f"exercise {ex.id!r} registered twice")
    EXERCISES[ex.id] = ex
    return ex


def _clone(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.clone()
    if isinstance(value, (list, tuple)):
        return type(value)(_clone(v) for v in value)
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    return value


def exercise(exercise_id: str, answer: Callable[..., Any], *, seed: int = 0, quiet: bool = False) -> None:
    """Check ``answer`` (the student's function) against exercise ``exercise_id``.

    On the first failing case: raise :class:`AnswerError` (mode ``raise``) or show the message in
    place (mode ``show``); when every case passes, print how many did.
    """
    ex = _find(exercise_id)
    label = f"Exercise {ex.id} ({ex.title})"
    try:
        count = _run_cases(ex, label, answer, seed)
    except _NotAttempted as missing:
        _fail(ex, str(missing), attempted=False)
        return None
    except AnswerError as err:
        _fail(ex, str(err), attempted=True)
        return None
    if not quiet:
        print(f"\u2713 {label}: all {count} cases pass")
    return None


def hint(exercise_id: str) -> None:
    """Print the hint of exercise ``exercise_id`` (the recipe-like help a failing check holds back)."""
    ex = _find(exercise_id)
    print(f"Hint for {ex.id} ({ex.title}): {ex.hint}" if ex.hint else f"{ex.id} has no hint: read its failure message.")


class _NotAttempted(AnswerError):
    """The stub still raises NotImplementedError."""


def _find(exercise_id: str) -> Exercise:
    if exercise_id not in EXERCISES:
        known = ", ".join(sorted(EXERCISES))
        raise KeyError(f"no exercise {exercise_id!r}; known exercises: {known}")
    return EXERCISES[exercise_id]


def _run_cases(ex: Exercise, label: str, answer: Callable[..., Any], seed: int) -> int:
    """Run every case; raise AnswerError (without the hint) at the first wrong one."""
    if not callable(answer):
        raise AnswerError(f"{label}: pass your function itself, not {type(answer).__name__} (no parentheses after its name)")
    cases = ex.cases(torch.Generator().manual_seed(seed))
    for case in cases:
        expected = ex.reference(*_clone(case.args), **_clone(case.kwargs))
        try:
            given = answer(*_clone(case.args), **_clone(case.kwargs))
        except NotImplementedError:
            raise _NotAttempted(
                f"{label}: not implemented yet. Replace `raise NotImplementedError` in the exercise cell with your code."
            ) from None
        except Exception as err:  # a crash is a wrong answer, with the crash as the message
            raise AnswerError(f"{label}, case '{case.name}': your function raised {type(err).__name__}: {err}") from None
        try:
            ex.compare(given, expected)
        except AnswerError as err:
            raise AnswerError(f"{label}, case '{case.name}': {err}") from None
    return len(cases)


def _fail(ex: Exercise, message: str, *, attempted: bool) -> None:
    """Count the failure, add the hint once it is due, then raise or show."""
    if attempted:
        _failures[ex.id] = _failures.get(ex.id, 0) + 1
        if ex.hint and _failures[ex.id] >= HINT_AFTER:
            message += f"\nHint (after {_failures[ex.id]} tries): {ex.hint}"
        elif ex.hint:
            message += f"\nStuck? check.hint({ex.id!r}) gives a hint."
    if mode() == "raise":
        raise (AnswerError if attempted else _NotAttempted)(message) from None
    _show(message, attempted=attempted)


def _show(message: str, *, attempted: bool) -> None:
    """A red box (wrong answer) or an amber one (not attempted yet) in the notebook; plain text elsewhere."""
    mark = "\u2717" if attempted else "\u25cb"
    text = f"{mark} {message}\n(The notebook goes on; fix the exercise cell above and run this check again.)"
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is None or not getattr(shell, "kernel", None):
        print(text, file=sys.stderr)
        return
    from IPython.display import display  # an IPython kernel is running: IPython is already imported

    colour, border = ("#fdecea", "#d93025") if attempted else ("#fff8e1", "#f9a825")
    box = (f'<div class="mmcourse-check mmcourse-check-{"failed" if attempted else "todo"}" style="background:{colour};'
           f'border-left:6px solid {border};padding:8px 12px;margin:4px 0;white-space:pre-wrap;font-family:monospace">'
           f"{html.escape(text)}</div>")
    display({"text/html": box, "text/plain": text}, raw=True)


# --------------------------------------------------------------------------------------- comparisons


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def expect_tensor(
    given: Any, *, name: str = "the result", shape: tuple[int, ...] | None = None, dtype: str | torch.dtype | None = None
) -> Tensor:
    """``given`` as a tensor with the expected shape and dtype kind, finite; else :class:`AnswerError`.

    ``dtype`` is a ``torch.dtype`` or one of ``"float"`` (any floating point) and ``"integer"``.
    """
    if not isinstance(given, Tensor):
        raise AnswerError(f"{name} should be a torch.Tensor, got {type(given).__name__}")
    if shape is not None and _shape(given) != tuple(shape):
        raise AnswerError(f"{name} should have shape {tuple(shape)}, got {_shape(given)}")
    if dtype == "float" and not given.is_floating_point():
        raise AnswerError(f"{name} should be a floating-point tensor, got dtype {given.dtype}")
    if dtype == "integer" and (given.is_floating_point() or given.is_complex() or given.dtype == torch.bool):
        raise AnswerError(f"{name} should be an integer tensor (e.g. torch.long), got dtype {given.dtype}")
    if isinstance(dtype, torch.dtype) and given.dtype != dtype:
        raise AnswerError(f"{name} should have dtype {dtype}, got {given.dtype}")
    if given.is_floating_point():
        bad = ~torch.isfinite(given.detach())
        if bad.any():
            where = tuple(bad.nonzero()[0].tolist())
            kind = "NaN" if torch.isnan(given.detach()).any() else "inf"
            raise AnswerError(f"{name} contains {kind} ({int(bad.sum())} of {given.numel()} entries, first at index {where})")
    return given


def expect_close(given: Any, expected: Tensor, *, name: str = "the result", atol: float = 1e-5, rtol: float = 1e-4) -> None:
    """Same shape as ``expected``, finite, and equal within ``atol + rtol * |expected|``."""
    given = expect_tensor(given, name=name, shape=_shape(expected), dtype="float" if expected.is_floating_point() else None)
    g, e = given.detach().double().cpu(), expected.detach().double().cpu()
    err = (g - e).abs()
    bad = err > atol + rtol * e.abs()
    if bad.any():
        where = tuple(bad.nonzero()[0].tolist())
        raise AnswerError(
            f"{name} has wrong values: at index {where} expected {e[where].item():.6g}, got {g[where].item():.6g} "
            f"({int(bad.sum())} of {e.numel()} entries off; largest difference {err.max().item():.3g})"
        )


def expect_number(given: Any, expected: float, *, name: str = "the result", atol: float = 1e-6) -> None:
    """A Python number (or 0-d tensor) within ``atol`` of ``expected``."""
    given = as_number(given, name)
    if abs(given - expected) > atol:
        raise AnswerError(f"{name} should be {expected:.6g}, got {given:.6g}")


def expect_equal(given: Any, expected: Tensor, *, name: str = "the result") -> None:
    """An integer tensor equal to ``expected`` entry for entry."""
    given = expect_tensor(given, name=name, shape=_shape(expected), dtype="integer")
    bad = given.cpu() != expected.cpu()
    if bad.any():
        where = tuple(bad.nonzero()[0].tolist())
        raise AnswerError(
            f"{name} differs at index {where}: expected {expected[where].item()}, got {given[where].item()} "
            f"({int(bad.sum())} of {expected.numel()} entries differ)"
        )


# ------------------------------------------------------------------------------ typical mistakes

# A reference may record, for the case being judged, what each typical mistake would return on it; a
# ``compare`` function reads them back to name the mistake an answer matches. They are used only for
# the very object the reference returned, so a stale record is never used.
_LAST_REFERENCE: dict[str, Any] = {"expected": None, "mistakes": {}, "context": {}}


def remember(expected: Any, mistakes: dict[str, Callable[[], Any]] | None = None, **context: Any) -> Any:
    """Record ``mistakes`` (why -> a function computing that mistake's result) for ``expected``; returns it."""
    _LAST_REFERENCE.update(expected=expected, mistakes=mistakes or {}, context=context)
    return expected


def diagnosis(expected: Any) -> tuple[dict[str, Callable[[], Any]], dict[str, Any]]:
    """The (mistakes, context) recorded with ``expected`` by ``remember`` (empty for any other object)."""
    if _LAST_REFERENCE["expected"] is expected:
        return _LAST_REFERENCE["mistakes"], _LAST_REFERENCE["context"]
    return {}, {}


def as_number(given: Any, name: str) -> float:
    """``given`` (a Python number or a one-element tensor) as a finite float; else :class:`AnswerError`."""
    if isinstance(given, Tensor):
        if given.numel() != 1:
            raise AnswerError(f"{name} should be a single number, got a tensor of shape {tuple(given.shape)}")
        given = given.item()
    if isinstance(given, bool) or not isinstance(given, (int, float)):
        raise AnswerError(f"{name} should be a number, got {type(given).__name__}")
    if not math.isfinite(given):
        raise AnswerError(f"{name} is {'NaN' if given != given else given} (it should be a finite number)")
    return float(given)


def close(a: Tensor, b: Tensor, atol: float, rtol: float) -> bool:
    """Same shape, ``a`` finite, and ``|a - b| <= atol + rtol * |b|`` everywhere (compared in float64)."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return a.shape == b.shape and bool(torch.isfinite(a).all()) and bool(((a - b).abs() <= atol + rtol * b.abs()).all())


def judge_close(given: Any, expected: Tensor, name: str, *, atol: float = 1e-5, rtol: float = 1e-4) -> None:
    """Pass when ``given`` is a float tensor within tolerance of ``expected``; else name the typical mistake
    it matches (recorded by the reference with :func:`remember`), or say where it differs (expected vs given)."""
    given = expect_tensor(given, name=name, shape=tuple(expected.shape), dtype="float")
    if close(given, expected, atol, rtol):
        return
    g, e = given.detach().double().cpu(), expected.detach().double().cpu()
    err = (g - e).abs()
    bad = err > atol + rtol * e.abs()
    where = tuple(bad.nonzero()[0].tolist())
    shown = (f"at index {where} expected {e[where].item():.6g}, got {g[where].item():.6g} "
             f"({int(bad.sum())} of {e.numel()} entries off; largest difference {err.max().item():.3g})")
    for why, wrong in diagnosis(expected)[0].items():
        value = wrong()
        if close(given, value, atol, rtol) and not close(value, expected, atol, rtol):
            raise AnswerError(f"{name} has wrong values: {why} ({shown})")
    raise AnswerError(f"{name} has wrong values: {shown}")
