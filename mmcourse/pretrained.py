"""The bundled course checkpoints: small safetensors files in ``assets/checkpoints`` with their sha256.

``load(name)`` rebuilds the model from the checkpoint's JSON card, checks the file's sha256 and
loads the weights with ``safetensors`` (no pickle, no network). ``mmcourse train NAME`` rebuilds a
checkpoint from scratch with the recipe in ``RECIPES`` and rewrites its card.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

import torch


@dataclass(frozen=True)
class Recipe:
    """How to build a model from its config and how to train it from scratch."""

    build: Callable[[dict], torch.nn.Module]
    train: Callable[..., tuple[torch.nn.Module, dict]]  # (seed, progress[, nproc]) -> (model, metrics)
    description: str


def _attributes_build(config: dict) -> torch.nn.Module:
    from mmcourse.attributes import AttributePredictor

    return AttributePredictor(**config)


def _attributes_train(seed: int = 0, progress: bool = True):
    from mmcourse.attributes import train_attribute_predictor

    return train_attribute_predictor(seed=seed, progress=progress)


def _clip_build(config: dict) -> torch.nn.Module:
    from mmcourse.models.clip import CLIP

    return CLIP(**config)


def _clip_train(seed: int = 0, progress: bool = True, nproc: int = 1):
    from mmcourse.pretraining import train_clip

    return train_clip(seed=seed, progress=progress, nproc=nproc)


def _diffusion_build(config: dict) -> torch.nn.Module:
    from mmcourse.diffusion import DiffusionModel

    return DiffusionModel(**config)


def _diffusion_train(seed: int = 0, progress: bool = True):
    from mmcourse.diffusion import train_diffusion_shapes

    return train_diffusion_shapes(seed=seed, progress=progress)


def _supervised_build(config: dict) -> torch.nn.Module:
    from mmcourse.robustness import PhotoClassifier

    return PhotoClassifier(**config)


def _supervised_train(seed: int = 0, progress: bool = True):
    from mmcourse.robustness import train_photo_classifier

    return train_photo_classifier(seed=seed, progress=progress)


RECIPES: dict[str, Recipe] = {
    "attributes_shapes": Recipe(
        _attributes_build, _attributes_train, "CNN predicting colour and shape attributes (notebook 01)"
    ),
    "clip_shapes": Recipe(
        _clip_build, _clip_train, "the course CLIP: CNN image encoder + text transformer, contrastive (notebooks 02-07)"
    ),
    "supervised_shapes": Recipe(
        _supervised_build, _supervised_train,
        "supervised CNN for the 56 seen colour-shape pairs, trained on photos only, with snapshots taken "
        "during training (the robustness baseline of notebook 03)",
    ),
    "diffusion_shapes": Recipe(
        _diffusion_build, _diffusion_train,
        "text-to-image diffusion: a small U-Net conditioned on the frozen clip_shapes text encoder, "
        "trained with caption dropout for classifier-free guidance (notebook 08)",
    ),
}


class CheckpointError(RuntimeError):
    """A bundled checkpoint is missing, corrupt or does not fit its model."""


def checkpoint_dir() -> Path:
    return Path(str(resources.files("mmcourse.assets"))) / "checkpoints"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def card(name: str) -> dict:
    """The JSON card of checkpoint ``name``: config, sha256, how it was trained, measured quality."""
    _known(name)
    path = checkpoint_dir() / f"{name}.json"
    if not path.exists():
        raise CheckpointError(f"checkpoint {name!r} has no card at {path}; rebuild it with `mmcourse train {name}`")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"the card {path} is not valid JSON ({err}); rebuild with `mmcourse train {name}`") from None


def load(name: str, *, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The bundled model ``name`` in eval mode, on ``device``."""
    from safetensors.torch import load_file

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
    model = RECIPES[name].build(info["config"])
    try:
        state = load_file(str(weights))
        model.load_state_dict(state, strict=True)
    except Exception as err:  # safetensors or shape mismatch
        raise CheckpointError(f"checkpoint {weights.name} does not fit the model {type(model).__name__}: {err}") from None
    return model.to(device).eval()


def save(name: str, model: torch.nn.Module, config: dict, extra: dict) -> Path:
    """Write ``name``.safetensors and its card (with the sha256); returns the weights path."""
    from safetensors.torch import save_file

    out = checkpoint_dir()
    out.mkdir(parents=True, exist_ok=True)
    weights = out / f"{name}.safetensors"
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = weights.with_suffix(".tmp")
    save_file(state, str(tmp), metadata={"name": name})
    tmp.replace(weights)
    info = {"name": name, "description": RECIPES[name].description, "config": config, "sha256": sha256_of(weights), **extra}
    (out / f"{name}.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return weights


def _known(name: str) -> None:
    if name not in RECIPES:
        raise KeyError(f"no bundled checkpoint {name!r}; available: {', '.join(sorted(RECIPES))}")
