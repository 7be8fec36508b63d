"""Where and how fast a run computes: device, precision, threads, random streams, environment.

A leaf module: config resolution, the engine, the teacher sources and the benchmarks all use
these helpers, and none of them changes a result except through the choices they record.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import random
import socket
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ConfigError
from .version import __version__

# ============================== device and precision ===========================================


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA, else MPS, else the CPU; an explicit device must exist here."""
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps and mps.is_available())
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if has_mps else "cpu")
    device = torch.device(name)
    if (device.type == "cuda" and not torch.cuda.is_available()) or \
            (device.type == "mps" and not has_mps):
        raise ConfigError(f"device {name!r} is not available here (valid: auto, cpu)")
    return device


def cpu_has_fast_bf16(cpuinfo: str | None = None) -> bool:
    """True when the CPU has bf16 matrix units (AMX: ``amx_bf16`` in /proc/cpuinfo's flags).

    AVX-512 BF16 alone (``avx512_bf16``: AMD Zen 4, Intel Cooper Lake) is not enough to make
    bf16 the default: on the 2-core AMD EPYC development machine bf16 autocast trained
    resnet56 → resnet20 KD (batch 64) 1.6x faster than fp32 while the machine was idle (368
    against 229 images/s) but 2.5x slower while another process held one core (56 against 140),
    side by side in one ``kdbench bench`` (README, Performance; docs/bench/). Precision changes
    results, so ``auto`` must not follow the moment's load: fp32 there.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = {f for line in cpuinfo.splitlines() if line.startswith("flags")
             for f in line.split(":", 1)[1].split()}
    return "amx_bf16" in flags


def resolve_precision(precision: str, device: str) -> str:
    """``auto`` → bf16 where the hardware runs it fast (CUDA with bf16, CPUs with AMX), else
    fp32. Explicit values pass through."""
    if precision != "auto":
        return precision
    if device in ("cuda", "auto") or device.startswith("cuda:"):
        if torch.cuda.is_available():
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        if device != "auto":
            return "fp32"
    if device in ("cpu", "auto"):
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    return "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device_type=device.type, dtype=dtype)


def default_channels_last(device: torch.device) -> bool:
    """Whether convolutions run in channels_last (NHWC) by default on ``device``.

    On CUDA it is what tensor-core convolutions want; on the CPU oneDNN's NHWC kernels were
    faster for the CIFAR ResNets in ``kdbench bench`` (see the README's Performance section).
    """
    return device.type in ("cuda", "cpu")


def cuda_device_count() -> int:
    """CUDA devices this process sees (0 without a GPU or without CUDA)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def set_threads(threads: int = 0) -> int:
    """Size torch's thread pool: ``threads`` if > 0, else every core this process may run on
    (its CPU affinity), unless OMP_NUM_THREADS says otherwise. Returns the number in use."""
    if threads > 0:
        torch.set_num_threads(threads)
        return threads
    if "OMP_NUM_THREADS" in os.environ:
        return torch.get_num_threads()
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        n = os.cpu_count() or 1
    torch.set_num_threads(n)
    return n


# ============================== random streams =================================================


def seed_everything(seed: int) -> None:
    """Seed the global generators used for initialisation (data order uses its own)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(device: torch.device) -> dict[str, Any]:
    """The global random generators' state (torch CPU and the device's, numpy, random), as
    tensors and plain values only, so a resume file loads with ``weights_only=True``."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)),
                       "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
             "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64),
                        "gauss": gauss}}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["internal"].tolist()), p["gauss"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# ============================== environment ====================================================


@functools.lru_cache(maxsize=1)
def git_revision() -> str | None:
    """The kdbench source tree's commit (with ``+dirty`` for local changes), if it is a checkout."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def dist_version(name: str) -> str | None:
    """An installed distribution's version (None: not installed), without importing it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def environment(device: torch.device) -> dict[str, Any]:
    """What a record says about the machine and software that made it."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {"kdbench": __version__, "torch": torch.__version__,
            "torchvision": dist_version("torchvision"), "timm": dist_version("timm"),
            "python": platform.python_version(),
            "platform": platform.platform(), "device": str(device), "device_name": name,
            "threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "git": git_revision(),
            "hostname": socket.gethostname()}
