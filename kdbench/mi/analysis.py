"""MI along a teacher trajectory: every saved checkpoint, cached in the trajectory folder.

The cache is ``<trajectory>/mi/<estimator>-<layer>-n<samples>-<hash>.json`` (the hash covers the
estimator's resolved settings, the probe seed and the repeats). Each checkpoint's entry keeps the
checkpoint's SHA-256, so retrained weights are re-estimated; entries are written after every
checkpoint, so an interrupted run resumes. With ``repeats`` > 1 a trained estimator runs with
seeds seed … seed+repeats−1 and the mean is reported; a repeat whose training diverged is listed
with its error and left out of the mean, and a checkpoint with no finite repeat has no estimate.
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
from ..plotting import save_figure
from ..progress import Progress
from ..store import Store, atomic_write_json, read_json
from ..teachers.trajectory import MANIFEST, Trajectory
from .base import EstimatorDiverged
from .features import check_layer, extract, probe_set
from .selection import REMEDY, SELECT_DEFAULTS, Selection, algorithm1

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


def prepare(request: MIRequest, arch: str, dataset: Dataset) -> Any:
    """Check every name and size of ``request`` and return the estimator instance."""
    from ..models import create_model
    from ..plugins import get

    estimator = get("mi_estimator", request.estimator).create(**request.settings)
    check_layer(create_model(arch, dataset.num_classes, dataset.in_chans), request.layer, arch)
    if request.repeats < 1:
        raise ConfigError(f"--repeats must be at least 1, got {request.repeats}")
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
        return algorithm1(
            [r.epoch for r in ok], [r.i_xt for r in ok], [r.i_ty for r in ok], excluded,
            repeats=[r.values for r in ok], stochastic=self.stochastic,
            ceilings=[(r.details.get("ceiling_xt"), r.details.get("ceiling_ty")) for r in ok],
            saturated=[(bool(r.details.get("saturated_xt")), bool(r.details.get("saturated_ty")))
                       for r in ok])


def cache_path(trajectory: Trajectory, request: MIRequest, settings: dict[str, Any]) -> Path:
    ident = {"version": CACHE_VERSION, "estimator": request.estimator, "layer": request.layer,
             "samples": request.samples, "seed": request.seed, "repeats": request.repeats,
             "settings": settings, "split": "train"}
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
    path = cache_path(trajectory, request, settings)
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
                                 entry.get("details", {})))
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


def _estimate_checkpoint(estimator: Any, trajectory: Trajectory, epoch: int, dataset: Dataset,
                         probe: Any, request: MIRequest, repeats: int,
                         device: torch.device) -> dict[str, Any]:
    t0 = time.perf_counter()
    model = load_checkpoint(trajectory, epoch, dataset, device)
    t = extract(model, probe.x, request.layer)
    values, diverged, details = [], [], {}
    for r in range(repeats):
        seed = request.seed + r
        try:
            with warnings.catch_warnings():  # regime warnings: one summary per trajectory
                warnings.filterwarnings("ignore", message="kdbench: MI estimator ",
                                        category=RuntimeWarning)
                est = estimator.estimate(t, probe.x, probe.y, seed=seed, device=device)
        except EstimatorDiverged as exc:
            diverged.append(f"seed {seed}: {exc}")
            continue
        values.append([est.i_xt, est.i_ty])
        if not details:
            details = dict(est.details)  # the first repeat's, with its ceilings
        for flag in ("saturated_xt", "saturated_ty"):  # flagged if any repeat is
            details[flag] = bool(details.get(flag)) or bool(est.details.get(flag))
    mean = [sum(v[i] for v in values) / len(values) for i in (0, 1)] if values else [None, None]
    return {"i_xt": mean[0], "i_ty": mean[1], "values": values, "diverged": diverged,
            "seconds": time.perf_counter() - t0, "details": details}


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


# -- output -----------------------------------------------------------------------------------

def _fmt(v: float | None, digits: int = 3) -> str:
    return "diverged" if v is None else f"{v:.{digits}f}"


def _mark(epoch: int, selection: Selection) -> str:
    if epoch == selection.chosen:
        return "← chosen"
    if selection.chosen is None and epoch == selection.argmax:
        return "← argmax (no choice)"
    return ""


def format_result(result: TrajectoryMI, selection: Selection | None = None) -> str:
    """The per-checkpoint table (and Algorithm 1's columns when ``selection`` is given)."""
    from tabulate import tabulate

    unit = "score" if result.unit == "score" else "nats"
    headers = ["epoch", "teacher top-1", f"I(X;T) [{unit}]", f"I(T;Y) [{unit}]"]
    if selection is not None:
        headers += ["norm I(X;T)", "norm I(T;Y)", "score", ""]
    headers += ["repeats ok", "seconds"]
    index = {e: i for i, e in enumerate(selection.epochs)} if selection else {}
    body = []
    for r in result.rows:
        top1 = result.teacher_top1.get(r.epoch)
        row = [r.epoch, "" if top1 is None else f"{top1:.2f}", _fmt(r.i_xt), _fmt(r.i_ty)]
        if selection is not None:
            i = index.get(r.epoch)
            row += (["", "", "", ""] if i is None else
                    [f"{selection.norm_xt[i]:.3f}", f"{selection.norm_ty[i]:.3f}",
                     f"{selection.scores[i]:.3f}", _mark(r.epoch, selection)])
        row += [f"{len(r.values)}/{len(r.values) + len(r.diverged)}", f"{r.seconds:.1f}"]
        body.append(row)
    req = result.request
    title = (f"{req.estimator} ({result.kind}) on {req.layer} of {result.trajectory}, "
             f"{req.samples} training samples, seed {req.seed}")
    settings = ", ".join(f"{k}={v}" for k, v in sorted(result.settings.items())) or "none"
    return (f"{title}\nsettings: {settings}\n\n"
            + tabulate(body, headers=headers, disable_numparse=True))


def plot_information_plane(result: TrajectoryMI, path: str | Path) -> Path:
    """I(X;T) against I(T;Y), one point per checkpoint coloured by epoch, joined in order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result.rows if r.i_xt is not None and r.i_ty is not None]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.5, 4.2), dpi=120)
    if rows:
        xs, ys = [r.i_xt for r in rows], [r.i_ty for r in rows]
        ax.plot(xs, ys, color="0.7", lw=1, zorder=1)
        points = ax.scatter(xs, ys, c=[r.epoch for r in rows], cmap="viridis", s=40, zorder=2)
        fig.colorbar(points, ax=ax, label="epoch")
        for r in rows:
            ax.annotate(str(r.epoch), (r.i_xt, r.i_ty), textcoords="offset points",
                        xytext=(4, 4), fontsize=7)
    unit = "score" if result.unit == "score" else "nats"
    ax.set_xlabel(f"I(X;T) [{unit}]")
    ax.set_ylabel(f"I(T;Y) [{unit}]")
    ax.set_title(f"information plane: {result.request.estimator}, {result.request.layer}\n"
                 f"{result.trajectory}", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    return path


def load_checkpoint(trajectory: Trajectory, epoch: int, dataset: Dataset,
                    device: torch.device) -> nn.Module:
    """The trajectory's architecture with the (SHA-256 verified) weights of ``epoch``, eval mode."""
    from ..models import create_model

    model = create_model(trajectory.spec["arch"], dataset.num_classes, dataset.in_chans)
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
                        int(opts["seed"]), int(opts["repeats"]), dict(opts["settings"]))
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
