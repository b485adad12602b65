"""Grading results and their reports: the terminal table, JSON and CSV, all made from the same cleaned results.

Student names come from folder names and messages quote what a student's code raised, so both are
untrusted text: :func:`clean` removes terminal escape sequences and every control or format character
(bidirectional overrides included) before anything is printed or written, and CSV cells that a
spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@``) are prefixed with ``'``. Reports are written
atomically (a temporary file renamed into place) and :func:`write_reports` returns each one's sha256, which
the ``grade`` command prints, so a TA can tell later whether a file still holds what was graded.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import tempfile
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path

_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]|\x9b[0-?]*[ -/]*[@-~]")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
STATUSES = ("passed", "failed", "error", "timeout")


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


def clean(text: object, limit: int = 300) -> str:
    """``text`` as one printable line of at most ``limit`` characters: escape sequences and control and
    format characters removed, line breaks and tabs turned into spaces."""
    text = _ESCAPES.sub("", str(text))
    kept = []
    for ch in text:
        category = unicodedata.category(ch)
        if ch in "\n\r\t\v\f" or category in ("Zl", "Zp"):
            kept.append(" ")
        elif category[0] != "C":  # Cc control, Cf format (bidi overrides, zero-width), Cs, Co, Cn
            kept.append(ch)
    line = re.sub(r" {2,}", " ", "".join(kept)).strip()
    return line if len(line) <= limit else line[: limit - 1] + "…"


def csv_safe(value: object) -> object:
    """A CSV cell a spreadsheet shows as text, never runs as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


GRADED_ALONE = ("each exercise is graded alone: while one exercise is judged, every other exercise's function "
                "is the reference solution, so one mistake costs one exercise")


def report_json(results: list[SubmissionResult], sandbox: str | None = None, *, course: dict | None = None,
                seed: int | None = None, shard: dict | None = None) -> str:
    """The JSON report. ``course``: what it was graded against (the package version and a digest per
    notebook, see :func:`mmcourse.grading.shard.course_stamp`); ``seed``: the hidden cases' seed;
    ``shard``: for one part of a sharded run (see :mod:`mmcourse.grading.shard`)."""
    doc: dict = {"rule": GRADED_ALONE}
    if course is not None:
        doc["course"] = course
    if seed is not None:
        doc["seed"] = seed
    if sandbox is not None:
        doc["sandbox"] = sandbox
    if shard is not None:
        doc["shard"] = shard
    doc["submissions"] = [asdict(r) for r in results]
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def report_csv(results: list[SubmissionResult]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["student", "submission", "notebook", "exercise", "status", "points", "max_points", "message"])
    for r in results:
        rows = [[r.student, r.submission, r.notebook or "", "", "error", 0, r.max_score, r.error]] if r.error else []
        rows += [[r.student, r.submission, r.notebook, e.id, e.status, e.points, e.max_points, e.message] for e in r.exercises]
        for row in rows:
            writer.writerow([csv_safe(clean(v, 1000)) if isinstance(v, str) else v for v in row])
    return buf.getvalue()


def table(results: list[SubmissionResult]) -> str:
    """A per-student, per-exercise table for the terminal, exercises in notebook order, then every note in
    full, one line each (only cleaned text reaches it)."""
    order: dict[str, tuple[str, int]] = {}
    for r in results:
        for i, e in enumerate(r.exercises):
            order.setdefault(e.id, (e.id.split(".")[0], i))
    ids = sorted(order, key=order.__getitem__)
    head = ["student", "nb", *ids, "score"]
    rows, notes = [], []
    for r in results:
        by_id = {e.id: e for e in r.exercises}
        cells = [_cell(by_id[i]) if i in by_id else "" for i in ids]
        rows.append([clean(r.student, 40), clean(r.notebook or "-", 10), *cells, f"{r.score}/{r.max_score}"])
        if r.error:
            notes.append(f"{clean(r.student, 40)}: {clean(r.error, 2000)}")
        notes += [f"{clean(r.student, 40)} {e.id} ({e.status}): {clean(e.message, 2000)}"
                  for e in r.exercises if e.status != "passed"]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    fmt = lambda row: "  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip()  # noqa: E731
    lines = [fmt(head), fmt(["-" * w for w in widths]), *map(fmt, rows)]
    if notes:
        lines += ["", "notes (each exercise is graded alone: the others are the reference solutions meanwhile):",
                  *(f"  {n}" for n in notes)]
    return "\n".join(lines)


def _cell(e) -> str:
    return f"{e.points}/{e.max_points}" + ("" if e.status in ("passed", "failed") else f" {e.status}")


def atomic_write(path: Path, text: str) -> str:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``; returns its sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)  # as an ordinary file (mkstemp makes it private)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return hashlib.sha256(data).hexdigest()


def write_reports(results: list[SubmissionResult], json_path: str | Path | None, csv_path: str | Path | None,
                  sandbox: str | None = None, **header) -> list[tuple[Path, str]]:
    """Write the JSON and CSV reports (each if a path is given); returns (path, sha256) for each written.
    ``header``: ``course``, ``seed`` and ``shard`` for the JSON report (see :func:`report_json`)."""
    written = []
    if json_path:
        written.append((Path(json_path), atomic_write(Path(json_path), report_json(results, sandbox, **header))))
    if csv_path:
        written.append((Path(csv_path), atomic_write(Path(csv_path), report_csv(results))))
    return written
