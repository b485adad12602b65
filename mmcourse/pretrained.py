"""The bundled course checkpoints: loading and saving them, nothing else.

A checkpoint ``NAME`` is two files in ``assets/checkpoints``: ``NAME.safetensors`` (the weights, no
pickle) and its card ``NAME.json``, which says

* ``model``: the class under ``mmcourse.models`` that holds the weights, and ``config``: its
  constructor's arguments;
* ``sha256``: the weights file's checksum;
* ``requires``: ``{checkpoint: sha256}``, the bundled checkpoints it was trained on, and ``inputs``:
  ``{constructor argument: checkpoint}``, where the model receives them (a diffusion model's frozen
  text tower, say);
* how it was trained (``train``: seed, seconds, machine, torch version) and what it measured (``metrics``).

``load(name)`` checks the file against its card and every requirement against the sha256 the card
recorded, loads the requirements first and hands them to the model's constructor. A requirement that
changed since (retrained) is refused with the list of checkpoints to rebuild, in order.
``mmcourse train NAME`` (the recipes in ``mmcourse.recipes``) writes both files with ``save``.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import mmcourse.models


class CheckpointError(RuntimeError):
    """A bundled checkpoint is missing, corrupt, does not fit its model, or was trained on another version
    of a checkpoint it requires."""


def checkpoint_dir() -> Path:
    return Path(str(resources.files("mmcourse.assets"))) / "checkpoints"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def available() -> list[str]:
    """The names of the bundled checkpoints (those with a card), sorted."""
    return sorted(p.stem for p in checkpoint_dir().glob("*.json"))


def card(name: str) -> dict:
    """The JSON card of checkpoint ``name``: model, config, sha256, requirements, training, measured quality."""
    path = checkpoint_dir() / f"{name}.json"
    if not path.exists():
        if not (checkpoint_dir() / f"{name}.safetensors").exists():
            raise KeyError(f"no bundled checkpoint {name!r}; available: {', '.join(available())}")
        raise CheckpointError(f"checkpoint {name!r} has no card at {path}; rebuild it with `mmcourse train {name}`")
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"the card {path} is not valid JSON ({err}); rebuild with `mmcourse train {name}`") from None
    missing = [key for key in ("model", "config", "sha256") if not isinstance(info, dict) or key not in info]
    if missing:
        raise CheckpointError(f"the card {path} lacks {', '.join(missing) or 'its fields'}; rebuild with `mmcourse train {name}`")
    return info


def requirements(name: str) -> dict[str, str]:
    """``{checkpoint: sha256}``: the bundled checkpoints ``name`` was trained on, as its card records them."""
    return dict(card(name).get("requires", {}))


def dependents(name: str) -> list[str]:
    """Every bundled checkpoint trained on ``name``, directly or through others, in an order that
    rebuilds each one after everything it requires."""
    graph = {other: set(requirements(other)) for other in available()}
    affected: set[str] = set()
    frontier = [name]
    while frontier:
        changed = frontier.pop()
        for other, reqs in graph.items():
            if changed in reqs and other not in affected:
                affected.add(other)
                frontier.append(other)
    order: list[str] = []
    while len(order) < len(affected):  # take the checkpoints whose affected requirements are all rebuilt
        ready = sorted(o for o in affected - set(order) if graph[o] & affected <= set(order))
        if not ready:
            raise CheckpointError(f"the cards' requirements form a cycle among {', '.join(sorted(affected - set(order)))}")
        order.extend(ready)
    return order


def load(name: str, *, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The bundled model ``name`` in eval mode, on ``device``, built on the checkpoints it requires."""
    info = card(name)
    weights = checkpoint_dir() / f"{name}.safetensors"
    if not weights.exists():
        raise CheckpointError(f"checkpoint file {weights} is missing; rebuild it with `mmcourse train {name}`")
    actual = sha256_of(weights)
    if actual != info["sha256"]:
        raise CheckpointError(
            f"checkpoint {weights.name} does not match its card (sha256 {actual[:12]}..., expected "
            f"{info['sha256'][:12]}...): the file is corrupt or was replaced; rebuild it with `mmcourse train {name}`"
        )
    inputs = _load_inputs(name, info)
    cls = getattr(mmcourse.models, str(info["model"]), None)
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise CheckpointError(f"the card of {name} names the model {info['model']!r}, which is not a network in "
                              f"mmcourse.models; rebuild it with `mmcourse train {name}`")
    try:
        model = cls(**info["config"], **inputs)
        model.load_state_dict(load_file(str(weights)), strict=True)
    except Exception as err:  # a config the class does not take, safetensors errors, shape mismatches
        raise CheckpointError(f"checkpoint {weights.name} does not fit the model {cls.__name__}: {err}") from None
    return model.to(device).eval()


def _load_inputs(name: str, info: dict) -> dict[str, torch.nn.Module]:
    """Check every requirement's sha256 against the card, then load those the constructor takes."""
    required = info.get("requires", {})
    for req, sha in required.items():
        bundled = card(req)["sha256"]
        if bundled != sha:
            rebuild = dependents(req)
            raise CheckpointError(
                f"{name} was trained on {req} with sha256 {sha[:12]}..., but the bundled {req} has sha256 "
                f"{bundled[:12]}...: {req} was retrained since, and {name} only understands the one it was "
                f"trained on. Rebuild, in order: " + "; ".join(f"`mmcourse train {r}`" for r in rebuild)
                + f" (or all at once: `mmcourse train --with-dependents {req}`)"
            )
    inputs = info.get("inputs", {})
    unknown = sorted(set(inputs.values()) - set(required))
    if unknown:
        raise CheckpointError(f"the card of {name} hands {', '.join(unknown)} to its model without requiring it "
                              f"(no sha256 in `requires`); rebuild it with `mmcourse train {name}`")
    return {argument: load(req) for argument, req in inputs.items()}


def save(name: str, model: torch.nn.Module, *, description: str, inputs: dict[str, str] | None = None,
         extra: dict | None = None, directory: str | Path | None = None) -> Path:
    """Write ``name``.safetensors and its card; returns the weights path.

    ``model`` must be a class of ``mmcourse.models`` with a ``config`` attribute (its constructor's
    arguments); ``inputs`` maps constructor arguments to the bundled checkpoints the model was built
    on, whose current sha256 the card records as ``requires``. ``directory``: where to write (default:
    the bundled checkpoints). Each file is written to a temporary name and renamed into place, so a
    process killed while saving leaves the previous files, never half-written ones.
    """
    cls = type(model).__name__
    if getattr(mmcourse.models, cls, None) is not type(model):
        raise TypeError(f"{cls} is not exported by mmcourse.models: a checkpoint's network must live there")
    inputs = dict(inputs or {})
    requires = {req: card(req)["sha256"] for req in sorted(set(inputs.values()))}
    out = Path(directory) if directory is not None else checkpoint_dir()
    out.mkdir(parents=True, exist_ok=True)
    weights = out / f"{name}.safetensors"
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = weights.with_suffix(".tmp")
    save_file(state, str(tmp), metadata={"name": name})
    info = {"name": name, "description": description, "model": cls, "config": model.config,
            "sha256": sha256_of(tmp), "requires": requires, "inputs": inputs, **(extra or {})}
    card_tmp = out / f"{name}.json.tmp"
    card_tmp.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    tmp.replace(weights)
    card_tmp.replace(out / f"{name}.json")
    return weights
