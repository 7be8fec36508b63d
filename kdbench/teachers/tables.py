"""Checkpoint KD's tables as ``kdbench table`` layouts: ``checkpoint`` (its Table 1) and
``ensemble`` (snapshot vs independent ensembles of equal size, with the teachers' cost)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd

from ..errors import KDBenchError, UnknownNameError
from ..table import FORMATS, NONE, check_metric, finished

#: A teacher–student pair: the rows of both layouts.
PAIR = ["dataset", "teacher_arch", "student", "loss"]
PAIR_HEADERS = ["dataset", "teacher", "student", "loss"]


def _done(df: pd.DataFrame, where: Iterable[str], metric: str, sources: tuple[str, ...]
          ) -> pd.DataFrame:
    df = finished(df, where)
    check_metric(df, metric)
    df = df[df["teacher"].isin(sources) & df[metric].notna()].copy()
    if df.empty:
        raise KDBenchError(f"no finished runs with teacher source {' or '.join(sources)}"
                           + (f" match --where {' '.join(where)}" if where else ""))
    return df


def _cell(mean: float, std: float, n: int, digits: int, diff: float | None = None) -> str:
    if pd.isna(mean):
        return ""
    s = f"{mean:.{digits}f}"
    if n > 1 and not pd.isna(std):
        s += f" ± {std:.{digits}f}"
    if diff is not None and not pd.isna(diff):
        s += f" ({diff:+.{digits}f})"
    return s


def _render(body: list[list[Any]], headers: list[str], fmt: str, caption: str) -> str:
    from tabulate import tabulate

    from ..table import _latex_escape

    if fmt not in FORMATS:
        raise UnknownNameError("table format", fmt, FORMATS)
    if fmt == "csv":
        return pd.DataFrame(body, columns=headers).to_csv(index=False)
    if fmt == "latex":
        headers = [_latex_escape(h) for h in headers]
        body = [[_latex_escape(c) for c in row] for row in body]
        return f"% {caption}\n" + tabulate(body, headers=headers, tablefmt="latex_raw",
                                           disable_numparse=True)
    table = tabulate(body, headers=headers, tablefmt=fmt if fmt != "plain" else "simple",
                     disable_numparse=True)
    return f"<p>{caption}</p>\n{table}" if fmt == "html" else f"{caption}\n\n{table}"


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
    from .sources import halfway

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
            cell = _cell(p["mean"], p["std"], int(p["n"]), digits, diff)
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
    return _render(body, headers, fmt, caption)


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
            row += [_cell(r["mean" + sfx], r["std" + sfx], n, digits),
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
    return _render(body, headers, fmt, caption)
