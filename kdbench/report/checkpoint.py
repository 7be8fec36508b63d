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
from .render import format_cell, render, with_difference
from .stats import Comparison, Family, NotComparable, seed_values
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


def checkpoint_points(df: pd.DataFrame, metric: str, by: Iterable[str] = ()) -> pd.DataFrame:
    """Student ``metric`` per pair and teacher checkpoint epoch (mean, std, n over seeds) with
    the teacher's accuracy; ``total`` is the teacher's training length (the full teacher);
    ``by``: more keys (e.g. :data:`TRAJECTORY`)."""
    df = _with_epochs(df)
    keys = PAIR + list(by) + ["total", "epoch"]
    g = df.groupby(keys, sort=True)
    out = g[metric].agg(["mean", "std", "count"]).rename(columns={"count": "n"})
    out["teacher_top1"] = g["teacher_top1"].mean()
    return out.reset_index()


def _with_epochs(df: pd.DataFrame) -> pd.DataFrame:
    df = df[df["teacher_epoch"].astype(str).str.fullmatch(r"\d+")].copy()
    df["epoch"] = df["teacher_epoch"].astype(int)
    df["total"] = df["config.teacher.recipe.epochs"].astype(int)
    return df


#: the teacher trajectory a run was distilled from (its teacher's seed): the table's rows keep
#: trajectories apart, and a replication over several pools their seed-paired differences
TRAJECTORY = "trajectory"
STATS = ("diff", "low", "high", "p", "p_holm", "test", "mde")


def _seed_cells(df: pd.DataFrame, keys: list[str], metric: str, pooled: bool = False
                ) -> dict[tuple, dict | NotComparable]:
    """``{key: {seed: value}}`` per group of ``keys`` (``{(trajectory, seed): value}`` when
    ``pooled``), or the reason the cell cannot be compared."""
    out: dict[tuple, dict | NotComparable] = {}
    for key, grp in df.groupby(keys, sort=True):
        seeds = (list(zip(grp[TRAJECTORY], grp["seed"])) if pooled else grp["seed"].tolist())
        try:
            out[key] = seed_values(seeds, grp[metric].tolist(), f"cell {key}")
        except NotComparable as exc:
            out[key] = exc
    return out


def _compare(family: Family, a: dict | NotComparable | None, b: dict | NotComparable | None,
             ref: str) -> int:
    for side in (a, b):
        if isinstance(side, NotComparable):
            return family.add_failure(str(side))
    if b is None:
        return family.add_failure(f"no {ref} runs to compare with")
    return family.add(a, b)


