"""The exercise-check machinery, ``mmcourse.check.core``, on toy exercises."""

from __future__ import annotations

import pytest
import torch

from mmcourse.check.core import (
    EXERCISES,
    AnswerError,
    Case,
    Exercise,
    exercise,
    expect_close,
    expect_equal,
    expect_number,
    expect_tensor,
    register,
)


@pytest.fixture
def toy():
    """Register toy exercises under 99.*; they are removed from EXERCISES afterwards."""
    added: list[str] = []

    def add(ex_id: str, reference, cases, *, compare=None, hint: str = "") -> Exercise:
        ex = Exercise(
            id=ex_id,
            title=f"toy {ex_id}",
            cases=cases,
            reference=reference,
            compare=compare or (lambda given, expected: expect_close(given, expected)),
            hint=hint,
        )
        register(ex)
        added.append(ex_id)
        return ex

    yield add
    from mmcourse.check import core

    for ex_id in added:
        EXERCISES.pop(ex_id, None)
        core._failures.pop(ex_id, None)  # each test starts with no failed tries


def _double_cases(g: torch.Generator) -> list[Case]:
    return [
        Case("small", (torch.rand(3, generator=g),)),
        Case("negative", (-1 - torch.rand(2, 4, generator=g),)),
    ]


def _double(x: torch.Tensor) -> torch.Tensor:
    return 2 * x


def _message(fn, *args, **kwargs) -> str:
    with pytest.raises(AnswerError) as info:
        fn(*args, **kwargs)
    return str(info.value)


def test_answer_error_is_an_assertion_error():
    assert issubclass(AnswerError, AssertionError)


# --------------------------------------------------------------------------------------- expect_tensor


def test_expect_tensor_accepts_and_returns_a_good_tensor():
    t = torch.zeros(2, 3)
    assert expect_tensor(t, shape=(2, 3), dtype="float") is t
    assert expect_tensor(torch.zeros(2, dtype=torch.long), dtype="integer") is not None
    assert expect_tensor(torch.zeros(2, dtype=torch.float64), dtype=torch.float64) is not None


@pytest.mark.parametrize("given, typename", [([1.0, 2.0], "list"), (None, "NoneType"), (1.5, "float")])
def test_expect_tensor_not_a_tensor(given, typename):
    msg = _message(expect_tensor, given, name="the logits")
    assert "the logits" in msg and "torch.Tensor" in msg and typename in msg


def test_expect_tensor_wrong_shape_names_both():
    msg = _message(expect_tensor, torch.zeros(3, 2), shape=(2, 3))
    assert "(2, 3)" in msg and "(3, 2)" in msg


@pytest.mark.parametrize(
    "given, dtype, words",
    [
        (torch.zeros(2, dtype=torch.long), "float", ["floating-point", "torch.int64"]),
        (torch.zeros(2), "integer", ["integer", "torch.float32"]),
        (torch.zeros(2, dtype=torch.bool), "integer", ["integer", "torch.bool"]),
        (torch.zeros(2), torch.float64, ["torch.float64", "torch.float32"]),
    ],
)
def test_expect_tensor_wrong_dtype_names_both(given, dtype, words):
    msg = _message(expect_tensor, given, dtype=dtype)
    assert all(w in msg for w in words), msg


@pytest.mark.parametrize("value, kind", [(float("nan"), "NaN"), (float("inf"), "inf"), (float("-inf"), "inf")])
def test_expect_tensor_non_finite_names_kind_and_index(value, kind):
    t = torch.zeros(2, 3)
    t[1, 2] = value
    msg = _message(expect_tensor, t)
    assert kind in msg and "(1, 2)" in msg and "1 of 6" in msg


def test_expect_tensor_checks_finiteness_of_tensors_requiring_grad():
    t = torch.tensor([1.0, float("nan")], requires_grad=True)
    assert "NaN" in _message(expect_tensor, t * 1)


# --------------------------------------------------------------------------------------- expect_close


def test_expect_close_passes_within_tolerance():
    e = torch.tensor([1.0, 2.0, 3.0])
    expect_close(e + 1e-6, e)
    expect_close(e.double(), e)
    expect_close(e + 0.05, e, atol=0.1)


def test_expect_close_wrong_value_names_index_expected_and_given():
    e = torch.arange(6.0).view(2, 3)
    g = e.clone()
    g[1, 0] = 42.0
    msg = _message(expect_close, g, e, name="the similarity")
    assert "the similarity" in msg and "(1, 0)" in msg and "expected 3" in msg and "got 42" in msg
    assert "1 of 6" in msg


