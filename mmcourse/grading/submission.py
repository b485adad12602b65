"""Submissions: found in folders, read into memory before any student code runs, parsed as untrusted data.

Reading everything first means no kernel can change what is graded (the sandbox does not even show it the
submissions, and without the sandbox the bytes are already in memory). A file is read without following
symbolic links (a link in a submission folder could point at a classmate's notebook or at a device) and only
if it is a regular file of at most ``MAX_SUBMISSION_BYTES``. Parsing takes nothing but the exercise cells'
sources and the notebook's claimed identity; anything malformed is a :class:`SubmissionError` with a
one-line message, for that student alone.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from mmcourse.course import Course, CourseError, Notebook

MAX_SUBMISSION_BYTES = 20_000_000


class SubmissionError(ValueError):
    """A submission that cannot be graded at all (the message is one line a TA can act on)."""


@dataclass(frozen=True)
class Submission:
    """One submitted file as read before grading: its bytes, or why they could not be read."""

    path: str
    student: str
    data: bytes | None = None
    error: str | None = None


@dataclass
class Answers:
    """What grading takes from a submission: which notebook it answers and its exercise cells' sources."""

    notebook: Notebook
    sources: dict[str, list[str | None]] = field(default_factory=dict)  # exercise id -> sources (None: no text)


# ------------------------------------------------------------------------------------------------ finding


def collect(paths: list[str | Path]) -> list[tuple[Path, str]]:
    """(submission, student) for every .ipynb named, or found recursively in a named folder.

    In a folder, a submission inside a sub-folder belongs to that sub-folder's name
    (``submissions/alice/01_joint_embeddings.ipynb`` -> alice); otherwise the student is the file's stem.
    Symbolic links inside a folder are listed but never followed (reading them fails with a message);
    a link named on the command line is the TA's choice and is resolved.
    """
    found: list[tuple[Path, str]] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += _walk(p)
        else:
            found.append((Path(os.path.realpath(p)) if p.is_symlink() else p, p.stem))
    return found


def _walk(top: Path) -> list[tuple[Path, str]]:
    found = []
    for parent, dirs, files in os.walk(top, followlinks=False):
        here = Path(parent)
        links = [d for d in dirs if (here / d).is_symlink() and not d.startswith(".")]
        dirs[:] = sorted(d for d in dirs if d != ".ipynb_checkpoints" and not (here / d).is_symlink())
        for name in sorted([*[f for f in files if f.endswith(".ipynb")], *links]):
            rel = (here / name).relative_to(top)
            found.append((here / name, rel.parts[0] if len(rel.parts) > 1 else Path(name).stem))
    return sorted(found, key=lambda item: str(item[0]))


# ------------------------------------------------------------------------------------------------ reading


def read(path: str | Path, student: str, limit: int | None = None) -> Submission:
    """The file's bytes (a regular file, not through a symbolic link, at most ``limit`` bytes)."""
    limit = MAX_SUBMISSION_BYTES if limit is None else limit
    try:
        return Submission(str(path), student, _read_bytes(Path(path), limit))
    except SubmissionError as err:
        return Submission(str(path), student, error=str(err))


def read_all(found: list[tuple[str | Path, str]], limit: int | None = None) -> list[Submission]:
    """Every submission read into memory, in order (done before any student code runs)."""
    return [read(path, student, limit) for path, student in found]


def _read_bytes(path: Path, limit: int) -> bytes:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise SubmissionError("a symbolic link (not followed): submit the notebook file itself") from None
        if err.errno == errno.ENOENT:
            raise SubmissionError("not found") from None
        raise SubmissionError(f"cannot be read ({err.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SubmissionError("not a regular file")
        if info.st_size == 0:
            raise SubmissionError("the file is empty")
        if info.st_size > limit:
            raise SubmissionError(_too_large(info.st_size, limit))
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise SubmissionError(_too_large(size, limit))
        return b"".join(chunks)
    finally:
        os.close(fd)


def _too_large(size: int, limit: int) -> str:
    return f"the file is {size / 1e6:.0f} MB, over the {limit / 1e6:.0f} MB limit (clear the outputs and resubmit)"


# ------------------------------------------------------------------------------------------------ parsing


def parse(data: bytes, name: str, course: Course) -> Answers:
    """Which course notebook ``data`` answers and its exercise cells' sources; SubmissionError if unusable."""
    if not data:
        raise SubmissionError("the file is empty")
    try:
        raw = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise SubmissionError("not a notebook: the file is not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise SubmissionError(f"not a notebook: invalid JSON ({err.msg} at line {err.lineno})") from None
    except (RecursionError, ValueError):
        raise SubmissionError("not a notebook: the JSON is nested too deeply") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("cells"), list):
        raise SubmissionError("not a notebook: no list of cells")
    sources = _exercise_sources(raw["cells"])
    info = identify(_claimed_notebook(raw), set(sources), name, course)
    known = {ex["id"] for ex in info.exercises}
    return Answers(info, {ex_id: srcs for ex_id, srcs in sources.items() if ex_id in known})


def _exercise_sources(cells: list) -> dict[str, list[str | None]]:
    sources: dict[str, list[str | None]] = {}
    for i, cell in enumerate(cells):
        if not isinstance(cell, dict):
            raise SubmissionError(f"not a valid notebook: cell {i} is not a JSON object")
        meta = cell.get("metadata", {})
        if not isinstance(meta, dict):
            raise SubmissionError(f"not a valid notebook: cell {i} has metadata that is not a JSON object")
        ex_id = meta.get("exercise")
        if ex_id is None or cell.get("cell_type") != "code":
            continue
        if not isinstance(ex_id, str):
            raise SubmissionError(f"cell {i}: its 'exercise' metadata must be a string (restore it from the released notebook)")
        sources.setdefault(ex_id, []).append(_source_text(cell.get("source")))
    return sources


def _source_text(source: object) -> str | None:
    if isinstance(source, str):
        return source
    if isinstance(source, list) and all(isinstance(line, str) for line in source):
        return "".join(source)
    return None


def _claimed_notebook(raw: dict) -> object:
    meta = raw.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("mmcourse"), dict):
        return None
    return meta["mmcourse"].get("notebook")


def identify(claim: object, exercise_ids: set[str], name: str, course: Course) -> Notebook:
    """The course notebook answered: the release metadata's claim, else the exercise ids, else the file name.

    A claim naming no notebook of the course, or one that is planned, is an error (not a guess).
    """
    if claim is not None:
        if not isinstance(claim, str) or not claim.strip():
            raise SubmissionError("the notebook's 'mmcourse' metadata is malformed (restore it from the released notebook)")
        try:
            info = course.find(claim)
        except (CourseError, ValueError):
            raise SubmissionError(f"the metadata names notebook {claim[:20]!r}, which this course does not have") from None
        if not info.written:
            raise SubmissionError(f"the metadata names notebook {info.id} ({info.title}), which is planned, not written")
        return info
    for info in course.notebooks:
        if info.written and exercise_ids & {ex["id"] for ex in info.exercises}:
            return info
    match = re.match(r"(\d{2})_", name)
    if match:
        try:
            info = course.find(match.group(1))
        except (CourseError, ValueError):
            info = None
        if info is not None and info.written:
            return info
    raise SubmissionError("cannot tell which course notebook this is (no mmcourse metadata, no exercise cells, no NN_ file name)")
