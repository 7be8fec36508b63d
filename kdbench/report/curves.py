"""Training curves of runs: a metric (top-1 by default) and every loss term per epoch, with the
epochs where a stage starts. :func:`run_curves` reads them from a record; :func:`plot_curves`
draws several runs side by side (``kdbench plot curves``); the report page draws the same data
as SVG (:func:`training_curve_figures`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, KDBenchError, StoreError, UnknownNameError
from ..store import Store
from .figures import Figure, check_plot_file, pyplot, save_figure
from .records import metric_label
from .study import Study
from .svg import Mark, Series, chart

ACCURACY = ("train_top1",)  # the engine's training accuracy: a train_* value, not a loss term
#: runs whose curves are drawn when the user chose none: one per (dataset and its transforms,
#: student, teacher source, teacher epochs, loss), the lowest seed, at most this many
DEFAULT_CURVES = 6


@dataclass
class RunCurves:
    """One run's per-epoch values: ``metric`` (test side) and ``train_top1``, the loss terms
    (``train_*``: the total ``train_loss`` and each weighted term), and the stages."""

    run_id: str
    label: str
    metric: str
    epochs: list[int]
    values: list[float | None]
    train_top1: list[float | None]
    terms: dict[str, list[float | None]] = field(default_factory=dict)
    stages: list[tuple[int, str]] = field(default_factory=list)  # (first epoch, stage name)


def describe(record: dict[str, Any]) -> str:
    """A run's short label: student ← teacher (source, epochs), loss, seed."""
    cfg = record["config"]
    t = record.get("teacher") or {}
    teacher = ""
    if cfg.get("teacher"):
        epochs = ",".join(map(str, t.get("epochs", []))) or "?"
        teacher = f" ← {cfg['teacher']['arch']} ({cfg['teacher']['source']} @{epochs})"
    return f"{cfg['student']}{teacher} {cfg['loss']['name']} s{cfg['seed']}"


def run_curves(record: dict[str, Any], metric: str | None = None) -> RunCurves:
    """The curves of one record; ``metric`` defaults to the run's best metric (top1). A metric
    the run's curve does not have is a ConfigError listing those it has."""
    curve = (record.get("metrics") or {}).get("curve") or []
    if not curve:
        raise KDBenchError(f"run {record['run_id']} has no per-epoch curve (status "
                           f"{record['status']})")
    metric = metric or (record["config"].get("eval") or {}).get("best_metric") or "top1"
    measured = evaluator_metrics(record)
    have = sorted({k for row in curve for k in row if k in measured or k in ACCURACY})
    if metric not in have:
        raise UnknownNameError("metric", metric, have,
                               hint=f"run {record['run_id']} measures these per epoch")
    terms: dict[str, list[float | None]] = {}
    for row in curve:
        for k in row:
            if k.startswith("train_") and k not in ACCURACY and k not in measured:
                terms.setdefault(k, [])
    stages: list[tuple[int, str]] = []
    for row in curve:
        for k, values in terms.items():
            values.append(_num(row.get(k)))
        stage = row.get("stage")
        if stage and (not stages or stages[-1][1] != stage):
            stages.append((int(row["epoch"]), str(stage)))
    return RunCurves(record["run_id"], describe(record), metric,
                     [int(r["epoch"]) for r in curve], [_num(r.get(metric)) for r in curve],
                     [_num(r.get("train_top1")) for r in curve], terms, stages)


def evaluator_metrics(record: dict[str, Any]) -> set[str]:
    """The metrics the run's evaluators measured (each has ``<metric>_last`` in the record);
    the other ``train_*`` values of a curve are loss terms."""
    return {k[:-len("_last")] for k in (record.get("metrics") or {}) if k.endswith("_last")}


def _num(v: Any) -> float | None:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return None


def find_records(results_dir: str | Path, run_ids: Iterable[str]) -> list[dict[str, Any]]:
    """The records of ``run_ids`` (each a full id or a unique prefix) in one store."""
    store = Store(results_dir)
    if not store.runs.is_dir():
        raise StoreError(f"no run records in {str(store.runs)!r}")
    ids = sorted(p.stem for p in store.runs.glob("*.json"))
    out = []
    for wanted in run_ids:
        matches = [i for i in ids if i.startswith(wanted)]
        if len(matches) != 1:
            if matches:
                raise ConfigError(f"run id prefix {wanted!r} matches {len(matches)} runs "
                                  f"({', '.join(matches[:5])}); give more characters")
            raise UnknownNameError("run", wanted, ids)
        record = store.load_record(matches[0])
        assert record is not None
        out.append(record)
    return out