def test_expect_close_wrong_shape_and_nan():
    e = torch.zeros(2, 3)
    msg = _message(expect_close, torch.zeros(3, 2), e)
    assert "(2, 3)" in msg and "(3, 2)" in msg
    g = e.clone()
    g[0, 1] = float("nan")
    assert "NaN" in _message(expect_close, g, e)


def test_expect_close_wants_floats_for_float_expectations():
    msg = _message(expect_close, torch.zeros(3, dtype=torch.long), torch.zeros(3))
    assert "floating-point" in msg


# --------------------------------------------------------------------------------------- expect_number / equal


def test_expect_number_accepts_numbers_and_scalar_tensors():
    expect_number(0.5, 0.5)
    expect_number(2, 2.0)
    expect_number(torch.tensor(0.25), 0.25)
    expect_number(torch.tensor([0.25]), 0.25)
    expect_number(0.5 + 1e-8, 0.5)


def test_expect_number_wrong_value_names_both():
    msg = _message(expect_number, 0.75, 0.5, name="Recall@1")
    assert "Recall@1" in msg and "0.5" in msg and "0.75" in msg


@pytest.mark.parametrize(
    "given, words",
    [
        (torch.zeros(3), ["single number", "(3,)"]),
        ("0.5", ["number", "str"]),
        (True, ["number", "bool"]),
        (None, ["number", "NoneType"]),
        (float("nan"), ["NaN"]),
        (torch.tensor(float("nan")), ["NaN"]),
    ],
)
def test_expect_number_bad_input(given, words):
    msg = _message(expect_number, given, 0.5)
    assert all(w in msg for w in words), msg


def test_expect_equal():
    e = torch.tensor([[0, 1, 2], [3, 4, 5]])
    expect_equal(e.clone(), e)
    g = e.clone()
    g[0, 2] = 7
    msg = _message(expect_equal, g, e, name="the indices")
    assert "the indices" in msg and "(0, 2)" in msg and "expected 2" in msg and "got 7" in msg
    assert "integer" in _message(expect_equal, e.float(), e)
    assert "(2, 3)" in _message(expect_equal, e.T, e)


# --------------------------------------------------------------------------------------- exercise()


def test_correct_answer_passes(toy, capsys):
    toy("99.toy_double", _double, _double_cases)
    assert exercise("99.toy_double", lambda x: x + x) is None
    out = capsys.readouterr().out
    assert "99.toy_double" in out and "2 cases pass" in out


def test_quiet_prints_nothing(toy, capsys):
    toy("99.toy_double", _double, _double_cases)
    assert exercise("99.toy_double", _double, quiet=True) is None
    assert capsys.readouterr().out == ""


def test_wrong_answer_names_the_case(toy):
    toy("99.toy_double", _double, _double_cases, hint="multiply by two")
    msg = _message(exercise, "99.toy_double", lambda x: 3 * x)
    assert "99.toy_double" in msg and "case 'small'" in msg and "wrong values" in msg
    assert "multiply by two" not in msg and "check.hint('99.toy_double')" in msg, "the hint comes on request"
    # right on the first case, wrong on the second
    msg = _message(exercise, "99.toy_double", lambda x: 2 * x.clamp(min=0))
    assert "case 'negative'" in msg and "case 'small'" not in msg


def test_wrong_shape_names_the_case(toy):
    toy("99.toy_double", _double, _double_cases)
    msg = _message(exercise, "99.toy_double", lambda x: (2 * x).flatten()[:1])
    assert "case 'small'" in msg and "shape" in msg


def test_not_implemented_stub(toy):
    toy("99.toy_double", _double, _double_cases)

    def stub(x):
        raise NotImplementedError

    msg = _message(exercise, "99.toy_double", stub)
    assert "not implemented" in msg and "99.toy_double" in msg


@pytest.mark.parametrize(
    "exc, text",
    [(ZeroDivisionError("division by zero"), "ZeroDivisionError: division by zero"), (KeyError("k"), "KeyError")],
)
def test_crash_becomes_an_answer_error(toy, exc, text):
    toy("99.toy_double", _double, _double_cases)

    def crashes(x):
        raise exc

    msg = _message(exercise, "99.toy_double", crashes)
    assert text in msg and "case 'small'" in msg and "raised" in msg


def test_not_callable_answer(toy):
    toy("99.toy_double", _double, _double_cases)
    msg = _message(exercise, "99.toy_double", torch.zeros(3))
    assert "pass your function itself" in msg and "Tensor" in msg


def test_inputs_are_copied_for_the_student(toy):
    toy("99.toy_double", _double, _double_cases)

    def in_place(x):
        return x.mul_(2)

    assert exercise("99.toy_double", in_place, quiet=True) is None


