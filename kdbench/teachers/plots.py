"""Checkpoint KD's checkpoint curve: student accuracy against the teacher checkpoint it was
distilled from, with that checkpoint's own accuracy and the teacher's training accuracy per
epoch on a second axis (so the reader sees when the teacher fitted its training set), and the
CE-only student as a reference line."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from ..errors import ConfigError, KDBenchError
from ..plotting import save_figure
from .tables import PAIR, _done, checkpoint_points

FORMATS = (".png", ".pdf")


def checkpoint_curve(df: pd.DataFrame, out: str | Path, *, metric: str = "top1_last",
                     where: Iterable[str] = ()) -> tuple[Path, int]:
    """Draw one panel per teacher–student pair (runs of the ``full``/``intermediate`` sources);
    returns the written file and the number of panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise ConfigError(f"plot file {str(out)!r} must end in {' or '.join(FORMATS)}")
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
        ax.set_ylabel(f"student {metric} (%)", color="tab:blue")
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
    from ..table import apply_where

    rows = apply_where(df, where)
    rows = rows[(rows["status"] == "done") & (rows["loss"] == "ce")
                & (rows["dataset"] == dataset) & (rows["student"] == student)]
    return float(rows[metric].mean()) if len(rows) and metric in rows else None


def _teacher_training(df: pd.DataFrame, done: pd.DataFrame, key: tuple) -> list[tuple]:
    """(epoch, running training top-1) of the panel's teacher trajectory, from its manifest
    (when the panel has exactly one trajectory and its manifest is readable)."""
    from ..store import Store, read_json

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
