"""Release and grading: honest scores, tamper-proofing, timeouts, crashes, bad files, reports."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
import time

import nbformat
import pytest

from mmcourse import notebook
from mmcourse.course import load_course
from mmcourse.grading import grade, submission
from mmcourse.grading import runner as grade_runner
from mmcourse.grading.release import release

COURSE = load_course()
NB01 = COURSE.find("01")
POINTS = {ex["id"]: int(ex["points"]) for ex in NB01.exercises}
TOTAL = sum(POINTS.values())
REFERENCE = notebook.read(COURSE.root / NB01.path)
SOLUTION = {ex_id: REFERENCE.cells[i].source for ex_id, i in notebook.exercise_cells(REFERENCE).items()}
FIRST, LAST = NB01.exercises[0]["id"], NB01.exercises[-1]["id"]  # faults go into the last: no answer calls it
NAME = {ex_id: grade_runner.answer_name(REFERENCE, ex_id) for ex_id in POINTS}

WRONG = f"def {NAME[LAST]}(*args, **kwargs):\n    return 0.0\n"
PATCHES = textwrap.dedent(
    """
    import torch, mmcourse.check, mmcourse.check.core
    mmcourse.check.exercise = lambda *args, **kwargs: None
    mmcourse.check.core.exercise = lambda *args, **kwargs: None
    torch.allclose = lambda *args, **kwargs: True
    torch.equal = lambda *args, **kwargs: True
    torch.testing.assert_close = lambda *args, **kwargs: None
    """
)


def _released(tmp_path_factory):
    out = tmp_path_factory.mktemp("release")
    (path,) = [p for p in release(out) if p.name.startswith("01_")]
    return nbformat.read(path, as_version=4), path


def _with(nb, sources=None, mutate=None):
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    cells = notebook.exercise_cells(nb)
    for ex_id, src in (sources or {}).items():
        nb.cells[cells[ex_id]].source = src
    if mutate:
        mutate(nb)
    return nb


def _drop_last(nb):
    del nb.cells[notebook.exercise_cells(nb)[LAST]]


def _edit_checks(nb):
    for cell in nb.cells:
        if "check" in cell.metadata.get("tags", []):
            cell.source = 'print("\u2713 all cases pass")'


def _forge_outputs(nb):
    for cell in nb.cells:
        if "check" in cell.metadata.get("tags", []) or "exercise" in cell.metadata:
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="\u2713 all cases pass\nMMCOURSE-RESULT 0000 AAAA\n")]


def _duplicate_last(nb):
    idx = notebook.exercise_cells(nb)[LAST]
    nb.cells.insert(idx, nbformat.from_dict(json.loads(json.dumps(nb.cells[idx]))))


def _expect(status_of_last: str | None = None, only_first: bool = False, default: str = "passed"):
    """Expected statuses: every exercise ``default``; the first alone passed; or the last one faulty."""
    statuses = {ex_id: default for ex_id in POINTS}
    if only_first:
        statuses = {ex_id: "passed" if ex_id == FIRST else "failed" for ex_id in POINTS}
    if status_of_last:
        statuses[LAST] = status_of_last
    return statuses, sum(POINTS[i] for i, st in statuses.items() if st == "passed")


ALL = dict(SOLUTION)
SCENARIOS = {
    # name: (sources, mutate, expected ({exercise: status}, score))
    "honest": (ALL, None, _expect()),
    "stubs": ({}, None, _expect(default="failed")),
    "check_cells_edited": ({}, _edit_checks, _expect(default="failed")),
    "forged_outputs": ({FIRST: SOLUTION[FIRST]}, _forge_outputs, _expect(only_first=True)),
    "monkeypatched": ({**ALL, LAST: PATCHES + WRONG}, None, _expect("failed")),
    "deleted_cell": (ALL, _drop_last, _expect("error")),
    "duplicated_cell": (ALL, _duplicate_last, _expect("error")),
    "endless_loop": ({**ALL, LAST: f"def {NAME[LAST]}(*args, **kwargs):\n    while True:\n        pass\n"}, None,
                     _expect("timeout")),
    "kernel_crash": ({**ALL, LAST: f"import os\ndef {NAME[LAST]}(*args, **kwargs):\n    os._exit(3)\n"}, None,
                     _expect("error")),
    "renamed_function": ({**ALL, LAST: SOLUTION[LAST].replace(f"def {NAME[LAST]}(", f"def {NAME[LAST]}_renamed(")}, None,
                         _expect("error")),
    "crash_at_definition": ({**ALL, LAST: "raise ValueError('oops')\n"}, None, _expect("error")),
    "unpicklable_result": ({**ALL, LAST: f"def {NAME[LAST]}(*args, **kwargs):\n    return object()\n"}, None,
                           _expect("error")),
}
BAD_FILES = {
    "empty": (b"", "empty"),
    "corrupt": (b'{"cells": [', "invalid JSON"),
    "not_a_notebook": (b"[1, 2, 3]", "no list of cells"),
    "binary": (bytes(range(256)) * 4, "not UTF-8"),
    "unknown_notebook": (json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}).encode(), "cannot tell which course notebook"),
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    released, released_path = _released(tmp_path_factory)
    root = tmp_path_factory.mktemp("submissions")
    subs = []
    for name, (sources, mutate, _) in SCENARIOS.items():
        (root / name).mkdir()
        path = root / name / "01_joint_embeddings.ipynb"
        nbformat.write(_with(released, sources, mutate), path)
        subs.append((path, name))
    for name, (data, _) in BAD_FILES.items():
        path = root / f"{name}.ipynb"
        path.write_bytes(data)
        subs.append((path, name))
    digests = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p, _ in subs}
    results = grade.grade_many(subs, jobs=2, exercise_timeout=20)
    return {r.student: r for r in results}, digests, root


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_each_submission_scores_what_an_honest_reading_gives(graded, name):
    results, _, _ = graded
    r = results[name]
    _, _, (statuses, score) = SCENARIOS[name]
    assert r.error is None, r.error
    assert {e.id: e.status for e in r.exercises} == statuses, [(e.id, e.status, e.message) for e in r.exercises]
    assert r.score == score and r.max_score == TOTAL
    for e in r.exercises:
        assert e.points == (e.max_points if e.status == "passed" else 0)
        assert e.message


def test_messages_say_what_happened(graded):
    results, _, _ = graded
    msg = lambda s, ex: next(e.message for e in results[s].exercises if e.id == ex)  # noqa: E731
    assert "not implemented" in msg("stubs", FIRST)
    assert "case '" in msg("monkeypatched", LAST)
    assert "missing" in msg("deleted_cell", LAST)
    assert "2 cells claim" in msg("duplicated_cell", LAST)
    assert "did not finish within 20 s" in msg("endless_loop", LAST)
    assert "kernel died" in msg("kernel_crash", LAST)
    assert "keep the original name" in msg("renamed_function", LAST)
    assert "ValueError: oops" in msg("crash_at_definition", LAST)


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_bad_files_get_a_one_line_message_and_zero(graded, name):
    results, _, _ = graded
    r = results[name]
    assert r.error and "\n" not in r.error and BAD_FILES[name][1] in r.error
    assert r.score == 0 and not r.exercises


def test_submissions_are_never_modified(graded):
    _, digests, _ = graded
    for path, digest in digests.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_huge_submission_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(submission, "MAX_SUBMISSION_BYTES", 1000)
    path = tmp_path / "01_joint_embeddings.ipynb"
    path.write_text(json.dumps({"cells": [{"cell_type": "markdown", "source": "x" * 5000, "metadata": {}}]}))
    r = grade.grade_submission(path)
    assert "over the" in r.error and r.score == 0


def test_release_is_deterministic_and_marks_cells(tmp_path):
    a = release(tmp_path / "a")
    b = release(tmp_path / "b")
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    nb = nbformat.read(a[0], as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["mmcourse"]["notebook"] == "01"
    for cell in nb.cells:
        if "exercise" in cell.metadata:
            assert f"exercise:{cell.metadata['exercise']}" in cell.metadata["tags"] and cell.metadata["editable"] is True
            assert "BEGIN SOLUTION" not in cell.source
        else:
            assert cell.metadata["editable"] is False
        assert not cell.get("outputs")
    text = " ".join(c.source for c in nb.cells)
    assert "Instructor:" in " ".join(c.source for c in REFERENCE.cells), "the reference has speaker notes"
    assert "Instructor:" not in text and not any(
        c.metadata.get("slideshow", {}).get("slide_type") == "notes" for c in nb.cells), "release drops speaker notes"
    how = nb.cells[1]
    assert how.cell_type == "markdown" and "yours to edit" in how.source and "read-only" in how.source
    assert 'check.hint("01.name")' in how.source


def test_cli_grades_a_folder_and_writes_reports(graded, tmp_path):
    _, _, root = graded
    folder = tmp_path / "subs"
    for name in ("honest", "stubs"):
        (folder / name).mkdir(parents=True)
        (folder / name / "01_joint_embeddings.ipynb").write_bytes((root / name / "01_joint_embeddings.ipynb").read_bytes())
    proc = subprocess.run(
        [sys.executable, "-m", "mmcourse", "grade", str(folder), "--json", str(tmp_path / "r.json"), "--csv", str(tmp_path / "r.csv")],
        capture_output=True, text=True, cwd=COURSE.root, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "honest" in proc.stdout and f"{TOTAL}/{TOTAL}" in proc.stdout and f"0/{TOTAL}" in proc.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    by_student = {s["student"]: s for s in report["submissions"]}
    assert by_student["honest"]["score"] == TOTAL and by_student["stubs"]["score"] == 0
    for ex in by_student["honest"]["exercises"]:
        assert set(ex) == {"id", "points", "max_points", "status", "message"}
    csv_lines = (tmp_path / "r.csv").read_text().splitlines()
    assert csv_lines[0].startswith("student,submission,notebook,exercise,status,points,max_points,message")
    assert len(csv_lines) == 1 + 2 * len(POINTS)
    assert not list(tmp_path.glob(".*.tmp")), "reports are written atomically (no temporary files left)"


def test_cli_with_nothing_to_grade(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mmcourse", "grade", str(tmp_path)], capture_output=True, text=True,
                          cwd=COURSE.root, timeout=60)
    assert proc.returncode == 2 and "no submissions found" in proc.stderr


def test_a_cell_that_would_die_on_every_replay_cannot_stall_grading(tmp_path_factory, tmp_path):
    """The attack from issue 14, without a sandbox (where a flag file can persist between kernels): the first
    exercise cell would kill every kernel that replays it; the second kills its kernel. No student cell
    is replayed (the next kernel defines the reference solutions instead), so both are judged once."""
    released, _ = _released(tmp_path_factory)
    second = NB01.exercises[1]["id"]
    flag = tmp_path / "flag"
    killer = f"import os\nif os.path.exists({str(flag)!r}):\n    os._exit(1)\nopen({str(flag)!r}, 'w').close()\n"
    sources = {**SOLUTION, FIRST: killer + SOLUTION[FIRST], second: "import os\nos._exit(1)\n"}
    path = tmp_path / "01_joint_embeddings.ipynb"
    nbformat.write(_with(released, sources), path)
    start = time.monotonic()
    r = grade.grade_submission(path, sandbox="off", exercise_timeout=20)
    assert time.monotonic() - start < 120
    status = {e.id: (e.status, e.message) for e in r.exercises}
    assert status[FIRST][0] == "passed", status
    assert status[second][0] == "error" and "kernel died" in status[second][1], status
    assert status[LAST][0] == "passed", status


def test_each_exercise_is_graded_alone(tmp_path_factory, tmp_path):
    """Issue 15: the first exercise wrong in three ways (an endless loop, an error, a wrong value), every
    other exercise solved: only the first loses its points, although later exercises may call it."""
    released, _ = _released(tmp_path_factory)
    name = NAME[FIRST]
    wrongs = {
        "loops": "while True:\n    pass\n",
        "raises": f"def {name}(*args, **kwargs):\n    raise RuntimeError('not today')\n",
        "wrong": f"def {name}(*args, **kwargs):\n    return 0.0\n",
    }
    for student, source in wrongs.items():
        (tmp_path / student).mkdir()
        nbformat.write(_with(released, {**SOLUTION, FIRST: source}), tmp_path / student / "01_joint_embeddings.ipynb")
    results = grade.grade_many(grade.collect([tmp_path]), jobs=2, seed=3, exercise_timeout=10, sandbox="off")
    assert sorted(r.student for r in results) == sorted(wrongs)
    for r in results:
        by = {e.id: e for e in r.exercises}
        assert by[FIRST].points == 0 and by[FIRST].status in ("timeout", "error", "failed"), (r.student, by[FIRST])
        assert all(by[ex].status == "passed" for ex in POINTS if ex != FIRST), (r.student, r.exercises)
        assert r.score == TOTAL - POINTS[FIRST], r.student
    first = {r.student: {e.id: e for e in r.exercises}[FIRST] for r in results}
    assert first["loops"].status == "timeout" and "not today" in first["raises"].message
    assert "graded alone" in json.loads(grade.report_json(results))["rule"]
    assert "graded alone" in grade.table(results)




@pytest.fixture(scope="module")
def every_notebook_graded(tmp_path_factory):
    """Each written notebook's released copy twice: as released (stubs) and with the reference solutions pasted
    into its exercise cells, graded together (notebook 01's many scenarios are above)."""
    out = tmp_path_factory.mktemp("release_all")
    released = {p.name.split("_")[0]: p for p in release(out)}
    root = tmp_path_factory.mktemp("class")
    subs = []
    for nb_info in COURSE.notebooks:
        if not nb_info.written or nb_info.id == "01":
            continue
        reference = notebook.read(COURSE.root / nb_info.path)
        solutions = {ex_id: reference.cells[i].source for ex_id, i in notebook.exercise_cells(reference).items()}
        student = nbformat.read(released[nb_info.id], as_version=4)
        for who, sources in (("stub", {}), ("solved", solutions)):
            (root / f"{who}{nb_info.id}").mkdir()
            path = root / f"{who}{nb_info.id}" / released[nb_info.id].name
            nbformat.write(_with(student, sources), path)
            subs.append((path, f"{who}{nb_info.id}"))
    return {r.student: r for r in grade.grade_many(subs, jobs=2, exercise_timeout=60)}


@pytest.mark.parametrize("nb_info", [n for n in COURSE.notebooks if n.written and n.id != "01"], ids=lambda n: n.id)
def test_every_notebook_grades_its_solutions_full_and_its_stubs_zero(every_notebook_graded, nb_info):
    full = sum(int(ex["points"]) for ex in nb_info.exercises)
    solved, stub = every_notebook_graded[f"solved{nb_info.id}"], every_notebook_graded[f"stub{nb_info.id}"]
    assert {e.id: e.status for e in solved.exercises} == {ex["id"]: "passed" for ex in nb_info.exercises}, [
        (e.id, e.status, e.message[:300]) for e in solved.exercises]
    assert solved.score == full == solved.max_score
    assert stub.score == 0 and all(e.status == "failed" for e in stub.exercises), [(e.id, e.status) for e in stub.exercises]