def checkpoint_table(df: pd.DataFrame, *, metric: str = "top1_last", where: Iterable[str] = (),
                     fmt: str = "github", digits: int = 2, **_: Any) -> str:
    """Checkpoint KD's Table 1: per teacher–student pair (and teacher trajectory), the student
    distilled from the full teacher, from the half-way teacher and from the best intermediate
    teacher, each intermediate one compared with the full teacher (difference, 95% CI, p paired
    by student seed, Holm over the table, MDE where not detected: :mod:`.stats`) — runs of the
    ``full`` and ``intermediate`` sources; the intermediate checkpoint at the last epoch counts
    as the full teacher. With several trajectories, a row "all" pools their seed-paired
    differences of T_inter (each trajectory's half-way checkpoint) against T_full."""
    from ..teachers.sources import halfway

    done = _with_epochs(_done(df, where, metric, ("full", "intermediate")))
    done[TRAJECTORY] = (done["config.teacher.seed"].astype(int)
                        if "config.teacher.seed" in done.columns else 0)
    several = done.groupby(PAIR + ["total"])[TRAJECTORY].nunique().max() > 1
    points = checkpoint_points(done, metric, by=[TRAJECTORY])
    cells = _seed_cells(done, PAIR + [TRAJECTORY, "total", "epoch"], metric)
    family = Family("paired")
    rows: list[tuple[list, list]] = []  # (cells of the row, [(pick, p, index in family)])
    pooled_runs: dict[tuple, dict[str, list]] = {}
    for key, grp in points.groupby(PAIR + ["total", TRAJECTORY], sort=True):
        pair, total, traj = list(key[:len(PAIR)]), key[len(PAIR)], key[-1]
        by_epoch = grp.set_index("epoch")
        full = by_epoch.loc[total] if total in by_epoch.index else None
        inter = by_epoch[by_epoch.index < total]
        half = inter.loc[halfway(list(inter.index), total)] if len(inter) else None
        best = (inter.loc[inter.sort_values("mean", ascending=False, kind="stable").index[0]]
                if len(inter) else None)
        picks = {"full": full, "half": half, "best": best}
        ref = cells.get((*pair, traj, total, total))
        marks, made = [], {}
        for name, p in picks.items():
            if p is None or name == "full":
                continue
            if int(p.name) not in made:  # the best may be the half-way one: one comparison
                made[int(p.name)] = _compare(family, cells[(*pair, traj, total, int(p.name))],
                                             ref, "T_full")
            marks.append((name, p, made[int(p.name)]))
        pooled = pooled_runs.setdefault((*pair, total), {"full": [], "half": []})
        for name in ("full", "half"):
            if picks[name] is not None:
                pooled[name].append((traj, int(picks[name].name)))
        rows.append(([*pair, traj, total], [(n, picks[n]) for n in picks], marks))
    # the replication: every trajectory's seed-paired T_inter − T_full, pooled
    pooled_rows = []
    for key, picked in pooled_runs.items():
        if not several or len(picked["full"]) < 2:
            continue
        sides = {}
        for name in ("full", "half"):
            chosen = pd.MultiIndex.from_tuples(picked[name], names=[TRAJECTORY, "epoch"])
            runs = done.set_index(PAIR + ["total", TRAJECTORY, "epoch"]).loc[key]
            runs = runs[runs.index.isin(chosen)].reset_index()
            sides[name] = runs
        a, b = (next(iter(_seed_cells(sides[n].assign(all=0), ["all"], metric,
                                      pooled=True).values()), None) for n in ("half", "full"))
        pooled_rows.append((key, sides, _compare(family, a, b, "T_full")))
    body, long = [], []
    for row_key, picks, marks in rows:
        pair, traj, total = row_key[:len(PAIR)], row_key[len(PAIR)], row_key[-1]
        found = {name: (p, index) for name, p, index in marks}
        row = pair + ([traj] if several else []) + [total]
        for name, p in picks:
            if p is None:
                row += [""] if name == "full" else ["", ""]
                long.append((*pair, traj, total, name, None, None, None, None, None,
                             *[None] * len(STATS)))
                continue
            cell = format_cell(p["mean"], p["std"], int(p["n"]), digits, seeds=False)
            result = None
            if name in found:
                index = found[name][1]
                cell = with_difference(cell, *family.text(index, digits), brackets="()")
                result = family.results()[index]
            row += [cell] if name == "full" else [cell, int(p.name)]
            long.append((*pair, traj, total, name, int(p.name), p["mean"], p["std"], int(p["n"]),
                         p["teacher_top1"], *_stats_of(result)))
        row.append(" / ".join("" if p is None else f"{p['teacher_top1']:.{digits}f}"
                              for _, p in picks))
        row.append("/".join("" if p is None else str(int(p["n"])) for _, p in picks))
        body.append(row)
    for key, sides, index in pooled_rows:
        pair, total = list(key[:len(PAIR)]), key[-1]
        row = pair + [f"all ({len(sides['full'][TRAJECTORY].unique())})", total]
        cells_of = {}
        for name in ("full", "half"):
            v = sides[name][metric]
            cells_of[name] = format_cell(v.mean(), v.std(), len(v), digits, seeds=False)
        half = with_difference(cells_of["half"], *family.text(index, digits), brackets="()")
        row += [cells_of["full"], half, "half-way", "", "", "",
                f"{len(sides['full'])}/{len(sides['half'])}/"]
        body.append(row)
        long.append((*pair, "all", total, "half", None, sides["half"][metric].mean(),
                     sides["half"][metric].std(), len(sides["half"]), None,
                     *_stats_of(family.results()[index])))
    if fmt == "csv":
        return pd.DataFrame(long, columns=PAIR + [TRAJECTORY, "teacher_epochs", "teacher",
                                                  "epoch", "mean", "std", "n", "teacher_top1",
                                                  *STATS]).to_csv(index=False)
    headers = PAIR_HEADERS + (["T seed"] if several else []) + [
        "T epochs", "T_full", "T_inter", "epoch", "T_inter*", "epoch",
        "teacher top-1 (full / inter / inter*)", "seeds"]
    caption = (f"{metric} (%) of the student, mean ± std over seeds, from the full teacher, the "
               f"half-way teacher T_inter and the best intermediate teacher T_inter*; (…) = "
               f"difference to T_full, {family.caption()}. T_inter* is the best of the "
               f"intermediate checkpoints by mean: its difference is biased upward (winner's "
               f"curse) and its p-value is not corrected for that choice")
    if several:
        caption += ("; T seed = the teacher trajectory; all = the seed-paired differences of "
                    "every trajectory pooled (pairs treated as independent)")
    return render(body, headers, fmt, caption)


