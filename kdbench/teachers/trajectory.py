"""Teacher trajectories: one teacher training run kept as checkpoints at chosen epochs.

A trajectory is identified by what determines its weights — architecture, dataset and its
options, recipe, seed, precision — and lives in ``<results>/teachers/<key>/``: a
``manifest.json`` (spec, per-epoch test accuracy, saved checkpoints with SHA-256) and one
``epoch_NNNN.pt`` per saved epoch. It is trained once and reused; an interrupted training resumes
from ``state.pt``; a file lock keeps two processes from training the same trajectory at once.

This is the store side (key, manifest, verified checkpoints, lock); how the model of a
trajectory is trained is :mod:`kdbench.teachers.train`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from .. import ranks
from ..config import RunConfig, canonical_json, drop_later_defaults
from ..errors import ConfigError, DamagedStoreError, StoreError
from ..store import (
    Store,
    atomic_torch_save,
    atomic_write_json,
    is_regular,
    open_lock,
    read_json,
    refuse_link,
    remove_resume,
    sha256_file,
    write_holder,
)
from .train import train

MANIFEST = "manifest.json"


def trajectory_spec(config: RunConfig, seed: int | None = None) -> dict[str, Any]:
    """What determines a teacher's weights (and nothing else: not the save schedule). The data
    are the teacher's own (``teacher.data``) when it has them, else the student's."""
    t = config.teacher
    assert t is not None
    data = t.data or config.data
    spec = {"arch": t.arch, "dataset": data.name, "data_options": data.options,
            "augment": data.augment,
            "recipe": drop_later_defaults(dataclasses.asdict(t.recipe), "teacher.recipe.",
                                          config=config),
            "seed": t.seed if seed is None else seed,
            # the weights depend on the precision they were trained in, as resolved here
            "precision": config.resolved_precision}
    # data settings newer than the first trajectories join the key only when they are used
    later = drop_later_defaults({"data": dataclasses.asdict(data)}, config=config)["data"]
    spec.update({key: later[key] for key in ("transforms", "augmentation",
                                             "augmentation_options") if key in later})
    if t.model_options:  # the architecture's own options, only when given
        spec["model_options"] = dict(t.model_options)
    return spec


def trajectory_key(spec: dict[str, Any]) -> str:
    """``<arch>-<dataset>-s<seed>-<10 hex digits>``; a ``timm/<name>`` architecture is spelled
    ``timm-<name>`` so that the key stays one folder name."""
    digest = hashlib.sha256(canonical_json(spec).encode()).hexdigest()[:10]
    return f"{spec['arch'].replace('/', '-')}-{spec['dataset']}-s{spec['seed']}-{digest}"


class Trajectory:
    """A trajectory folder: its manifest and verified access to its checkpoints."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.key = self.folder.name
        try:
            self.manifest: dict[str, Any] = read_json(self.folder / MANIFEST, "manifest",
                                                      follow=False)
        except FileNotFoundError:
            raise StoreError(f"no teacher trajectory {self.key!r} in "
                             f"{str(self.folder.parent)!r}") from None
        problem = manifest_problem(self.manifest)
        if problem:
            raise DamagedStoreError(f"corrupt manifest {str(self.folder / MANIFEST)!r}: "
                                    f"{problem} (`kdbench teacher train` trains it again, "
                                    f"`kdbench teacher rm {self.key} --force` removes it)")

    @property
    def done(self) -> bool:
        """Trained to the end, with every checkpoint its manifest promises on disk."""
        return self.manifest.get("status") == "done" and not self.problems(hashes=False)

    def problems(self, *, hashes: bool = True) -> list[str]:
        """What is missing or damaged: each checkpoint the manifest records (and, when training
        finished, each the save schedule promises), present and (with ``hashes``) matching its
        SHA-256."""
        out = []
        recorded = self.manifest.get("checkpoints", {})
        promised = set(self.manifest.get("save_epochs", [])) if \
            self.manifest.get("status") == "done" else set()
        for epoch in sorted(promised - {int(e) for e in recorded}):
            out.append(f"checkpoint of epoch {epoch} is not in the manifest")
        for _, entry in sorted(recorded.items(), key=lambda kv: int(kv[0])):
            path = self.folder / entry["file"]
            if not inside(entry["file"]):
                out.append(f"the manifest names {entry['file']!r}, a file outside the "
                           f"trajectory's folder")
            elif not is_regular(path):
                out.append(f"{entry['file']} is missing" if not os.path.lexists(path) else
                           f"{entry['file']} is not a regular file")
            elif hashes and sha256_file(path, follow=False) != entry["sha256"]:
                out.append(f"{entry['file']} does not match its SHA-256")
        return out

    @property
    def status(self) -> str:
        """done, training (interrupted or under way), or damaged (what is wrong)."""
        problems = self.problems(hashes=False)
        if problems:
            return "damaged: " + "; ".join(problems)
        return str(self.manifest.get("status"))

    @property
    def spec(self) -> dict[str, Any]:
        return self.manifest["spec"]

    @property
    def epochs(self) -> list[int]:
        """Epochs with a saved checkpoint, ascending."""
        return sorted(int(e) for e in self.manifest.get("checkpoints", {}))

    @property
    def trained_epochs(self) -> int:
        return len(self.manifest.get("curve", []))

    def accuracy(self, epoch: int) -> dict[str, float]:
        """Test top-1/top-5 at ``epoch`` (a trajectory tested at its checkpoints only has them
        there)."""
        row = self.manifest["curve"][epoch - 1]
        return {"top1": row["top1"], "top5": row["top5"]}

    def check_epoch(self, epoch: int) -> None:
        if epoch not in self.epochs:
            raise ConfigError(f"teacher epoch {epoch} is not in trajectory {self.key!r} "
                              f"(saved: {', '.join(map(str, self.epochs)) or 'none'})")

    def checkpoint_path(self, epoch: int) -> Path:
        name = self.manifest["checkpoints"][str(epoch)]["file"]
        if not inside(name):
            raise DamagedStoreError(f"the manifest of teacher trajectory {self.key!r} names "
                                    f"{name!r}, a file outside its folder (`kdbench teacher rm "
                                    f"{self.key}` removes it)")
        return self.folder / name

    def state_dict(self, epoch: int, device: torch.device | str = "cpu") -> dict[str, Any]:
        """The checkpoint's weights, after checking its SHA-256 against the manifest."""
        self.check_epoch(epoch)
        path = self.checkpoint_path(epoch)
        expected = self.manifest["checkpoints"][str(epoch)]["sha256"]
        if not is_regular(path):
            raise DamagedStoreError(f"missing checkpoint {str(path)!r} of trajectory {self.key!r}")
        if sha256_file(path, follow=False) != expected:
            raise DamagedStoreError(f"corrupt checkpoint {str(path)!r}: SHA-256 does not match the "
                                    f"manifest (delete the trajectory and retrain it)")
        return torch.load(path, map_location=device, weights_only=True)

    def size_bytes(self) -> int:
        return sum(p.lstat().st_size for p in self.folder.iterdir() if is_regular(p))


