"""Trajectory management behind ``kdbench teacher train|list|show|rm``."""

from __future__ import annotations

import fcntl
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

from ..config import RunConfig, resolve
from ..errors import ConfigError, StoreError, UnknownNameError
from ..store import Store, open_lock
from . import trajectory as traj


def seeds_needed(config: RunConfig) -> list[int]:
    """Seeds of the trajectories a resolved config's teacher draws from: the source's own
    ``seeds(config)`` registration (an independent ensemble: s..s+K-1), else the teacher seed;
    none for a teacher given as weights."""
    from ..plugins import get

    t = config.teacher
    if t is None or t.weights is not None:
        return []
    seeds = get("teacher_source", t.source).metadata.get("seeds")
    return list(seeds(config)) if seeds is not None else [t.seed]


def train(config: RunConfig, seeds: list[int] | None = None, *, progress: bool = True
          ) -> list[traj.Trajectory]:
    """Train (or resume, or reuse) teacher trajectories ahead of the runs that use them: the
    given seeds, else every trajectory the config's teacher source needs."""
    from ..data import load_data
    from ..device import resolve_device, set_threads
    from .base import TeacherContext

    cfg = resolve(config)
    if cfg.teacher is None:
        raise ConfigError(f"loss {cfg.loss.name!r} uses no teacher; nothing to train")
    store = Store(cfg.results_dir)
    store.check_writable()
    set_threads(cfg.engine.threads)
    device = resolve_device(cfg.device)
    dataset = load_data(cfg.teacher_data, device)
    ctx = TeacherContext(cfg, dataset, device, store, progress)
    if cfg.teacher.weights is not None:
        raise ConfigError(f"the teacher comes from --teacher-weights {cfg.teacher.weights!r}; "
                          f"there is no trajectory to train")
    return [ctx.trajectory(seed, repair=True) for seed in (seeds or seeds_needed(cfg))]


def trajectories(store: Store) -> list[traj.Trajectory]:
    """Every trajectory folder with a readable manifest, by key (unreadable ones are skipped
    with a warning naming them)."""
    out = []
    for folder in sorted(store.teachers.iterdir()) if store.teachers.is_dir() else []:
        if (folder / traj.MANIFEST).is_file():
            try:
                out.append(traj.Trajectory(folder))
            except StoreError as exc:
                warnings.warn(f"kdbench: skipping {exc}", RuntimeWarning, stacklevel=2)
    return out


def get(store: Store, key: str) -> traj.Trajectory:
    folder = store.teachers / key
    if not key or "/" in key or not (folder / traj.MANIFEST).is_file():
        raise UnknownNameError("teacher trajectory", key,
                               [t.key for t in trajectories(store)],
                               hint=f"in {str(store.teachers)!r}")
    return traj.Trajectory(folder)


def references(store: Store) -> dict[str, list[str]]:
    """Trajectory key -> ids of the run records whose teacher came from it."""
    refs: dict[str, list[str]] = {}
    for _, record in store.iter_records():
        if isinstance(record, StoreError):
            continue
        prov = record.get("teacher") or {}
        keys = set(prov.get("trajectories") or []) | ({prov["trajectory"]}
                                                     if prov.get("trajectory") else set())
        for key in keys:
            refs.setdefault(key, []).append(record["run_id"])
    return refs


def summary(t: traj.Trajectory, runs: int = 0) -> dict[str, Any]:
    """One line of ``teacher list``."""
    curve = t.manifest.get("curve", [])
    spec = t.spec
    return {"key": t.key, "arch": spec["arch"], "dataset": spec["dataset"], "seed": spec["seed"],
            "status": t.status,
            "epochs": f"{len(curve)}/{spec['recipe']['epochs']}",
            "saved": len(t.epochs),
            "best_top1": max((r["top1"] for r in curve if "top1" in r), default=None),
            "last_top1": curve[-1].get("top1") if curve else None,
            "size_mb": round(t.size_bytes() / 2**20, 2), "runs": runs}


def rows(store: Store) -> list[dict[str, Any]]:
    refs = references(store)
    return [summary(t, len(refs.get(t.key, []))) for t in trajectories(store)]


def detail(t: traj.Trajectory) -> list[dict[str, Any]]:
    """Per-epoch rows of ``teacher show``: accuracy, lr and the saved checkpoint (if any)."""
    checkpoints = t.manifest.get("checkpoints", {})
    out = []
    for row in t.manifest.get("curve", []):
        ckpt = checkpoints.get(str(row["epoch"]))
        out.append({"epoch": row["epoch"], "lr": row.get("lr"), "top1": row.get("top1"),
                    "top5": row.get("top5"), "test_loss": row.get("test_loss"),
                    "train_top1": row.get("train_top1"),
                    "checkpoint": ckpt["file"] if ckpt else "",
                    "sha256": ckpt["sha256"][:12] if ckpt else ""})
    return out


def remove(store: Store, key: str, *, force: bool = False) -> Path:
    """Delete a trajectory folder; refuses while run records reference it (unless ``force``)
    and while another process holds its lock (training it)."""
    link = store.teachers / key
    if key and "/" not in key and key not in (".", "..") and link.is_symlink():
        # a link put in the store: removed, never followed (its target is not ours to delete)
        target = os.readlink(link)
        link.unlink()
        warnings.warn(f"kdbench: teacher trajectory {key!r} was a symbolic link to "
                      f"{target!r}; removed the link, its target is left alone",
                      RuntimeWarning, stacklevel=2)
        return link
    folder = store.teachers / key
    try:
        t = get(store, key)
    except StoreError:
        # a manifest too damaged to read: removed with --force (nothing can reference it)
        if not force or not key or "/" in key or key in (".", "..") or not folder.is_dir():
            raise
        t = None
    used = references(store).get(key, []) if t is not None else []
    if used and not force:
        shown = ", ".join(used[:5]) + (f", ... ({len(used)} in all)" if len(used) > 5 else "")
        raise ConfigError(f"teacher trajectory {key!r} is referenced by {len(used)} run "
                          f"record(s) ({shown}); use --force to delete it anyway")
    fd = open_lock(folder / ".lock")
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(f"teacher trajectory {key!r} is being trained by another process; "
                             f"not deleting it") from None
        shutil.rmtree(folder)
    finally:
        os.close(fd)
    return folder