def _stats_of(result: Any) -> tuple:
    return tuple(getattr(result, name) if isinstance(result, Comparison) else None
                 for name in STATS)


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
    snap_cells = _seed_cells(df[df["teacher"] == "snapshot"], keys + ["members"], metric)
    ind_cells = _seed_cells(df[df["teacher"] == "independent"], keys, metric)
    family = Family("paired")
    found = []
    for _, r in both.iterrows():  # every comparison first: Holm adjusts over all of them
        key = tuple(r[k] for k in keys)
        a = snap_cells.get((*key, r["members"]))
        found.append(None if a is None else _compare(family, a, ind_cells.get(key),
                                                     "independent-ensemble"))
    body, long = [], []
    for (_, r), index in zip(both.iterrows(), found):
        diff = r["mean_snap"] - r["mean_ind"]
        row = [r[k] for k in keys]
        row.append(r["members"] if isinstance(r["members"], str) else "")
        for sfx in ("_snap", "_ind"):
            n = 0 if pd.isna(r["n" + sfx]) else int(r["n" + sfx])
            row += [format_cell(r["mean" + sfx], r["std" + sfx], n, digits, seeds=False),
                    "" if pd.isna(t_top1 := r["teacher_top1" + sfx]) else f"{t_top1:.{digits}f}",
                    "" if pd.isna(r["cost" + sfx]) else f"{r['cost' + sfx]:g}", n or ""]
        row.append("" if index is None else with_difference("", *family.text(index, digits),
                                                            brackets=""))
        body.append(row)
        result = None if index is None else family.results()[index]
        long.append({**{k: r[k] for k in keys}, "snapshot_members": r["members"],
                     **{f"{c}{s}": r[c + s] for s in ("_snap", "_ind")
                        for c in ("mean", "std", "n", "teacher_top1", "cost")},
                     "snapshot_minus_independent": diff,
                     **dict(zip(STATS, _stats_of(result)))})
    if fmt == "csv":
        return pd.DataFrame(long).to_csv(index=False)
    headers = PAIR_HEADERS + ["K", "mode", "snapshot epochs",
                              "snapshot", "teacher", "cost (ep)", "n",
                              "independent", "teacher", "cost (ep)", "n", "Δ snap−ind"]
    caption = (f"{metric} (%) of the student, mean ± std over seeds, distilled from snapshot vs "
               f"independent ensembles of K members; teacher = the ensemble's own top-1, cost = "
               f"teacher epochs trained; Δ = snapshot − independent, {family.caption()}")
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
