"""Time to grade notebook 01 with and without the sandbox (`mmcourse grade`, default jobs): one submission,
a folder of 20, and the sandbox's overhead per submission (goal: at most 1 s). While notebook 01's exercises
are being rewritten (not all registered), the first notebook whose exercises are all registered stands in.

    python benchmarks/grading_time.py

Submissions are the released student notebook with the reference solutions filled in. The overhead per
submission compares the time each submission took inside its worker (the JSON report's ``seconds``: kernel
starts, set-up cell, exercises, judging), sandboxed against unsandboxed, over the folder of 20; the one-off
check that the sandbox is in effect, made once per batch, is timed on its own.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

from mmcourse import notebook
from mmcourse.course import load_course
from mmcourse.grading import sandbox
from mmcourse.grading.release import release

MODES = ("off", "required")


def _notebook():
    """Notebook 01, or the first written notebook whose exercises are all registered checks."""
    from mmcourse.check.core import EXERCISES

    course = load_course()
    candidates = sorted((nb for nb in course.notebooks if nb.written and nb.exercises), key=lambda nb: nb.id != "01")
    return next(nb for nb in candidates if all(ex["id"] in EXERCISES for ex in nb.exercises))


def _grade(target: Path, mode: str, report: Path) -> tuple[float, list[float]]:
    """Wall seconds of one `mmcourse grade` run, and the seconds of each submission inside it."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mmcourse", "grade", str(target), "--json", str(report), "--sandbox", mode],
                   check=True, capture_output=True, cwd=load_course().root)
    wall = time.perf_counter() - start
    subs = json.loads(report.read_text())["submissions"]
    assert all(s["score"] == s["max_score"] > 0 for s in subs), "the benchmark's submissions must all pass"
    return wall, [s["seconds"] for s in subs]


def _kernel_cycles(info, repeats: int = 5) -> dict[str, float]:
    """Median seconds to start a grading kernel, run the reference set-up cell and shut it down, per mode
    (the modes interleaved, so both see the same load)."""
    from mmcourse.grading.kernel import Kernel

    setup = next(c.source for c in notebook.read(load_course().root / info.path).cells if c.cell_type == "code")
    policies = {mode: sandbox.resolve(mode) for mode in MODES}
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(repeats):
        for mode, policy in policies.items():
            start = time.perf_counter()
            with Kernel(policy) as kernel:
                assert kernel.execute(setup, 300).status == "ok"
            times[mode].append(time.perf_counter() - start)
    return {mode: statistics.median(t) for mode, t in times.items()}


def _probe_seconds(repeats: int = 5) -> float:
    policy = sandbox.resolve("required", probe_first=False)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        assert sandbox.probe(policy) is None
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    if shutil.which("bwrap") is None:
        raise SystemExit("bubblewrap (bwrap) is not installed: the sandbox cannot be timed")
    load_before = os.getloadavg()[0]
    course = load_course()
    info = _notebook()
    ref = notebook.read(course.root / info.path)
    rows, per_submission = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (released,) = [p for p in release(tmp / "release") if p.name.startswith(f"{info.id}_")]
        nb = nbformat.read(released, as_version=4)
        for ex_id, idx in notebook.exercise_cells(nb).items():
            nb.cells[idx].source = ref.cells[notebook.exercise_cells(ref)[ex_id]].source
        for i in range(20):
            (tmp / "folder" / f"student{i:02d}").mkdir(parents=True)
            nbformat.write(nb, tmp / "folder" / f"student{i:02d}" / released.name)
        for label, target in (("1 submission", tmp / "folder" / "student00"), ("folder of 20", tmp / "folder")):
            walls = {}
            for mode in MODES:
                walls[mode], seconds = _grade(target, mode, tmp / "r.json")
                per_submission[mode] = statistics.mean(seconds)
            rows.append(f"| {label} | {walls['off']:.1f} s | {walls['required']:.1f} s |")
    overhead = per_submission["required"] - per_submission["off"]
    cycle = _kernel_cycles(info)
    rows.append(f"| one kernel: start, set-up cell, shutdown (median of 5, modes interleaved) | {cycle['off']:.2f} s | "
                f"{cycle['required']:.2f} s |")
    rows.append(f"| per submission, mean inside the worker (folder of 20) | {per_submission['off']:.2f} s | "
                f"{per_submission['required']:.2f} s |")
    table = "\n".join([
        f"Grading notebook {info.id} (`mmcourse grade`, default --jobs, wall time including start-up), "
        "`python benchmarks/grading_time.py`",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores; load average {load_before:.2f} before the run, "
        f"{os.getloadavg()[0]:.2f} after (other work on the machine makes these numbers noisy)",
        "",
        "| what | --sandbox off | --sandbox required (bubblewrap) |",
        "| --- | --- | --- |",
        *rows,
        "",
        f"Sandbox overhead per submission: {overhead:+.2f} s over the folder of 20, "
        f"{cycle['required'] - cycle['off']:+.2f} s per kernel (goal: at most 1 s; a submission starts one kernel, "
        f"plus one per restart); checking once per batch that the sandbox is in effect: {_probe_seconds():.2f} s.",
    ])
    print(table)
    (Path(__file__).parent / "results" / "grading_time.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
