"""The course manifest, ``mmcourse.course``: course.yml, its validation and the README table."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from mmcourse.course import (
    STATUSES,
    TABLE_END,
    TABLE_START,
    Course,
    CourseError,
    load_course,
    readme_table,
    render_readme,
    validate,
)

ROOT = Path(__file__).resolve().parents[1]
SLUGS = [
    "joint_embeddings", "clip_loss", "zero_shot", "prompt_learning", "lora_adapters", "vlm_adapters",
    "dalle_dvae", "diffusion_cfg", "audio",
]


@pytest.fixture(scope="module")
def course() -> Course:
    return load_course(ROOT)


@pytest.fixture
def sandbox(tmp_path: Path, course: Course) -> Course:
    """The real course moved to an empty tmp_path root, with (empty) files for its written notebooks."""
    shutil.copy(ROOT / "course.yml", tmp_path / "course.yml")
    for nb in course.notebooks:
        if nb.written:
            path = tmp_path / nb.path
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("# a notebook\n")
    return dataclasses.replace(course, root=tmp_path)


def _replace_notebook(course: Course, index: int, **changes) -> Course:
    notebooks = list(course.notebooks)
    notebooks[index] = dataclasses.replace(notebooks[index], **changes)
    return dataclasses.replace(course, notebooks=notebooks)


# --------------------------------------------------------------------------------------- the real manifest


def test_the_real_manifest_is_valid(course):
    assert course.root == ROOT
    assert validate(course) == []
    assert course.title


def test_nine_notebooks_in_order(course):
    assert [nb.id for nb in course.notebooks] == [f"{i:02d}" for i in range(1, 10)]
    assert [nb.slug for nb in course.notebooks] == SLUGS
    for nb in course.notebooks:
        assert nb.path == f"notebooks/{nb.id}_{nb.slug}.py"
        assert nb.status in STATUSES
        assert nb.title and nb.minutes > 0 and nb.objectives


def test_written_notebooks_exist(course):
    written = [nb for nb in course.notebooks if nb.written]
    assert written, "at least the first notebook is written"
    assert course.notebooks[0].written
    for nb in written:
        assert (ROOT / nb.path).is_file(), nb.path


def test_exercise_ids_are_unique_and_prefixed(course):
    ids = [ex["id"] for nb in course.notebooks for ex in nb.exercises]
    assert len(ids) == len(set(ids))
    for nb in course.notebooks:
        for ex in nb.exercises:
            assert ex["id"].startswith(nb.id + "."), ex
            assert len(ex["id"]) > len(nb.id) + 1
            assert isinstance(ex["points"], int) and not isinstance(ex["points"], bool) and ex["points"] > 0
            assert ex.get("title")
    points = course.exercise_points()
    assert list(points) == ids
    assert all(points[ex["id"]] == ex["points"] for nb in course.notebooks for ex in nb.exercises)


@pytest.mark.parametrize("key", ["1", "01", "joint_embeddings", 1, " 01 "])
def test_find_by_id_or_slug(course, key):
    assert course.find(key) is course.notebooks[0]


def test_find_every_notebook(course):
    for i, nb in enumerate(course.notebooks, start=1):
        assert course.find(str(i)) is course.find(nb.id) is course.find(nb.slug) is nb


@pytest.mark.parametrize("key", ["99", "10", "0", "joint", "JOINT_EMBEDDINGS", ""])
def test_find_unknown_is_a_helpful_error(course, key):
    with pytest.raises(CourseError) as info:
        course.find(key)
    msg = str(info.value)
    assert repr(key.strip()) in msg
    assert "01 joint_embeddings" in msg and "09 audio" in msg


def test_course_error_is_a_value_error():
    assert issubclass(CourseError, ValueError)


# --------------------------------------------------------------------------------------- validate()


def test_sandbox_is_valid(sandbox):
    assert validate(sandbox) == []


def test_missing_file_of_a_ready_notebook(sandbox):
    (sandbox.root / "notebooks" / "01_joint_embeddings.py").unlink()
    problems = validate(sandbox)
    assert len(problems) == 1
    assert "01" in problems[0] and "notebooks/01_joint_embeddings.py" in problems[0] and "does not exist" in problems[0]


def test_missing_file_of_a_planned_notebook_is_fine(sandbox):
    index, nb = len(sandbox.notebooks) - 1, sandbox.notebooks[-1]
    (sandbox.root / nb.path).unlink(missing_ok=True)  # a notebook not written yet has no file
    doctored = _replace_notebook(sandbox, index, status="planned")
    assert validate(doctored) == []
    doctored = _replace_notebook(sandbox, index, status="draft")
    assert any(nb.id in p and "does not exist" in p for p in validate(doctored))


def test_wrong_path(sandbox):
    doctored = _replace_notebook(sandbox, 1, path="notebooks/clip.py")
    problems = validate(doctored)
    assert any("'notebooks/clip.py'" in p and "notebooks/02_clip_loss.py" in p for p in problems), problems


def test_unknown_status(sandbox):
    problems = validate(_replace_notebook(sandbox, 2, status="done"))
    assert any("'done'" in p and "03" in p for p in problems), problems


def test_ids_out_of_order(sandbox):
    notebooks = list(sandbox.notebooks)
    notebooks[0], notebooks[1] = notebooks[1], notebooks[0]
    problems = validate(dataclasses.replace(sandbox, notebooks=notebooks))
    assert any("should be 01" in p for p in problems) and any("should be 02" in p for p in problems), problems


def test_duplicate_exercise_id(sandbox):
    first = sandbox.notebooks[0]
    doctored = _replace_notebook(sandbox, 0, exercises=[*first.exercises, dict(first.exercises[0])])
    problems = validate(doctored)
    assert any(first.exercises[0]["id"] in p and "twice" in p for p in problems), problems


def test_exercise_id_with_the_wrong_prefix(sandbox):
    first = sandbox.notebooks[0]
    doctored = _replace_notebook(sandbox, 0, exercises=[*first.exercises, {"id": "1.extra", "points": 1}])
    problems = validate(doctored)
    assert any("'1.extra'" in p and "'01.'" in p for p in problems), problems


@pytest.mark.parametrize("points", [0, -2, "3", 1.5, None])
def test_bad_points(sandbox, points):
    first = sandbox.notebooks[0]
    doctored = _replace_notebook(sandbox, 0, exercises=[*first.exercises, {"id": "01.extra", "points": points}])
    problems = validate(doctored)
    assert any("01.extra" in p and "points" in p for p in problems), problems


def test_exercises_without_id_are_reported_not_crashed(sandbox):
    first = sandbox.notebooks[0]
    doctored = _replace_notebook(sandbox, 0, exercises=[*first.exercises, {"points": 1}, {"points": 2}])
    problems = validate(doctored)
    assert any("should start with '01.'" in p for p in problems)


def test_validate_does_not_modify_the_course(sandbox):
    before = dataclasses.replace(sandbox)
    validate(_replace_notebook(sandbox, 1, path="elsewhere.py"))
    assert sandbox == before


# --------------------------------------------------------------------------------------- load_course()


def test_load_course_from_a_copy(sandbox):
    loaded = load_course(sandbox.root)
    assert loaded.root == sandbox.root
    assert [nb.slug for nb in loaded.notebooks] == SLUGS


def test_load_course_from_a_subfolder(sandbox):
    loaded = load_course(sandbox.root / "notebooks")
    assert loaded.root == sandbox.root


def test_load_course_reports_every_problem(sandbox):
    (sandbox.root / "notebooks" / "01_joint_embeddings.py").unlink()
    with pytest.raises(CourseError, match="inconsistent") as info:
        load_course(sandbox.root)
    assert "does not exist" in str(info.value)


@pytest.mark.parametrize(
    "text, match",
    [
        ("notebooks: [", "not valid YAML"),
        ("- just\n- a list\n", "'notebooks' list"),
        ("title: x\nnotebooks: {}\n", "'notebooks' list"),
        ("notebooks:\n  - id: '01'\n    slug: a\n", "#1"),
        ("notebooks:\n  - id: '01'\n    slug: a\n    title: A\n    path: notebooks/01_a.py\n"
         "    status: planned\n    minutes: lots\n    objectives: []\n", "#1"),
    ],
)
def test_malformed_manifest(tmp_path, text, match):
    (tmp_path / "course.yml").write_text(text)
    with pytest.raises(CourseError, match=match):
        load_course(tmp_path)


def test_minimal_manifest(tmp_path):
    (tmp_path / "course.yml").write_text(
        "notebooks:\n  - id: '01'\n    slug: a\n    title: A\n    path: notebooks/01_a.py\n"
        "    status: planned\n    minutes: 5\n    objectives: [learn]\n"
    )
    course = load_course(tmp_path)
    nb = course.find("a")
    assert (nb.exercises, nb.checkpoints, nb.covers, nb.written) == ([], [], {}, False)
    assert course.branch == "main"


# --------------------------------------------------------------------------------------- README table


def test_readme_table_has_one_row_per_notebook_in_order(sandbox):
    table = readme_table(sandbox)
    lines = table.splitlines()
    assert lines[0].startswith("| # |") and lines[1].startswith("| ---")
    rows = lines[2:]
    assert len(rows) == len(sandbox.notebooks) == 9
    for nb, row in zip(sandbox.notebooks, rows):
        assert row.startswith(f"| {nb.id} | ")
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == len(lines[0].strip("|").split("|"))
        if nb.written:
            assert f"[{nb.title}]({nb.path})" in row
        else:
            assert f"[{nb.title}]" not in row and nb.title in row
        points = sum(ex["points"] for ex in nb.exercises)
        assert (f"{len(nb.exercises)} ({points} points)" in row) if nb.exercises else ("—" in row)
        assert f"{nb.minutes} min" in row and nb.status in row


def test_readme_table_shows_recorded_timings(sandbox):
    results = sandbox.root / "benchmarks" / "results"
    results.mkdir(parents=True)
    (results / "notebook_times.json").write_text(json.dumps({"01": {"seconds": 123.4}}))
    rows = readme_table(sandbox).splitlines()[2:]
    assert "| 123 s |" in rows[0]
    assert "| — |" in rows[1]


def test_render_readme_replaces_only_the_table(sandbox):
    text = f"# Title\n\nintro\n\n{TABLE_START}\nold table\n{TABLE_END}\n\nmore text\n"
    out = render_readme(text, sandbox)
    assert out.startswith("# Title\n\nintro\n\n") and out.endswith("\n\nmore text\n")
    assert "old table" not in out
    assert f"{TABLE_START}\n{readme_table(sandbox)}\n{TABLE_END}" in out
    assert render_readme(out, sandbox) == out, "rendering is idempotent"


def test_render_readme_keeps_backslashes_literal(sandbox):
    doctored = _replace_notebook(sandbox, 1, title=r"CLIP \1 \g<0>")
    out = render_readme(f"{TABLE_START}\n{TABLE_END}", doctored)
    assert r"CLIP \1 \g<0>" in out


@pytest.mark.parametrize(
    "text",
    ["# README without a table\n", f"{TABLE_START}\nno end marker\n", f"{TABLE_END}\n{TABLE_START}\n"],
)
def test_render_readme_without_markers(sandbox, text):
    with pytest.raises(CourseError, match="markers"):
        render_readme(text, sandbox)


def test_the_real_readme_is_up_to_date(course):
    readme = ROOT / "README.md"
    if not readme.exists() or TABLE_START not in readme.read_text(encoding="utf-8"):
        pytest.skip("README.md has no course table yet")
    text = readme.read_text(encoding="utf-8")
    assert render_readme(text, course) == text, "README.md is stale: run `mmcourse readme`"


# --------------------------------------------------------------------------------------- covers
#
# `covers` says which idea of which lecture a notebook teaches (the README's table shows it). Each entry
# must name an idea the notebook really contains: every content word of the entry (inflections allowed:
# words are compared by their first five letters) appears in one and the same markdown cell of the
# notebook. Adding prose to a notebook never breaks the rule; removing the idea does.

_COVERS_STOPWORDS = frozenset(
    "a an and as at by for from in into its of on or the their then to vs with".split()
)


def _words(text: str) -> list[str]:
    """Lower-case words; '@' stays inside a word (Recall@K), single letters go (the 's' of "CLIP's"), and digit
    groups join ("32 768" and "32,768" are 32768)."""
    import re

    text = re.sub(r"(?<=\d)[ ,\u2009\u202f](?=\d{3}(?!\d))", "", text.lower())
    return [w for w in re.findall(r"[a-z0-9@]+", text) if len(w) > 1 or w.isdigit()]


def _covers_keys(entry: str) -> list[str]:
    return [w[:5] for w in _words(entry) if w not in _COVERS_STOPWORDS]


def _cell_naming(entry: str, cells: list[str]) -> int | None:
    """The index of the first markdown cell that holds every content word of ``entry``, or None."""
    keys = _covers_keys(entry)
    for i, cell in enumerate(cells):
        words = _words(cell)
        if all(any(w.startswith(k) for w in words) for k in keys):
            return i
    return None


def test_the_covers_rule_allows_inflections_but_needs_every_word_in_one_cell():
    cells = ["## Recognising classes never seen\n\nA **label classifier** cannot name them.",
             "The guidance weight w trades fidelity for diversity.", "A sweep over w, as the lecture's figure does."]
    assert _cell_naming("recognising classes never seen", cells) == 0
    assert _cell_naming("recognition of unseen classes", cells) is None  # 'unseen' is not in the cell
    assert _cell_naming("label classifiers", cells) == 0
    assert _cell_naming("guidance sweep", cells) is None, "words spread over two cells name no idea"
    assert _cell_naming("the guidance weight", cells) == 1
    assert _covers_keys("CLIP's batch of 32768") == ["clip", "batch", "32768"]
    assert _covers_keys("Recall@K") == ["recal"]
    assert _cell_naming("CLIP's batch of 32768", ["CLIP's batch of 32 768 pairs"]) == 0


@pytest.mark.parametrize("nb", [nb for nb in load_course(ROOT).notebooks if nb.written], ids=lambda nb: nb.id)
def test_every_covers_entry_names_an_idea_of_its_notebook(nb):
    from mmcourse import notebook

    assert nb.covers, f"notebook {nb.id} lists no lecture ideas under `covers`"
    cells = [c.source for c in notebook.read(ROOT / nb.path).cells if c.cell_type == "markdown"]
    missing = [f"{lecture}: {entry!r} (words {_covers_keys(entry)})" for lecture, entries in nb.covers.items()
               for entry in entries if _cell_naming(entry, cells) is None]
    assert not missing, (
        f"course.yml: these `covers` entries of notebook {nb.id} name no idea of {nb.path} (no markdown cell holds all "
        "their words): " + "; ".join(missing) + ". Reword the entry in the notebook's own words, or teach the idea."
    )


def test_covers_cite_the_lectures_listed_under_seeds(course):
    import yaml

    lectures = yaml.safe_load((ROOT / "course.yml").read_text(encoding="utf-8"))["seeds"]
    for nb in course.notebooks:
        for lecture, entries in nb.covers.items():
            assert lecture in lectures, f"notebook {nb.id} cites lecture {lecture!r}, not one of {sorted(lectures)}"
            assert entries and all(isinstance(e, str) and e.strip() for e in entries), (nb.id, lecture, entries)


def test_measured_results_ship_with_the_package_and_match_the_benchmarks():
    """Notebooks read committed benchmark results with ``measured(name)`` from the copy in assets/results
    (installed with the package, so Colab has it); each copy is the benchmark's own output, byte for byte."""
    from mmcourse.course import measured

    shipped = sorted((ROOT / "assets" / "results").glob("*.json"))
    assert shipped, "assets/results holds the results notebooks read"
    for path in shipped:
        twin = ROOT / "benchmarks" / "results" / path.name
        assert twin.is_file() and twin.read_bytes() == path.read_bytes(), (
            f"assets/results/{path.name} differs from benchmarks/results/{path.name}: rerun the benchmark (it writes both)"
        )
        assert measured(path.stem) == json.loads(path.read_text())
    with pytest.raises(FileNotFoundError, match="no measured results named 'nope'.*shipped:"):
        measured("nope")
