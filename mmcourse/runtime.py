"""The notebooks' set-up: one device picker, thread count and seeds, in one call."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from mmcourse import __version__


def pick_device() -> torch.device:
    """``cuda`` if a GPU is usable, else Apple's ``mps``, else ``cpu``."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (all devices)."""
    random.seed(seed)
    torch.manual_seed(seed)
    np.random.seed(seed)


def start(seed: int = 0, *, threads: int | None = None, quiet: bool = False) -> torch.device:
    """Set up a notebook: pick the device, set torch's CPU threads, seed everything.

    ``threads`` defaults to the cores this process may use (at most 8): on a laptop or Colab's two
    cores, torch's default can oversubscribe and run slower. Returns the device to use.
    """
    if threads is None:
        available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        threads = max(1, min(available, 8))
    torch.set_num_threads(threads)
    seed_everything(seed)
    device = pick_device()
    if not quiet:
        print(f"mmcourse {__version__} | torch {torch.__version__} | device {device} | {threads} CPU threads | seed {seed}")
    return device
