"""Checkpoint KD (Wang et al., NeurIPS 2022): its tables and its checkpoint curve.

- ``kdbench table --layout checkpoint`` (:func:`checkpoint_table`): its Table 1, the student
  distilled from the full teacher, the half-way teacher and the best intermediate teacher;
- ``kdbench table --layout ensemble`` (:func:`ensemble_table`): its Table 2, snapshot vs
  independent ensembles of equal size, with the teachers' cost;
- ``kdbench plot checkpoint-curve`` (:func:`checkpoint_curve`): student accuracy against the
  teacher checkpoint it was distilled from, with that checkpoint's own accuracy and the
  teacher's training accuracy per epoch on a second axis (so the reader sees when the teacher
  fitted its training set), and the CE-only student as a reference line; the report page draws
  the same curve as SVG (:func:`checkpoint_curve_figures`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import KDBenchError
from ..store import Store, read_json
from .figures import METRIC, Figure, check_plot_file, pyplot, save_figure
from .records import NONE, apply_where, check_metric, finished, metric_label
from .render import format_cell, render
from .study import Study
from .svg import Mark, Series, chart

#: A teacher–student pair: the rows of both layouts.
PAIR = ["dataset", "teacher_arch", "student", "loss"]
PAIR_HEADERS = ["dataset", "teacher", "student", "loss"]


def _done(df: pd.DataFrame, where: Iterable[str], metric: str, sources: tuple[str, ...]
          ) -> pd.DataFrame:
    """The finished runs distilled from teacher ``sources`` that hold ``metric``; none is an
    error that says so."""
    df = finished(df, where)
    check_metric(df, metric)
    df = df[df["teacher"].isin(sources) & df[metric].notna()].copy()
    if df.empty:
        raise KDBenchError(f"no finished runs with teacher source {' or '.join(sources)}"
                           + (f" match --where {' '.join(where)}" if where else ""))
    return df


# ============================== checkpoint (Table 1) ===========================================


def checkpoint_points(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Student ``metric`` per pair and teacher checkpoint epoch (mean, std, n over seeds) with
    the teacher's accuracy; ``total`` is the teacher's training length (the full teacher)."""
    df = df[df["teacher_epoch"].astype(str).str.fullmatch(r"\d+")].copy()
    df["epoch"] = df["teacher_epoch"].astype(int)
    df["total"] = df["config.teacher.recipe.epochs"].astype(int)
    keys = PAIR + ["total", "epoch"]
    g = df.groupby(keys, sort=True)
    out = g[metric].agg(["mean", "std", "count"]).rename(columns={"count": "n"})
    out["teacher_top1"] = g["teacher_top1"].mean()
    return out.reset_index()


def checkpoint_table(df: pd.DataFrame, *, metric: str = "top1_last", where: Iterable[str] = (),
                     fmt: str = "github", digits: int = 2, **_: Any) -> str:
    """Checkpoint KD's Table 1: per teacher–student pair, the student distilled from the full
    teacher, from the half-way teacher and from the best intermediate teacher, with the
    differences to the full teacher in brackets (runs of the ``full`` and ``intermediate``
    sources; the intermediate checkpoint at the last epoch counts as the full teacher)."""
    from ..teachers.sources import halfway

    points = checkpoint_points(_done(df, where, metric, ("full", "intermediate")), metric)
    body, long = [], []
    for key, grp in points.groupby(PAIR + ["total"], sort=True):
        total = key[-1]
        by_epoch = grp.set_index("epoch")
        full = by_epoch.loc[total] if total in by_epoch.index else None
        inter = by_epoch[by_epoch.index < total]
        half = inter.loc[halfway(list(inter.index), total)] if len(inter) else None
        best = (inter.loc[inter.sort_values("mean", ascending=False, kind="stable").index[0]]
                if len(inter) else None)
        picks = {"full": (total if full is not None else None, full),
                 "half": (half.name if half is not None else None, half),
                 "best": (best.name if best is not None else None, best)}
        ref = full["mean"] if full is not None else float("nan")
        row = list(key[:-1]) + [total]
        for name, (epoch, p) in picks.items():
            if p is None:
                row += ["", ""] if name != "full" else [""]
                long.append((*key, name, epoch, None, None, None, None, None))
                continue
            diff = None if name == "full" else p["mean"] - ref
            cell = format_cell(p["mean"], p["std"], int(p["n"]), digits, seeds=False,
                               diff=diff)
            row += [cell] if name == "full" else [cell, int(epoch)]
            long.append((*key, name, int(epoch), p["mean"], p["std"], int(p["n"]), diff,
                         p["teacher_top1"]))
        row.append(" / ".join("" if p is None else f"{p['teacher_top1']:.{digits}f}"
                              for _, p in picks.values()))
        row.append("/".join("" if p is None else str(int(p["n"])) for _, p in picks.values()))
        body.append(row)
    if fmt == "csv":
        return pd.DataFrame(long, columns=PAIR + ["teacher_epochs", "teacher", "epoch", "mean",
                                                  "std", "n", "diff_to_full", "teacher_top1"]
                            ).to_csv(index=False)
    headers = PAIR_HEADERS + ["T epochs", "T_full", "T_inter", "epoch", "T_inter*", "epoch",
                              "teacher top-1 (full / inter / inter*)", "seeds"]
    caption = (f"{metric} (%) of the student, mean ± std over seeds, from the full teacher, the "
               f"half-way teacher T_inter and the best intermediate teacher T_inter*; (±x) = "
               f"difference to T_full")
    return render(body, headers, fmt, caption)


