"""Student versions of the notebooks: solutions replaced by stubs, outputs cleared."""

from __future__ import annotations

import copy
import re
from pathlib import Path

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


def _speaker_notes(cell: nbformat.NotebookNode) -> bool:
    """A cell of slide type "notes": what the instructor says while presenting ("Instructor: ...")."""
    return cell.metadata.get("slideshow", {}).get("slide_type") == "notes"


def _how_to_work(notebook_id: str) -> str:
    return (
        "**How to work in this notebook.** The cells tagged `exercise` (each holds a function that raises "
        "`NotImplementedError`) are yours to edit; every other cell is read-only, and JupyterLab silently "
        "refuses edits and deletions there. *Run All* runs the whole lesson: the check cell after each exercise "
        "marks it in place (amber: not done yet, red: wrong, with what is wrong; ✓: right) and the notebook goes "
        f'on. Stuck? `check.hint("{notebook_id}.name")` gives the hint of an exercise. Hand in this `.ipynb` '
        "file; each exercise is graded alone, on hidden inputs."
    )


def released_notebook(nb: nbformat.NotebookNode, notebook_id: str, version: str) -> nbformat.NotebookNode:
    """The student version as it is handed out: stubs, no outputs, no speaker notes, a first note on which
    cells are the student's, exercise cells tagged with their id, every other cell read-only (JupyterLab
    and Notebook honour ``editable``/``deletable``), and ``metadata.mmcourse`` naming the notebook so the
    grader knows what it is grading."""
    out = student_version(nb)
    out.cells = [c for c in out.cells if not _speaker_notes(c)]  # instructors' notes stay with the instructors
    first_markdown = next((i for i, c in enumerate(out.cells) if c.cell_type == "markdown"), -1)
    out.cells.insert(first_markdown + 1, nbformat.v4.new_markdown_cell(_how_to_work(notebook_id)))
    for cell in out.cells:
        cell.metadata.pop("lines_to_next_cell", None)
        ex_id = cell.metadata.get("exercise")
        if ex_id:
            tags = [t for t in cell.metadata.get("tags", []) if not t.startswith("exercise")]
            cell.metadata["tags"] = [*tags, "exercise", f"exercise:{ex_id}"]
            cell.metadata["editable"] = True
            cell.metadata["deletable"] = False
        else:
            cell.metadata["editable"] = False
            cell.metadata["deletable"] = False
        if "id" in cell:
            del cell["id"]
    out.metadata.pop("jupytext", None)
    out.metadata["mmcourse"] = {"notebook": notebook_id, "version": version}
    out.nbformat, out.nbformat_minor = 4, 4  # no random cell ids: same input, same bytes
    return out


def release(out_dir: str | Path, *, course=None) -> list[Path]:
    """Write the student version of every written notebook to ``out_dir`` as ``NN_slug.ipynb``."""
    from mmcourse import __version__, notebook
    from mmcourse.course import load_course
    from mmcourse.grading.grade import atomic_write

    course = course or load_course()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for info in course.notebooks:
        if not info.written:
            continue
        nb = released_notebook(notebook.read(course.root / info.path), info.id, __version__)
        text = nbformat.writes(nb, version=4)
        target = out_dir / f"{info.id}_{info.slug}.ipynb"
        atomic_write(target, text if text.endswith("\n") else text + "\n")
        written.append(target)
    return written
