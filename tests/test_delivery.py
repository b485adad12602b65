"""Delivery: the committed Colab notebooks are current, README badges point at files that exist,
Binder's configuration is complete, and the Binder build steps work in a fresh virtual environment."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import venv

import pytest

from mmcourse.course import colab_path, load_course
from mmcourse.grading.release import release

COURSE = load_course()
ROOT = COURSE.root
WRITTEN = [nb for nb in COURSE.notebooks if nb.written]


def test_committed_colab_notebooks_are_current(tmp_path):
    fresh = {p.name: p.read_bytes() for p in release(tmp_path)}
    committed = {p.name: p.read_bytes() for p in (ROOT / "colab").glob("*.ipynb")}
    assert fresh.keys() == committed.keys(), "run `make publish` (mmcourse release --out colab) and commit colab/"
    for name in fresh:
        assert fresh[name] == committed[name], f"colab/{name} is stale: run `make publish` and commit it"


def test_readme_badges_point_at_files_that_exist():
    readme = (ROOT / "README.md").read_text()
    repo = COURSE.repository.removeprefix("https://github.com/")
    colab = re.findall(r"https://colab\.research\.google\.com/github/" + re.escape(repo) + r"/blob/[^/]+/([^)\s]+)", readme)
    binder = re.findall(r"https://mybinder\.org/v2/gh/" + re.escape(repo) + r"/[^?]+\?urlpath=lab/tree/([^)\s]+)", readme)
    assert sorted(colab) == sorted(colab_path(nb) for nb in WRITTEN)
    assert sorted(binder) == sorted(nb.path for nb in WRITTEN)
    for path in colab + binder:
        assert (ROOT / path).is_file(), path


def test_binder_config_is_complete():
    binder = ROOT / "binder"
    assert (binder / "runtime.txt").read_text().strip().startswith("python-3.")
    post = (binder / "postBuild").read_text()
    assert post.startswith("#!") and "set -e" in post and "jupytext-config set-default-viewer python" in post
    assert os.access(binder / "postBuild", os.X_OK)
    reqs = (binder / "requirements.txt").read_text()
    assert "-e .[lab]" in reqs


@pytest.mark.slow
def test_binder_build_steps_in_a_fresh_venv(tmp_path):
    """What repo2docker does with binder/: pip install -r binder/requirements.txt from the repository
    root, then binder/postBuild; afterwards .py files open as notebooks and the course imports."""
    env_dir = tmp_path / "binder-env"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    env = {**os.environ, "PATH": f"{env_dir / 'bin'}:{os.environ['PATH']}", "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter"),
           "VIRTUAL_ENV": str(env_dir), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    subprocess.run([py, "-m", "pip", "install", "-q", "-r", "binder/requirements.txt"], cwd=ROOT, env=env, check=True, timeout=1500)
    subprocess.run(["bash", "binder/postBuild"], cwd=ROOT, env=env, check=True, timeout=120)
    viewers = subprocess.run([env_dir / "bin" / "jupytext-config", "list-default-viewer"], env=env, capture_output=True,
                             text=True, check=True).stdout
    assert "python" in viewers
    labext = subprocess.run([env_dir / "bin" / "jupyter", "labextension", "list"], env=env, capture_output=True, text=True)
    assert "jupyterlab-rise" in labext.stdout + labext.stderr and "jupyterlab-jupytext" in labext.stdout + labext.stderr
    code = "import mmcourse; m = mmcourse.pretrained.load('attributes_shapes'); print(type(m).__name__)"
    out = subprocess.run([py, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "AttributePredictor"
