"""mmcourse: the helper package of an interactive course on multimodal deep learning.

Importing it is cheap; submodules (``mmcourse.data``, ``mmcourse.check``, ...) load on first use.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

__version__ = "0.1.0"

def start(seed: int = 0, *, threads: int | None = None, quiet: bool = False):
    """Set up a notebook (device, threads, seeds); see :func:`mmcourse.runtime.start`."""
    from mmcourse.runtime import start as _start

    return _start(seed, threads=threads, quiet=quiet)


def __getattr__(name: str) -> Any:
    """``mmcourse.pretrained``, ``mmcourse.check``, ...: any submodule, imported on first use."""
    if not name.startswith("_") and importlib.util.find_spec(f"mmcourse.{name}") is not None:
        return importlib.import_module(f"mmcourse.{name}")
    raise AttributeError(f"module 'mmcourse' has no attribute {name!r}")
