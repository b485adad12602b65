"""Grading that student code cannot escape: the sandbox is really in effect, and a batch of attackers and
honest students, graded by the ``grade`` command on a copy of the course, ends as an honest reading says.

Needs bubblewrap (``bwrap``): skipped without it, unless ``MMCOURSE_SANDBOX=required`` (as in CI), which
turns a missing sandbox into a failure.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import nbformat
import pytest

from mmcourse import notebook
from mmcourse.course import load_course
from mmcourse.grading import sandbox
from mmcourse.grading.kernel import Kernel
from mmcourse.grading.release import released_notebook

COURSE = load_course()
TOKEN = f"mmcourse-attack-{os.getpid()}"  # in every attacker process's command line, to find survivors
BATCH_LIMIT_S = 300  # the attack batch must finish within this (about 60 s on 2 busy cores)


def _need_bwrap() -> None:
    if shutil.which("bwrap"):
        return
    if os.environ.get("MMCOURSE_SANDBOX") == "required":
        pytest.fail("MMCOURSE_SANDBOX=required but bubblewrap (bwrap) is not installed")
    pytest.skip("bubblewrap (bwrap) is not installed (apt install bubblewrap); CI runs these with MMCOURSE_SANDBOX=required")


def _survivors() -> list[str]:
    """Command lines of live processes that carry TOKEN (an attacker's process that outlived its kernel)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = Path(entry.path, "cmdline").read_bytes()
                state = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if TOKEN.encode() in cmdline and state != "Z" and b"pytest" not in cmdline:
                found.append(cmdline.replace(b"\0", b" ").decode(errors="replace")[:200])
    return found


# --------------------------------------------------------------------------------------------- one kernel


@pytest.fixture(scope="module")
def policy():
    _need_bwrap()
    return sandbox.resolve("required")


PROBE = textwrap.dedent("""
    import errno, json, os, socket, subprocess, sys, sysconfig, mmcourse
    def attempt(path):
        try:
            with open(path, "a"):
                pass
            return "written"
        except OSError as err:
            return errno.errorcode.get(err.errno, str(err.errno))
    def attempt_read(path):
        try:
            with open(path) as f:
                return len(f.read())  # a masked file is empty, or cannot be opened at all
        except OSError:
            return 0
    package = os.path.dirname(os.path.dirname(mmcourse.__file__))
    report = {
        "course": attempt(os.path.join(package, "mmcourse", "grading", "grade.py")),
        "pth": attempt(os.path.join(sysconfig.get_paths()["purelib"], "TOKEN.pth")),
        "etc": attempt("/etc/TOKEN"),
        "home": attempt(os.path.join(os.path.expanduser("~"), "TOKEN")),
        "cwd": os.getcwd(), "pid": os.getpid(), "uid": os.getuid(),
        "processes": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
        "hidden": attempt_read(HIDDEN),
    }
    try:
        socket.create_connection(("1.1.1.1", 80), timeout=3).close()
        report["network"] = "reachable"
    except OSError as err:
        report["network"] = errno.errorcode.get(err.errno, str(err))
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", "TOKEN"], start_new_session=True,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(json.dumps(report))
""")


def test_the_sandbox_is_really_in_effect(policy, tmp_path):
    """A mis-set kernel command would run unsandboxed without any error: prove each property from inside."""
    import sysconfig

    stray = Path(sysconfig.get_paths()["purelib"]) / f"{TOKEN}.pth"
    code = PROBE.replace("TOKEN", TOKEN).replace("HIDDEN", repr(str(Path(policy.package_root) / "course.yml")))
    hiding = replace(policy, masked=(*policy.masked, str(Path(policy.package_root) / "course.yml")))
    with Kernel(hiding) as kernel:
        run = kernel.execute(code, 120)
        assert run.status == "ok", run
        report = json.loads(run.text.strip().splitlines()[-1])
        assert _survivors(), "the detached child runs while its kernel lives"
    assert not _survivors(), "a detached (setsid) child must die with its kernel"
    denied = ("EROFS", "EACCES")  # read-only mounts (as root, the kernel's own uid is refused even earlier)
    assert report["course"] in denied and report["pth"] in denied, report
    assert report["etc"] in denied and report["home"] == "written"
    assert report["cwd"] == "/tmp" and report["pid"] < 10 and max(report["processes"]) < 20
    assert report["network"] != "reachable" and report["hidden"] == 0
    if stray.exists():  # only if the sandbox failed: leave the shared environment as it was
        stray.unlink()
        pytest.fail("the kernel could create a file in site-packages")
    if os.geteuid() == 0:
        assert report["uid"] >= sandbox.UID_BASE, "as root, the kernel must run as a uid of its own"


def test_processes_and_memory_are_bounded(policy):
    limits = replace(policy.limits, processes=64, memory_mb=2048)
    code = textwrap.dedent("""
        import os, time
        forked = 0
        while forked < 10_000:
            try:
                pid = os.fork()
            except OSError:
                break
            if pid == 0:
                time.sleep(300)
                os._exit(0)
            forked += 1
        try:
            hog = bytearray(3 << 30)
            memory = "allocated"
        except MemoryError:
            memory = "refused"
        print(forked, memory)
    """)
    start = time.monotonic()
    with Kernel(replace(policy, limits=limits)) as kernel:
        run = kernel.execute(code, 120)
    forked, memory = run.text.split()
    assert run.status == "ok" and 0 < int(forked) < 64 and memory == "refused", run
    assert time.monotonic() - start < 60


def test_a_broken_sandbox_command_is_caught_by_the_probe(policy, monkeypatch):
    monkeypatch.setattr(sandbox.Policy, "command", lambda self, runtime, program, uid=None: list(program))
    problem = sandbox.probe(policy)
    assert problem and "not in effect" in problem and "writable" in problem and "PID namespace" in problem
    monkeypatch.undo()
    assert sandbox.probe(replace(policy, bwrap="/bin/false")) is not None


# --------------------------------------------------------------------------------------------- the attack batch


class Target:
    """The notebook the attack batch answers: notebook 02 (as in the issue) or else the first notebook whose
    exercises are all registered and have exercise and check cells, with at least three exercises.
    ``ex[0..2]`` are exercise ids; most attacks go into the third."""

    def __init__(self) -> None:
        from mmcourse.check.core import EXERCISES
        from mmcourse.grading.runner import answer_name

        candidates = sorted((nb for nb in COURSE.notebooks if nb.written), key=lambda nb: nb.id != "02")
        for info in candidates:
            ref = notebook.read(COURSE.root / info.path)
            ids = [ex["id"] for ex in info.exercises]
            cells, checks = notebook.exercise_cells(ref), notebook.check_cells(ref)
            if len(ids) >= 3 and all(i in EXERCISES and i in cells and i in checks for i in ids):
                break
        else:
            pytest.fail("no written notebook has three consistent exercises to attack")
        self.info, self.ref, self.ex = info, ref, ids
        self.points = {ex["id"]: int(ex["points"]) for ex in info.exercises}
        self.name = {i: answer_name(ref, i) for i in ids}
        self.solution = {i: ref.cells[cells[i]].source for i in ids}
        self.file = f"{info.id}_{info.slug}.ipynb"

    def stub(self, ex_id: str, body: str) -> str:
        """``body`` (the attack), then a stub of the exercise's function, so the attacker earns nothing."""
        stub = f"\n\ndef {self.name[ex_id]}(*args, **kwargs):\n    raise NotImplementedError\n"
        return textwrap.dedent(body).replace("TOKEN", TOKEN) + stub


SPY = '''
import json, os, sys, time
targets = set(sys.argv[2:])
forged = json.dumps({"submissions": [{"student": "detacher", "score": 10, "max_score": 10}]})
end = time.time() + 60
while time.time() < end:
    for pid in os.listdir("/proc"):  # the grader's command line names the reports
        try:
            args = open("/proc/%s/cmdline" % pid, "rb").read().split(b"\\0")
            cwd = os.readlink("/proc/%s/cwd" % pid)
        except OSError:
            continue
        for flag, value in zip(args, args[1:]):
            if flag in (b"--json", b"--csv"):
                targets.add(os.path.join(cwd, value.decode()))
    for target in targets:
        try:
            with open(target, "w") as f:
                f.write(forged)
        except OSError:
            pass
    time.sleep(0.2)
'''


def _attacks(t: Target, reports: Path, subs: Path, outside: Path) -> dict[str, dict[str, str]]:
    """student -> {exercise id: source of that exercise cell}; other cells stay the released stubs."""
    spy_args = [TOKEN, str(reports / "grades.json"), str(reports / "grades.csv")]
    detached = f"""
        import os, subprocess, sys
        SPY = {SPY!r}
        subprocess.Popen([sys.executable, "-c", SPY, *{spy_args!r}], start_new_session=True,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if os.fork() == 0:  # and a double-forked daemon
            os.setsid()
            os.execv(sys.executable, [sys.executable, "-c", SPY, *{spy_args!r}])
    """
    vandal = f"""
        import glob, os, sysconfig, mmcourse
        seen = []
        for root in [{str(subs)!r}, os.getcwd(), os.path.expanduser("~"), os.path.dirname(os.path.dirname(mmcourse.__file__))]:
            for path in glob.glob(os.path.join(root, "**", "*.ipynb"), recursive=True):
                seen.append(path)
                try:
                    with open(path, "w") as f:
                        f.write('{{"cells": []}}')
                except OSError:
                    pass
        for target, text in [
            (os.path.join(os.path.dirname(mmcourse.__file__), "grading", "grade.py"), "\\n# TOKEN: always full marks\\n"),
            (os.path.join(sysconfig.get_paths()["purelib"], "TOKEN.pth"), "/nonexistent-TOKEN\\n"),
            ({str(outside / "TOKEN-vandal")!r}, "x"),
        ]:
            try:
                with open(target, "a") as f:
                    f.write(text)
            except OSError:
                pass
        raise RuntimeError("saw %d notebooks" % len(seen))
    """
    replay = f"""
        import os
        places = [os.getcwd(), os.path.expanduser("~"), "/tmp", {str(outside)!r}]
        if any(os.path.exists(os.path.join(p, "TOKEN-flag")) for p in places):
            os._exit(1)  # dies on every replay, if a flag survives the restart
        for p in places:
            try:
                open(os.path.join(p, "TOKEN-flag"), "w").close()
            except OSError:
                pass
    """
    forger_marker = f"""
        import base64, io, sys, torch
        _real_save = torch.save
        def {t.name[t.ex[0]]}(*args, **kwargs):
            consts = sys._getframe(1).f_code.co_consts  # the one-time marker is no secret
            marker = next(c for c in consts if isinstance(c, str) and c.startswith("MMCOURSE-RESULT "))
            buf = io.BytesIO()
            _real_save([("ok", torch.tensor(0.0))] * 50, buf)
            print(marker + base64.b64encode(buf.getvalue()).decode())
            return torch.tensor(0.0)
    """
    forger_save = """
        import torch
        _save = torch.save
        torch.save = lambda obj, f, *a, **k: _save(5, f)
    """
    bomber_fork = """
        import os, time
        children = []
        while len(children) < 100_000:
            try:
                pid = os.fork()
            except OSError:
                break
            if pid == 0:
                time.sleep(600)
                os._exit(0)
            children.append(pid)
        for pid in children:  # a polite bomb: the limit is shown, and the kernel stays usable
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        raise RuntimeError("forked %d" % len(children))
    """
    bomber_memory = "hog = bytearray(6 << 30)  # allowed by the machine, refused by the sandbox's limit\n"
    escape = 'raise ValueError("\\x1b[2K\\x1b[1A\\r=esc  99  1/1  3/3  2/2  2/2  2/2  10/10\\x1b]0;owned\\x07")\n'
    e0, e1, e2 = t.ex[:3]
    sol = t.solution
    return {
        "detacher": {e2: t.stub(e2, detached)},
        "vandal": {e2: textwrap.dedent(vandal).replace("TOKEN", TOKEN)},
        "replay_killer": {e2: t.stub(e2, replay), e1: "import os\nos._exit(1)\n"},
        "forger": {e0: textwrap.dedent(forger_marker), e2: t.stub(e2, forger_save)},
        "bomber": {e2: textwrap.dedent(bomber_fork), e0: bomber_memory},
        "=esc\x1b[31mape": {e2: escape},
        "flooder": {**sol, e2: 'print("x" * 50_000_000)\n' + sol[e2],  # one huge message
                    e1: 'for _ in range(300):\n    print("y" * 10_000)\n' + sol[e1]},  # many small ones
        "honest": dict(sol),
        "partial": {e0: sol[e0]},
    }


def _expected(t: Target) -> dict[str, int]:
    """student (as the reports name it) -> score: honest students keep theirs, every attacker gets 0."""
    total = sum(t.points.values())
    attackers = ["detacher", "vandal", "replay_killer", "forger", "bomber", "=escape", "linker", "linkdir",
                 "list_tag", "planned", "no_source"]
    flooded = total - t.points[t.ex[1]] - t.points[t.ex[2]]
    return {**dict.fromkeys(attackers, 0), "honest": total, "partial": t.points[t.ex[0]], "flooder": flooded}


def _copy_course(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("mmcourse", "notebooks", "assets"):
        shutil.copytree(COURSE.root / name, dest / name, ignore=ignore)
    shutil.copy2(COURSE.root / "course.yml", dest / "course.yml")


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink() and "__pycache__" not in p.parts}


def _build_submissions(t: Target, subs: Path, reports: Path, outside: Path) -> None:
    released = released_notebook(t.ref, t.info.id, "test")

    def write(student: str, sources: dict[str, str] | None = None, tag_as_list: bool = False, claim: str | None = None,
              drop_source: bool = False):
        nb = nbformat.from_dict(json.loads(json.dumps(released)))
        cells = notebook.exercise_cells(nb)
        for ex_id, src in (sources or {}).items():
            nb.cells[cells[ex_id]].source = src
        if tag_as_list:
            nb.cells[cells[t.ex[2]]].metadata["exercise"] = [t.ex[2]]
        if drop_source:
            del nb.cells[cells[t.ex[2]]]["source"]
        if claim:
            nb.metadata["mmcourse"]["notebook"] = claim
        (subs / student).mkdir(parents=True)
        nbformat.write(nb, subs / student / t.file)

    for student, sources in _attacks(t, reports, subs, outside).items():
        write(student, sources)
    write("list_tag", tag_as_list=True)
    write("no_source", drop_source=True)
    write("planned", claim=next((nb.id for nb in COURSE.notebooks if not nb.written), "99"))
    (subs / "linker").mkdir()
    (subs / "linker" / t.file).symlink_to(subs / "honest" / t.file)
    (subs / "linkdir").symlink_to(subs / "partial", target_is_directory=True)


def _site_packages() -> list[str]:
    import sysconfig

    return sorted(os.listdir(sysconfig.get_paths()["purelib"]))


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """Grade the attack batch once with ``mmcourse grade --sandbox required`` on a copy of the course."""
    _need_bwrap()
    target = Target()
    tmp = tmp_path_factory.mktemp("attack")
    course, reports, outside = tmp / "course", tmp / "reports", tmp / "outside"
    _copy_course(course)
    reports.mkdir()
    outside.mkdir()
    subs = course / "submissions"  # inside the course checkout: the sandbox must hide it
    _build_submissions(target, subs, reports, outside)
    before = {"tree": _digests(tmp), "site": _site_packages(), "real": _digests(COURSE.root / "mmcourse" / "grading")}
    env = {**os.environ, "PYTHONPATH": str(course)}
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "mmcourse", "grade", "submissions", "--json", str(reports / "grades.json"),
         "--csv", str(reports / "grades.csv"), "--timeout", "30", "--jobs", "2", "--sandbox", "required"],
        cwd=course, env=env, capture_output=True, text=True, timeout=BATCH_LIMIT_S + 60,
    )
    seconds = time.monotonic() - start
    survivors_at_exit = _survivors()
    time.sleep(3)  # the detached spies rewrite the reports every 0.2 s, if any survived
    after = {"tree": _digests(tmp), "site": _site_packages(), "real": _digests(COURSE.root / "mmcourse" / "grading")}
    path = reports / "grades.json"
    report = json.loads(path.read_text()) if path.exists() else {"submissions": []}
    return {"proc": proc, "seconds": seconds, "before": before, "after": after, "reports": reports, "target": target,
            "survivors": survivors_at_exit + _survivors(), "report": report,
            "by": {s["student"]: s for s in report["submissions"]}}


