"""MI along a teacher trajectory: every saved checkpoint, cached in the trajectory folder.

The cache is ``<trajectory>/mi/<estimator>-<layer>-n<samples>-<hash>.json`` (the hash covers the
estimator's resolved settings, the probe seed and the repeats). Each checkpoint's entry keeps the
checkpoint's SHA-256, so retrained weights are re-estimated; entries are written after every
checkpoint, so an interrupted run resumes. With ``repeats`` > 1 a trained estimator runs with
seeds seed … seed+repeats−1 and the mean is reported; a repeat whose training diverged is listed
with its error and left out of the mean, and a checkpoint with no finite repeat has no estimate.
A deterministic estimator runs once on the whole probe set and, to measure its sampling noise
(which checkpoint selection needs), ``resamples`` more times on seeded halves of it — the same
halves at every checkpoint (:func:`half_samples`; :mod:`kdbench.mi.selection` explains the
noise model).
"""

from __future__ import annotations

import hashlib
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import canonical_json
from ..data import Dataset
from ..errors import ConfigError, StoreError, UnknownNameError
from ..progress import Progress
from ..store import Store, atomic_write_json, read_json
from ..teachers.trajectory import MANIFEST, Trajectory
from .base import EstimatorDiverged
from .features import check_layer, extract, probe_set
from .selection import REMEDY, RESAMPLES, SELECT_DEFAULTS, Selection, algorithm1, complete_blocks

#: 2: features dead on the training split are zeroed (recon, infonce); 3: details carry the
#: estimators' ceilings and saturation flags, which checkpoint selection reads
CACHE_VERSION = 3


@dataclass
class MIRequest:
    """What to estimate: estimator and its settings, layer, probe size and seed, repeats."""

    estimator: str = "recon"
    layer: str = "embedding"
    samples: int = 1000
    seed: int = 0
    repeats: int = 1
    settings: dict[str, Any] = field(default_factory=dict)
    #: half-sample resamples of a deterministic estimator (its sampling noise); unused by seeded
    #: estimators, whose repeats measure theirs
    resamples: int = 10


def prepare(request: MIRequest, arch: str, dataset: Dataset) -> Any:
    """Check every name and size of ``request`` and return the estimator instance."""
    from ..models import create_model
    from ..plugins import get

    estimator = get("mi_estimator", request.estimator).create(**request.settings)
    check_layer(create_model(arch, dataset.num_classes, dataset.in_chans), request.layer, arch)
    if request.repeats < 1:
        raise ConfigError(f"--repeats must be at least 1, got {request.repeats}")
    if request.resamples < 0:
        raise ConfigError(f"--resamples must be at least 0, got {request.resamples}")
    need = getattr(estimator, "min_samples", 2)
    if request.samples < need:
        raise ConfigError(f"MI estimator {request.estimator!r} needs at least {need} samples, "
                          f"got --samples {request.samples}")
    if request.samples > len(dataset.train):
        raise ConfigError(f"--samples {request.samples} exceeds the {len(dataset.train)} "
                          f"training images of dataset {dataset.name!r}")
    return estimator


@dataclass
class CheckpointMI:
    """The estimate at one checkpoint (None when every repeat diverged)."""

    epoch: int
    i_xt: float | None
    i_ty: float | None
    values: list[list[float]]
    diverged: list[str]
    seconds: float
    checkpoint_sha256: str
    details: dict[str, Any] = field(default_factory=dict)
    #: the seeds of ``values`` (repeat blocks), and a deterministic estimator's half-sample values
    seeds: list[int] = field(default_factory=list)
    resamples: list[list[float]] = field(default_factory=list)


