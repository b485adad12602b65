"""Judging an exercise outside the student's kernel: read the results it sent, compare with the reference.

The capture cell (see :mod:`mmcourse.grading.runner`) prints one line ``MMCOURSE-RESULT <marker> <base64>``
holding ``torch.save`` bytes of one ``(kind, value)`` pair per hidden case. The marker only tells that line
apart from the student's own prints: it is not a secret, and need not be, because everything on that line is
treated as untrusted data — the student's function could return anything anyway. So the payload is checked
before it is used: its size, a plain zip of stored (uncompressed) records, ``weights_only`` unpickling, a list
of at most one entry per hidden case, each a known kind with a value of the right type. Anything else is the
student's 0 for that exercise with a one-line reason, never an exception in the grader.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import zipfile
from typing import Any

from mmcourse.check.core import EXERCISES, AnswerError, Case

MAX_RESULT_BYTES = 8_000_000  # decoded payload; the course's exercises need well under 100 kB
KINDS = ("ok", "not_implemented", "error")


class PayloadError(ValueError):
    """The results sent from the kernel cannot be used (the message is shown to the student)."""


def find_payload(text: str, marker: str) -> str:
    """The base64 payload after ``MMCOURSE-RESULT <marker>`` in ``text``: there must be exactly one."""
    found = re.findall(r"MMCOURSE-RESULT " + re.escape(marker) + r" ([A-Za-z0-9+/=]+)", text)
    if len(found) != 1:
        raise PayloadError("the grader could not read your function's results (was it defined under its original name?)")
    return found[0]


def load_payload(payload: str, n_cases: int) -> list[tuple[str, Any]]:
    """Decode and validate the results for ``n_cases`` hidden cases; raises PayloadError."""
    if len(payload) > MAX_RESULT_BYTES * 4 // 3 + 4:
        raise PayloadError("your function's results are too large to grade")
    try:
        blob = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise PayloadError("the grader received garbled results") from None
    _check_zip(blob)
    import torch

    try:
        results = torch.load(io.BytesIO(blob), weights_only=True)
    except Exception:  # noqa: BLE001 (any unpickling failure is the payload's fault)
        raise PayloadError("your function returned something that cannot be graded (use tensors, numbers or lists)") from None
    return _check_structure(results, n_cases)


def _check_zip(blob: bytes) -> None:
    """torch.save writes a zip of stored records; refuse compressed ones (a small zip can inflate to gigabytes)."""
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, ValueError, OSError):
        raise PayloadError("the grader received garbled results") from None
    if len(infos) > 10_000 or any(i.compress_type != zipfile.ZIP_STORED for i in infos):
        raise PayloadError("the grader received results in an unexpected format")
    if sum(i.file_size for i in infos) > MAX_RESULT_BYTES:
        raise PayloadError("your function's results are too large to grade")


def _check_structure(results: Any, n_cases: int) -> list[tuple[str, Any]]:
    if not isinstance(results, (list, tuple)) or not 1 <= len(results) <= n_cases:
        raise PayloadError("the grader received results of the wrong structure")
    checked = []
    for entry in results:
        if not isinstance(entry, (list, tuple)) or len(entry) != 2 or not isinstance(entry[0], str) or entry[0] not in KINDS:
            raise PayloadError("the grader received results of the wrong structure")
        kind, value = entry
        if kind != "ok" and not isinstance(value, str):
            raise PayloadError("the grader received results of the wrong structure")
        checked.append((kind, value if kind == "ok" else value[:300]))
    if len(checked) != n_cases and not (len(checked) == 1 and checked[0][0] == "error"):
        raise PayloadError("the grader received a wrong number of results")
    return checked


def judge(ex_id: str, cases: list[Case], results: list[tuple[str, Any]]) -> tuple[str, str]:
    """(status, message) for validated ``results`` of exercise ``ex_id`` on ``cases``."""
    if len(results) == 1 and len(cases) > 1 and results[0][0] == "error":
        return "error", results[0][1]
    ex = EXERCISES[ex_id]
    for case, (kind, value) in zip(cases, results):
        if kind == "not_implemented":
            return "failed", "not implemented yet (the stub still raises NotImplementedError)"
        if kind == "error":
            return "error", f"case '{case.name}': your function raised {value}"
        expected = ex.reference(*case.args, **case.kwargs)
        try:
            ex.compare(value, expected)
        except AnswerError as err:
            return "failed", f"case '{case.name}': {err}"
        except Exception as err:  # noqa: BLE001 (a comparison that cannot even run is a wrong answer)
            return "failed", f"case '{case.name}': {type(err).__name__}: {str(err)[:300]}"
    return "passed", f"all {len(cases)} hidden cases pass"


def judge_output(ex_id: str, cases: list[Case], text: str, marker: str) -> tuple[str, str]:
    """(status, message) from the capture cell's printed ``text``; never raises for bad data."""
    try:
        return judge(ex_id, cases, load_payload(find_payload(text, marker), len(cases)))
    except PayloadError as err:
        return "error", str(err)
