"""Grading submissions: only the exercise cells come from the student, they run sandboxed, answers are judged outside.

A batch (:func:`grade_many`, the ``grade`` command) goes

1. **read first**: every submission is read into memory (:mod:`~mmcourse.grading.submission`) before any
   student code runs, and the sandbox policy is settled and proven once (:mod:`~mmcourse.grading.sandbox`);
2. per submission, in a worker process: parse it as untrusted data; run the reference set-up cell, the
   student's exercise cells and a capture cell per exercise in a fresh kernel inside the sandbox
   (:mod:`~mmcourse.grading.runner`, :mod:`~mmcourse.grading.kernel`); the capture cell calls the student's
   function on hidden inputs drawn at grading time, and the grader judges the results against the reference
   solution in its own process (:mod:`~mmcourse.grading.judge`), so patching ``mmcourse.check`` or
   ``torch.allclose`` in the kernel changes nothing; nothing else of the submission is used, so edited
   checks, deleted cells or forged outputs change nothing either;
3. **write last**: once every kernel and every process it started is gone, the reports are written
   atomically, each with its sha256 (:mod:`~mmcourse.grading.report`).

Each exercise scores all its points (every hidden case passes) or none. Every failure belongs to one
student: a malformed file, results of the wrong structure, even an internal error gives that student 0 with
a one-line reason, and the rest of the batch is graded.
"""

from __future__ import annotations

import secrets
import sys
import time
from pathlib import Path

from mmcourse import notebook
from mmcourse.course import Course, load_course
from mmcourse.grading.judge import judge_output
from mmcourse.grading.kernel import Kernel, KernelStartError, runtime_base
from mmcourse.grading.report import (
    STATUSES, ExerciseResult, SubmissionResult, atomic_write, clean, report_csv, report_json, table, write_reports,
)
from mmcourse.grading.runner import GradingError, Outcome, Plan, assemble, run
from mmcourse.grading.sandbox import Policy, resolve
from mmcourse.grading.submission import (
    MAX_SUBMISSION_BYTES, Submission, SubmissionError, collect, parse, read, read_all,
)

__all__ = [  # the grading API in one place (the command line and the tests use these)
    "MAX_SUBMISSION_BYTES", "STATUSES", "ExerciseResult", "Submission", "SubmissionError", "SubmissionResult",
    "atomic_write", "collect", "grade_many", "grade_one", "grade_submission", "report_csv", "report_json", "table",
    "write_reports",
]

TOTAL_TIMEOUT_FACTOR = 10  # a submission may take at most this many exercise time limits in all


# ------------------------------------------------------------------------------------------------ one


def grade_submission(path: str | Path, *, course: Course | None = None, seed: int | None = None,
                     exercise_timeout: int = 60, total_timeout: float | None = None, student: str | None = None,
                     sandbox: str | Policy | None = None) -> SubmissionResult:
    """Grade one submitted notebook. Never raises for a bad submission: the result says what went wrong.

    ``sandbox``: a mode (auto | required | off; None reads ``MMCOURSE_SANDBOX``) or a resolved policy.
    """
    path = Path(path)
    policy = sandbox if isinstance(sandbox, Policy) else _policy(sandbox, [path.parent])
    submission = read(path, student or path.stem)
    seed = secrets.randbits(31) if seed is None else seed
    return grade_one(submission, course=course or load_course(), seed=seed, exercise_timeout=exercise_timeout,
                     total_timeout=total_timeout, policy=policy)


def grade_one(sub: Submission, *, course: Course, seed: int, exercise_timeout: float, total_timeout: float | None,
              policy: Policy) -> SubmissionResult:
    """Grade a submission already read into memory; every failure becomes this student's 0 with a reason."""
    result = SubmissionResult(clean(sub.path, 500), clean(sub.student, 100), None, seed=seed)
    start = time.perf_counter()
    try:
        total = total_timeout or TOTAL_TIMEOUT_FACTOR * exercise_timeout
        _grade_into(result, sub, course, seed, exercise_timeout, total, policy)
    except Exception as err:  # noqa: BLE001 (a batch never aborts)
        result.exercises = []
        result.error = clean(_reason(err))
    result.seconds = time.perf_counter() - start
    return result.finish()


def _reason(err: Exception) -> str:
    if isinstance(err, SubmissionError):
        return str(err)
    if isinstance(err, KernelStartError):
        return f"not graded: {err} (a problem of the grading machine; grade this submission again)"
    if isinstance(err, GradingError):
        return f"not graded: {err}"
    return f"not graded: internal error ({type(err).__name__}: {err}); the rest of the batch was graded"


