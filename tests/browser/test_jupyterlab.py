"""A real browser (Debian's chromium, driven by Playwright) runs every written notebook in JupyterLab.

For each notebook: open the Jupytext .py file as a notebook, run all cells, wait for the kernel,
assert that no cell has an error output, that every check passed and that every widget view
rendered, then change the caption of notebook 01's retrieval explorer and watch its output change.
Then the released student version of notebook 01, as a student gets it: "Run All" runs every cell,
the widget renders, and each unsolved exercise is marked in place. Finally open a notebook as a RISE
slideshow. Screenshots go to build/screenshots/.

Needs /usr/bin/chromium (`apt-get install chromium`; .ci/run installs it). Without it the tests are
skipped, unless MMCOURSE_REQUIRE_BROWSER=1 (as in CI), which turns the skip into a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mmcourse.course import load_course

COURSE = load_course()
WRITTEN = [nb for nb in COURSE.notebooks if nb.written]
CHROMIUM = os.environ.get("MMCOURSE_CHROMIUM", "/usr/bin/chromium")
SHOTS = COURSE.root / "build" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]

pytestmark = pytest.mark.browser


def _require_browser():
    missing = not Path(CHROMIUM).exists()
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing = True
    if missing:
        if os.environ.get("MMCOURSE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser test required but {CHROMIUM} or playwright is missing")
        pytest.skip(f"no {CHROMIUM} or playwright (apt-get install chromium; pip install playwright)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    _require_browser()
    port = _free_port()
    home = tmp_path_factory.mktemp("jupyter")
    # JupyterLab autosaves open notebooks (every 2 minutes), and Jupytext rewrites a .py's header when it
    # saves: serve a copy of the notebooks, so a slow run never modifies the repository's sources
    root = home / "course"
    shutil.copytree(COURSE.root / "notebooks", root / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    from mmcourse.grading.release import release

    release(root / "student")  # the student versions, as `mmcourse release` hands them out
    # kernels see what a student's kernel sees: failing checks show a box instead of raising
    # (the test suite sets MMCOURSE_CHECKS=raise for itself)
    env = {key: value for key, value in os.environ.items() if key != "MMCOURSE_CHECKS"}
    env = {**env, "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "JUPYTER_CONFIG_DIR": str(home / "config"),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"), "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    cmd = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
        "--ServerApp.token=", "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True",
        "--LabApp.expose_app_in_browser=True", f"--ServerApp.root_dir={root}", "--allow-root",
    ]
    log = open(home / "lab.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{url}/api/status", timeout=1)
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("JupyterLab exited: " + (home / "lab.log").read_text()[-2000:])
            time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError("JupyterLab did not start in 60 s: " + (home / "lab.log").read_text()[-2000:])
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def browser(lab):
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def _open_lab(browser, url, workspace: str | None = None):
    """A JupyterLab page; a named ``workspace`` starts empty instead of restoring what earlier pages opened."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{url}/lab" + (f"/workspaces/{workspace}" if workspace else ""), wait_until="domcontentloaded")
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.started", timeout=60_000)
    page.evaluate("() => window.jupyterapp.started")
    return page


# the notebook panel is looked up by its path, not as the current widget: a new page restores the
# workspace of the previous one, and a notebook it reopens may become current after ours
RUN_STATE = """(path) => {
  const panel = [...window.jupyterapp.shell.widgets('main')].find(w => w.context && w.context.path === path);
  if (!panel || !panel.content || !panel.sessionContext || !panel.sessionContext.session) return null;
  const cells = panel.content.widgets.filter(c => c.model.type === 'code');
  const done = cells.filter(c => c.model.executionCount !== null).length;
  const status = panel.sessionContext.session.kernel ? panel.sessionContext.session.kernel.status : 'none';
  const errors = [];
  panel.content.widgets.forEach((c, i) => {
    if (c.model.type !== 'code') return;
    const outs = c.model.outputs.toJSON();
    outs.forEach(o => { if (o.output_type === 'error') errors.push({cell: i, ename: o.ename, evalue: o.evalue}); });
  });
  return {cells: cells.length, done, status, errors};
}"""


CHECK_BOXES = """(path) => {
  const panel = [...window.jupyterapp.shell.widgets('main')].find(w => w.context && w.context.path === path);
  const found = [];
  panel.content.widgets.forEach(c => {
    if (c.model.type !== 'code') return;
    c.model.outputs.toJSON().forEach(o => {
      const html = (o.data && o.data['text/html']) || '';
      const text = (o.data && o.data['text/plain']) || '';
      const h = Array.isArray(html) ? html.join('') : html, t = Array.isArray(text) ? text.join('') : text;
      if (h.includes('mmcourse-check')) found.push([h, t]);
    });
  });
  return found;
}"""