@dataclass
class TrajectoryMI:
    """Estimates at every checkpoint of one trajectory, with the settings that produced them."""

    trajectory: str
    request: MIRequest
    settings: dict[str, Any]
    unit: str
    kind: str
    rows: list[CheckpointMI]
    cache: Path
    teacher_top1: dict[int, float] = field(default_factory=dict)
    stochastic: bool = False  # the estimate depends on its seed (repeats measure its spread)

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.rows)

    def select(self) -> Selection:
        """Algorithm 1 and its decision rule (:mod:`kdbench.mi.selection`) on the checkpoints
        that have an estimate, with their repeats, ceilings and saturation flags."""
        ok = [r for r in self.rows if r.i_xt is not None and r.i_ty is not None]
        excluded = {r.epoch: "; ".join(r.diverged) or "no estimate" for r in self.rows
                    if r not in ok}
        # repeat r of every checkpoint shares its seed: the blocks every checkpoint has
        repeats = complete_blocks([r.seeds or list(range(len(r.values))) for r in ok],
                                  [r.values for r in ok]) if ok else []
        return algorithm1(
            [r.epoch for r in ok], [r.i_xt for r in ok], [r.i_ty for r in ok], excluded,
            repeats=repeats if self.stochastic else [r.values for r in ok],
            stochastic=self.stochastic,
            resamples=None if self.stochastic else [r.resamples for r in ok],
            ceilings=[(r.details.get("ceiling_xt"), r.details.get("ceiling_ty")) for r in ok],
            saturated=[(bool(r.details.get("saturated_xt")), bool(r.details.get("saturated_ty")))
                       for r in ok])


def cache_path(trajectory: Trajectory, request: MIRequest, settings: dict[str, Any],
               stochastic: bool = True) -> Path:
    ident = {"version": CACHE_VERSION, "estimator": request.estimator, "layer": request.layer,
             "samples": request.samples, "seed": request.seed, "repeats": request.repeats,
             "settings": settings, "split": "train"}
    if not stochastic:  # a deterministic estimate's noise is measured on half-samples
        ident["resamples"] = request.resamples
    digest = hashlib.sha256(canonical_json(ident).encode()).hexdigest()[:10]
    return (trajectory.folder / "mi" /
            f"{request.estimator}-{request.layer}-n{request.samples}-{digest}.json")


