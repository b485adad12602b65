"""Grading submissions: only the exercise cells come from the student; answers are judged outside the kernel.

For each submitted notebook the grader

1. reads it defensively (empty, not JSON, not a notebook, too large, which course notebook it is);
2. assembles a notebook from the **reference**: its set-up cell, then every exercise cell with the
   student's source (matched by the ``exercise`` metadata), each followed by a *capture cell*;
   nothing else of the submission is used, so edited checks, deleted cells or forged outputs change nothing;
3. runs it in a fresh kernel, one cell at a time, with a timeout per exercise; a timeout or a crashed
   kernel costs only that exercise: the kernel is restarted and grading goes on;
4. the capture cell calls the student's function on **hidden inputs drawn at grading time**, and sends
   the results out of the kernel (``torch.save`` bytes behind a one-time marker); the grader loads them
   with ``weights_only=True`` (no code runs) and compares them with the reference solution in its own
   process, so patching ``mmcourse.check`` or ``torch.allclose`` inside the kernel changes nothing.

Each exercise scores all its points (every hidden case passes) or none.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import os
import re
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import torch

from mmcourse import notebook
from mmcourse.check.core import EXERCISES, AnswerError, Case
from mmcourse.course import Course, Notebook, load_course

MAX_SUBMISSION_BYTES = 20_000_000
MAX_RESULT_BYTES = 50_000_000
SETUP_TIMEOUT = 300  # the reference set-up cell (imports) gets its own, generous limit
STATUSES = ("passed", "failed", "error", "timeout")


class SubmissionError(ValueError):
    """A submission that cannot be graded at all (the message is one line a TA can act on)."""


@dataclass
class ExerciseResult:
    id: str
    points: int
    max_points: int
    status: str  # passed | failed | error | timeout
    message: str


@dataclass
class SubmissionResult:
    submission: str
    student: str
    notebook: str | None
    exercises: list[ExerciseResult] = field(default_factory=list)
    score: int = 0
    max_score: int = 0
    error: str | None = None
    seconds: float = 0.0
    seed: int | None = None

    def finish(self) -> "SubmissionResult":
        self.score = sum(e.points for e in self.exercises)
        self.max_score = sum(e.max_points for e in self.exercises)
        return self


# --------------------------------------------------------------------------------------- reading


def read_submission(path: Path, course: Course) -> tuple[nbformat.NotebookNode, Notebook]:
    """The submitted notebook and which course notebook it answers; SubmissionError if unusable."""
    if not path.is_file():
        raise SubmissionError("not a file")
    size = path.stat().st_size
    if size == 0:
        raise SubmissionError("the file is empty")
    if size > MAX_SUBMISSION_BYTES:
        raise SubmissionError(f"the file is {size / 1e6:.0f} MB, over the {MAX_SUBMISSION_BYTES / 1e6:.0f} MB limit (clear the outputs and resubmit)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise SubmissionError("not a notebook: the file is not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise SubmissionError(f"not a notebook: invalid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("cells"), list):
        raise SubmissionError("not a notebook: no list of cells")
    try:
        nb = nbformat.reads(json.dumps(raw), as_version=4)
    except Exception as err:  # nbformat raises several kinds
        raise SubmissionError(f"not a valid notebook: {str(err).splitlines()[0]}") from None
    return nb, identify(nb, path, course)


def identify(nb: nbformat.NotebookNode, path: Path, course: Course) -> Notebook:
    """Which course notebook a submission answers: release metadata, else its exercise ids, else its file name."""
    meta_id = nb.metadata.get("mmcourse", {}).get("notebook") if isinstance(nb.metadata.get("mmcourse"), dict) else None
    if meta_id:
        try:
            return course.find(str(meta_id))
        except ValueError:
            pass
    ids = {c.metadata.get("exercise") for c in nb.cells if isinstance(c.get("metadata"), dict)} - {None}
    for info in course.notebooks:
        if info.written and ids & {ex["id"] for ex in info.exercises}:
            return info
    match = re.match(r"(\d{2})_", path.name)
    if match:
        try:
            info = course.find(match.group(1))
            if info.written:
                return info
        except ValueError:
            pass
    raise SubmissionError("cannot tell which course notebook this is (no mmcourse metadata, no exercise cells, no NN_ file name)")


# --------------------------------------------------------------------------------------- assembling


@dataclass
class _Plan:
    nb: nbformat.NotebookNode
    setup_index: int
    exercise_cells: dict[str, int]  # id -> index in nb of the student's exercise cell
    capture_cells: dict[str, int]  # id -> index in nb of its capture cell
    cases: dict[str, list[Case]]
    missing: dict[str, str]  # id -> message


def _answer_name(reference: nbformat.NotebookNode, ex_id: str) -> str:
    check_src = reference.cells[notebook.check_cells(reference)[ex_id]].source
    match = re.search(r"""check\.exercise\(\s*["']""" + re.escape(ex_id) + r"""["']\s*,\s*([A-Za-z_][A-Za-z_0-9]*)""", check_src)
    if not match:
        raise ValueError(f"reference check cell for {ex_id} does not call check.exercise({ex_id!r}, name)")
    return match.group(1)


def _capture_source(answer: str, cases: list[Case], nonce: str) -> str:
    buf = io.BytesIO()
    torch.save([(list(c.args), dict(c.kwargs)) for c in cases], buf)
    blob = base64.b64encode(buf.getvalue()).decode()
    # runs in the student's kernel: call the answer on the hidden cases, send the results out
    return f'''def _mmcourse_capture():
    import base64, io, torch
    cases = torch.load(io.BytesIO(base64.b64decode("{blob}")), weights_only=True)
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
    print("MMCOURSE-RESULT {nonce} " + base64.b64encode(buf.getvalue()).decode())
_mmcourse_capture()
'''


def assemble(reference: nbformat.NotebookNode, submission: nbformat.NotebookNode, info: Notebook, seed: int, nonce: str) -> _Plan:
    """The notebook the grader runs: reference set-up cell, student exercise cells, capture cells."""
    setup = next(i for i, c in enumerate(reference.cells) if c.cell_type == "code")
    cells = [copy.deepcopy(reference.cells[setup])]
    submitted: dict[str, list[str]] = {}
    for cell in submission.cells:
        ex_id = cell.get("metadata", {}).get("exercise") if isinstance(cell.get("metadata"), dict) else None
        if ex_id and cell.get("cell_type") == "code":
            source = cell.source if isinstance(cell.source, str) else "".join(cell.source)
            submitted.setdefault(ex_id, []).append(source)
    plan = _Plan(nbformat.v4.new_notebook(metadata=copy.deepcopy(reference.metadata)), 0, {}, {}, {}, {})
    g = torch.Generator().manual_seed(seed)
    for ex in info.exercises:
        ex_id = ex["id"]
        plan.cases[ex_id] = EXERCISES[ex_id].cases(g)
        sources = submitted.get(ex_id, [])
        if not sources:
            plan.missing[ex_id] = "exercise cell missing (deleted, or its 'exercise' metadata was changed)"
            continue
        if len(sources) > 1:
            plan.missing[ex_id] = f"{len(sources)} cells claim to be this exercise; keep exactly one"
            continue
        cells.append(nbformat.v4.new_code_cell(sources[0]))
        plan.exercise_cells[ex_id] = len(cells) - 1
        cells.append(nbformat.v4.new_code_cell(_capture_source(_answer_name(reference, ex_id), plan.cases[ex_id], nonce)))
        plan.capture_cells[ex_id] = len(cells) - 1
    plan.nb.cells = cells
    return plan


# --------------------------------------------------------------------------------------- running


def _run(plan: _Plan, cwd: Path, exercise_timeout: int) -> dict[str, tuple[str, Any]]:
    """Execute the plan cell by cell; per exercise: ("output", text) | ("timeout" | "died" | "error", message).

    A timeout or a dead kernel ends that exercise only: a fresh kernel replays the set-up cell and the
    exercise cells that already ran safely (later answers may call earlier ones), then goes on.
    """
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    outcome: dict[str, tuple[str, Any]] = {}
    owner = {idx: ex_id for cells in (plan.exercise_cells, plan.capture_cells) for ex_id, idx in cells.items()}
    replayable = [plan.setup_index]  # cells a fresh kernel runs again before going on
    setup_cell = plan.nb.cells[plan.setup_index]
    position = 1  # the set-up cell runs first, as part of starting a kernel
    restarts = 0
    while position < len(plan.nb.cells) or restarts == 0:
        client = notebook.client_for(
            plan.nb, cwd=cwd, timeout=exercise_timeout, allow_errors=True, interrupt_on_timeout=False,
            timeout_func=lambda cell: SETUP_TIMEOUT if cell is setup_cell else exercise_timeout,
        )
        restarts += 1
        running = None
        try:
            with client.setup_kernel():
                for idx in replayable:
                    running = idx
                    client.execute_cell(plan.nb.cells[idx], idx)
                    if idx == plan.setup_index and any(o.get("output_type") == "error" for o in plan.nb.cells[idx].outputs):
                        raise RuntimeError("the reference set-up cell failed in the grading kernel")
                while position < len(plan.nb.cells):
                    idx, running = position, position
                    ex_id = owner[idx]
                    if ex_id in outcome:  # its exercise cell already failed
                        position += 1
                        continue
                    cell = plan.nb.cells[idx]
                    try:
                        client.execute_cell(cell, idx)
                    except CellExecutionError:
                        pass
                    position += 1
                    errors = [o for o in cell.outputs if o.get("output_type") == "error"]
                    if idx == plan.capture_cells[ex_id]:
                        outcome[ex_id] = ("output", "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream"))
                    else:  # the student's exercise cell
                        replayable.append(idx)
                        if errors:
                            outcome[ex_id] = ("error", f"your exercise cell raised {errors[0].get('ename')}: {errors[0].get('evalue', '')[:300]}")
            break
        except (CellTimeoutError, DeadKernelError) as err:
            ex_id = owner.get(running)
            if ex_id is None:
                raise RuntimeError("the grading kernel failed while replaying the reference set-up") from err
            if isinstance(err, CellTimeoutError):
                outcome[ex_id] = ("timeout", f"did not finish within {exercise_timeout} s (an endless loop?); later exercises were still graded")
            else:
                outcome[ex_id] = ("died", "the Python kernel died while running your code (os._exit, a crash, or out of memory)")
            position = running + 1
    return outcome


