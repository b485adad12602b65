"""The course's one training loop: a fixed number of steps, a progress bar, the losses returned.

Every bundled checkpoint's recipe and every live training run in the notebooks goes through
``fit``; what differs between them is passed in as hooks:

* ``param_groups``: the optimiser's parameter groups (e.g. no weight decay on biases and the
  logit scale, as CLIP does); by default every trainable parameter, one group;
* ``schedule``: a learning-rate schedule, built on the optimiser and stepped after every step;
* ``after_step(step)``: anything that must happen after an update (clamping CLIP's logit scale,
  updating an exponential moving average, taking a snapshot of the weights);
* ``distributed``: data-parallel training in a ``torch.distributed`` process group (DDP averages
  the gradients; the returned losses are the mean over the processes).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

Schedule = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


def fit(
    model: torch.nn.Module,
    loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor],
    batches: Iterator[Any],
    *,
    steps: int,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    param_groups: Iterable[dict] | None = None,
    schedule: Schedule | None = None,
    after_step: Callable[[int], None] | None = None,
    distributed: bool = False,
    progress: bool = True,
    desc: str = "training",
) -> list[float]:
    """Train ``model`` with AdamW for ``steps`` steps; ``loss_fn(model, batch)`` returns a scalar.

    ``batches`` is any iterator of batches (advanced once per step). ``param_groups`` replaces the
    default single group of trainable parameters (groups may set their own ``weight_decay``);
    ``schedule(optimizer)`` builds a learning-rate scheduler stepped after each update;
    ``after_step(step)`` runs after each update (steps count from 0). With ``distributed=True`` the
    model is wrapped in ``DistributedDataParallel`` (a process group must be initialised), ``loss_fn``
    receives the wrapper, and each returned loss is the mean over the processes.

    Returns the loss of every step. Raises ``FloatingPointError`` as soon as a loss is NaN or
    infinite, naming the step.
    """
    if param_groups is None:
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no trainable parameters (all have requires_grad=False)")
        param_groups = [{"params": params}]
    opt = torch.optim.AdamW(list(param_groups), lr=lr, weight_decay=weight_decay)
    scheduler = schedule(opt) if schedule is not None else None
    forward = model
    if distributed:
        forward = DistributedDataParallel(model)
    world_size = torch.distributed.get_world_size() if distributed else 1
    model.train()
    losses: list[float] = []
    bar = tqdm(range(steps), desc=desc, disable=not progress, mininterval=0.5)
    for step in bar:
        loss = loss_fn(forward, next(batches))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}; try a lower learning rate")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()
        if after_step is not None:
            after_step(step)
        value = loss.detach()
        if world_size > 1:  # the whole batch's loss is the mean of the processes' local losses
            value = value.clone()
            torch.distributed.all_reduce(value)
            value /= world_size
        losses.append(value.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return losses


def batches_of(tensors: tuple[torch.Tensor, ...], batch_size: int, *, seed: int = 0) -> Iterator[tuple[torch.Tensor, ...]]:
    """Endless shuffled mini-batches over the rows of equally long tensors (reshuffled each epoch)."""
    n = tensors[0].shape[0]
    if any(t.shape[0] != n for t in tensors):
        raise ValueError("all tensors must have the same number of rows")
    g = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(n, generator=g)
        for start in range(0, n - batch_size + 1, batch_size):
            idx = order[start : start + batch_size]
            yield tuple(t[idx] for t in tensors)