def manifest_problem(m: Any) -> str | None:
    """What a reader of a manifest would trip over (a list where a mapping belongs, a string
    spec), or None."""
    if not isinstance(m, dict):
        return "it is not a mapping"
    spec = m.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("recipe"), dict) \
            or any(k not in spec for k in ("arch", "dataset", "seed")):
        return "its spec is not a trajectory's (arch, dataset, seed, recipe)"
    checkpoints = m.get("checkpoints", {})
    if not isinstance(checkpoints, dict) or not all(
            isinstance(e, dict) and isinstance(e.get("file"), str)
            and isinstance(e.get("sha256"), str) and str(k).isdigit()
            for k, e in checkpoints.items()):
        return "its checkpoints are not {epoch: {file, sha256}}"
    if not isinstance(m.get("curve", []), list) or not all(
            isinstance(r, dict) for r in m.get("curve", [])):
        return "its curve is not a list of epochs"
    if not isinstance(m.get("save_epochs", []), list) or not all(
            isinstance(e, int) for e in m.get("save_epochs", [])):
        return "its save_epochs are not epochs"
    return None


def inside(name: Any) -> bool:
    """A manifest's file entry names a plain file of its own folder (not ``../x``, not a path)."""
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name \
        and "\\" not in name and "\0" not in name