def _run_notebook(page, path: str, timeout_s: int = 240):
    page.evaluate("(p) => window.jupyterapp.commands.execute('docmanager:open', {path: p, factory: 'Notebook'})", path)
    page.wait_for_function(
        "(path) => { const w = [...window.jupyterapp.shell.widgets('main')].find(w => w.context && w.context.path === path);"
        " return w && w.sessionContext && w.sessionContext.isReady; }",
        arg=path, timeout=120_000,
    )
    page.evaluate("(path) => { const w = [...window.jupyterapp.shell.widgets('main')].find(w => w.context && "
                  "w.context.path === path); window.jupyterapp.shell.activateById(w.id); "
                  "return window.jupyterapp.commands.execute('notebook:run-all-cells'); }", path)
    deadline = time.time() + timeout_s
    state = None
    while time.time() < deadline:
        state = page.evaluate(RUN_STATE, path)
        if state and state["cells"] and state["done"] == state["cells"] and state["status"] == "idle":
            break
        time.sleep(1)
    else:
        raise AssertionError(f"{path} did not finish in {timeout_s} s: {state}")
    page.wait_for_timeout(1500)  # let widget views render
    return state


@pytest.mark.parametrize("nb_info", WRITTEN, ids=lambda n: n.id)
def test_notebook_runs_in_jupyterlab_and_its_widgets_answer(browser, lab, nb_info):
    # a workspace of its own: the default one would reopen every earlier notebook, kernels and all
    page = _open_lab(browser, lab, workspace=f"notebook{nb_info.id}")
    start = time.perf_counter()
    state = _run_notebook(page, nb_info.path)
    elapsed = time.perf_counter() - start
    page.screenshot(path=str(SHOTS / f"{nb_info.id}_{nb_info.slug}_end.png"))
    assert state["errors"] == [], state["errors"]
    body = page.inner_text("body")
    assert "Error displaying widget" not in body and "Error rendering output" not in body
    assert page.locator(".jp-OutputArea-output .jupyter-widgets").count() > 0, "widget views render"
    assert page.locator(".mmcourse-check").count() == 0, "every check of the reference notebook passes"
    print(f"\n{nb_info.id}: all {state['cells']} code cells ran in JupyterLab in {elapsed:.0f} s")
    if nb_info.id == "01":
        _retrieval_explorer_answers(page)
    page.close()


def _retrieval_explorer_answers(page):
    """Type a new caption into notebook 01's explorer; its figure must change."""
    box = page.locator(".jupyter-widgets input[list]").last
    box.scroll_into_view_if_needed()
    images = ".jupyter-widgets.widget-vbox img, .jupyter-widgets .widget-output img"
    before = page.eval_on_selector_all(images, "els => els.map(e => e.src).join('|')")
    assert before, "the explorer shows a figure"
    box.fill("a blue heart")
    box.press("Enter")
    page.wait_for_function(
        "([sel, prev]) => { const s = [...document.querySelectorAll(sel)].map(e => e.src).join('|'); return s && s !== prev; }",
        arg=[images, before], timeout=30_000,
    )
    page.wait_for_timeout(500)
    page.screenshot(path=str(SHOTS / "01_widget_after_typing.png"))


def test_released_student_notebook_runs_all_and_marks_each_unsolved_exercise(browser, lab):
    """A student opens the released notebook 01 and presses Run All with no exercise solved."""
    nb_info = WRITTEN[0]
    page = _open_lab(browser, lab, workspace="student")
    state = _run_notebook(page, f"student/{nb_info.id}_{nb_info.slug}.ipynb")  # Run All, as a student does
    page.screenshot(path=str(SHOTS / f"{nb_info.id}_{nb_info.slug}_student_end.png"), full_page=True)
    assert state["done"] == state["cells"], f"every code cell ran: {state}"
    assert state["errors"] == [], state["errors"]
    assert page.locator(".jp-OutputArea-output .jupyter-widgets").count() > 0, "the widget renders"
    # read the outputs from the notebook's model: JupyterLab renders only the cells near the viewport
    path = f"student/{nb_info.id}_{nb_info.slug}.ipynb"
    marked = page.evaluate(CHECK_BOXES, path)
    assert len(marked) == len(nb_info.exercises), f"each unsolved exercise is marked where its check is: {marked}"
    for ex, (html, text) in zip(nb_info.exercises, marked):
        assert "mmcourse-check-todo" in html and ex["id"] in text and "not implemented yet" in text, (ex["id"], text)
    box = page.locator(".mmcourse-check-todo").first
    page.evaluate("() => { const p = window.jupyterapp.shell.currentWidget.content; "
                  "const i = p.widgets.findIndex(c => (c.model.metadata.tags || []).includes('check') || "
                  "(c.model.getMetadata && (c.model.getMetadata('tags') || []).includes('check'))); "
                  "if (i >= 0) { p.activeCellIndex = i; p.scrollToItem(i); } }")
    page.wait_for_timeout(1500)  # the notebook renders cells lazily as they scroll into view
    if box.count():
        box.scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / f"{nb_info.id}_{nb_info.slug}_student_check.png"))
    page.close()


def test_notebook_opens_as_a_rise_slideshow(browser, lab):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    nb = WRITTEN[0]
    page.goto(f"{lab}/rise/{nb.path}", wait_until="domcontentloaded")
    page.wait_for_selector(".reveal .slides section", timeout=90_000)
    page.wait_for_timeout(2000)
    page.screenshot(path=str(SHOTS / f"{nb.id}_rise.png"))
    assert page.locator(".reveal .slides > section").count() >= 5
    assert nb.title in page.inner_text(".reveal")
    page.close()


def test_chromium_is_debians(browser):
    assert shutil.which(CHROMIUM) or Path(CHROMIUM).exists()