# ============================== ensemble =======================================================

ENSEMBLES = ("snapshot", "independent")


def ensemble_table(df: pd.DataFrame, *, metric: str = "top1_last", where: Iterable[str] = (),
                   fmt: str = "github", digits: int = 2, **_: Any) -> str:
    """Snapshot vs independent ensemble teachers of equal size K, per pair and averaging mode:
    student ``metric``, the ensemble's own accuracy and its training cost (teacher epochs
    trained: one trajectory for a snapshot, K for an independent ensemble)."""
    df = _done(df, where, metric, ENSEMBLES)
    df["K"] = df["teacher_epoch"].astype(str).str.count(",") + 1
    df["mode"] = (df["teacher_ensemble_mode"] if "teacher_ensemble_mode" in df.columns
                  else NONE)
    df["members"] = df["teacher_epoch"].where(df["teacher"] == "snapshot", NONE)
    cost = "teacher_trained_epochs"
    if cost not in df.columns:
        df[cost] = float("nan")
    keys = PAIR + ["K", "mode"]
    g = df.groupby(keys + ["teacher", "members"], sort=True)
    agg = g[metric].agg(["mean", "std", "count"]).rename(columns={"count": "n"})
    agg["teacher_top1"] = g["teacher_top1"].mean()
    agg["cost"] = g[cost].mean()
    agg = agg.reset_index()
    snap = agg[agg["teacher"] == "snapshot"]
    ind = agg[agg["teacher"] == "independent"].drop(columns=["teacher", "members"])
    both = pd.merge(snap.drop(columns="teacher"), ind, on=keys, how="outer",
                    suffixes=("_snap", "_ind")).sort_values(keys + ["members"])
    body, long = [], []
    for _, r in both.iterrows():
        diff = r["mean_snap"] - r["mean_ind"]
        row = [r[k] for k in keys]
        row.append(r["members"] if isinstance(r["members"], str) else "")
        for sfx in ("_snap", "_ind"):
            n = 0 if pd.isna(r["n" + sfx]) else int(r["n" + sfx])
            row += [format_cell(r["mean" + sfx], r["std" + sfx], n, digits, seeds=False),
                    "" if pd.isna(t_top1 := r["teacher_top1" + sfx]) else f"{t_top1:.{digits}f}",
                    "" if pd.isna(r["cost" + sfx]) else f"{r['cost' + sfx]:g}", n or ""]
        row.append("" if pd.isna(diff) else f"{diff:+.{digits}f}")
        body.append(row)
        long.append({**{k: r[k] for k in keys}, "snapshot_members": r["members"],
                     **{f"{c}{s}": r[c + s] for s in ("_snap", "_ind")
                        for c in ("mean", "std", "n", "teacher_top1", "cost")},
                     "snapshot_minus_independent": diff})
    if fmt == "csv":
        return pd.DataFrame(long).to_csv(index=False)
    headers = PAIR_HEADERS + ["K", "mode", "snapshot epochs",
                              "snapshot", "teacher", "cost (ep)", "n",
                              "independent", "teacher", "cost (ep)", "n", "Δ snap−ind"]
    caption = (f"{metric} (%) of the student, mean ± std over seeds, distilled from snapshot vs "
               f"independent ensembles of K members; teacher = the ensemble's own top-1, cost = "
               f"teacher epochs trained")
    return render(body, headers, fmt, caption)


# ============================== checkpoint curve ===============================================


