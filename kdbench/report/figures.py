"""The built-in figures of ``kdbench report``, one study at a time, as inline SVG.

Each is a ``report_figure`` plugin (:mod:`kdbench.report.plugin`): ``factory(study) ->
list[Figure]``, an empty list when the study holds nothing it can draw. A third-party figure
does the same (``register_report_figures``) and may use :func:`kdbench.report.svg.chart`, or any
markup that needs nothing from the network (an ``<img>`` with a ``data:`` URI is fine).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from .study import Study
from .svg import Mark, Series, chart

METRIC = "top1_last"
#: runs whose curves are drawn when the user chose none: one per (dataset and its transforms,
#: student, teacher source, teacher epochs, loss), the lowest seed, at most this many
DEFAULT_CURVES = 6


@dataclass
class Figure:
    """A figure of the report: its title, its markup, a caption saying what it shows."""

    title: str
    body: str
    caption: str = ""


# ============================== checkpoint curve ===============================================


def checkpoint_curve(study: Study) -> list[Figure]:
    """Checkpoint KD's curve (Wang et al., NeurIPS 2022, Fig. 1/3): per teacher–student pair,
    the student's ``top1_last`` (mean ± std over seeds) against the teacher checkpoint epoch it
    was distilled from, and that checkpoint's own top-1. Drawn where a pair has students from
    two or more checkpoints (runs of the ``full`` and ``intermediate`` sources).

    Differs from ``kdbench plot checkpoint-curve`` (:mod:`kdbench.teachers.plots`) in one way:
    both accuracies share one axis (they are both top-1 in %), where the PNG uses a twin axis.
    """
    from ..teachers.tables import PAIR, checkpoint_points

    df = study.df
    if df.empty or METRIC not in df.columns or "teacher" not in df.columns:
        return []
    df = df[(df["status"] == "done") & df["teacher"].isin(("full", "intermediate"))
            & df[METRIC].notna()]
    if df.empty:
        return []
    points = checkpoint_points(df, METRIC)
    out = []
    for key, grp in points.groupby(PAIR + ["total"], sort=True):
        dataset, teacher, student, loss, total = key
        grp = grp.sort_values("epoch")
        if len(grp) < 2:
            continue
        epochs = [int(e) for e in grp["epoch"]]
        mean, std, n = list(grp["mean"]), list(grp["std"].fillna(0.0)), list(grp["n"])
        t_top1 = list(grp["teacher_top1"])
        tips = [f"teacher epoch {e}: student {m:.2f} ± {s:.2f} (n={int(k)}), teacher "
                f"{t:.2f}" for e, m, s, k, t in zip(epochs, mean, std, n, t_top1)]
        best = max(range(len(epochs)), key=lambda i: (mean[i], -epochs[i]))
        student_series = Series(f"student {METRIC}", epochs, mean, tips=tips,
                                band=([m - s for m, s in zip(mean, std)],
                                      [m + s for m, s in zip(mean, std)]))
        teacher_series = Series("teacher top-1", epochs, t_top1, dashed=True,
                                tips=[f"teacher epoch {e}: top-1 {t:.2f}"
                                      for e, t in zip(epochs, t_top1)])
        title = f"{teacher} → {student} ({loss}, {dataset})"
        body = chart([student_series, teacher_series], title=title,
                     xlabel=f"teacher checkpoint epoch (of {int(total)})",
                     ylabel="top-1 (%)", marks=[Mark(epochs[best], f"best: {epochs[best]}")],
                     integer_x=True)
        out.append(Figure(f"Checkpoint curve: {title}", body,
                          f"Student {METRIC} (mean ± std over seeds, shaded) against the "
                          f"teacher checkpoint it was distilled from; dashed: that checkpoint's "
                          f"own top-1."))
    return out


# ============================== information plane ==============================================


def information_plane(study: Study) -> list[Figure]:
    """The information plane (Shwartz-Ziv & Tishby 2017; Checkpoint KD's Fig. 4): I(X;T)
    against I(T;Y) at every checkpoint of a teacher trajectory, joined in epoch order, one panel
    per trajectory and estimator. From the MI caches ``kdbench mi``/``kdbench select`` leave in
    ``<study>/teachers/<key>/mi/`` and the estimates runs made with ``--select`` keep."""
    from ..mi.report import mi_sources

    keys = sorted({m.get("key") for m in study.trajectories if m.get("key")})
    out = []
    for key in keys:
        users = [r for r in study.records if (r.get("teacher") or {}).get("trajectory") == key]
        for label, source in sorted(mi_sources(study.path, key, users).items()):
            series = source.points
            epochs = sorted(series)
            if not epochs:
                continue
            ixt, ity = [series[e][0] for e in epochs], [series[e][1] for e in epochs]
            tips = [f"epoch {e}: I(X;T) = {a:.4g}, I(T;Y) = {b:.4g}"
                    for e, a, b in zip(epochs, ixt, ity)]
            body = chart([Series(label, ixt, ity, tips=tips,
                                 point_labels=[str(e) for e in epochs])],
                         title=f"{key}: {label}", xlabel="I(X;T)", ylabel="I(T;Y)")
            out.append(Figure(f"Information plane: {key}, {label}", body,
                              "One point per teacher checkpoint (labelled by epoch), joined in "
                              "training order; units as the estimator reports them."))
    return out


# ============================== robustness curves ==============================================


def robustness_curves(study: Study) -> list[Figure]:
    """Knowledge Distillation Beyond Model Compression (Sarfraz, Arani & Zonooz, ICPR 2020):
    accuracy against the severity of label noise or class imbalance, one line per method (the
    CE-only student in black), one panel per dataset, student and kind of corruption; the clean
    runs are each panel's first point (rate 0, ratio 1). The data are those of ``kdbench table
    --layout robustness`` (``kdbench.robustness.robustness_points``: mean ± std over seeds of
    ``top1_last``, severity from each run's data transforms); a study with no corrupted runs,
    or a kdbench without that module, has no such figure.

    Differs from ``kdbench plot robustness``: the std over seeds is in each point's hover text
    rather than drawn as error bars (lines of several methods overlap at the clean point).
    """
    try:
        from ..robustness import BASELINE, CLEAN, robustness_points
    except ImportError:
        return []
    from ..errors import KDBenchError

    try:
        points = robustness_points(study.df)
    except KDBenchError:
        return []
    families = [f for f in dict.fromkeys(points["family"]) if f not in (CLEAN, "mixed")]
    out = []
    for (dataset, student), block in points.groupby(["dataset", "student"], sort=True):
        for family in families:
            if not (block["family"] == family).any():
                continue
            imbalance = family.startswith("imbalance:")
            kind = family.split(":", 1)[1]
            part = block[block["family"].isin([family, CLEAN])]
            series = []
            for (loss, arch, tdata), line in part.groupby(["loss", "teacher_arch",
                                                          "teacher_data"], sort=True):
                xs = [1.0 if (imbalance and f == CLEAN) else float(lv)
                      for f, lv in zip(line["family"], line["level"])]
                order = sorted(range(len(xs)), key=xs.__getitem__)
                label = loss if arch in ("-", None) else f"{loss} ← {arch}"
                label += "" if tdata in ("same", "-") else f" ({tdata} teacher)"
                rows = [line.iloc[i] for i in order]
                series.append(Series(
                    label, [xs[i] for i in order], [float(r["mean"]) for r in rows],
                    tips=[f"{label}, {r['severity']}: {r['mean']:.2f} ± "
                          f"{0.0 if math.isnan(r['std']) else r['std']:.2f} (n={int(r['n'])})"
                          + ("" if loss == BASELINE or math.isnan(r["gain"])
                             else f", {r['gain']:+.2f} over CE") for r in rows],
                    dashed=tdata == CLEAN, color="#000000" if loss == BASELINE else None))
            what = f"{kind} imbalance ratio ρ" if imbalance else f"{kind} label-noise rate"
            title = f"{student} on {dataset}: {kind}"
            out.append(Figure(f"Robustness: {title}",
                              chart(series, title=title, xlabel=what, ylabel=f"{METRIC} (%)",
                                    log_x=imbalance, width=520,
                                    height=300 + 16 * math.ceil(len(series) / 2)),
                              f"Student {METRIC} (mean over seeds; hover: ± std, n, gain over "
                              f"CE) against the severity; black: the CE-only student, dashed: "
                              f"a teacher trained on clean data."))
    return out


# ============================== training curves ================================================


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


def training_curves(study: Study) -> list[Figure]:
    """Training curves: the best metric of the chosen runs per epoch in one chart, then each
    run's loss terms (``train_*``: the total and every weighted term) per epoch, with the epochs
    where a stage starts marked."""
    from .curves import run_curves

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
                      chart(series, title=f"test {metric} per epoch", xlabel="epoch",
                            ylabel=metric, integer_x=True, width=620,
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
