"""Time to grade notebook 01 with and without the sandbox (`mmcourse grade`, default jobs): one submission,
a folder of 20, and the sandbox's overhead per submission (goal: at most 1 s). While notebook 01's exercises
are being rewritten (not all registered), the first notebook whose exercises are all registered stands in.

    python benchmarks/grading_time.py              # both tables
    python benchmarks/grading_time.py sandbox      # the sandbox table only
    python benchmarks/grading_time.py breakdown    # where one submission's seconds go, before/after

The breakdown grades one solved submission through the grader's own steps (read and parse, reference
notebook, plan, kernel start, set-up cell, each exercise's cells, judging, shutdown; ``runner.run(trace=)``)
in the default sandbox, without and with the lazy matplotlib prelude (``runner.LAZY_IMPORTS``), the two
variants alternating so that both see the same load; it reports medians and their ratio.

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


BREAKDOWN_HEADING = "## Where the seconds of one submission go"


def _solved_submission(info, folder: Path) -> Path:
    """The released student notebook of ``info`` with the reference solutions filled in."""
    ref = notebook.read(load_course().root / info.path)
    (released,) = [p for p in release(folder / "release") if p.name.startswith(f"{info.id}_")]
    nb = nbformat.read(released, as_version=4)
    for ex_id, idx in notebook.exercise_cells(nb).items():
        nb.cells[idx].source = ref.cells[notebook.exercise_cells(ref)[ex_id]].source
    path = folder / "student00" / released.name
    path.parent.mkdir(parents=True)
    nbformat.write(nb, path)
    return path


def _grade_traced(path: Path, policy, lazy: bool, seed: int = 0) -> dict[str, float]:
    """Seconds of each part of grading one submission (the steps of grade.grade_one, timed)."""
    import secrets

    from mmcourse.grading import runner
    from mmcourse.grading.judge import judge_output
    from mmcourse.grading.kernel import Kernel, runtime_base
    from mmcourse.grading.submission import parse, read

    parts: dict[str, float] = {}
    start = time.perf_counter()
    course = load_course()
    sub = read(path, "student00")
    answers = parse(sub.data, path.name, course)
    parts["read and parse the submission"] = time.perf_counter() - start
    began = time.perf_counter()
    reference = notebook.read(course.root / answers.notebook.path)
    plan = runner.assemble(reference, answers, seed, secrets.token_hex(16), lazy_imports=lazy)
    parts["reference notebook and plan (hidden cases)"] = time.perf_counter() - began
    trace: list[tuple[str, float]] = []
    base = runtime_base(policy)
    outcome = runner.run(plan, lambda: Kernel(policy, base), exercise_timeout=120, total_timeout=1200, trace=trace)
    for what, seconds in trace:
        key = what if " " not in what or what.split()[0] not in plan.cases else f"exercise {what.split()[0]} (4 cells)"
        parts[key] = parts.get(key, 0.0) + seconds
    began = time.perf_counter()
    statuses = [runner_status for runner_status, _ in
                (judge_output(ex, plan.cases[ex], outcome[ex].text, plan.marker) for ex in plan.cases)]
    parts["judging (in the grader)"] = time.perf_counter() - began
    assert statuses == ["passed"] * len(plan.cases), statuses
    parts["total"] = time.perf_counter() - start
    return parts


def _split(info, repeats: int) -> dict[str, float]:
    """Medians: a kernel's start with and without the sandbox, and the set-up cell's imports one by one
    (torch, matplotlib.pyplot, then the whole cell, whose imports are then already done)."""
    from mmcourse.grading.kernel import Kernel

    setup = next(c.source for c in notebook.read(load_course().root / info.path).cells if c.cell_type == "code")
    cells = {"import torch": "import torch", "import matplotlib.pyplot": "import matplotlib.pyplot",
             "the rest of the set-up cell": setup}
    times: dict[str, list[float]] = {}
    for _ in range(repeats):
        for mode in ("off", "required"):
            start = time.perf_counter()
            with Kernel(sandbox.resolve(mode)) as kernel:
                times.setdefault(f"kernel start, sandbox {mode}", []).append(time.perf_counter() - start)
                if mode == "required":
                    for label, code in cells.items():
                        run = kernel.execute(code, 300)
                        assert run.status == "ok", run.error
                        times.setdefault(label, []).append(run.seconds)
    return {k: statistics.median(v) for k, v in times.items()}


def breakdown(repeats: int = 3) -> str:
    """The breakdown table (markdown): medians over ``repeats`` alternating runs of each variant."""
    load_before = os.getloadavg()[0]
    info = _notebook()
    policy = sandbox.resolve(None)
    runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        path = _solved_submission(info, Path(tmp))
        for _ in range(repeats):
            for lazy in (False, True):
                runs[lazy].append(_grade_traced(path, policy, lazy))
        split = _split(info, repeats)
    keys = list(dict.fromkeys(k for r in runs[True] + runs[False] for k in r if k != "total")) + ["total"]
    med = {lazy: {k: statistics.median(r.get(k, 0.0) for r in runs[lazy]) for k in keys} for lazy in runs}
    before, after = med[False], med[True]
    ratio = lambda k: f"{after[k] / before[k]:.2f}" if before[k] >= 0.2 else ("new" if not before[k] else "–")  # noqa: E731
    rows = [f"| {k} | {before[k]:.2f} s | {before[k] / before['total']:.0%} | {after[k]:.2f} s | {ratio(k)} |"
            for k in keys if k != "total"]
    rows.append(f"| **total** | **{before['total']:.2f} s** | 100% | **{after['total']:.2f} s** | "
                f"**{after['total'] / before['total']:.2f}** |")
    return "\n".join([
        BREAKDOWN_HEADING,
        "",
        f"Notebook {info.id}, one solved submission, sandbox: {policy.name}; `python benchmarks/grading_time.py breakdown`. "
        f"Medians of {repeats} runs per variant, the variants alternating in one run. Machine: {platform.machine()}, "
        f"{os.cpu_count()} cores, **shared with other work** (load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after): absolute seconds are inflated, the ratios are what to read.",
        "",
        "| part | before | share | after (lazy matplotlib) | after / before |",
        "| --- | --- | --- | --- | --- |",
        *rows,
        "",
        f"Inside the kernel start and the set-up cell (before the change; medians of {repeats}, separate kernels):",
        "",
        "| part | seconds |",
        "| --- | --- |",
        *(f"| {k} | {v:.2f} s |" for k, v in split.items()),
        "",
        "The kernel is already shared by every exercise of one submission (one start per submission, plus one per",
        "restart); what it pays for is the set-up cell's imports (torch above all) and the kernel's own start.",
        "The change: `runner.LAZY_IMPORTS` runs before the set-up cell and makes `import matplotlib.pyplot` lazy",
        "(loaded on first use), which also skips rebuilding matplotlib's font cache in every sandbox's fresh /tmp.",
        "Isolation is unchanged: it runs in each submission's own kernel. torch's import cannot be shared without",
        "sharing a process between students (a pre-imported, forked kernel would share its sandbox), so it stays.",
    ])


def _write_section(path: Path, heading: str, text: str) -> None:
    """Replace the section under ``heading`` (to the end of the file) or append it."""
    old = path.read_text() if path.exists() else ""
    head = old.split(heading)[0].rstrip("\n")
    path.write_text((head + "\n\n" if head else "") + text + "\n")


def main() -> None:
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    results = Path(__file__).parent / "results" / "grading_time.md"
    if what in ("all", "sandbox"):
        sandbox_table(results)
    if what in ("all", "breakdown"):
        table = breakdown()
        print(table)
        _write_section(results, BREAKDOWN_HEADING, table)


def sandbox_table(results: Path) -> None:
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
    old = results.read_text() if results.exists() else ""
    rest = old[old.index(BREAKDOWN_HEADING):] if BREAKDOWN_HEADING in old else ""
    results.write_text(table + "\n" + ("\n" + rest if rest else ""))


if __name__ == "__main__":
    main()