def checkpoint_curve(df: pd.DataFrame, out: str | Path, *, metric: str = "top1_last",
                     where: Iterable[str] = ()) -> tuple[Path, int]:
    """Draw one panel per teacher–student pair (runs of the ``full``/``intermediate`` sources);
    returns the written file and the number of panels."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    out = check_plot_file(out)
    done = _done(df, where, metric, ("full", "intermediate"))
    points = checkpoint_points(done, metric)
    panels = list(points.groupby(PAIR + ["total"], sort=True))
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.8 * rows), squeeze=False)
    for ax, (key, grp) in zip(axes.flat, panels):
        dataset, teacher, student, loss, total = key
        grp = grp.sort_values("epoch")
        std = grp["std"].fillna(0.0)
        ax.plot(grp["epoch"], grp["mean"], "o-", color="tab:blue", label=f"student ({metric})")
        ax.fill_between(grp["epoch"], grp["mean"] - std, grp["mean"] + std, color="tab:blue",
                        alpha=0.2, linewidth=0)
        ax.set_xlabel("teacher checkpoint epoch")
        ax.set_ylabel(f"student {metric_label(metric)}", color="tab:blue")
        ax.set_title(f"{teacher} → {student} ({loss}, {dataset})", fontsize=10)
        ax.grid(alpha=0.3)
        vanilla = _vanilla(df, where, metric, dataset, student)
        if vanilla is not None:
            ax.axhline(vanilla, color="0.4", linestyle=":", linewidth=1.2,
                       label=f"CE-only student ({vanilla:.2f})")
        twin = ax.twinx()
        twin.plot(grp["epoch"], grp["teacher_top1"], "s--", color="tab:orange",
                  label="teacher test top-1")
        train = _teacher_training(df, done, key)
        if train:
            twin.plot(*zip(*train), "-", color="tab:orange", alpha=0.45, linewidth=1,
                      label="teacher train top-1 (running)")
        twin.set_ylabel("teacher top-1 (%)", color="tab:orange")
        best = grp.loc[grp["mean"].idxmax()]
        ax.plot([best["epoch"]], [best["mean"]], "*", color="tab:red", markersize=12,
                label=f"best student: epoch {int(best['epoch'])}")
        ax.set_xlim(0, total * 1.03)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        lines = ax.get_legend_handles_labels()
        more = twin.get_legend_handles_labels()
        ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="best")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle("Student accuracy vs teacher checkpoint (mean ± std over seeds)", fontsize=11)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, out, dpi=150)
    return out, len(panels)


def _vanilla(df: pd.DataFrame, where: Iterable[str], metric: str, dataset: str,
             student: str) -> float | None:
    """The CE-only student's mean ``metric`` on the same data, if the records have it."""
    rows = apply_where(df, where)
    rows = rows[(rows["status"] == "done") & (rows["loss"] == "ce")
                & (rows["dataset"] == dataset) & (rows["student"] == student)]
    return float(rows[metric].mean()) if len(rows) and metric in rows else None


def _teacher_training(df: pd.DataFrame, done: pd.DataFrame, key: tuple) -> list[tuple]:
    """(epoch, running training top-1) of the panel's teacher trajectory, from its manifest
    (when the panel has exactly one trajectory and its manifest is readable)."""
    dataset, teacher, student, loss, _ = key
    rows = done[(done["dataset"] == dataset) & (done["teacher_arch"] == teacher)
                & (done["student"] == student) & (done["loss"] == loss)]
    keys = set(rows.get("teacher_trajectory", pd.Series(dtype=object)).dropna())
    root = df.attrs.get("results_dir")
    if len(keys) != 1 or root is None:
        return []
    try:
        manifest = read_json(Store(root).teachers / keys.pop() / "manifest.json", "manifest")
    except (OSError, KDBenchError):
        return []
    return [(r["epoch"], r["train_top1"]) for r in manifest.get("curve", [])
            if "train_top1" in r]


def checkpoint_curve_figures(study: Study) -> list[Figure]:
    """Checkpoint KD's curve (Wang et al., NeurIPS 2022, Fig. 1/3): per teacher–student pair,
    the student's ``top1_last`` (mean ± std over seeds) against the teacher checkpoint epoch it
    was distilled from, and that checkpoint's own top-1. Drawn where a pair has students from
    two or more checkpoints (runs of the ``full`` and ``intermediate`` sources).

    Differs from ``kdbench plot checkpoint-curve`` (:func:`checkpoint_curve`) in one way:
    both accuracies share one axis (they are both top-1 in %), where the PNG uses a twin axis.
    """
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
