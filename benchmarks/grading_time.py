"""Time to grade one submission of notebook 01, and a folder of 20 (`mmcourse grade`, default jobs).

    python benchmarks/grading_time.py

Submissions are the released student notebook with the reference solutions filled in.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

from mmcourse import notebook
from mmcourse.course import load_course
from mmcourse.grading.release import release


def main() -> None:
    course = load_course()
    info = course.find("01")
    ref = notebook.read(course.root / info.path)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (released,) = [p for p in release(tmp / "release") if p.name.startswith("01_")]
        nb = nbformat.read(released, as_version=4)
        for ex_id, idx in notebook.exercise_cells(nb).items():
            nb.cells[idx].source = ref.cells[notebook.exercise_cells(ref)[ex_id]].source
        for i in range(20):
            (tmp / "folder" / f"student{i:02d}").mkdir(parents=True)
            nbformat.write(nb, tmp / "folder" / f"student{i:02d}" / released.name)
        rows = []
        for label, target in (("1 submission", tmp / "folder" / "student00"), ("folder of 20", tmp / "folder")):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "mmcourse", "grade", str(target), "--json", str(tmp / "r.json")],
                           check=True, capture_output=True, cwd=course.root)
            rows.append(f"| {label} | {time.perf_counter() - start:.1f} s |")
    table = "\n".join([
        "Grading notebook 01 (`mmcourse grade`, default --jobs, wall time including start-up), `python benchmarks/grading_time.py`",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores",
        "",
        "| what | wall time |",
        "| --- | --- |",
        *rows,
    ])
    print(table)
    (Path(__file__).parent / "results" / "grading_time.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