def _load_cache(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = read_json(path, "MI cache")
    except StoreError as exc:
        warnings.warn(f"kdbench: ignoring {exc}; estimating again", RuntimeWarning, stacklevel=3)
        return {}
    return data.get("epochs", {}) if isinstance(data, dict) else {}


def estimate_trajectory(trajectory: Trajectory, dataset: Dataset, request: MIRequest,
                        device: torch.device | str = "cpu", *, force: bool = False,
                        progress: bool = True) -> TrajectoryMI:
    """Estimate I(X;T) and I(T;Y) at every saved checkpoint (cached), in epoch order."""
    device = torch.device(device)
    estimator = prepare(request, trajectory.spec["arch"], dataset)
    settings = dict(getattr(estimator, "settings", request.settings))
    stochastic = bool(getattr(estimator, "stochastic", True))
    repeats = request.repeats if stochastic else 1
    epochs = trajectory.epochs
    if not epochs:
        raise StoreError(f"teacher trajectory {trajectory.key!r} has no saved checkpoints")
    path = cache_path(trajectory, request, settings, stochastic)
    cached = {} if force else _load_cache(path)
    unit = getattr(estimator, "unit", "nats")
    kind = getattr(estimator, "kind", "estimate")
    document = {"version": CACHE_VERSION, "trajectory": trajectory.key,
                "request": asdict(request), "settings": settings, "unit": unit, "kind": kind,
                "stochastic": stochastic, "epochs": dict(cached)}
    probe = None
    rows = []
    bar = Progress(len(epochs), f"MI {request.estimator} {request.layer}", unit="checkpoint",
                   enabled=progress)
    for epoch in epochs:
        sha = trajectory.manifest["checkpoints"][str(epoch)]["sha256"]
        entry = cached.get(str(epoch))
        if entry is None or entry.get("checkpoint_sha256") != sha:
            if probe is None:
                probe = probe_set(dataset, request.samples, request.seed, device)
            entry = _estimate_checkpoint(estimator, trajectory, epoch, dataset, probe, request,
                                         repeats, device)
            entry["checkpoint_sha256"] = sha
            document["epochs"][str(epoch)] = entry
            atomic_write_json(path, document)
        bar.update(f"epoch {epoch}")
        rows.append(CheckpointMI(epoch, entry["i_xt"], entry["i_ty"], entry["values"],
                                 entry["diverged"], entry["seconds"], sha,
                                 entry.get("details", {}),
                                 entry.get("seeds") or repeat_seeds(entry, request, repeats),
                                 entry.get("resamples", [])))
    bar.close()
    for r in rows:
        if r.diverged:
            warnings.warn(f"kdbench: MI estimator {request.estimator!r} at epoch {r.epoch}: "
                          f"{len(r.diverged)} of {repeats} repeats diverged and are left out "
                          f"({r.diverged[0]})", RuntimeWarning, stacklevel=2)
    flagged = [r for r in rows if r.details.get("regime")]
    if flagged:
        warnings.warn(f"kdbench: MI estimator {request.estimator!r} on {request.layer} is "
                      f"outside its working regime at epochs "
                      f"{', '.join(str(r.epoch) for r in flagged)}: "
                      f"{flagged[0].details['regime'][0]}", RuntimeWarning, stacklevel=2)
    top1 = {}
    for e in epochs:
        try:
            top1[e] = trajectory.accuracy(e)["top1"]
        except (IndexError, KeyError):
            pass
    return TrajectoryMI(trajectory.key, request, settings, unit, kind, rows, path, top1,
                        stochastic)


def half_samples(n: int, count: int, seed: int) -> list[torch.Tensor]:
    """``count`` seeded halves of ``range(n)`` (sorted indices, drawn without replacement), the
    same for every checkpoint of a trajectory."""
    out = []
    for b in range(count):
        g = torch.Generator().manual_seed(int(seed) * 7919 + 104729 + b)
        out.append(torch.randperm(n, generator=g)[:n // 2].sort().values)
    return out


def repeat_seeds(entry: dict[str, Any], request: MIRequest, repeats: int) -> list[int]:
    """The seeds of a cache entry's values (entries older than the ``seeds`` field: the
    repeats' seeds without the diverged ones, whose messages start with ``seed N:``)."""
    gone = {int(d.split(":", 1)[0].split()[1]) for d in entry.get("diverged", [])
            if d.startswith("seed ")}
    return [request.seed + r for r in range(repeats) if request.seed + r not in gone]


def estimate_blocks(estimator: Any, t: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                    request: MIRequest, repeats: int, device: torch.device
                    ) -> dict[str, Any]:
    """The estimates of one checkpoint's features ``t`` on the probe (``x``, ``y``): a seeded
    estimator's repeats (seeds seed … seed+repeats−1), or a deterministic estimator's value on
    the whole probe set and on its :func:`half_samples`."""
    stochastic = bool(getattr(estimator, "stochastic", True))

    def one(tt, xx, yy, seed):
        with warnings.catch_warnings():  # regime warnings: one summary per trajectory
            warnings.filterwarnings("ignore", message="kdbench: MI estimator ",
                                    category=RuntimeWarning)
            return estimator.estimate(tt, xx, yy, seed=seed, device=device)

    values, seeds, diverged, details, resamples = [], [], [], {}, []
    for r in range(repeats):
        seed = request.seed + r
        try:
            est = one(t, x, y, seed)
        except EstimatorDiverged as exc:
            diverged.append(f"seed {seed}: {exc}")
            continue
        values.append([est.i_xt, est.i_ty])
        seeds.append(seed)
        if not details:
            details = dict(est.details)  # the first repeat's, with its ceilings
        for flag in ("saturated_xt", "saturated_ty"):  # flagged if any repeat is
            details[flag] = bool(details.get(flag)) or bool(est.details.get(flag))
    if not stochastic and values:
        for idx in half_samples(t.shape[0], request.resamples, request.seed):
            idx = idx.to(t.device)
            try:
                est = one(t[idx], x[idx], y[idx], request.seed)
            except EstimatorDiverged:
                resamples = []
                break
            resamples.append([est.i_xt, est.i_ty])
    mean = [sum(v[i] for v in values) / len(values) for i in (0, 1)] if values else [None, None]
    out = {"i_xt": mean[0], "i_ty": mean[1], "values": values, "seeds": seeds,
           "diverged": diverged, "details": details}
    if not stochastic:
        out["resamples"] = resamples
    return out


def _estimate_checkpoint(estimator: Any, trajectory: Trajectory, epoch: int, dataset: Dataset,
                         probe: Any, request: MIRequest, repeats: int,
                         device: torch.device) -> dict[str, Any]:
    t0 = time.perf_counter()
    model = load_checkpoint(trajectory, epoch, dataset, device)
    t = extract(model, probe.x, request.layer)
    out = estimate_blocks(estimator, t, probe.x, probe.y, request, repeats, device)
    out["seconds"] = time.perf_counter() - t0
    return out


# -- finding a trajectory from the command line ----------------------------------------------

def resolve_trajectory(name: str, results_dir: str | Path) -> Trajectory:
    """A trajectory by folder path or by key under ``<results_dir>/teachers``."""
    path = Path(name)
    if (path / MANIFEST).is_file():
        return Trajectory(path)
    store = Store(results_dir)
    if (store.teachers / name / MANIFEST).is_file():
        return Trajectory(store.teachers / name)
    keys = sorted(p.parent.name for p in store.teachers.glob(f"*/{MANIFEST}")) \
        if store.teachers.is_dir() else []
    raise UnknownNameError("teacher trajectory", name, keys,
                           hint=f"a folder holding {MANIFEST}, or a key under "
                                f"{str(store.teachers)!r}")


def trajectory_dataset(trajectory: Trajectory, data_dir: str | None) -> Dataset:
    from ..data import load_dataset

    spec = trajectory.spec
    return load_dataset(spec["dataset"], data_dir, **spec.get("data_options", {}))


def load_checkpoint(trajectory: Trajectory, epoch: int, dataset: Dataset,
                    device: torch.device) -> nn.Module:
    """The trajectory's architecture with the (SHA-256 verified) weights of ``epoch``, eval mode."""
    from ..models import create_model

    model = create_model(trajectory.spec["arch"], dataset.num_classes, dataset.in_chans,
                         **trajectory.spec.get("model_options", {}))
    model.load_state_dict(trajectory.state_dict(epoch, "cpu"))
    return model.to(device).eval()


def select_teacher_epoch(ctx: Any) -> tuple[int, dict[str, Any]]:
    """The checkpoint Algorithm 1 picks for a run, and the provenance to record.

    Reads ``teacher.options.select`` (the estimator) and ``select_options`` (completed by
    :func:`check_select`). The layer and probe size are checked before the trajectory is
    trained; the estimates are cached in the trajectory folder and reused. When the decision
    rule finds no choice the run stops here with a :class:`ConfigError` (exit 2, no record,
    before any student training) saying why and what to do.
    """
    t = ctx.config.teacher
    opts = {**SELECT_DEFAULTS, **(t.options.get("select_options") or {})}
    request = MIRequest(str(t.options["select"]), str(opts["layer"]), int(opts["samples"]),
                        int(opts["seed"]), int(opts["repeats"]), dict(opts["settings"]),
                        int(opts.get("resamples", RESAMPLES)))
    prepare(request, t.arch, ctx.dataset)  # fail before any teacher training
    trajectory = ctx.trajectory()
    t0 = time.perf_counter()
    result = estimate_trajectory(trajectory, ctx.dataset, request, ctx.device,
                                 progress=ctx.progress)
    selection = result.select()
    if selection.chosen is None:
        raise ConfigError(f"--select {request.estimator}: Algorithm 1 cannot choose a checkpoint "
                          f"of {trajectory.key} ({request.layer}, {request.samples} samples): "
                          f"{selection.decision['reason']}; use {REMEDY}")
    return selection.chosen, {
        "estimator": request.estimator, "layer": request.layer, "samples": request.samples,
        "seed": request.seed, "repeats": request.repeats, "settings": result.settings,
        "unit": result.unit, "kind": result.kind, **selection.to_dict(),
        # the cost of estimating every checkpoint (cached or not) and of this call
        "estimate_seconds": result.seconds, "wall_seconds": time.perf_counter() - t0,
        "cache": str(result.cache)}
