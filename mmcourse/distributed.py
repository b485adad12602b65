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

Starting the processes: ``torchrun`` (one node or several) puts ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT`` in each process's environment; :func:`from_environment` reads them and
:func:`run_in_group` joins the group with ``env://`` initialisation, takes its device from ``LOCAL_RANK`` and
runs one rank. :func:`launch` (``mmcourse train --nproc N``, one machine) spawns N processes that set the
same variables and go through the same :func:`run_in_group`; under torchrun it runs this process's rank.
A collective that fails (another rank died, or did not answer within the timeout) raises
:class:`RankFailure` on the ranks still alive, so they stop with one clear message.
"""

from __future__ import annotations

import datetime
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
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


ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")  # what torchrun sets
DEFAULT_TIMEOUT_S = 300.0


class RankFailure(RuntimeError):
    """A collective operation failed on this rank: another rank died or stopped answering."""


@dataclass(frozen=True)
class Placement:
    """Where this process sits in a data-parallel run, as torchrun (or :func:`launch`) describes it."""

    rank: int  # among all processes, 0 ... world_size - 1
    world_size: int
    local_rank: int  # among this node's processes: picks the GPU
    local_world_size: int  # processes on this node: share its CPU cores


def from_environment(env: dict[str, str] | None = None) -> Placement | None:
    """This process's place in a torchrun-style launch, from ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR`` and ``MASTER_PORT``; None when ``WORLD_SIZE`` is not set (a plain single process).
    Raises ValueError, naming what is wrong, when the variables are incomplete or inconsistent."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" not in env:
        return None
    missing = [v for v in ENV_VARS if not env.get(v)]
    if missing:
        raise ValueError(f"WORLD_SIZE is set but {', '.join(missing)} is not: start the processes with torchrun "
                         "(or set all of " + ", ".join(ENV_VARS) + ")")
    try:
        rank, world, local = int(env["RANK"]), int(env["WORLD_SIZE"]), int(env["LOCAL_RANK"])
        local_world = int(env.get("LOCAL_WORLD_SIZE") or world)
    except ValueError:
        raise ValueError("RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE must be integers, got "
                         + ", ".join(f"{v}={env.get(v)!r}" for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK",
                                                                     "LOCAL_WORLD_SIZE"))) from None
    if not (world >= 1 and 0 <= rank < world and 0 <= local < local_world <= world):
        raise ValueError(f"inconsistent launch: RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local}, "
                         f"LOCAL_WORLD_SIZE={local_world}")
    return Placement(rank, world, local, local_world)


def init_from_environment(
    place: Placement | None = None, *, backend: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
) -> torch.device:
    """Join the process group described by the environment (``env://``); return this rank's device.

    ``backend``: ``"nccl"`` when this node has a GPU for each of its processes (rank uses GPU
    ``LOCAL_RANK``), else ``"gloo"`` on the CPU. A collective that waits longer than ``timeout_s``
    (a rank crashed, or never joined) raises instead of hanging.
    """
    place = place or from_environment()
    if place is None:
        raise ValueError("not started as one rank of a group: WORLD_SIZE is not set (use torchrun or --nproc)")
    if backend is None:
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        backend = "nccl" if gpus >= place.local_world_size else "gloo"
    dist.init_process_group(backend, init_method="env://", rank=place.rank, world_size=place.world_size,
                            timeout=datetime.timedelta(seconds=timeout_s))
    if backend == "nccl":
        torch.cuda.set_device(place.local_rank)
        return torch.device("cuda", place.local_rank)
    return torch.device("cpu")


def init(
    rank: int,
    world_size: int,
    *,
    port: int,
    backend: str | None = None,
    addr: str = "127.0.0.1",
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> torch.device:
    """Join the process group as ``rank`` of ``world_size`` processes on this machine; return its device.

    Sets the variables torchrun would set and joins through :func:`init_from_environment`, so a
    spawned rank and a torchrun rank start the same way. All ranks must pass the same ``port``.
    """
    _set_environment(rank, world_size, addr, port)
    return init_from_environment(backend=backend, timeout_s=timeout_s)


def _set_environment(rank: int, world_size: int, addr: str, port: int) -> None:
    """Set the variables torchrun sets, for ``rank`` of ``world_size`` processes on this machine."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank {rank} of {world_size}")
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world_size), MASTER_ADDR=addr, MASTER_PORT=str(port))


def shutdown() -> None:
    """Leave the process group (a no-op without one)."""
    if is_distributed():
        dist.destroy_process_group()


def _collective_failed(err: BaseException) -> bool:
    if isinstance(err, getattr(dist, "DistError", ())):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and any(
        key in text for key in ("Gloo", "gloo", "NCCL", "Connection closed", "Connection reset", "timed out",
                                "Timed out", "Socket Timeout", "Broken pipe"))


def run_in_group(fn: Callable[..., Any], *args: Any, backend: str | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S, place: Placement | None = None) -> Any:
    """Join the group the environment describes, run ``fn(rank, world_size, device, *args)``, leave.

    The one way a rank starts, under torchrun or spawned by :func:`launch`. When a collective fails
    (another rank died, or did not answer within ``timeout_s``), raises :class:`RankFailure`.
    """
    place = place or from_environment()
    if place is None:
        raise ValueError("not started as one rank of a group: WORLD_SIZE is not set (use torchrun or --nproc)")
    device = init_from_environment(place, backend=backend, timeout_s=timeout_s)
    print(f"rank {place.rank} of {place.world_size}: joined ({dist.get_backend()}, {device})", file=sys.stderr,
          flush=True)
    failed = False
    try:
        return fn(place.rank, place.world_size, device, *args)
    except Exception as err:
        if not _collective_failed(err):
            raise
        failed = True
        raise RankFailure(
            f"rank {place.rank} of {place.world_size} stopped: a collective operation failed, so another rank "
            f"died or did not answer within the {timeout_s:.0f} s collective timeout ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200] if str(err) else ''})") from err
    finally:
        if not failed:  # after a failure the group may be unusable; the process is about to end anyway
            shutdown()


def _run_rank(
    rank: int, fn: Callable[..., Any], world_size: int, port: int, backend: str | None, timeout_s: float, args: tuple
) -> None:
    _set_environment(rank, world_size, "127.0.0.1", port)
    run_in_group(fn, *args, backend=backend, timeout_s=timeout_s)


def launch(
    fn: Callable[..., Any], nprocs: int, *args: Any, backend: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> None:
    """Run ``fn(rank, world_size, device, *args)`` on every rank of a group of ``nprocs`` processes.

    Under torchrun (``WORLD_SIZE`` set) the processes are torchrun's: this process runs its own rank
    and ``nprocs`` must be 1 or the world size. Otherwise it starts ``nprocs`` fresh processes on this
    machine (``fn`` must be importable by name, a module-level function, as ``torch.multiprocessing.spawn``
    starts each from scratch), each of which sets torchrun's variables and joins through
    :func:`run_in_group`. Returns when all ranks are done; raises if any rank raised or died.
    With ``nprocs == 1`` and no torchrun it runs in this process, without a process group.
    """
    if nprocs < 1:
        raise ValueError(f"nprocs must be at least 1, got {nprocs}")
    place = from_environment()
    if place is not None:
        if nprocs not in (1, place.world_size):
            raise ValueError(f"started by torchrun as one of {place.world_size} processes: the processes are "
                             f"torchrun's (--nproc-per-node, --nnodes), drop --nproc {nprocs}")
        if place.world_size > 1:
            run_in_group(fn, *args, backend=backend, timeout_s=timeout_s, place=place)
            return
        nprocs = 1
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
