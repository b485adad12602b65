"""Grading treats everything from a student as untrusted data (no kernel started here: these tests are fast).

Payloads of the wrong structure, malformed notebooks, symbolic links, control characters and formula
cells each cost one student at most; replays never move backwards and restarts are bounded.
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from mmcourse.check.core import EXERCISES
from mmcourse.course import load_course
from mmcourse.grading import grade, judge, report, runner, sandbox, submission
from mmcourse.grading.kernel import CellRun, _Output

COURSE = load_course()


def _consistent_notebook():
    """The first written notebook with two or more exercises, all registered and with check cells."""
    from mmcourse import notebook

    for info in COURSE.notebooks:
        ids = [ex["id"] for ex in info.exercises]
        if info.written and len(ids) >= 2 and all(i in EXERCISES for i in ids):
            checks = notebook.check_cells(notebook.read(COURSE.root / info.path))
            if all(i in checks for i in ids):
                return info
    raise AssertionError("no written notebook with two consistent exercises")


NB = _consistent_notebook()
EX_ID, EX2_ID = NB.exercises[0]["id"], NB.exercises[1]["id"]
NB_FILE = f"{NB.id}_{NB.slug}.ipynb"
CASES = EXERCISES[EX_ID].cases(torch.Generator().manual_seed(0))


def _payload(obj) -> str:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return base64.b64encode(buf.getvalue()).decode()


def _nb(cells, metadata=None) -> bytes:
    return json.dumps({"cells": cells, "metadata": metadata or {}, "nbformat": 4, "nbformat_minor": 4}).encode()


def _code(source, **meta):
    return {"cell_type": "code", "source": source, "metadata": meta, "outputs": [], "execution_count": None}


# ------------------------------------------------------------------------------------------------ payloads

REFERENCE = [("ok", EXERCISES[EX_ID].reference(*c.args, **c.kwargs)) for c in CASES]


@pytest.mark.parametrize("payload, expected", [
    (_payload(REFERENCE), "passed"),
    (_payload(5), "wrong structure"),
    (_payload([("ok", 1.0)] * (len(CASES) + 1)), "wrong structure"),
    (_payload([("ok", 1.0)] * (len(CASES) - 1)), "wrong number"),
    (_payload([("pwned", 1.0)] * len(CASES)), "wrong structure"),
    (_payload([(torch.tensor(1), 1.0)] * len(CASES)), "wrong structure"),
    (_payload([("error", torch.zeros(3))] * len(CASES)), "wrong structure"),
    (_payload({"a": 1}), "wrong structure"),
    (_payload([["ok"]] * len(CASES)), "wrong structure"),
    ("!!!not-base64", "could not read"),
    (base64.b64encode(b"PK\x03\x04 garbage").decode(), "garbled"),
    (base64.b64encode(b"\x80\x04K\x05.").decode(), "garbled"),  # a bare pickle, no zip
])
def test_payloads_are_validated_before_use(payload, expected):
    status, message = judge.judge_output(EX_ID, CASES, f"noise\nMMCOURSE-RESULT m {payload}\n", "m")
    assert (status if expected == "passed" else message).find(expected) >= 0, (status, message)
    assert "\n" not in message


def test_a_compressed_payload_is_refused_before_unpickling():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data.pkl", b"\0" * 10_000_000)  # 10 MB inflating from about 10 kB
    status, message = judge.judge_output(EX_ID, CASES, f"MMCOURSE-RESULT m {base64.b64encode(buf.getvalue()).decode()}", "m")
    assert status == "error" and "unexpected format" in message


def test_two_markers_or_none_is_an_error():
    good = _payload(REFERENCE)
    assert judge.judge_output(EX_ID, CASES, f"MMCOURSE-RESULT m {good}\nMMCOURSE-RESULT m {good}", "m")[0] == "error"
    assert judge.judge_output(EX_ID, CASES, f"MMCOURSE-RESULT other {good}", "m")[0] == "error"


# ------------------------------------------------------------------------------------------------ parsing


def _with_a_planned_notebook():
    """The course with its last notebook marked planned (every notebook is written now), and that notebook."""
    last = replace(COURSE.notebooks[-1], status="planned")
    return replace(COURSE, notebooks=[*COURSE.notebooks[:-1], last]), last


@pytest.mark.parametrize("data, expected", [
    (_nb([_code("x = 1", exercise=["02.chance"])]), "must be a string"),
    (_nb([_code("x = 1", exercise={"id": "02.chance"})]), "must be a string"),
    (_nb(["not a cell"]), "cell 0 is not a JSON object"),
    (_nb([{"cell_type": "code", "source": "x", "metadata": []}]), "metadata that is not a JSON object"),
    (_nb([], {"mmcourse": {"notebook": "99"}}), "does not have"),
    (_nb([], {"mmcourse": {"notebook": ["02"]}}), "malformed"),
    (b"[" * 100_000, "nested too deeply"),
    (b"\xff\xfe", "not UTF-8"),
])
def test_malformed_notebooks_are_one_line_errors(data, expected):
    with pytest.raises(submission.SubmissionError, match=expected) as err:
        submission.parse(data, NB_FILE, COURSE)
    assert "\n" not in str(err.value)


def test_a_planned_notebook_is_a_submission_error_not_a_crash():
    course, planned = _with_a_planned_notebook()
    with pytest.raises(submission.SubmissionError, match="planned, not written"):
        submission.parse(_nb([], {"mmcourse": {"notebook": planned.id}}), "x.ipynb", course)


def test_a_cell_without_source_fails_only_its_exercise():
    cells = [_code("def f(*args):\n    return 0.0\n", exercise=EX_ID),
             {"cell_type": "code", "metadata": {"exercise": EX2_ID}, "outputs": []}]
    answers = submission.parse(_nb(cells, {"mmcourse": {"notebook": NB.id}}), NB_FILE, COURSE)
    from mmcourse import notebook

    plan = runner.assemble(notebook.read(COURSE.root / answers.notebook.path), answers, 0, "m")
    assert "no source text" in plan.missing[EX2_ID]
    assert [(s.ex_id, s.kind) for s in plan.steps] == [(EX_ID, k) for k in ("forget", "exercise", "capture", "restore")]


# ------------------------------------------------------------------------------------------------ reading


def test_symlinks_fifos_and_oversized_files_are_refused(tmp_path):
    subs = tmp_path / "subs"
    (subs / "alice").mkdir(parents=True)
    honest = subs / "alice" / NB_FILE
    honest.write_bytes(_nb([], {"mmcourse": {"notebook": NB.id}}))
    (subs / "mallory").mkdir()
    (subs / "mallory" / NB_FILE).symlink_to(honest)
    (subs / "trudy").symlink_to(subs / "alice", target_is_directory=True)
    (subs / "fifo").mkdir()
    os.mkfifo(subs / "fifo" / NB_FILE)
    (subs / "big").mkdir()
    (subs / "big" / NB_FILE).write_bytes(b" " * 2000)
    found = submission.collect([subs])
    assert sorted(s for _, s in found) == ["alice", "big", "fifo", "mallory", "trudy"]
    start = time.monotonic()
    read = {s.student: s for s in submission.read_all(found, limit=1000)}
    assert time.monotonic() - start < 5, "a FIFO must not block the grader"
    assert read["alice"].error is None and read["alice"].data
    assert "symbolic link" in read["mallory"].error and "symbolic link" in read["trudy"].error
    assert "not a regular file" in read["fifo"].error
    assert "over the" in read["big"].error


def test_a_bad_file_scores_zero_without_a_kernel(tmp_path):
    path = tmp_path / NB_FILE
    path.write_bytes(_nb([_code("x", exercise=[EX_ID])]))
    r = grade.grade_submission(path, sandbox="off")
    assert r.score == 0 and "must be a string" in r.error and not r.exercises


# ------------------------------------------------------------------------------------------------ reports


def test_control_characters_and_escape_codes_are_stripped():
    evil = "bob\x1b[2K\r\x1b[1Aalice  10/10\x07\u202etxt.exe\x00\x9b31m\nnext"
    cleaned = report.clean(evil)
    assert all(ch >= " " and not (0x7f <= ord(ch) <= 0x9f) for ch in cleaned)
    assert "\u202e" not in cleaned and "\n" not in cleaned
    assert report.clean("x" * 1000, 50) == "x" * 49 + "…"


def test_csv_cells_never_start_a_formula():
    r = grade.SubmissionResult("subs/=1+1/02.ipynb", "=HYPERLINK(\"http://x\")", "02", error="-2+3 @SUM(A1)")
    text = report.report_csv([r.finish()])
    import csv

    rows = list(csv.reader(io.StringIO(text)))
    assert rows[1][0] == "'=HYPERLINK(\"http://x\")" and rows[1][-1] == "'-2+3 @SUM(A1)"
    assert not any(cell.startswith(report.FORMULA_START) for row in rows for cell in row)


def test_reports_are_written_atomically_with_their_digest(tmp_path):
    r = grade.SubmissionResult("a.ipynb", "a", "02").finish()
    written = report.write_reports([r], tmp_path / "g.json", tmp_path / "g.csv", sandbox="bubblewrap")
    import hashlib

    for path, digest in written:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert json.loads((tmp_path / "g.json").read_text())["sandbox"] == "bubblewrap"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.csv", "g.json"]


def test_output_is_capped():
    out = _Output(10)
    for _ in range(5):
        out.add("abcd")
    out.add(12345)  # not text: ignored
    assert out.text == "abcdabcdab" and out.flooded


# ------------------------------------------------------------------------------------------------ replays


class FakeKernel:
    """Runs a script instead of code: each source is a name in ``behaviour``; records what ran."""

    starts = 0

    def __init__(self, log, behaviour):
        FakeKernel.starts += 1
        self.log, self.behaviour, self.runs = log, behaviour, {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def execute(self, code, timeout):
        self.log.append(code)
        if code == "setup":
            return CellRun("ok")
        total = sum(1 for c in self.log if c == code)
        status = self.behaviour[code](total)
        if status == "slow":
            time.sleep(min(timeout, 0.3))
            return CellRun("timeout" if timeout < 0.3 else "ok")
        return CellRun(status, text="MMCOURSE-RESULT" if status == "ok" else "", error="Boom: x" if status == "error" else "")


def _plan(names, references=""):
    steps = [runner.Step(n.split(":")[0], n.split(":")[1], n) for n in names]
    return runner.Plan("setup", steps, {s.ex_id: [] for s in steps}, {}, "m", references=references)


def _run(names, behaviour, **kw):
    log = []
    FakeKernel.starts = 0
    plan = _plan(names, kw.pop("references", ""))
    outcome = runner.run(plan, lambda: FakeKernel(log, behaviour), exercise_timeout=kw.pop("exercise_timeout", 5),
                         total_timeout=kw.pop("total_timeout", 60), **kw)
    return outcome, log


def test_a_dead_kernel_costs_one_exercise_and_no_student_cell_runs_twice():
    """Each kernel defines the reference solutions after the set-up; a death costs its exercise only, the
    next kernel goes on after it, and no student cell is ever replayed (the position never moves back)."""
    names = [f"{e}:{kind}" for e in "abc" for kind in ("exercise", "capture", "restore")]
    behaviour = {n: (lambda k: "ok") for n in names}
    behaviour["refs"] = lambda k: "ok"
    behaviour["a:exercise"] = lambda k: "ok" if k == 1 else "died"  # would die if it were ever run again
    behaviour["b:exercise"] = lambda k: "died"
    outcome, log = _run(names, behaviour, references="refs")
    assert FakeKernel.starts == 2
    assert outcome["a"].kind == "output" and outcome["c"].kind == "output"
    assert outcome["b"].kind == "error" and "died" in outcome["b"].text
    assert log.count("setup") == 2 and log.count("refs") == 2
    assert all(log[log.index("setup", i) + 1] == "refs" for i, c in enumerate(log) if c == "setup")
    student = [c for c in log if c.split(":")[-1] in ("exercise", "capture")]
    assert len(student) == len(set(student)), "no student cell runs twice"
    assert [names.index(c) for c in student] == sorted(names.index(c) for c in student)
    assert "b:capture" not in log and "c:restore" in log


def test_restarts_are_capped_and_every_exercise_ends():
    names = [f"e{i}:{kind}" for i in range(5) for kind in ("exercise", "capture")]
    outcome, log = _run(names, {n: (lambda k: "died") for n in names})
    assert set(outcome) == {f"e{i}" for i in range(5)}
    assert FakeKernel.starts <= 3 * 5 + 2
    outcome, _ = _run(names, {n: (lambda k: "died") for n in names}, max_starts=2)
    assert sum("restarted too often" in o.text for o in outcome.values()) == 3


def test_the_submission_time_limit_ends_grading():
    names = [f"e{i}:{kind}" for i in range(6) for kind in ("exercise", "capture")]
    start = time.monotonic()
    outcome, _ = _run(names, {n: (lambda k: "slow") for n in names}, total_timeout=1.0)
    assert time.monotonic() - start < 3
    assert any("time limit (1 s) ran out" in o.text for o in outcome.values())
    assert set(outcome) == {f"e{i}" for i in range(6)}


# ------------------------------------------------------------------------------------------------ the sandbox's command


def test_required_without_bubblewrap_refuses_and_auto_warns(monkeypatch):
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    with pytest.raises(sandbox.SandboxError, match="bwrap"):
        sandbox.resolve("required")
    policy = sandbox.resolve("auto")
    assert not policy.enabled and policy.note.startswith("WARNING: NO SANDBOX")
    assert sandbox.resolve("off").name == "off"
    monkeypatch.setenv("MMCOURSE_SANDBOX", "bogus")
    with pytest.raises(ValueError):
        sandbox.resolve()


def test_the_command_binds_read_only_and_hides_submissions(tmp_path):
    base = sandbox._base_policy(sandbox.Limits())
    inside = Path(base.package_root) / "submissions-for-test"
    policy = replace(base, enabled=True, masked=sandbox._masks(base.readonly, [inside, tmp_path, "/nonexistent"]))
    argv = policy.kernel_command(tmp_path / "rt", tmp_path / "rt" / "c.json", uid=123456)
    text = " ".join(argv)
    assert argv[0] == "bwrap" and "--unshare-pid" in argv and "--unshare-net" in argv and "--die-with-parent" in argv
    assert f"--ro-bind {base.package_root} {base.package_root}" in text
    assert f"--bind {tmp_path / 'rt'} {tmp_path / 'rt'}" in text and "--clearenv" in argv
    assert "prlimit" in argv and any(a.startswith("--nproc=") for a in argv)
    assert "--reuid=123456" in text
    assert argv[-5:] == [base.python, "-m", "ipykernel_launcher", "-f", str(tmp_path / "rt" / "c.json")]
    assert str(tmp_path) not in policy.masked  # not inside a bound folder: invisible anyway
    # a parent created by bwrap must be traversable after the uid drop
    for parent in Path(base.python).parents:
        if str(parent) not in ("/", "/usr") and not str(parent).startswith("/usr/"):
            assert f"--perms 0755 --dir {parent}" in text or any(str(parent).startswith(r) for r in base.readonly)


# ------------------------------------------------------------------------------------------------ a batch never aborts


def test_an_internal_error_costs_one_student_and_the_batch_goes_on(tmp_path, monkeypatch):
    ok = tmp_path / "a" / NB_FILE
    ok.parent.mkdir()
    ok.write_bytes(_nb([_code("def f(*args):\n    raise NotImplementedError\n", exercise=EX_ID)],
                       {"mmcourse": {"notebook": NB.id}}))
    bad = tmp_path / "b.ipynb"
    bad.write_bytes(b"{")

    def explode(*args, **kwargs):
        raise KeyError("a bug in the grader")

    monkeypatch.setattr(grade, "assemble", explode)
    results = grade.grade_many([(ok, "a"), (bad, "b")], jobs=1, sandbox="off")
    assert "internal error (KeyError" in results[0].error and results[0].score == 0 and not results[0].exercises
    assert "invalid JSON" in results[1].error


def test_a_kernel_that_cannot_start_is_the_grading_machines_problem(tmp_path):
    path = tmp_path / NB_FILE
    path.write_bytes(_nb([_code("def f(*args):\n    return 0.0\n", exercise=EX_ID)],
                         {"mmcourse": {"notebook": NB.id}}))
    broken = replace(sandbox.resolve("off"), python="/nonexistent/bin/python")
    r = grade.grade_submission(path, sandbox=broken)
    assert r.score == 0 and r.error.startswith("not graded: could not start the grading kernel")
