"""The ``mmcourse`` command: run notebooks headless, rebuild checkpoints, regenerate the README table."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
from pathlib import Path


def _cmd_list(args: argparse.Namespace) -> int:
    from mmcourse.course import load_course

    course = load_course()
    for nb in course.notebooks:
        print(f"{nb.id}  {nb.status:8s} {nb.minutes:3d} min  {nb.title}  ({nb.path})")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    from mmcourse import notebook
    from mmcourse.course import load_course, load_timings, timings_path

    os.environ.setdefault("MMCOURSE_CHECKS", "raise")  # a failing check fails the run (students see a box instead)
    course = load_course()
    nb_info = course.find(args.notebook)
    if not nb_info.written:
        print(f"notebook {nb_info.id} ({nb_info.title}) is planned, not written yet", file=sys.stderr)
        return 2
    nb = notebook.read(course.root / nb_info.path)
    if args.student:
        from mmcourse.grading.release import student_version

        nb = student_version(nb)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{nb_info.id}_{nb_info.slug}{'_student' if args.student else ''}.ipynb"
    try:
        nb, seconds = notebook.execute(nb, cwd=course.root / "notebooks", timeout=args.timeout, allow_errors=args.student)
    except (CellExecutionError, CellTimeoutError, DeadKernelError, AssertionError) as err:
        # (after a dead kernel, nbclient's own clean-up can fail with a bare AssertionError)
        import nbformat

        nbformat.write(nb, out)
        what = {
            CellTimeoutError: f"a cell ran longer than {args.timeout} s",
            DeadKernelError: "the kernel died",
            AssertionError: "the kernel died",
        }.get(type(err), "a cell failed")
        print(f"{nb_info.id} {nb_info.slug}: {what} (partial output in {out})\n{err}", file=sys.stderr)
        return 1
    import nbformat

    nbformat.write(nb, out)
    print(f"{nb_info.id} {nb_info.slug}: ran in {seconds:.1f} s -> {out}")
    if args.student:
        for idx, ename, evalue in notebook.errors(nb):
            print(f"  cell {idx}: {ename}: {evalue.splitlines()[0] if evalue else ''}")
    if args.record and not args.student:
        timings = load_timings(course.root)
        timings[nb_info.id] = {
            "seconds": round(seconds, 1),
            "date": dt.date.today().isoformat(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.python_implementation()} {platform.python_version()}",
        }
        path = timings_path(course.root)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(timings, indent=2, sort_keys=True) + "\n")
        print(f"recorded in {path.relative_to(course.root)}; run `mmcourse readme` to update the README table")
    return 0


def _cmd_readme(args: argparse.Namespace) -> int:
    from mmcourse.course import load_course, render_readme

    course = load_course()
    path = course.root / "README.md"
    current = path.read_text(encoding="utf-8")
    fresh = render_readme(current, course)
    if args.check:
        if fresh != current:
            print("README.md is stale: run `mmcourse readme` and commit the result", file=sys.stderr)
            return 1
        print("README.md is up to date")
        return 0
    if fresh != current:
        path.write_text(fresh, encoding="utf-8")
        print("README.md updated")
    else:
        print("README.md already up to date")
    return 0


TRAIN_OVERRIDES = ("steps", "batch_size", "config", "evaluate")  # recipe arguments the command line may set


def _cmd_train(args: argparse.Namespace) -> int:
    from mmcourse import distributed, pretrained, recipes

    place = distributed.from_environment()  # under torchrun: this process is one rank of a launch
    names = [args.name]
    if args.with_dependents:
        names += pretrained.dependents(args.name)
        if place is None or place.rank == 0:
            print(f"rebuilding, in order: {', '.join(names)}")
    for name in names:
        try:
            recipes.get(name)
        except KeyError as err:
            print(f"mmcourse train: {err.args[0]}", file=sys.stderr)
            return 2
    import inspect

    accepts = {n: set(inspect.signature(recipes.get(n).train).parameters) for n in names}
    if args.nproc != 1 or (place is not None and place.world_size > 1):
        single = [n for n in names if "nproc" not in accepts[n]]
        if single:
            how = "drop --nproc" if place is None else "start it without torchrun"
            print(f"the {', '.join(single)} recipe trains in one process only; {how}", file=sys.stderr)
            return 2
    if args.config is not None:
        try:
            args.config = json.loads(Path(args.config).read_text() if Path(args.config).is_file() else args.config)
        except (OSError, json.JSONDecodeError) as err:
            print(f"mmcourse train: --config is neither a JSON file nor JSON text ({err})", file=sys.stderr)
            return 2
    for key in TRAIN_OVERRIDES:
        lacking = [n for n in names if getattr(args, key) is not None and key not in accepts[n]]
        if lacking:
            flag = "--no-evaluate" if key == "evaluate" else f"--{key.replace('_', '-')}"
            print(f"mmcourse train: the {', '.join(lacking)} recipe has no {key} setting; drop {flag}",
                  file=sys.stderr)
            return 2
    for name in names:
        status = _train_one(name, args, place)
        if status:
            return status
    return 0


def _train_one(name: str, args: argparse.Namespace, place) -> int:
    """Train one bundled checkpoint with its recipe; rank 0 (or the only process) writes it with its card."""
    import time

    import torch

    import mmcourse
    from mmcourse import distributed, pretrained, recipes

    recipe = recipes.get(name)
    options = {"seed": args.seed, "progress": not args.quiet and (place is None or place.rank == 0)}
    if args.nproc != 1:
        options["nproc"] = args.nproc
    options.update({key: getattr(args, key) for key in TRAIN_OVERRIDES if getattr(args, key) is not None})
    if args.collective_timeout is not None:
        options["timeout_s"] = args.collective_timeout
    mmcourse.start(args.seed)
    start = time.perf_counter()
    try:
        model, metrics = recipe.train(**options)
    except ValueError as err:
        print(f"mmcourse train {name}: {err}", file=sys.stderr)
        return 2
    except distributed.RankFailure as err:
        print(f"mmcourse train {name}: {err}; nothing was written", file=sys.stderr)
        return 1
    except Exception as err:  # noqa: BLE001 (mp.spawn: a spawned rank raised or died)
        if type(err).__module__.startswith("torch.multiprocessing"):
            print(f"mmcourse train {name}: a training process failed, so training stopped and nothing was "
                  f"written:\n{err}", file=sys.stderr)
            return 1
        raise
    if model is None:  # another rank of a torchrun launch: rank 0 writes the checkpoint
        return 0
    seconds = time.perf_counter() - start
    extra = {
        "metrics": metrics,
        "train": {
            "seed": args.seed,
            "nproc": metrics.get("nproc", args.nproc) if isinstance(metrics, dict) else args.nproc,
            "seconds": round(seconds, 1),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {_cpu_model()}",
            "torch": torch.__version__,
            "date": dt.date.today().isoformat(),
        },
    }
    path = pretrained.save(name, model, description=recipe.DESCRIPTION, inputs=getattr(recipe, "INPUTS", None),
                           extra=extra, directory=args.out)
    print(f"{name}: trained in {seconds:.0f} s, wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    print(json.dumps(metrics, indent=2))
    return 0


def _cpu_model() -> str:
    """The CPU's model name (rebuilds are bit-identical only on the same CPU and torch version)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _cmd_release(args: argparse.Namespace) -> int:
    from mmcourse.grading.release import release

    for path in release(args.out):
        print(f"wrote {path}")
    return 0


