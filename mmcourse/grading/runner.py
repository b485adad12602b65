"""Running a submission's exercise cells in grading kernels, bounded in time and in restarts.

The grader runs, in a fresh kernel: the reference set-up cell, then the **reference solution of every
exercise**, then for each exercise k the student's exercise cell, a *capture cell* that calls the student's
function on the hidden cases and prints the results (see :mod:`mmcourse.grading.judge`), and the reference
cell of exercise k again (the reference function of k is removed before the student's cell runs, so an
answer that defines no function gets no credit). So while exercise k is judged, every other exercise's function is the reference
version: each exercise is graded alone, and one mistake (an endless loop, a crash, a wrong answer that a
later exercise calls) costs one exercise.

When a cell kills the kernel or runs out of time, that exercise fails and a fresh kernel runs the set-up
and the reference solutions again, then goes on **after** the failed cell: the position never moves
backwards and no student cell ever runs twice, so restarts are finite; they are capped besides, and the
whole submission has a time limit.
"""

from __future__ import annotations

import base64
import io
import re
import time
from dataclasses import dataclass, field
from typing import Callable

import nbformat

from mmcourse import notebook
from mmcourse.check.core import EXERCISES, Case
from mmcourse.grading.kernel import OUTPUT_LIMIT, CellRun, Kernel
from mmcourse.grading.submission import Answers

SETUP_TIMEOUT = 300  # the reference set-up cell (imports) gets its own, generous limit

# Run before the set-up cell in every grading kernel: matplotlib (about a fifth of a kernel's start-up, and a
# font cache rebuilt in every sandbox's fresh /tmp) is imported on first use instead of by the set-up
# cell's `import matplotlib.pyplot as plt`; grading calls exercise functions, which rarely plot. A cell that
# does use it gets the real module then (any attribute, or importing a submodule, loads it).
LAZY_IMPORTS = """def _mmcourse_lazy_imports():
    import importlib, importlib.machinery, importlib.util, sys, types
    group = ("matplotlib", "matplotlib.pyplot")
    if any(name in sys.modules for name in group):
        return
    top_spec = importlib.util.find_spec("matplotlib")  # found, not imported
    if top_spec is None or not top_spec.submodule_search_locations:
        return
    specs = {"matplotlib": top_spec, "matplotlib.pyplot": importlib.machinery.PathFinder.find_spec(
        "matplotlib.pyplot", list(top_spec.submodule_search_locations))}

    class LazyModule(types.ModuleType):
        def __getattr__(self, attr):  # anything but the spec and file (inspect reads every module's) loads it
            for name in group:
                if isinstance(sys.modules.get(name), LazyModule):
                    del sys.modules[name]
            return getattr(importlib.import_module(self.__name__), attr)

    lazy = {}
    for name in group:
        lazy[name] = LazyModule(name)
        lazy[name].__spec__, lazy[name].__file__ = specs[name], specs[name].origin
    lazy["matplotlib"].pyplot = lazy["matplotlib.pyplot"]
    sys.modules.update(lazy)
_mmcourse_lazy_imports()
del _mmcourse_lazy_imports
"""
JUDGED = ("exercise", "capture")  # the steps that run the student's code


class GradingError(RuntimeError):
    """Grading could not proceed for a reason that is not the student's (the reference set-up failed)."""


@dataclass
class Step:
    """One cell to run: the student's exercise cell, or the capture cell that follows it."""

    ex_id: str
    kind: str  # "forget" (the reference function's name) | "exercise" | "capture" | "restore" (the reference again)
    source: str


@dataclass
class Plan:
    setup: str  # the reference set-up cell
    steps: list[Step]
    cases: dict[str, list[Case]]
    missing: dict[str, str]  # exercise id -> why it cannot be run
    marker: str
    references: str = ""  # every exercise's reference solution, run after the set-up in each kernel
    prelude: str = ""  # the grader's own cell before the set-up (LAZY_IMPORTS)


@dataclass
class Outcome:
    """How an exercise ended in the kernel. ``kind``: output (the capture cell's text) | error | timeout."""

    kind: str
    text: str


@dataclass
class _State:
    plan: Plan
    exercise_timeout: float
    deadline: float
    outcome: dict[str, Outcome] = field(default_factory=dict)
    position: int = 0  # the next step to run; only ever increases
    trace: list[tuple[str, float]] | None = None

    def note(self, what: str, seconds: float) -> None:
        if self.trace is not None:
            self.trace.append((what, seconds))

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def budget(self, limit: float) -> float:
        return max(0.0, min(limit, self.left()))

    def pending(self) -> bool:
        return any(s.ex_id not in self.outcome and s.kind in JUDGED for s in self.plan.steps[self.position:])


