"""The `mmcourse` command: list, readme, run (errors), train (errors), and `python -m mmcourse`."""

from __future__ import annotations

import subprocess
import sys

from mmcourse.cli import main
from mmcourse.course import load_course


def run_cli(*args):
    root = load_course().root
    return subprocess.run([sys.executable, "-m", "mmcourse", *args], capture_output=True, text=True, cwd=root, timeout=120)


def test_list_prints_the_course_in_order(capsys):
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line[:2] for line in lines] == [f"{i:02d}" for i in range(1, 10)]


def test_readme_is_up_to_date():
    proc = run_cli("readme", "--check")
    assert proc.returncode == 0, proc.stderr + "\n(run `mmcourse readme` and commit README.md)"


def test_run_unknown_notebook_is_a_clear_error(capsys):
    assert main(["run", "42"]) == 2
    assert "no notebook '42'" in capsys.readouterr().err


def test_run_planned_notebook_says_so(capsys, monkeypatch):
    import dataclasses

    from mmcourse import course as course_module

    real = course_module.load_course

    def with_09_planned(*args, **kwargs):  # every notebook is written now: pretend 09 is not
        course = real(*args, **kwargs)
        notebooks = [dataclasses.replace(n, status="planned") if n.id == "09" else n for n in course.notebooks]
        return dataclasses.replace(course, notebooks=notebooks)

    monkeypatch.setattr(course_module, "load_course", with_09_planned)
    assert main(["run", "09"]) == 2
    assert "planned" in capsys.readouterr().err


def test_train_unknown_recipe(capsys):
    assert main(["train", "nothing"]) == 2
    assert "attributes_shapes" in capsys.readouterr().err


def test_train_nproc_is_refused_by_single_process_recipes(capsys):
    assert main(["train", "attributes_shapes", "--nproc", "2"]) == 2
    assert "one process only" in capsys.readouterr().err


def test_python_dash_m_works_and_failing_notebook_exits_nonzero(tmp_path, monkeypatch):
    """`mmcourse run` on a notebook whose cell raises writes the partial output and exits 1."""
    root = tmp_path / "course"
    (root / "notebooks").mkdir(parents=True)
    src = load_course().root / "course.yml"
    text = src.read_text().replace("status: ready", "status: planned")
    text = text.replace("path: notebooks/09_audio.py\n    status: planned", "path: notebooks/09_audio.py\n    status: draft")
    (root / "course.yml").write_text(text)
    (root / "notebooks" / "09_audio.py").write_text(
        "# ---\n# jupyter:\n#   kernelspec:\n#     display_name: Python 3\n#     language: python\n#     name: python3\n# ---\n\n"
        "# %%\nx = 1\n\n# %%\nraise RuntimeError('boom in cell 2')\n"
    )
    proc = subprocess.run([sys.executable, "-m", "mmcourse", "run", "09", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=root, timeout=300)
    assert proc.returncode == 1
    assert "boom in cell 2" in proc.stderr
    assert (tmp_path / "out" / "09_audio.ipynb").is_file()
