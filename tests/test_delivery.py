"""Delivery: the committed Colab notebooks are current, README badges point at files that exist,
Binder's configuration is complete, the Binder build steps work in a fresh virtual environment, and
README's first command (`make course`) really starts JupyterLab, as root too."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import venv
from pathlib import Path

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


def _first_readme_command() -> str:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
    return block.splitlines()[0].split("#")[0].strip()


def _launch_line(env: dict | None = None) -> list[str]:
    """The command `make course` ends with (from `make -n`), for the virtual environment running the tests."""
    target = _first_readme_command().removeprefix("make ").strip()
    out = subprocess.run(["make", "-n", target, f"VENV={sys.prefix}"], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True, timeout=60).stdout
    launches = [line for line in out.splitlines() if "jupyter lab" in line]
    assert len(launches) == 1, out
    return shlex.split(launches[0])


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_course_adds_allow_root_only_for_root(tmp_path):
    fake_id = tmp_path / "id"  # make reads the user id from `id -u`: pretend to be user 1000
    fake_id.write_text("#!/bin/sh\necho 1000\n")
    fake_id.chmod(0o755)
    as_user = _launch_line({**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"})
    assert "--allow-root" not in as_user
    assert ("--allow-root" in _launch_line()) == (os.geteuid() == 0)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_the_first_readme_command_starts_jupyterlab(tmp_path):
    """README's first command is `make course`; its launch line, run as the current user (root in many
    containers, which JupyterLab refuses without --allow-root), must bring up a server that serves the lab."""
    assert _first_readme_command() == "make course"
    cmd = _launch_line()
    if not Path(cmd[0]).exists():
        pytest.skip(f"{cmd[0]} is not installed in this environment")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    extra = ["--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
             "--ServerApp.token=", "--ServerApp.password="]
    server = subprocess.Popen(cmd + extra, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline, status = time.monotonic() + 60, None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab", timeout=5) as response:
                    status = response.status
                break
            except OSError:
                time.sleep(0.25)
        assert server.poll() is None, f"JupyterLab exited ({server.returncode}): {server.stderr.read()[-2000:]}"
        assert status == 200, f"JupyterLab did not answer on port {port} within 60 s"
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


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