# --------------------------------------------------------------------------------------------- assembling


def answer_name(reference: nbformat.NotebookNode, ex_id: str) -> str:
    """The name of the function the reference check cell of ``ex_id`` checks."""
    check_src = reference.cells[notebook.check_cells(reference)[ex_id]].source
    match = re.search(r"""check\.exercise\(\s*["']""" + re.escape(ex_id) + r"""["']\s*,\s*([A-Za-z_][A-Za-z_0-9]*)""", check_src)
    if not match:
        raise ValueError(f"reference check cell for {ex_id} does not call check.exercise({ex_id!r}, name)")
    return match.group(1)


def capture_source(answer: str, cases: list[Case], marker: str) -> str:
    """A cell that calls ``answer`` on ``cases`` in the student's kernel and prints the results."""
    import torch

    buf = io.BytesIO()
    torch.save([(list(c.args), dict(c.kwargs)) for c in cases], buf)
    blob = base64.b64encode(buf.getvalue()).decode()
    # The kernel unpickles the grader's own bytes, written into this cell just now: full unpickling is safe
    # here (a case may hold a module, e.g. 06.gated_xattn's block). What comes back from the kernel is
    # untrusted and is read with weights_only (judge.load_payload).
    return f'''def _mmcourse_capture():
    import base64, io, torch
    cases = torch.load(io.BytesIO(base64.b64decode("{blob}")), weights_only=False)
    results = []
    if "{answer}" not in globals():
        cases, results = [], [("error", "there is no function named {answer}: keep the original name from the exercise cell")]
    for args, kwargs in cases:
        try:
            value = {answer}(*args, **kwargs)
            if isinstance(value, torch.Tensor):
                value = value.detach().cpu()
            results.append(("ok", value))
        except NotImplementedError:
            results.append(("not_implemented", ""))
        except Exception as err:
            results.append(("error", type(err).__name__ + ": " + str(err)[:300]))
    buf = io.BytesIO()
    try:
        torch.save(results, buf)
    except Exception as err:
        buf = io.BytesIO()
        torch.save([("error", "your function returned something that is not a tensor, number or list: " + str(err)[:200])], buf)
    print("MMCOURSE-RESULT {marker} " + base64.b64encode(buf.getvalue()).decode())
_mmcourse_capture()
'''


def assemble(reference: nbformat.NotebookNode, answers: Answers, seed: int, marker: str, *,
             lazy_imports: bool = True) -> Plan:
    """What the grader runs: the reference set-up cell and solutions, then each exercise cell with its
    capture cell and the reference cell again (``lazy_imports``: :data:`LAZY_IMPORTS` first)."""
    import torch

    setup = next(c.source for c in reference.cells if c.cell_type == "code")
    solutions = {ex_id: reference.cells[idx].source for ex_id, idx in notebook.exercise_cells(reference).items()}
    plan = Plan(setup, [], {}, {}, marker, references="\n\n".join(solutions.values()),
                prelude=LAZY_IMPORTS if lazy_imports else "")
    g = torch.Generator().manual_seed(seed)
    for ex in answers.notebook.exercises:
        ex_id = ex["id"]
        plan.cases[ex_id] = EXERCISES[ex_id].cases(g)
        sources = answers.sources.get(ex_id, [])
        if not sources:
            plan.missing[ex_id] = "exercise cell missing (deleted, or its 'exercise' metadata was changed)"
        elif len(sources) > 1:
            plan.missing[ex_id] = f"{len(sources)} cells claim to be this exercise; keep exactly one"
        elif sources[0] is None:
            plan.missing[ex_id] = "the exercise cell has no source text (restore it from the released notebook)"
        else:
            # the student's cell must define the function itself: the reference's is forgotten first
            # (a separate cell, so that a student cell that does not even compile cannot skip it)
            plan.steps.append(Step(ex_id, "forget", f"globals().pop({answer_name(reference, ex_id)!r}, None)"))
            plan.steps.append(Step(ex_id, "exercise", sources[0]))
            plan.steps.append(Step(ex_id, "capture", capture_source(answer_name(reference, ex_id), plan.cases[ex_id], marker)))
            plan.steps.append(Step(ex_id, "restore", solutions[ex_id]))
    return plan


# --------------------------------------------------------------------------------------------- running