def _judge(ex_id: str, cases: list[Case], payload: str) -> tuple[str, str]:
    blob = base64.b64decode(payload)
    if len(blob) > MAX_RESULT_BYTES:
        return "error", "your function's results are too large to grade"
    try:
        results = torch.load(io.BytesIO(blob), weights_only=True)
    except Exception:
        return "error", "your function returned something that cannot be graded (use tensors, numbers or lists)"
    if len(results) == 1 and len(cases) > 1 and results[0][0] == "error":
        return "error", results[0][1]
    if len(results) != len(cases):
        return "error", "the grader received a wrong number of results"
    ex = EXERCISES[ex_id]
    for case, (kind, value) in zip(cases, results):
        if kind == "not_implemented":
            return "failed", "not implemented yet (the stub still raises NotImplementedError)"
        if kind == "error":
            return "error", f"case '{case.name}': your function raised {value}"
        expected = ex.reference(*case.args, **case.kwargs)
        try:
            ex.compare(value, expected)
        except AnswerError as err:
            return "failed", f"case '{case.name}': {err}"
        except Exception as err:  # a comparison that cannot even run is a wrong answer
            return "failed", f"case '{case.name}': {type(err).__name__}: {err}"
    return "passed", f"all {len(cases)} hidden cases pass"


def grade_submission(path: str | Path, *, course: Course | None = None, seed: int | None = None,
                     exercise_timeout: int = 60, student: str | None = None) -> SubmissionResult:
    """Grade one submitted notebook. Never raises for a bad submission: the result says what went wrong."""
    course = course or load_course()
    path = Path(path)
    seed = secrets.randbits(31) if seed is None else seed
    result = SubmissionResult(str(path), student or path.stem, None, seed=seed)
    start = time.perf_counter()
    try:
        submission, info = read_submission(path, course)
    except SubmissionError as err:
        result.error = str(err)
        result.seconds = time.perf_counter() - start
        return result.finish()
    result.notebook = info.id
    points = {ex["id"]: int(ex["points"]) for ex in info.exercises}
    reference = notebook.read(course.root / info.path)
    nonce = secrets.token_hex(16)
    plan = assemble(reference, submission, info, seed, nonce)
    outcome = _run(plan, course.root / "notebooks", exercise_timeout) if plan.exercise_cells else {}
    marker = re.compile(r"MMCOURSE-RESULT " + nonce + r" ([A-Za-z0-9+/=]+)")
    for ex in info.exercises:
        ex_id = ex["id"]
        if ex_id in plan.missing:
            status, message = "error", plan.missing[ex_id]
        else:
            kind, value = outcome.get(ex_id, ("error", "the exercise was not run"))
            if kind == "timeout":
                status, message = "timeout", value
            elif kind in ("died", "error"):
                status, message = "error", value
            else:
                found = marker.findall(value)
                if len(found) != 1:
                    status, message = "error", "the grader could not read your function's results (was it defined under its original name?)"
                else:
                    status, message = _judge(ex_id, plan.cases[ex_id], found[0])
        result.exercises.append(ExerciseResult(ex_id, points[ex_id] if status == "passed" else 0, points[ex_id], status, message))
    result.seconds = time.perf_counter() - start
    return result.finish()