def _cmd_grade(args: argparse.Namespace) -> int:
    import secrets
    import time

    from mmcourse.course import load_course
    from mmcourse.grading import grade, sandbox, shard

    if args.merge is not None:
        return _merge_reports(args)
    if not args.submissions:
        print("mmcourse grade: give submissions (files or folders), or --merge PART.json ...", file=sys.stderr)
        return 2
    part = None
    if args.shard is not None:
        try:
            part = shard.parse_shard(args.shard)
        except ValueError as err:
            print(f"mmcourse grade: {err}", file=sys.stderr)
            return 2
        if args.seed is None:
            print("mmcourse grade: --shard needs --seed: every shard must draw the same hidden cases (pick one "
                  "number per class, e.g. --seed $SLURM_ARRAY_JOB_ID, and give it to every shard)", file=sys.stderr)
            return 2
    found = shard.collect_keyed(args.submissions)
    if not found:
        print("no submissions found (give .ipynb files or folders holding them)", file=sys.stderr)
        return 2
    paths, shard_info = ([(p, s) for p, s, _ in found], None) if part is None else shard.select(found, part)
    if part is not None:
        print(f"shard {part}: {len(paths)} of {len(found)} submission(s)", file=sys.stderr)
    reports = [p for p in (args.json, args.csv) if p]
    try:  # settled and proven once, before any student code runs
        policy = sandbox.resolve(args.sandbox, hide=[*args.submissions, *reports])
    except sandbox.SandboxError as err:
        print(f"mmcourse grade: {err}", file=sys.stderr)
        return 2
    print(policy.note, file=sys.stderr)
    seed = secrets.randbits(31) if args.seed is None else args.seed
    start = time.perf_counter()
    results = grade.grade_many(paths, jobs=args.jobs, seed=seed, exercise_timeout=args.timeout,
                               total_timeout=args.total_timeout, sandbox=policy)
    stamp = shard.course_stamp(load_course(), [r.notebook for r in results])
    written = grade.write_reports(results, args.json, args.csv, sandbox=policy.name,  # every kernel is gone by now
                                  course=stamp, seed=seed, shard=shard_info)
    print(grade.table(results))
    print(f"\ngraded {len(results)} submission(s) in {time.perf_counter() - start:.1f} s (sandbox: {policy.name})")
    for path, digest in written:
        print(f"{path}  sha256 {digest}")
    return 0


