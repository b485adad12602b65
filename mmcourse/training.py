"""The course's one training loop: a fixed number of steps, a progress bar, the losses returned."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import torch
from tqdm.auto import tqdm


def fit(
    model: torch.nn.Module,
    loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor],
    batches: Iterator[Any],
    *,
    steps: int,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    progress: bool = True,
    desc: str = "training",
    after_step: Callable[[int], None] | None = None,
) -> list[float]:
    """Train ``model`` with AdamW for ``steps`` steps; ``loss_fn(model, batch)`` returns a scalar.

    ``batches`` is any iterator of batches (it is advanced once per step). ``after_step(step)``, if
    given, runs after each optimiser step (e.g. to update an exponential moving average of the
    weights). Returns the loss of every step. Raises ``FloatingPointError`` as soon as a loss is NaN
    or infinite, naming the step.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (all have requires_grad=False)")
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    model.train()
    losses: list[float] = []
    bar = tqdm(range(steps), desc=desc, disable=not progress, mininterval=0.5)
    for step in bar:
        loss = loss_fn(model, next(batches))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}; try a lower learning rate")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if after_step is not None:
            after_step(step)
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
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
