"""The grader's prelude (runner.LAZY_IMPORTS) makes matplotlib load on first use in a grading kernel, and
changes nothing else: a cell that plots gets the real module. Checked in a plain interpreter (no kernel)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from mmcourse.grading import runner

PROBE = textwrap.dedent(
    """
    import importlib.util, inspect, sys
    exec(PRELUDE)
    exec(PRELUDE)  # twice is harmless
    import torch
    import mmcourse
    from mmcourse import check
    import matplotlib.pyplot as plt
    inspect.getmodule(inspect)  # reads every module's __file__
    assert importlib.util.find_spec("matplotlib") is not None
    assert type(sys.modules["matplotlib"]).__name__ == "LazyModule", "loaded by the set-up's imports"
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    from matplotlib import colors
    import matplotlib.figure
    assert colors.to_rgb("red") == (1.0, 0.0, 0.0) and isinstance(fig, matplotlib.figure.Figure)
    assert type(sys.modules["matplotlib"]).__name__ == "module" and plt.gcf() is fig
    print("ok")
    """
)


def test_matplotlib_loads_on_first_use_and_then_works():
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "-c", f"PRELUDE = {runner.LAZY_IMPORTS!r}\n{PROBE}"], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
