"""Student versions of the notebooks: solutions replaced by stubs, outputs cleared."""

from __future__ import annotations

import copy
import re

import nbformat

from mmcourse.notebook import SOLUTION_BEGIN, SOLUTION_END

_REGION = re.compile(
    r"^(?P<indent>[ \t]*)" + re.escape(SOLUTION_BEGIN) + r"[^\n]*\n.*?^[ \t]*" + re.escape(SOLUTION_END) + r"[^\n]*(\n|$)",
    re.S | re.M,
)


def strip_solution(source: str, exercise_id: str) -> str:
    """``source`` with every solution region replaced by a stub raising ``NotImplementedError``."""
    if SOLUTION_BEGIN not in source:
        raise ValueError(f"exercise {exercise_id}: the cell has no '{SOLUTION_BEGIN}' marker")
    stripped, count = _REGION.subn(
        lambda m: f'{m["indent"]}# YOUR CODE HERE\n{m["indent"]}raise NotImplementedError("exercise {exercise_id}")\n',
        source,
    )
    if count == 0 or SOLUTION_BEGIN in stripped or SOLUTION_END in stripped:
        raise ValueError(f"exercise {exercise_id}: unbalanced '{SOLUTION_BEGIN}' / '{SOLUTION_END}' markers")
    return stripped


def student_version(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``nb`` for students: exercise solutions stubbed, every output cleared."""
    out = copy.deepcopy(nb)
    for cell in out.cells:
        if cell.cell_type != "code":
            continue
        if "exercise" in cell.metadata:
            cell.source = strip_solution(cell.source, cell.metadata["exercise"])
        cell.outputs = []
        cell.execution_count = None
    return out
