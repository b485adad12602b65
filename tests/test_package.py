"""Packaging: every subpackage is installed, package data is declared, and importing mmcourse is cheap."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import mmcourse

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "mmcourse").rglob("__init__.py")
    } | {"mmcourse.assets"}
    assert found == listed


def test_version_matches_pyproject():
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"] == mmcourse.__version__


def test_import_is_lazy():
    code = "import sys, mmcourse; print('torch' in sys.modules, 'mmcourse.data' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"], "import mmcourse must not import torch or submodules eagerly"


def test_unknown_attribute_is_an_attribute_error():
    import pytest

    with pytest.raises(AttributeError):
        mmcourse.no_such_thing  # noqa: B018