def _grade_into(result: SubmissionResult, sub: Submission, course: Course, seed: int, exercise_timeout: float,
                total_timeout: float, policy: Policy) -> None:
    if sub.error or sub.data is None:
        raise SubmissionError(sub.error or "not read")
    answers = parse(sub.data, Path(sub.path).name, course)
    result.notebook = answers.notebook.id
    reference = notebook.read(course.root / answers.notebook.path)
    plan = assemble(reference, answers, seed, secrets.token_hex(16))
    base = runtime_base(policy)
    outcome = run(plan, lambda: Kernel(policy, base), exercise_timeout=exercise_timeout,
                  total_timeout=total_timeout) if plan.steps else {}
    for ex in answers.notebook.exercises:
        status, message = _exercise_status(ex["id"], plan, outcome)
        points = int(ex["points"])
        result.exercises.append(ExerciseResult(ex["id"], points if status == "passed" else 0, points, status, clean(message)))


def _exercise_status(ex_id: str, plan: Plan, outcome: dict[str, Outcome]) -> tuple[str, str]:
    if ex_id in plan.missing:
        return "error", plan.missing[ex_id]
    got = outcome.get(ex_id, Outcome("error", "the exercise was not run"))
    if got.kind == "output":
        return judge_output(ex_id, plan.cases[ex_id], got.text, plan.marker)
    return ("timeout" if got.kind == "timeout" else "error"), got.text


# ------------------------------------------------------------------------------------------------ many


def _policy(mode: str | None, hide: list[str | Path]) -> Policy:
    policy = resolve(mode, hide=hide)
    if policy.note.startswith("WARNING"):
        print(policy.note, file=sys.stderr)
    return policy


def _grade_task(args: tuple) -> SubmissionResult:
    sub, seed, exercise_timeout, total_timeout, policy, root = args
    return grade_one(sub, course=load_course(root), seed=seed, exercise_timeout=exercise_timeout,
                     total_timeout=total_timeout, policy=policy)


def grade_many(submissions: list[tuple[Path, str]], *, jobs: int = 2, seed: int | None = None,
               exercise_timeout: int = 60, total_timeout: float | None = None, sandbox: str | Policy | None = None,
               hide: list[str | Path] | None = None) -> list[SubmissionResult]:
    """Grade (path, student) submissions, ``jobs`` at a time (one kernel each); results in input order.

    Every file is read before any student code runs; the call returns once every kernel is gone.
    ``hide``: paths the kernels must not see (default: the submissions' folders); ``sandbox`` as in
    :func:`grade_submission`.
    """
    hide = [Path(p).parent for p, _ in submissions] if hide is None else hide
    policy = sandbox if isinstance(sandbox, Policy) else _policy(sandbox, hide)
    subs = read_all(submissions)  # read first
    root = load_course().root
    seed = secrets.randbits(31) if seed is None else seed  # one draw of hidden inputs for the whole batch
    tasks = [(sub, seed, exercise_timeout, total_timeout, policy, root) for sub in subs]
    if jobs <= 1 or len(tasks) <= 1:
        return [_grade_task(t) for t in tasks]
    return _in_workers(tasks, jobs)


def _in_workers(tasks: list[tuple], jobs: int) -> list[SubmissionResult]:
    """Grade in worker processes; a worker that crashes costs only the submissions it held, which are
    graded again one by one in fresh processes."""
    from concurrent.futures.process import BrokenProcessPool

    results: dict[int, SubmissionResult] = {}
    broken: list[int] = []
    with _pool(min(jobs, len(tasks))) as pool:
        futures = {i: pool.submit(_grade_task, t) for i, t in enumerate(tasks)}
        for i, future in futures.items():
            try:
                results[i] = future.result()
            except BrokenProcessPool:
                broken.append(i)
            except Exception as err:  # noqa: BLE001
                results[i] = _crashed(tasks[i], err)
    for i in broken:
        with _pool(1) as pool:
            try:
                results[i] = pool.submit(_grade_task, tasks[i]).result()
            except Exception as err:  # noqa: BLE001
                results[i] = _crashed(tasks[i], err)
    return [results[i] for i in range(len(tasks))]


def _pool(workers: int):
    # spawn, not fork: forking a process that already runs threads (torch, zmq) can deadlock the child
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


def _crashed(task: tuple, err: Exception) -> SubmissionResult:
    sub, seed = task[0], task[1]
    reason = "the grading process crashed" if type(err).__name__ == "BrokenProcessPool" else f"{type(err).__name__}: {err}"
    return SubmissionResult(clean(sub.path, 500), clean(sub.student, 100), None, seed=seed,
                            error=clean(f"not graded: internal error ({reason}); the rest of the batch was graded")).finish()
