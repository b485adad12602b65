"""How each bundled checkpoint is made: one module per checkpoint, named after it.

A recipe module ``mmcourse.recipes.NAME`` defines

* ``DESCRIPTION``: one line for the card;
* ``INPUTS`` (optional): ``{constructor argument: bundled checkpoint}`` for the checkpoints the model
  is built on (e.g. ``{"text_model": "clip_shapes"}``); the card records their sha256 as ``requires``
  and ``mmcourse.pretrained.load`` hands them to the model's constructor;
* ``train(*, seed=0, progress=True[, nproc=1]) -> (model, metrics)``: trains from scratch and
  measures what the card reports.

Adding a checkpoint adds a module here (and its model under ``mmcourse.models``); nothing else
changes. Only the command line (``mmcourse train``) and the tests import recipes.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def names() -> list[str]:
    """The checkpoints that have a recipe, sorted."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def get(name: str) -> ModuleType:
    """The recipe module of checkpoint ``name``; ``KeyError`` naming the known ones if there is none."""
    if name not in names():
        raise KeyError(f"no recipe for a checkpoint {name!r}; available: {', '.join(names())}")
    return importlib.import_module(f"{__name__}.{name}")