def plot_curves(records: Sequence[dict[str, Any]], out: str | Path, *,
                metric: str | None = None) -> Path:
    """Runs side by side, one column each: ``metric`` and ``train_top1`` per epoch on top, every
    loss term per epoch below (log scale when all are positive: terms differ by orders of
    magnitude), dotted lines where a stage starts. Written as PNG or PDF by the suffix."""
    out = check_plot_file(out)
    curves = [run_curves(r, metric) for r in records]
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    n = len(curves)
    fig, axes = plt.subplots(2, n, figsize=(4.6 * n, 6.4), squeeze=False, sharex="col")
    for col, c in enumerate(curves):
        top, bottom = axes[0][col], axes[1][col]
        # epochs not evaluated (an evaluator every N epochs) are skipped, not gaps: a line
        top.plot(*_measured(c.epochs, c.values), "o-", ms=3, label=f"{c.metric} (test)")
        if any(v is not None for v in c.train_top1):
            top.plot(*_measured(c.epochs, c.train_top1), "s--", ms=3, label="train_top1")
        top.set_title(f"{c.run_id}\n{c.label}", fontsize=9)
        top.set_ylabel(metric_label(c.metric))
        for name, values in c.terms.items():
            bottom.plot(*_measured(c.epochs, values), "o-", ms=2.5,
                        lw=2 if name == "train_loss" else 1.2, label=name)
        positive = [v for vs in c.terms.values() for v in vs if v is not None]
        if positive and min(positive) > 0:
            bottom.set_yscale("log")
        bottom.set_xlabel("epoch")
        bottom.set_ylabel("loss term (per batch, mean)")
        for ax in (top, bottom):
            for first, _name in c.stages[1:]:
                ax.axvline(first - 0.5, color="0.5", ls=":", lw=1)
            if len(c.stages) > 1:
                for first, name in c.stages:
                    ax.annotate(name, (first - 0.5, 1), xycoords=("data", "axes fraction"),
                                xytext=(2, -10), textcoords="offset points", fontsize=7,
                                color="0.35")
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, out, dpi=130)
    return out


def _measured(epochs: Sequence[int], values: Sequence[float | None]
              ) -> tuple[list[int], list[float]]:
    """The epochs where a value was measured, and the values."""
    pairs = [(e, v) for e, v in zip(epochs, values) if v is not None and not math.isnan(v)]
    return [e for e, _ in pairs], [v for _, v in pairs]


# ============================== the report page ================================================


def chosen_runs(study: Study) -> tuple[list[dict[str, Any]], str]:
    """The records whose curves are drawn and how they were chosen."""
    done = [r for r in study.records if r["status"] == "done"
            and (r.get("metrics") or {}).get("curve")]
    if study.chosen:
        by_id = {r["run_id"]: r for r in done}
        return [by_id[c] for c in study.chosen if c in by_id], "the runs chosen with --curves"
    cells: dict[tuple, dict[str, Any]] = {}
    for r in sorted(done, key=lambda r: (r["config"]["seed"], r["run_id"])):
        cfg, t = r["config"], r.get("teacher") or {}
        cell = (cfg["data"]["name"], json.dumps(cfg["data"].get("transforms"), sort_keys=True),
                cfg["student"], (cfg.get("teacher") or {}).get("source"),
                tuple(t.get("epochs", [])), cfg["loss"]["name"])
        cells.setdefault(cell, r)
    picked = list(cells.values())[:DEFAULT_CURVES]
    how = (f"one run per dataset (and transforms), student, teacher and loss (the lowest "
           f"seed), at most {DEFAULT_CURVES}; choose others with `kdbench report --curves "
           f"RUN_ID`")
    return picked, how


def training_curve_figures(study: Study) -> list[Figure]:
    """Training curves: the best metric of the chosen runs per epoch in one chart, then each
    run's loss terms (``train_*``: the total and every weighted term) per epoch, with the epochs
    where a stage starts marked."""
    records, how = chosen_runs(study)
    curves = []
    for record in records:
        try:
            curves.append(run_curves(record))
        except Exception:  # noqa: BLE001 - a run without a usable curve is left out
            continue
    if not curves:
        return []
    out = []
    metric = curves[0].metric
    same = [c for c in curves if c.metric == metric]
    series = [Series(f"{c.run_id[:8]} {c.label}", c.epochs, c.values,
                     tips=[f"{c.run_id[:8]} {c.label}, epoch {e}: {metric} {_v(v)}"
                           for e, v in zip(c.epochs, c.values)]) for c in same]
    out.append(Figure(f"Training curves: test {metric}",
                      chart(series, title=f"{metric_label(metric, unit=False)} per epoch",
                            xlabel="epoch", ylabel=metric_label(metric), integer_x=True,
                            width=620,
                            height=300 + 16 * math.ceil(len(series) / 2)),
                      f"Per-epoch {metric} of {how}."))
    for c in curves:
        terms = [Series(name, c.epochs, values, dashed=name == "train_loss",
                        tips=[f"epoch {e}: {name} {_v(v)}" for e, v in zip(c.epochs, values)])
                 for name, values in c.terms.items()]
        if not terms:
            continue
        marks = [Mark(first - 0.5, name) for first, name in c.stages] if len(c.stages) > 1 \
            else []
        out.append(Figure(f"Loss terms: {c.run_id[:8]} {c.label}",
                          chart(terms, title=f"{c.run_id[:8]} {c.label}", xlabel="epoch",
                                ylabel="loss term (batch mean)", marks=marks, integer_x=True),
                          "Every loss term per epoch (train_loss: the weighted total, dashed)"
                          + ("; dotted lines: a stage starts." if marks else ".")))
    return out


def _v(v: float | None) -> str:
    return "—" if v is None else f"{v:.4g}"
