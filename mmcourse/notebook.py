"""Reading, executing and inspecting the course notebooks (Jupytext ``.py`` files).

Conventions the rest of the course relies on:

* an **exercise cell** carries the cell metadata ``exercise="NN.name"`` and holds the solution
  between ``### BEGIN SOLUTION`` and ``### END SOLUTION``;
* a **check cell** carries the tag ``check`` and calls ``check.exercise("NN.name", answer)``.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import nbformat

SOLUTION_BEGIN = "### BEGIN SOLUTION"
SOLUTION_END = "### END SOLUTION"
CHECK_CALL = re.compile(r"""check\.exercise\(\s*["']([0-9]{2}\.[a-z_0-9]+)["']""")


def read(path: str | Path) -> nbformat.NotebookNode:
    """A notebook from a Jupytext ``.py`` file (or an ``.ipynb``)."""
    import jupytext

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no notebook at {path}")
    return jupytext.read(path)


def exercise_cells(nb: nbformat.NotebookNode) -> dict[str, int]:
    """Exercise id -> index of its exercise cell."""
    return {c.metadata["exercise"]: i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "exercise" in c.metadata}


def check_cells(nb: nbformat.NotebookNode) -> dict[str, int]:
    """Exercise id -> index of the check cell that grades it."""
    out = {}
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and "check" in cell.metadata.get("tags", []):
            for ex_id in CHECK_CALL.findall(cell.source):
                out[ex_id] = i
    return out


def client_for(nb: nbformat.NotebookNode, *, cwd: str | Path, timeout: int, allow_errors: bool = False, **kwargs):
    """An nbclient ``NotebookClient`` that judges a kernel dead by its process, not its heartbeat.

    nbclient's default check waits 1 s for a heartbeat; while a notebook keeps both cores of a
    laptop busy with torch, the heartbeat can miss that window and a healthy kernel is declared dead
    (seen here about one run in four). nbval checks the process; so do we.
    """
    from jupyter_core.utils import ensure_async
    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError

    class _Client(NotebookClient):
        async def _async_check_alive(self) -> None:
            if self.km is not None and not await ensure_async(self.km.is_alive()):
                raise DeadKernelError("Kernel died")

    nb.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"})
    return _Client(
        nb, timeout=timeout, kernel_name="python3", allow_errors=allow_errors, resources={"metadata": {"path": str(cwd)}},
        **kwargs,
    )


def execute(
    nb: nbformat.NotebookNode, *, cwd: str | Path, timeout: int = 600, allow_errors: bool = False
) -> tuple[nbformat.NotebookNode, float]:
    """Run every cell in a fresh kernel of this Python environment; returns the notebook and wall seconds.

    Raises ``nbclient.exceptions.CellExecutionError`` on the first failing cell unless ``allow_errors``.
    """
    client = client_for(nb, cwd=cwd, timeout=timeout, allow_errors=allow_errors)
    start = time.perf_counter()
    client.execute()
    return nb, time.perf_counter() - start


def errors(nb: nbformat.NotebookNode) -> list[tuple[int, str, str]]:
    """(cell index, exception name, message) for every cell whose output is an error."""
    found = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                found.append((i, out.get("ename", ""), out.get("evalue", "")))
    return found
