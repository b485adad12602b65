"""Let nbval run the Jupytext ``.py`` notebooks directly (nbval itself only collects ``.ipynb``)."""

from __future__ import annotations

import os
from unittest import mock

# failing exercise checks raise (so nbval and the stub/solution tests see them) instead of showing a box
# and letting the notebook go on, as they do in a student's notebook; kernels started by tests inherit it
os.environ.setdefault("MMCOURSE_CHECKS", "raise")

import pytest


def pytest_collect_file(file_path, parent):
    opt = parent.config.option
    if not (getattr(opt, "nbval", False) or getattr(opt, "nbval_lax", False)):
        return None
    if file_path.suffix != ".py" or file_path.parent.name != "notebooks" or not file_path.name[:2].isdigit():
        return None
    return JupytextNotebook.from_parent(parent, path=file_path)


def _make_collector():
    from nbval import plugin

    class _JupytextNotebook(plugin.IPyNbFile):
        """nbval's notebook collector, reading the notebook with Jupytext."""

        def collect(self):
            import jupytext

            nb = jupytext.read(str(self.path))
            with mock.patch.object(plugin.nbformat, "read", lambda *args, **kwargs: nb):
                yield from super().collect()

    return _JupytextNotebook


try:
    JupytextNotebook = _make_collector()
except ImportError:  # nbval not installed: notebooks are simply not collected
    JupytextNotebook = None


@pytest.fixture(scope="session")
def repo_root():
    from pathlib import Path

    return Path(__file__).resolve().parent
