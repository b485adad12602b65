"""The CLIP loss over several processes: every rank's pairs become negatives for every other rank.

With data parallelism each of W processes (ranks) encodes its own N_local pairs. Computing the loss
on local features alone would give each image only N_local - 1 negatives; CLIP's batch of 32768 pairs
was spread over hundreds of GPUs and contrasted as one batch. The trick is to gather the features:

- :func:`all_gather_with_grad` concatenates every rank's (N_local, D) features into (N, D) in rank
  order, N = W * N_local, and in backward hands each rank the gradient for its own slice summed over
  all ranks (all ranks' losses depend on it);
- :func:`local_clip_loss` is open_clip's ``local_loss=True, gather_with_grad=True``: rank r scores its
  own N_local images against all N texts and its own texts against all N images, so it holds an
  (N_local, N) block of logits instead of (N, N); its right answers are columns ``r * N_local + i``.

The mean of the W local losses is the single-process loss of the concatenated batch, and the gradient
rank r receives for its features is W times that loss's gradient for them; DDP, which averages
parameter gradients over ranks, divides the W back out: training matches one process with the whole batch.

:func:`distributed_clip_loss` puts the two together; :func:`launch`, :func:`init` and :func:`shutdown`
start and stop the processes (gloo on CPU, NCCL on GPUs).
"""

from __future__ import annotations

import datetime
import os
import socket
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from mmcourse.losses import check_feature_pairs, clip_loss

Tensor = torch.Tensor


# ------------------------------------------------------------------------------ process group


def is_distributed() -> bool:
    """Whether this process belongs to an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of processes in the group; 1 without a process group."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's index in the group, from 0; 0 without a process group."""
    return dist.get_rank() if is_distributed() else 0


def free_port() -> int:
    """A TCP port on the loopback interface that was free a moment ago (for MASTER_PORT)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init(
    rank: int,
    world_size: int,
    *,
    port: int,
    backend: str | None = None,
    addr: str = "127.0.0.1",
    timeout_s: float = 300.0,
) -> torch.device:
    """Join the process group as ``rank`` of ``world_size``; return the device this rank should use.

    ``backend``: ``"nccl"`` when there is a GPU for every rank, else ``"gloo"`` (CPU). All ranks must
    pass the same ``port`` (and ``addr``, the host of rank 0). A collective that waits longer than
    ``timeout_s`` (a rank crashed, or never joined) raises instead of hanging.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank {rank} of {world_size}")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() and torch.cuda.device_count() >= world_size else "gloo"
    os.environ["MASTER_ADDR"] = addr
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group(
        backend, rank=rank, world_size=world_size, timeout=datetime.timedelta(seconds=timeout_s)
    )
    if backend == "nccl":
        torch.cuda.set_device(rank)
        return torch.device("cuda", rank)
    return torch.device("cpu")


def shutdown() -> None:
    """Leave the process group (a no-op without one)."""
    if is_distributed():
        dist.destroy_process_group()


def _run_rank(
    rank: int, fn: Callable[..., Any], world_size: int, port: int, backend: str | None, timeout_s: float, args: tuple
) -> None:
    device = init(rank, world_size, port=port, backend=backend, timeout_s=timeout_s)
    try:
        fn(rank, world_size, device, *args)
    finally:
        shutdown()


