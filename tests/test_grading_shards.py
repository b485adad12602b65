"""Grading in shards (`mmcourse grade --shard K/N`) and merging the parts (`--merge`): the merged report is the
one-process report byte for byte apart from timings; parts that do not fit together are refused.

Kept small (grading starts a kernel per submission): two real submissions of notebook 01 and three bad files."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from mmcourse import cli, notebook
from mmcourse.course import load_course
from mmcourse.grading import shard
from mmcourse.grading.release import release

COURSE = load_course()
SEED = 5
N = 3


def _grade(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmcourse", "grade", *args], capture_output=True, text=True,
                          cwd=COURSE.root, timeout=900)


def _without_timings(text: str) -> dict:
    doc = json.loads(text)
    for sub in doc["submissions"]:
        sub["seconds"] = 0.0
    return doc


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """A class of five (two notebooks of 01, honest and stubs; three bad files) graded in one process and in
    three shards; the parts merged."""
    tmp = tmp_path_factory.mktemp("shards")
    (released,) = [p for p in release(tmp / "release") if p.name.startswith("01_")]
    nb = nbformat.read(released, as_version=4)
    reference = notebook.read(COURSE.root / COURSE.find("01").path)
    solved = nbformat.from_dict(json.loads(json.dumps(nb)))
    for ex_id, idx in notebook.exercise_cells(solved).items():
        solved.cells[idx].source = reference.cells[notebook.exercise_cells(reference)[ex_id]].source
    folder = tmp / "class"
    for student, book in (("alice", solved), ("bob", nb)):
        (folder / student).mkdir(parents=True)
        nbformat.write(book, folder / student / released.name)
    for student, data in (("carol", b""), ("dave", b"{"), ("erin", b"[1]")):
        (folder / student).mkdir()
        (folder / student / released.name).write_bytes(data)
    common = ["--seed", str(SEED), "--sandbox", "off", "--jobs", "2", "--timeout", "60"]
    one = _grade(str(folder), *common, "--json", str(tmp / "one.json"), "--csv", str(tmp / "one.csv"))
    assert one.returncode == 0, one.stderr[-3000:]
    parts = []
    for k in range(1, N + 1):
        parts.append(tmp / f"part-{k}.json")
        proc = _grade(str(folder), *common, "--shard", f"{k}/{N}", "--json", str(parts[-1]))
        assert proc.returncode == 0, proc.stderr[-3000:]
    merged = _grade("--merge", *map(str, parts), "--json", str(tmp / "grades.json"), "--csv", str(tmp / "grades.csv"))
    assert merged.returncode == 0, merged.stderr[-3000:]
    return tmp, parts


def test_three_shards_merged_are_the_one_process_report(graded):
    tmp, parts = graded
    one, merged = (tmp / "one.json").read_text(), (tmp / "grades.json").read_text()
    assert _without_timings(merged) == _without_timings(one)
    seconds = [s["seconds"] for s in json.loads(one)["submissions"]]
    timed = json.loads(merged)
    for sub, sec in zip(timed["submissions"], seconds):
        sub["seconds"] = sec
    assert json.dumps(timed, indent=2, ensure_ascii=False) + "\n" == one, "byte for byte apart from timings"
    assert (tmp / "grades.csv").read_bytes() == (tmp / "one.csv").read_bytes()
    doc = json.loads(one)
    assert doc["seed"] == SEED and doc["course"]["version"] and set(doc["course"]["notebooks"]) == {"01"}
    scores = {s["student"]: s["score"] for s in doc["submissions"]}
    assert scores["alice"] == sum(int(e["points"]) for e in COURSE.find("01").exercises) and scores["bob"] == 0
    sizes = [len(json.loads(p.read_text())["submissions"]) for p in parts]
    assert sum(sizes) == 5


def test_shards_do_not_depend_on_the_order_of_the_input():
    found = [(Path(f"class/s{i:03d}/01.ipynb"), f"s{i:03d}", f"s{i:03d}/01.ipynb") for i in range(60)]
    picked = {k: {key for *_, key in (found[i] for i in shard.select(found, shard.Shard(k, N))[1]["positions"])}
              for k in range(1, N + 1)}
    shuffled = random.Random(0).sample(found, len(found))
    for k in range(1, N + 1):
        _, info = shard.select(shuffled, shard.Shard(k, N))
        assert {shuffled[i][2] for i in info["positions"]} == picked[k]
    assert set().union(*picked.values()) == {key for *_, key in found}
    assert sum(map(len, picked.values())) == len(found) and all(len(p) > 5 for p in picked.values())


@pytest.mark.parametrize("spec", ["0/3", "4/3", "a/b", "3", "1/0", "-1/3"])
def test_bad_shard_specs_are_refused(spec, tmp_path, capsys):
    assert cli.main(["grade", str(tmp_path), f"--shard={spec}", "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert f"bad shard {spec!r}" in err and "1 <= K <= N" in err


def test_a_shard_needs_a_seed(tmp_path, capsys):
    assert cli.main(["grade", str(tmp_path), "--shard", "1/3"]) == 2
    assert "--shard needs --seed" in capsys.readouterr().err


def _merge(paths, capsys, tmp_path) -> str:
    assert cli.main(["grade", "--merge", *map(str, paths), "--json", str(tmp_path / "m.json")]) == 2
    assert not (tmp_path / "m.json").exists()
    return capsys.readouterr().err


def _edited(part: Path, tmp_path: Path, edit) -> Path:
    doc = json.loads(part.read_text())
    edit(doc)
    out = tmp_path / f"edited-{part.name}"
    out.write_text(json.dumps(doc))
    return out


def test_merging_refuses_parts_that_do_not_fit(graded, tmp_path, capsys):
    tmp, parts = graded
    assert "missing shard(s) 3/3" in _merge(parts[:2], capsys, tmp_path)
    assert "shard 1/3 given twice" in _merge([parts[0], *parts], capsys, tmp_path)
    newer = _edited(parts[1], tmp_path, lambda d: d["course"].update(version="9.9.9"))
    assert "different course versions" in _merge([parts[0], newer, parts[2]], capsys, tmp_path)
    reseeded = _edited(parts[2], tmp_path, lambda d: d.update(seed=SEED + 1))
    assert "hidden-case seed" in _merge([parts[0], parts[1], reseeded], capsys, tmp_path)
    assert "not a shard's report" in _merge([*parts[:2], tmp / "one.json"], capsys, tmp_path)

    # a part graded against another version of notebook 01, and a submission in two parts
    full = next(p for p in parts if json.loads(p.read_text())["course"]["notebooks"])
    other = next(p for p in parts if p != full)
    old_nb = _edited(other, tmp_path, lambda d: d["course"]["notebooks"].update({"01": "0" * 16}))
    assert "different versions of notebook 01" in _merge([p if p != other else old_nb for p in parts], capsys, tmp_path)
    src = json.loads(full.read_text())

    def smuggle(doc):  # another shard's part also holding a submission of ``full``
        doc["submissions"].append(src["submissions"][0])
        doc["shard"]["positions"].append(src["shard"]["positions"][0])

    twice = _edited(other, tmp_path, smuggle)
    assert "appears twice" in _merge([p if p != other else twice for p in parts], capsys, tmp_path)