def run(plan: Plan, start_kernel: Callable[[], Kernel], *, exercise_timeout: float, total_timeout: float,
        max_starts: int | None = None, trace: list[tuple[str, float]] | None = None) -> dict[str, Outcome]:
    """Run ``plan``; an :class:`Outcome` for every exercise that has steps.

    ``trace``: if given, receives (what, seconds) for every kernel start, cell and kernel shutdown, in
    order (``benchmarks/grading_time.py`` reports where a submission's seconds go).
    """
    state = _State(plan, exercise_timeout, time.monotonic() + total_timeout, trace=trace)
    max_starts = max_starts or 3 * len(plan.cases) + 2  # each start is paid for by a cell that never runs again
    starts = 0
    while state.pending() and state.left() > 0 and starts < max_starts:
        starts += 1
        began = time.perf_counter()
        kernel = start_kernel()
        state.note("kernel start", time.perf_counter() - began)
        with kernel:
            if plan.prelude:
                prelude = kernel.execute(plan.prelude, state.budget(SETUP_TIMEOUT))
                state.note("lazy imports", prelude.seconds)
                if prelude.status != "ok" and state.left() > 0:
                    raise GradingError(f"the grader's prelude failed in the grading kernel ({prelude.status}: "
                                       f"{prelude.error[:200]})")
            setup = kernel.execute(plan.setup, state.budget(SETUP_TIMEOUT))
            state.note("set-up cell", setup.seconds)
            if setup.status != "ok" and state.left() > 0:
                raise GradingError(f"the reference set-up cell failed in the grading kernel "
                                   f"({setup.status}: {setup.error[:200]})")
            if setup.status == "ok" and _define_references(kernel, state):
                _advance(kernel, state)
            began = time.perf_counter()
        state.note("kernel shutdown", time.perf_counter() - began)
    _fail_the_rest(state, starts >= max_starts, total_timeout)
    return state.outcome


def _define_references(kernel: Kernel, state: _State) -> bool:
    """Define every exercise's reference solution in a fresh kernel (False when time ran out)."""
    if not state.plan.references:
        return True
    result = kernel.execute(state.plan.references, state.budget(SETUP_TIMEOUT))
    state.note("reference solutions", result.seconds)
    if result.status == "ok" and not result.flooded:
        return True
    if state.left() <= 0:
        return False
    raise GradingError(f"the reference solutions failed in the grading kernel ({result.status}: {result.error[:200]})")


def _advance(kernel: Kernel, state: _State) -> None:
    """Run the steps from ``state.position`` on, until the end or until a step ends the kernel."""
    steps = state.plan.steps
    while state.position < len(steps):
        idx = state.position
        state.position += 1
        step = steps[idx]
        if step.ex_id in state.outcome and step.kind in JUDGED:  # its exercise cell already failed
            continue
        result = kernel.execute(step.source, state.budget(state.exercise_timeout))
        state.note(f"{step.ex_id} {step.kind}", result.seconds)
        if result.status == "timeout" and state.left() <= 0:
            state.position = idx  # not the cell's fault: the submission's time is up
            return
        if step.kind in JUDGED:  # forgetting or restoring the reference settles nothing about the student
            state.outcome.update(_judge_run(step, result, state.exercise_timeout))
        if result.status in ("died", "timeout"):
            return


def _judge_run(step: Step, result: CellRun, exercise_timeout: float) -> dict[str, Outcome]:
    """The outcome one run of ``step`` settles ({} when an exercise cell ran cleanly)."""
    if result.status == "died":
        return {step.ex_id: Outcome("error", "the Python kernel died while running your code "
                                             "(os._exit, a crash, or out of memory)")}
    if result.flooded:
        return {step.ex_id: Outcome("error", f"your code printed more than {OUTPUT_LIMIT // 1_000_000} MB "
                                             "(or raised an error that long); output is capped, print less")}
    if result.status == "timeout":
        return {step.ex_id: Outcome("timeout", f"did not finish within {exercise_timeout:.0f} s (an endless loop?); "
                                               "later exercises were still graded")}
    if result.status == "error":
        what = "your exercise cell raised" if step.kind == "exercise" else "grading your function failed:"
        return {step.ex_id: Outcome("error", f"{what} {result.error}")}
    if step.kind == "capture":
        return {step.ex_id: Outcome("output", result.text)}
    return {}


def _fail_the_rest(state: _State, too_many_starts: bool, total_timeout: float) -> None:
    for step in state.plan.steps:
        if step.ex_id in state.outcome or step.kind not in JUDGED:
            continue
        if too_many_starts:
            why = Outcome("error", "the grading kernel had to be restarted too often; grading stopped before this exercise")
        else:
            why = Outcome("timeout", f"the submission's time limit ({total_timeout:.0f} s) ran out before this exercise was graded")
        state.outcome[step.ex_id] = why