def _merge_reports(args: argparse.Namespace) -> int:
    from mmcourse.grading import grade, shard

    if args.submissions or args.shard is not None:
        print("mmcourse grade --merge: give only the parts' JSON reports (no submissions, no --shard)", file=sys.stderr)
        return 2
    if not (args.json or args.csv):
        print("mmcourse grade --merge: say where the merged report goes (--json and/or --csv)", file=sys.stderr)
        return 2
    try:
        doc = shard.merge(args.merge)
    except shard.MergeError as err:
        print(f"mmcourse grade --merge: {err}", file=sys.stderr)
        return 2
    results = shard.results_from(doc)
    written = grade.write_reports(results, args.json, args.csv, sandbox=doc.get("sandbox"), course=doc["course"],
                                  seed=doc["seed"])
    print(grade.table(results))
    print(f"\nmerged {len(args.merge)} part(s): {len(results)} submission(s)")
    for path, digest in written:
        print(f"{path}  sha256 {digest}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mmcourse", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="the notebooks in course order")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("run", help="execute a notebook headless in a fresh kernel and time it")
    p.add_argument("notebook", help="notebook id (01) or slug")
    p.add_argument("--out", default="build/executed", help="folder for the executed .ipynb (default: build/executed)")
    p.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell")
    p.add_argument("--record", action="store_true", help="store the wall time for the README table")
    p.add_argument("--student", action="store_true", help="run the student version (solutions stubbed); list failing cells")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("readme", help="regenerate the README's course table from course.yml")
    p.add_argument("--check", action="store_true", help="only check; exit 1 when the README is stale")
    p.set_defaults(func=_cmd_readme)

    p = sub.add_parser("train", help="rebuild a bundled checkpoint from scratch")
    p.add_argument("name")
    p.add_argument("--with-dependents", action="store_true",
                   help="then rebuild every checkpoint trained on it, in order (their cards pin its sha256)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--nproc", type=int, default=1,
                   help="data-parallel processes on this machine (torch.distributed: gloo on CPU, NCCL on GPUs); "
                        "clip_shapes only. Past one machine, start `mmcourse train` with torchrun instead")
    p.add_argument("--steps", type=int, help="training steps (default: the recipe's; fewer for a smoke test)")
    p.add_argument("--batch-size", type=int, help="global batch size (default: the recipe's)")
    p.add_argument("--config", help="the model's config as JSON text or a JSON file (default: the recipe's)")
    p.add_argument("--no-evaluate", dest="evaluate", action="store_false", default=None,
                   help="skip measuring the trained model for its card (smoke tests)")
    p.add_argument("--out", help="folder for the checkpoint and its card (default: the bundled checkpoints)")
    p.add_argument("--collective-timeout", type=float,
                   help="seconds a rank waits for the others before stopping with an error (default: 300)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("release", help="write the student version of every written notebook (.ipynb)")
    p.add_argument("--out", required=True, help="folder for the student notebooks")
    p.set_defaults(func=_cmd_release)

    p = sub.add_parser("grade", help="grade submitted notebooks (files or folders of them), or merge shards' reports")
    p.add_argument("submissions", nargs="*")
    p.add_argument("--shard", metavar="K/N",
                   help="grade only shard K of N (chosen by a hash of each submission's path in its folder; "
                        "needs --seed, the same for every shard)")
    p.add_argument("--merge", nargs="+", metavar="PART.json",
                   help="merge the JSON reports of every shard into one (--json, --csv), refusing missing or "
                        "duplicated shards and reports of another course version or seed")
    p.add_argument("--json", help="write the report as JSON here")
    p.add_argument("--csv", help="write the report as CSV here")
    p.add_argument("--jobs", type=int, default=max(1, min(4, os.cpu_count() or 1)), help="submissions graded at once")
    p.add_argument("--timeout", type=int, default=60, help="seconds allowed per exercise")
    p.add_argument("--seed", type=int, help="fix the hidden test inputs (default: drawn at random)")
    p.add_argument("--total-timeout", type=int, help="seconds allowed per submission in all (default: 10 x --timeout)")
    p.add_argument("--sandbox", choices=("auto", "required", "off"),
                   help="auto (default, or $MMCOURSE_SANDBOX): bubblewrap when it works, else a loud warning; "
                        "required: refuse to grade without it; off: no sandbox")
    p.set_defaults(func=_cmd_grade)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, KeyError) as err:  # CourseError, CheckpointError, ...
        print(f"mmcourse {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