def test_reference_does_not_see_the_students_mutation(toy):
    seen = []

    def reference(x):
        seen.append(x.clone())
        return x.sum()

    def student(x):
        out = x.sum()
        x.zero_()
        return out

    toy("99.toy_sum", reference, lambda g: [Case("a", (torch.ones(3),)), Case("b", (torch.ones(2),))],
        compare=lambda given, expected: expect_number(given, float(expected)))
    assert exercise("99.toy_sum", student, quiet=True) is None
    assert all(torch.equal(s, torch.ones_like(s)) for s in seen)


def test_kwargs_are_passed(toy):
    toy("99.toy_scale", lambda x, *, scale: x * scale,
        lambda g: [Case("scaled", (torch.ones(2),), {"scale": 3.0})])
    assert exercise("99.toy_scale", lambda x, *, scale: scale * x, quiet=True) is None
    assert "case 'scaled'" in _message(exercise, "99.toy_scale", lambda x, *, scale: x)


def test_cases_are_drawn_from_the_seed(toy):
    drawn: list[torch.Tensor] = []

    def cases(g):
        x = torch.rand(4, generator=g)
        drawn.append(x)
        return [Case("random", (x,))]

    toy("99.toy_seeded", _double, cases)
    exercise("99.toy_seeded", _double, quiet=True)
    exercise("99.toy_seeded", _double, quiet=True)
    exercise("99.toy_seeded", _double, seed=1, quiet=True)
    assert torch.equal(drawn[0], drawn[1]) and not torch.equal(drawn[0], drawn[2])


def test_unknown_exercise_lists_known_ones(toy):
    toy("99.toy_double", _double, _double_cases)
    with pytest.raises(KeyError) as info:
        exercise("99.nope", _double)
    assert "99.nope" in str(info.value) and "99.toy_double" in str(info.value)


def test_register_twice_is_an_error(toy):
    ex = toy("99.toy_double", _double, _double_cases)
    with pytest.raises(ValueError, match="twice"):
        register(ex)
    assert EXERCISES["99.toy_double"] is ex


def test_fixture_cleans_up():
    assert not [k for k in EXERCISES if k.startswith("99.")]


# ------------------------------------------------------------------------------ hints and modes


def test_the_hint_comes_on_request_or_after_repeated_failures(toy, capsys):
    from mmcourse.check.core import HINT_AFTER, hint

    toy("99.toy_double", _double, _double_cases, hint="multiply by two")
    hint("99.toy_double")
    assert "multiply by two" in capsys.readouterr().out
    messages = [_message(exercise, "99.toy_double", lambda x: 3 * x) for _ in range(HINT_AFTER)]
    assert all("multiply by two" not in m for m in messages[:-1])
    assert f"Hint (after {HINT_AFTER} tries): multiply by two" in messages[-1]
    with pytest.raises(KeyError, match="no exercise"):
        hint("99.nothing")


def test_a_stub_is_not_counted_as_a_try(toy):
    from mmcourse.check.core import HINT_AFTER

    toy("99.toy_double", _double, _double_cases, hint="multiply by two")

    def stub(x):
        raise NotImplementedError

    for _ in range(HINT_AFTER + 1):
        msg = _message(exercise, "99.toy_double", stub)
        assert "not implemented yet" in msg and "multiply by two" not in msg


def test_show_mode_marks_the_failure_and_lets_the_notebook_go_on(toy, monkeypatch, capsys):
    """A student's notebook: no exception, the message in place (plain text outside a kernel)."""
    toy("99.toy_double", _double, _double_cases)
    monkeypatch.setenv("MMCOURSE_CHECKS", "show")
    assert exercise("99.toy_double", lambda x: 3 * x) is None
    err = capsys.readouterr().err
    assert "\u2717 Exercise 99.toy_double" in err and "case 'small'" in err and "notebook goes on" in err

    def stub(x):
        raise NotImplementedError

    assert exercise("99.toy_double", stub) is None
    assert "\u25cb Exercise 99.toy_double" in capsys.readouterr().err
    monkeypatch.setenv("MMCOURSE_CHECKS", "loud")
    with pytest.raises(ValueError, match="MMCOURSE_CHECKS must be one of show, raise"):
        exercise("99.toy_double", lambda x: 3 * x)


def test_a_raised_failure_shows_the_message_without_a_traceback(toy):
    toy("99.toy_double", _double, _double_cases)
    with pytest.raises(AnswerError) as info:
        exercise("99.toy_double", lambda x: 3 * x)
    rendered = info.value._render_traceback_()
    assert rendered == [f"AnswerError: {info.value}"] and "core.py" not in "".join(rendered)