def collect(paths: list[str | Path]) -> list[tuple[Path, str]]:
    """(submission, student) for every .ipynb named, or found recursively in a named folder.

    In a folder, a submission inside a sub-folder belongs to that sub-folder's name
    (``submissions/alice/01_joint_embeddings.ipynb`` -> alice); otherwise the student is the file's stem.
    """
    found: list[tuple[Path, str]] = []
    for p in map(Path, paths):
        if p.is_dir():
            for q in sorted(p.rglob("*.ipynb")):
                if ".ipynb_checkpoints" in q.parts:
                    continue
                rel = q.relative_to(p)
                found.append((q, rel.parts[0] if len(rel.parts) > 1 else q.stem))
        else:
            found.append((p, p.stem))
    return found


def _grade_one(args: tuple) -> SubmissionResult:
    path, student, seed, timeout, root = args
    return grade_submission(path, course=load_course(root), seed=seed, exercise_timeout=timeout, student=student)


def grade_many(submissions: list[tuple[Path, str]], *, jobs: int = 2, seed: int | None = None,
               exercise_timeout: int = 60) -> list[SubmissionResult]:
    """Grade (path, student) submissions in parallel processes (one kernel each); results in input order."""
    from concurrent.futures import ProcessPoolExecutor

    root = load_course().root
    seed = secrets.randbits(31) if seed is None else seed  # one draw of hidden inputs for the whole batch
    tasks = [(p, s, seed, exercise_timeout, root) for p, s in submissions]
    if jobs <= 1 or len(tasks) <= 1:
        return [_grade_one(t) for t in tasks]
    # spawn, not fork: forking a process that already runs threads (torch, zmq) can deadlock the child
    import multiprocessing

    with ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(_grade_one, tasks))


