"""Grading a class in shards (a Slurm array, a CI matrix, a Kubernetes indexed job) and merging the parts.

``mmcourse grade SUBMISSIONS --shard K/N --seed S --json part-K.json`` grades the submissions whose
:func:`shard_key` (the path inside the folder named on the command line, e.g. ``alice/01_joint_embeddings.ipynb``)
hashes to shard K of N. The choice depends on nothing but that key, so it is the same in every job, whatever
order the files are listed in, and whichever machine runs it. Every shard must draw the same hidden cases,
so a sharded run needs an explicit ``--seed``.

Each report records the course it was graded against (:func:`course_stamp`: the package version and, per
notebook graded, a digest of its reference notebook, its exercises in ``course.yml`` and the code of their
checks) and the hidden-case seed; a part also records its shard, how many submissions all shards saw, a
digest of that listing, and where its own submissions stand in it. :func:`merge` refuses parts that do not
fit together (a shard missing or given twice, a submission in two parts, another listing, another course
version or seed) and otherwise returns exactly the report one process would have written.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmcourse.course import Course
from mmcourse.grading.report import ExerciseResult, SubmissionResult
from mmcourse.grading.submission import collect


class MergeError(ValueError):
    """Reports that cannot be merged into one (the message says which and why)."""


@dataclass(frozen=True)
class Shard:
    index: int  # 1 ... count
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(spec: str) -> Shard:
    """``"K/N"`` (1 <= K <= N) as a :class:`Shard`; ValueError saying what a valid spec looks like."""
    what = "a shard is K/N with whole numbers 1 <= K <= N (e.g. --shard 2/3 is the second of three)"
    parts = str(spec).strip().split("/")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"bad shard {spec!r}: {what}")
    index, count = (int(p) for p in parts)
    if count < 1 or not 1 <= index <= count:
        raise ValueError(f"bad shard {spec!r}: {what}" + (" (shards count from 1)" if index == 0 else
                         f" (there are only {count})" if index > count >= 1 else ""))
    return Shard(index, count)


def shard_key(path: str | Path, top: str | Path) -> str:
    """The name that decides a submission's shard: its path inside the folder ``top`` named on the command
    line, or, for a file named directly (``top`` is the file), the file's name."""
    path, top = Path(path), Path(top)
    try:
        rel = path.relative_to(top)
    except ValueError:
        rel = Path(path.name)
    return rel.as_posix() if rel.parts else path.name


def shard_of(key: str, count: int) -> int:
    """The shard (1 ... count) of a submission with :func:`shard_key` ``key``."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % count + 1


def collect_keyed(paths: list[str | Path]) -> list[tuple[Path, str, str]]:
    """(submission, student, shard key) for everything :func:`~mmcourse.grading.submission.collect` finds."""
    found = []
    for top in paths:
        found += [(path, student, shard_key(path, top if Path(top).is_dir() else path))
                  for path, student in collect([top])]
    return found


def listing_digest(keys: list[str]) -> str:
    """A digest of every shard's listing (order-free): parts of one class agree on it."""
    return hashlib.sha256("\n".join(sorted(keys)).encode("utf-8")).hexdigest()[:16]


def select(found: list[tuple[Path, str, str]], shard: Shard) -> tuple[list[tuple[Path, str]], dict]:
    """This shard's (submission, student) pairs and the ``shard`` entry of its report."""
    mine = [i for i, (_, _, key) in enumerate(found) if shard_of(key, shard.count) == shard.index]
    info = {"index": shard.index, "count": shard.count, "of": len(found),
            "listing": listing_digest([key for _, _, key in found]), "positions": mine}
    return [(found[i][0], found[i][1]) for i in mine], info


# --------------------------------------------------------------------------------------------- versions


def course_stamp(course: Course, notebook_ids: list[str | None]) -> dict:
    """What a report was graded against: the package version and, for each notebook graded, a digest
    of its reference notebook, its exercises in course.yml and the source files of their checks."""
    import mmcourse
    from mmcourse.check.core import EXERCISES

    notebooks = {}
    for nb_id in sorted({i for i in notebook_ids if i}):
        info = course.find(nb_id)
        digest = hashlib.sha256((course.root / info.path).read_bytes())
        digest.update(json.dumps(info.exercises, sort_keys=True, default=str).encode())
        files = set()
        for ex in info.exercises:
            ex_obj = EXERCISES.get(ex["id"])
            for fn in (ex_obj.cases, ex_obj.reference, ex_obj.compare) if ex_obj else ():
                try:
                    files.add(inspect.getsourcefile(fn))
                except TypeError:
                    pass
        for name in sorted(f for f in files if f):
            digest.update(Path(name).read_bytes())
        notebooks[nb_id] = digest.hexdigest()[:16]
    return {"version": mmcourse.__version__, "notebooks": notebooks}


