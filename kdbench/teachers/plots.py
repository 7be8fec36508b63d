"""Checkpoint KD's checkpoint curve: student accuracy against the teacher checkpoint it was
distilled from, with that checkpoint's own accuracy on a second axis."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from ..errors import ConfigError
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
    points = checkpoint_points(_done(df, where, metric, ("full", "intermediate")), metric)
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
        twin = ax.twinx()
        twin.plot(grp["epoch"], grp["teacher_top1"], "s--", color="tab:orange",
                  label="teacher top1")
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