def changed_checkpoints(record: dict[str, Any], store: Store,
                        manifests: dict[str, Any] | None = None) -> list[str]:
    """How the teacher checkpoints a run record was distilled from differ from what the store's
    trajectories hold now (a repair or a retraining that gave other weights): one phrase per
    checkpoint whose SHA-256 changed, e.g. ``teacher 3f2a…/epoch 4 sha256 1a2b3c4d5e6f →
    9f8e7d6c5b4a (trained again since)``. A trajectory that is gone or unreadable is not
    compared (using it says what is wrong). ``manifests``: a cache, key → checkpoints."""
    t = record.get("teacher")
    if not isinstance(t, dict):
        return []
    members = [m for m in t.get("members") or [] if isinstance(m, dict)]
    used = [(m.get("trajectory"), m.get("epoch"), m.get("checkpoint_sha256")) for m in members]
    if not used and isinstance(t.get("epochs"), list) and len(t["epochs"]) == 1:
        used = [(t.get("trajectory"), t["epochs"][0], t.get("checkpoint_sha256"))]
    cache = {} if manifests is None else manifests
    out = []
    for key, epoch, sha in used:
        if not (inside(key) and isinstance(sha, str)):
            continue
        if key not in cache:
            try:
                cache[key] = Trajectory(store.teachers / key).manifest["checkpoints"]
            except (StoreError, OSError):
                cache[key] = {}
        now = (cache[key].get(str(epoch)) or {}).get("sha256")
        if isinstance(now, str) and now != sha:
            out.append(f"teacher {key}/epoch {epoch} sha256 {sha[:12]} → {now[:12]} (trained "
                       f"again since)")
    return out


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Exclusive lock on a trajectory folder (blocks while another process trains it). A
    folder that is a symbolic link is refused: its files would be written elsewhere."""
    refuse_link(folder, "teacher trajectory folder")
    folder.mkdir(parents=True, exist_ok=True)
    if not ranks.is_primary():  # a distributed run: rank 0 holds the lock for every rank
        yield
        return
    fd = open_lock(folder / ".lock")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        write_holder(fd)  # who holds it, and since when (the store's leftover cleaning)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _set_aside_damaged(folder: Path, problems: list[str]) -> None:
    """Move a damaged trajectory's files into ``damaged-<time>/`` inside its folder (kept for
    inspection) so that it is trained again from the start; say so."""
    import time

    aside = folder / f"damaged-{time.strftime('%Y%m%d-%H%M%S')}"
    aside.mkdir()
    for path in folder.iterdir():
        if path.name != ".lock" and (is_regular(path) or path.is_symlink()):
            os.replace(path, aside / path.name)
    warnings.warn(f"kdbench: teacher trajectory {folder.name!r} is damaged ({'; '.join(problems)})"
                  f"; its files are set aside in {aside.name}/ and it is trained again",
                  RuntimeWarning, stacklevel=3)


def find(store: Store, spec: dict[str, Any]) -> Trajectory | None:
    folder = store.teachers / trajectory_key(spec)
    return Trajectory(folder) if (folder / MANIFEST).exists() else None


def ensure(store: Store, spec: dict[str, Any], save_epochs: list[int], dataset, device,
           *, progress: bool = True, repair: bool = False,
           teacher: torch.nn.Module | None = None, init: dict[str, Any] | None = None,
           evaluate: str = "epochs") -> Trajectory:
    """The finished trajectory for ``spec``, training (or resuming) it first if needed.

    The training itself is :func:`kdbench.teachers.train.train` (``teacher``, ``init`` and
    ``evaluate`` are its); this side keeps the folder: the lock, the manifest, a checkpoint
    with its SHA-256 at each epoch of the save schedule, the resume state.

    A damaged trajectory (a checkpoint missing or not matching its SHA-256) is an error that
    names the damage and the command that repairs it; with ``repair`` (``kdbench teacher
    train``, a sweep's teacher jobs) its files are set aside and it is trained again.
    """
    key = trajectory_key(spec)
    folder = store.teachers / key
    with locked(folder):
        problems = []
        if os.path.lexists(folder / MANIFEST):
            try:
                problems = Trajectory(folder).problems()
            except StoreError as exc:
                problems = [str(exc)]
        if problems:
            if not repair:
                raise DamagedStoreError(f"teacher trajectory {key!r} is damaged: "
                                        f"{'; '.join(problems)} (`kdbench teacher train` with "
                                        f"the run's options trains it again)")
            _set_aside_damaged(folder, problems)
        if (folder / MANIFEST).exists():
            existing = Trajectory(folder)
            if sorted(save_epochs) != existing.manifest["save_epochs"]:
                warnings.warn(f"kdbench: teacher trajectory {key!r} keeps its checkpoints at "
                              f"epochs {existing.manifest['save_epochs']}; the requested "
                              f"{sorted(save_epochs)} are ignored (`kdbench teacher rm {key}` "
                              f"to retrain it)", RuntimeWarning, stacklevel=2)
            if existing.done:
                return existing
            manifest = existing.manifest
        else:
            manifest = {"key": key, "spec": spec, "status": "training",
                        "save_epochs": sorted(save_epochs), "checkpoints": {}, "curve": []}
            atomic_write_json(folder / MANIFEST, manifest)
        save = set(manifest["save_epochs"])

        def keep(epoch: int, trainee: Any) -> None:
            if epoch in save:
                name = f"epoch_{epoch:04d}.pt"
                sha = atomic_torch_save(trainee.model.state_dict(), folder / name)
                manifest["checkpoints"][str(epoch)] = {"file": name, "sha256": sha}
            manifest["curve"] = trainee.history
            # every attempt's training time, a killed one included (the state carries it)
            manifest["train_seconds"] = trainee.spent["train_seconds"]
            atomic_write_json(folder / MANIFEST, manifest)

        state_path = folder / "state.pt"
        trainee = train(key, spec, dataset, device, save_epochs=save, state_path=state_path,
                        keep=keep, progress=progress, teacher=teacher, init=init,
                        evaluate=evaluate)
        manifest.update(status="done", train_seconds=trainee.spent["train_seconds"])
        atomic_write_json(folder / MANIFEST, manifest)
        remove_resume(state_path)
        ranks.barrier()  # a distributed run: rank 0 wrote the finished manifest
        return Trajectory(folder)