# --------------------------------------------------------------------------------------------- merging


def results_from(doc: dict) -> list[SubmissionResult]:
    """The results held in a JSON report (as written by :func:`~mmcourse.grading.report.report_json`)."""
    out = []
    for s in doc["submissions"]:
        exercises = [ExerciseResult(**e) for e in s.get("exercises", [])]
        out.append(SubmissionResult(**{**s, "exercises": exercises}))
    return out


def load_part(path: str | Path) -> dict:
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MergeError(f"{path}: not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise MergeError(f"{path}: not a grading report ({err})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("submissions"), list):
        raise MergeError(f"{path}: not a grading report (no list of submissions)")
    if not isinstance(doc.get("shard"), dict):
        raise MergeError(f"{path}: not a shard's report (graded without --shard K/N): nothing to merge it with")
    for key in ("course", "seed"):
        if key not in doc:
            raise MergeError(f"{path}: the report does not say its {key} (graded by an older mmcourse?)")
    return doc


def merge(paths: list[str | Path]) -> dict:
    """One report from the parts at ``paths``, equal to the report of grading every submission in one
    process (apart from timings). Raises :class:`MergeError` when the parts do not fit together."""
    if not paths:
        raise MergeError("no reports to merge")
    parts = [(Path(p), load_part(p)) for p in paths]
    first_path, first = parts[0]
    for path, doc in parts[1:]:
        for key, what in (("seed", "hidden-case seed (--seed)"), ("rule", "grading rule")):
            if doc.get(key) != first.get(key):
                raise MergeError(f"{path} and {first_path} were graded with another {what}: "
                                 f"{doc.get(key)!r} vs {first.get(key)!r}; grade every shard with the same one")
        if doc["course"].get("version") != first["course"].get("version"):
            raise MergeError(f"{path} and {first_path} were graded by different course versions "
                             f"({doc['course'].get('version')} vs {first['course'].get('version')})")
        for key in ("count", "of", "listing"):
            if doc["shard"].get(key) != first["shard"].get(key):
                raise MergeError(f"{path} and {first_path} are shards of different runs (their {key} differs: "
                                 f"{doc['shard'].get(key)!r} vs {first['shard'].get(key)!r}); every shard must see "
                                 "the same submissions and the same N")
    notebooks: dict[str, tuple[str, Path]] = {}
    for path, doc in parts:
        for nb_id, digest in doc["course"].get("notebooks", {}).items():
            seen = notebooks.setdefault(nb_id, (digest, path))
            if seen[0] != digest:
                raise MergeError(f"{path} and {seen[1]} were graded against different versions of notebook {nb_id} "
                                 f"({digest} vs {seen[0]}); grade every shard from the same checkout")
    count = first["shard"]["count"]
    by_index: dict[int, Path] = {}
    for path, doc in parts:
        index = doc["shard"]["index"]
        if index in by_index:
            raise MergeError(f"shard {index}/{count} given twice: {by_index[index]} and {path}")
        by_index[index] = path
    missing = [f"{i}/{count}" for i in range(1, count + 1) if i not in by_index]
    if missing:
        raise MergeError(f"missing shard(s) {', '.join(missing)}: the reports given cover "
                         f"{', '.join(f'{i}/{count}' for i in sorted(by_index))}")
    placed: dict[int, tuple[dict, Path]] = {}
    where: dict[str, Path] = {}
    for path, doc in parts:
        positions = doc["shard"].get("positions", [])
        if len(positions) != len(doc["submissions"]):
            raise MergeError(f"{path}: its shard entry does not match its submissions (edited by hand?)")
        for pos, sub in zip(positions, doc["submissions"]):
            name = sub.get("submission")
            if name in where or pos in placed:
                raise MergeError(f"submission {name} appears twice: in {where.get(name, placed.get(pos, (0, '?'))[1])} "
                                 f"and in {path}")
            where[name] = path
            placed[pos] = (sub, path)
    total = first["shard"]["of"]
    if sorted(placed) != list(range(total)):
        raise MergeError(f"the parts hold {len(placed)} submissions where the listing had {total}")
    doc = {key: value for key, value in first.items() if key not in ("shard", "submissions")}
    doc["course"] = {**first["course"], "notebooks": {k: v for k, (v, _) in sorted(notebooks.items())}}
    sandboxes = sorted({d.get("sandbox") for _, d in parts if d.get("sandbox") is not None})
    if sandboxes:
        doc["sandbox"] = " + ".join(sandboxes)
    doc["submissions"] = [placed[i][0] for i in range(total)]
    return doc


def merged_results(doc: dict) -> tuple[list[SubmissionResult], dict[str, Any]]:
    """The merged report's results and its header (course, seed, sandbox)."""
    return results_from(doc), {k: v for k, v in doc.items() if k != "submissions"}
