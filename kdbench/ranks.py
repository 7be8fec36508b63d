"""Who this process is in a distributed run and the few collectives kdbench makes: the
rank and world size of the running process group, a barrier, summed metrics, gathered
evaluation outputs. Each collective fails with a one-line :class:`RankError` when a peer died
or stopped answering (its timeout: ``KDBENCH_DIST_TIMEOUT`` seconds), never a hang.

A leaf, so the data loaders and evaluators can shard and gather without the engine; joining
the group and launching ranks is :mod:`kdbench.engine.distributed`.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist

from .errors import KDBenchError

#: seconds a collective waits for the other ranks before it fails (KDBENCH_DIST_TIMEOUT)
DEFAULT_TIMEOUT = 600


class RankError(KDBenchError):
    """A rank of a distributed run died or stopped answering."""

    exit_code = 1


def world() -> tuple[int, int] | None:
    """(rank, world size) of the running process group; None when this process is alone."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.get_rank(), dist.get_world_size()
    return None


def is_primary() -> bool:
    """Whether this process writes (rank 0, or a process alone)."""
    w = world()
    return w is None or w[0] == 0


def backend() -> str | None:
    """The process group's backend (gloo, nccl), None when alone."""
    return dist.get_backend() if world() is not None else None


def timeout_seconds() -> int:
    return int(os.environ.get("KDBENCH_DIST_TIMEOUT", DEFAULT_TIMEOUT))


def collective(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except RuntimeError as exc:  # gloo/NCCL: a peer closed its connection or timed out
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RankError(f"a rank of the distributed run stopped ({first[:160]}); run the "
                        f"same command again to resume from the last saved epoch") from None


def barrier() -> None:
    if world() is not None:
        collective(dist.barrier)


def sum_over_ranks(values: dict[str, torch.Tensor], count: int) -> tuple[dict[str, torch.Tensor],
                                                                         int]:
    """Per-epoch sums and the sample count added over the ranks (same keys on every rank)."""
    if world() is None:
        return values, count
    keys = sorted(values)
    flat = torch.stack([values[k].double().reshape(()).cpu() for k in keys]
                       + [torch.tensor(float(count), dtype=torch.float64)])
    flat = flat.to(_comm_device())
    collective(dist.all_reduce, flat)
    flat = flat.cpu()
    out = {k: flat[i].to(values[k].dtype).to(values[k].device) for i, k in enumerate(keys)}
    return out, int(flat[-1])


def gather_rows(local: torch.Tensor, total: int) -> torch.Tensor:
    """The rows of every rank's contiguous part of a split, in order (``total`` rows)."""
    w = world()
    if w is None:
        return local
    per = -(-total // w[1])
    padded = torch.zeros((per, *local.shape[1:]), dtype=local.dtype, device=_comm_device())
    padded[:local.shape[0]] = local.to(padded.device)
    parts = [torch.empty_like(padded) for _ in range(w[1])]
    collective(dist.all_gather, parts, padded)
    return torch.cat(parts)[:total].to(local.device)


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