# --------------------------------------------------------------------------------------- reports


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def report_json(results: list[SubmissionResult]) -> str:
    return json.dumps({"submissions": [asdict(r) for r in results]}, indent=2) + "\n"


def report_csv(results: list[SubmissionResult]) -> str:
    import csv

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["student", "submission", "notebook", "exercise", "status", "points", "max_points", "message"])
    for r in results:
        if r.error:
            writer.writerow([r.student, r.submission, r.notebook or "", "", "error", 0, r.max_score, r.error])
        for e in r.exercises:
            writer.writerow([r.student, r.submission, r.notebook, e.id, e.status, e.points, e.max_points, e.message])
    return buf.getvalue()


def write_reports(results: list[SubmissionResult], json_path: str | Path | None, csv_path: str | Path | None) -> None:
    if json_path:
        atomic_write(Path(json_path), report_json(results))
    if csv_path:
        atomic_write(Path(csv_path), report_csv(results))


def table(results: list[SubmissionResult]) -> str:
    """A per-student, per-exercise table for the terminal."""
    ids = sorted({e.id for r in results for e in r.exercises})
    head = ["student", "nb", *ids, "score", "note"]
    rows = []
    for r in results:
        by_id = {e.id: e for e in r.exercises}
        cells = [f"{by_id[i].points}/{by_id[i].max_points}" + ("" if by_id[i].status in ("passed", "failed") else f" {by_id[i].status}") if i in by_id else "" for i in ids]
        note = r.error or "; ".join(f"{e.id}: {e.message}" for e in r.exercises if e.status != "passed")[:120]
        rows.append([r.student, r.notebook or "-", *cells, f"{r.score}/{r.max_score}", note])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    fmt = lambda row: "  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths]), *map(fmt, rows)])