def _table(stdout: str) -> dict[str, str]:
    """student -> 'score/max' from the printed table (columns found from the header; score is the last)."""
    lines = stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("student "))
    nb_at, score_at = (lines[head].index(col) for col in (" nb ", " score"))
    rows = {}
    for line in lines[head + 2:]:
        if not line.strip():  # the table ends; the notes follow
            break
        rows[line[:nb_at].strip()] = line[score_at:].strip()
    return rows


def test_the_batch_finishes_within_its_limit(batch):
    proc = batch["proc"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert batch["seconds"] < BATCH_LIMIT_S
    assert "sandbox: bubblewrap" in proc.stderr


def test_honest_students_keep_their_scores_and_attackers_get_zero(batch):
    scores = {name: s["score"] for name, s in batch["by"].items()}
    expected = _expected(batch["target"])
    assert batch["report"].get("sandbox") == "bubblewrap"
    assert scores == expected, {name: [(e["id"], e["status"], e["message"]) for e in s["exercises"]] or s["error"]
                                for name, s in batch["by"].items() if scores[name] != expected.get(name)}


def test_reports_equal_what_the_grader_printed_and_never_change_afterwards(batch):
    out = batch["proc"].stdout
    printed = _table(out)
    assert set(printed) == set(batch["by"])
    for name, s in batch["by"].items():
        assert printed[name] == f"{s['score']}/{s['max_score']}", (name, printed)
    digests = dict(re.findall(r"^(\S+)  sha256 ([0-9a-f]{64})$", out, re.M))
    assert set(digests) == {str(batch["reports"] / "grades.json"), str(batch["reports"] / "grades.csv")}
    for path, digest in digests.items():
        assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == digest, f"{path} changed after the grader exited"
    assert not batch["survivors"], f"processes outlived the grader: {batch['survivors']}"


def test_no_file_outside_the_reports_changed(batch):
    before, after = batch["before"], batch["after"]
    new = set(after["tree"]) - set(before["tree"])
    assert new == {"reports/grades.json", "reports/grades.csv"}, new
    changed = [p for p in before["tree"] if after["tree"].get(p) != before["tree"][p]]
    assert not changed, f"changed by the batch: {changed}"
    assert after["site"] == before["site"], "a file appeared in (or vanished from) site-packages"
    assert after["real"] == before["real"]


def test_the_terminal_and_the_csv_get_clean_text(batch):
    out = batch["proc"].stdout + batch["proc"].stderr
    assert not [ch for ch in out if (ord(ch) < 32 and ch != "\n") or 0x7F <= ord(ch) <= 0x9F]
    import csv
    import io

    rows = list(csv.reader(io.StringIO((batch["reports"] / "grades.csv").read_text())))
    assert not [cell for row in rows for cell in row if cell.startswith(("=", "+", "-", "@"))]
    assert any(row[0] == "'=escape" for row in rows[1:])


def test_each_attack_is_named_in_its_message(batch):
    by, (e0, e1, e2) = batch["by"], batch["target"].ex[:3]
    msg = lambda student, ex: next(e["message"] for e in by[student]["exercises"] if e["id"] == ex)  # noqa: E731
    assert "saw 0 notebooks" in msg("vandal", e2)  # no submission is visible in the sandbox
    forked = int(re.search(r"forked (\d+)", msg("bomber", e2)).group(1))
    assert 0 < forked < sandbox.Limits().processes
    assert "MemoryError" in msg("bomber", e0)
    assert "printed more than 1 MB" in msg("flooder", e2) and "printed more than 1 MB" in msg("flooder", e1)
    assert "could not read" in msg("forger", e0) and "wrong structure" in msg("forger", e2)
    assert "kernel died" in msg("replay_killer", e1)
    assert "symbolic link" in by["linker"]["error"] and "symbolic link" in by["linkdir"]["error"]
    assert "must be a string" in by["list_tag"]["error"]
    assert "no source text" in msg("no_source", e2)
    assert "planned" in by["planned"]["error"] or "does not have" in by["planned"]["error"]
    assert by["honest"]["error"] is None and all(e["status"] == "passed" for e in by["honest"]["exercises"])
