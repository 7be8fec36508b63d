"""One run on several processes (``torch.distributed``): joining the process group, the
gradient averaging of data-parallel training, and what rank 0 alone does.

A run learns its rank from the environment torchrun, Slurm (through torchrun or ``srun``) and
``kdbench run --nproc N`` (:func:`launch`) set: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``. The backend follows the device: NCCL on CUDA, gloo on the
CPU. Every rank builds the same models from the same seed and trains on its part of each
global batch; after the backward pass the gradients are averaged over the ranks
(:class:`AveragedOptimizer`: an all-reduce per step, what ``DistributedDataParallel`` does
without its bucketing overlap; the models' ``features()`` view, which feature losses need,
bypasses a DDP wrapper's ``forward``). BatchNorm buffers are broadcast from rank 0 before each
evaluation (DDP's ``broadcast_buffers``). Rank 0 writes every file (the store is read-only on
the others), and the ranks meet at a barrier after each save. Every collective has a timeout,
so a dead rank is an error on the others, never a hang.
"""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..errors import ConfigError
from ..ranks import collective, timeout_seconds, world


def env_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the environment; (0, 1, 0) outside a launcher."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise ConfigError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers: {exc}") from None
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"RANK {rank} is not valid for WORLD_SIZE {world} (valid: 0.."
                          f"{world - 1})")
    return rank, world, local


def setup(device: str = "auto") -> tuple[int, int] | None:
    """Join the process group the environment describes (nothing when WORLD_SIZE is 1):
    NCCL on CUDA (each rank on GPU ``LOCAL_RANK``), gloo on the CPU. The store becomes
    read-only on every rank but 0. Returns (rank, world) or None."""
    from .. import store

    rank, size, local = env_world()
    if size == 1:
        return None
    if world() is not None:
        return world()
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        if local >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local} has no GPU (this machine has "
                              f"{torch.cuda.device_count()})")
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=size,
                            timeout=datetime.timedelta(seconds=timeout_seconds()))
    store.set_read_only(rank != 0)
    return rank, size


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def check_batch(batch_size: int, what: str = "recipe.batch_size") -> None:
    """The global batch must split into equal parts, one per rank."""
    w = world()
    if w is not None and batch_size % w[1]:
        raise ConfigError(f"{what} {batch_size} does not split over {w[1]} ranks (valid: a "
                          f"multiple of {w[1]})")


def average_gradients(params: Iterable[torch.Tensor]) -> None:
    """Average the gradients of ``params`` over the ranks: one all-reduce of their
    concatenation (every rank has the same parameters with gradients, in the same order)."""
    w = world()
    if w is None:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    collective(dist.all_reduce, flat)
    flat.div_(w[1])
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


class AveragedOptimizer:
    """An optimiser whose ``step`` first averages the gradients over the ranks; everything
    else (param groups, state, state dicts) is the wrapped optimiser's."""

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.optimizer = optimizer
        self._averaged = False

    def average(self) -> None:
        """Average now (before a gradient scaler looks for inf/nan), not again in ``step``."""
        average_gradients(p for g in self.optimizer.param_groups for p in g["params"])
        self._averaged = True

    def step(self, closure: Any = None) -> Any:
        if not self._averaged:
            self.average()
        self._averaged = False
        return self.optimizer.step(closure)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.optimizer, name)


def broadcast_modules(modules: Sequence[nn.Module | None], buffers_only: bool = False) -> None:
    """Rank 0's parameters and buffers (or buffers only: BatchNorm's running statistics) on
    every rank."""
    if world() is None:
        return
    for m in modules:
        if m is None:
            continue
        tensors = list(m.buffers()) if buffers_only else [*m.parameters(), *m.buffers()]
        for t in tensors:
            if t.is_floating_point() or t.dtype in (torch.int64, torch.int32):
                with torch.no_grad():
                    collective(dist.broadcast, t.data, 0)


# ============================== kdbench run --nproc N =========================================


def check_nproc(nproc: int, device: str) -> None:
    """``--nproc`` within what this machine has: GPUs on CUDA, cores on the CPU."""
    if nproc < 1:
        raise ConfigError(f"--nproc {nproc} is not valid (valid: 1 or more)")
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        have, what = torch.cuda.device_count(), "GPUs"
    else:
        try:
            have = len(os.sched_getaffinity(0))
        except AttributeError:
            have = os.cpu_count() or 1
        what = "CPU cores"
    if nproc > have:
        raise ConfigError(f"--nproc {nproc} is more than the {have} {what} here (valid: 1.."
                          f"{have})")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(argv: list[str], nproc: int, *, grace: float = 10.0) -> int:
    """Run ``python -m kdbench <argv>`` as ``nproc`` local ranks (what torchrun does on one
    machine) and wait for them. When one rank fails, the others are stopped (SIGTERM, then
    SIGKILL after ``grace`` seconds) and its exit code is returned; never a hang."""
    port = _free_port()
    procs = []
    for rank in range(nproc):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(nproc),
               "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(nproc),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "PYTHONPATH": os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"),
                                                         *sys.path) if p)}
        procs.append(subprocess.Popen([sys.executable, "-m", "kdbench", *argv], env=env))
    failed: tuple[int, int] | None = None
    try:
        while True:
            codes = [p.poll() for p in procs]
            bad = [(r, c) for r, c in enumerate(codes) if c not in (None, 0)]
            if bad:
                failed = bad[0]
                break
            if all(c == 0 for c in codes):
                return 0
            time.sleep(0.2)
    except KeyboardInterrupt:
        failed = (-1, 130)
    _stop(procs, grace)
    rank, code = failed
    if rank >= 0:
        sig = f" (signal {-code})" if code < 0 else ""
        print(f"kdbench: rank {rank} of {nproc} exited with {code}{sig}; the other ranks were "
              f"stopped. Run the same command again to resume from the last saved epoch.",
              file=sys.stderr)
    return 1 if code < 0 else code


def _stop(procs: list[subprocess.Popen], grace: float) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