def launch(
    fn: Callable[..., Any], nprocs: int, *args: Any, backend: str | None = None, timeout_s: float = 300.0
) -> None:
    """Run ``fn(rank, world_size, device, *args)`` in ``nprocs`` fresh processes joined in one group.

    ``fn`` must be importable by name (a module-level function), as ``torch.multiprocessing.spawn``
    starts each process from scratch. Returns when all ranks are done; raises if any rank raised.
    With ``nprocs == 1`` it runs in this process, without a process group.
    """
    if nprocs < 1:
        raise ValueError(f"nprocs must be at least 1, got {nprocs}")
    if nprocs == 1:
        fn(0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu"), *args)
        return
    mp.spawn(_run_rank, args=(fn, nprocs, free_port(), backend, timeout_s, args), nprocs=nprocs, join=True)


# ------------------------------------------------------------------------------ gathering


class AllGatherWithGrad(torch.autograd.Function):
    """Forward: all ranks' (N_local, D) tensors, concatenated in rank order. Backward: each rank gets
    the gradient for its own slice, summed over the ranks (each rank's loss used every slice)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rows = x.shape[0]
        return torch.cat(parts, dim=0)  # (W * N_local, D)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous()  # a copy we may overwrite: the sum over ranks
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)  # reduce_scatter would move less data, but gloo lacks it
        start = dist.get_rank() * ctx.rows
        return grad[start : start + ctx.rows]


def _check_same_rows_everywhere(x: Tensor) -> None:
    rows = torch.tensor([x.shape[0]], device=x.device)
    every = [torch.empty_like(rows) for _ in range(dist.get_world_size())]
    dist.all_gather(every, rows)
    counts = [int(r) for r in every]
    if len(set(counts)) != 1:
        raise ValueError(
            f"every rank must contribute the same number of rows, got {counts} (rank order); "
            "drop the last incomplete batch (DataLoader(drop_last=True))"
        )


def all_gather_with_grad(x: Tensor) -> Tensor:
    """(N_local, ...) on each rank -> (world_size * N_local, ...), rank 0's rows first, differentiable.

    Gradients flow back to every rank's slice: rank r's ``x.grad`` is the sum over ranks of the
    gradient each rank's loss sends to rows ``r * N_local ... (r + 1) * N_local``. Without a process
    group, or with one process, returns ``x`` itself.
    """
    if world_size() == 1:
        return x
    if x.ndim == 0:
        raise ValueError("all_gather_with_grad concatenates along the first dimension; got a 0-d tensor")
    _check_same_rows_everywhere(x)
    return AllGatherWithGrad.apply(x)


# ------------------------------------------------------------------------------ the loss


def local_clip_loss(
    image_features: Tensor,
    text_features: Tensor,
    logit_scale: Tensor | float,
    all_image_features: Tensor,
    all_text_features: Tensor,
    offset: int,
) -> Tensor:
    """One rank's share of the CLIP loss: its N_local pairs against all N gathered ones.

    ``image_features``, ``text_features``: (N_local, D), this rank's; ``all_*``: (N, D), every rank's,
    this rank's rows at ``offset ... offset + N_local``. Image i's right answer is text ``offset + i``.
    """
    check_feature_pairs(image_features, text_features)
    check_feature_pairs(all_image_features, all_text_features)
    n_local = image_features.shape[0]
    logits_per_image = logit_scale * image_features @ all_text_features.T  # (N_local, N)
    logits_per_text = logit_scale * text_features @ all_image_features.T  # (N_local, N)
    labels = torch.arange(n_local, device=image_features.device) + offset
    return 0.5 * (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels))


def distributed_clip_loss(image_features: Tensor, text_features: Tensor, logit_scale: Tensor | float) -> Tensor:
    """The CLIP loss of the whole batch spread over the process group, computed locally on each rank.

    Call it on every rank with that rank's (N_local, D) L2-normalised features (same N_local
    everywhere) and the shared logit scale. Features are gathered with gradients and each rank
    returns :func:`local_clip_loss`; wrap the model in DDP so that gradients are averaged over ranks.
    Without a process group (or with one process) this is :func:`mmcourse.losses.clip_loss`.
    """
    check_feature_pairs(image_features, text_features)
    if world_size() == 1:
        return clip_loss(image_features, text_features, logit_scale)
    all_image_features = all_gather_with_grad(image_features)
    all_text_features = all_gather_with_grad(text_features)
    offset = rank() * image_features.shape[0]
    return local_clip_loss(image_features, text_features, logit_scale, all_image_features, all_text_features, offset)
