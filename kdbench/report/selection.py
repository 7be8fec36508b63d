"""Checkpoint KD's Algorithm 1 as a table and a figure.

- ``kdbench table --layout selection`` (:func:`selection_table`): how well each estimator's
  choice predicts the student — per trajectory, student, loss and estimator, the chosen epoch
  (or "no choice"), the student accuracy there, the best epoch by brute force, the gap, the
  Spearman rank correlation of score and student accuracy, and the cost of both; the numbers
  come from :func:`kdbench.mi.summary.selection_rows`;
- the information plane of the report page (:func:`information_plane_figures`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ..errors import KDBenchError, UnknownNameError
from ..mi.summary import mi_sources, selection_rows
from .figures import Figure, save_figure
from .records import apply_where, metric_columns
from .render import check_format, render
from .study import Study
from .svg import Series, chart

if TYPE_CHECKING:  # the estimates' classes import torch; the tables must not
    from ..mi.analysis import TrajectoryMI
    from ..mi.selection import Selection


def selection_table(df: pd.DataFrame, *, rows: Iterable[str] | None = None,
                    cols: Iterable[str] | None = None, metric: str = "top1_last",
                    where: Iterable[str] = (), fmt: str = "github", digits: int = 2) -> str:
    """Checkpoint selection quality and cost per estimator (``--rows``/``--cols`` unused)."""
    check_format(fmt)
    if metric not in df.columns:
        raise UnknownNameError("metric", metric, metric_columns(df))
    results_dir = df.attrs.get("results_dir")
    if results_dir is None:
        raise KDBenchError("the selection layout needs records loaded with load_records()")
    df = apply_where(df, where)
    df = df[df["status"] == "done"]
    rows_out = selection_rows(df, results_dir, metric)
    if not rows_out:
        raise KDBenchError("no trajectory has both students distilled from two or more of its "
                           "checkpoints and MI estimates of them (run `kdbench run --teacher "
                           "intermediate --teacher-epoch all` and `kdbench select TRAJECTORY`)")
    table = pd.DataFrame(rows_out)
    if fmt == "csv":
        return table.to_csv(index=False)
    d = digits
    body = [[r["trajectory"], r["student"], r["loss"], r["estimator"],
             f"{r['checkpoints']} × {r['seeds']}",
             f"no choice (argmax {r['argmax']})" if r["chosen"] is None else r["chosen"],
             "" if r["chosen"] is None else f"{r['acc_chosen']:.{d}f}",
             r["best"], f"{r['acc_best']:.{d}f}",
             "" if r["chosen"] is None else f"{r['gap']:.{d}f}",
             "" if math.isnan(r["spearman"]) else f"{r['spearman']:.{d}f}",
             f"{r['selection_s']:.1f}", f"{r['brute_force_s']:.1f}"] for r in rows_out]
    headers = ["trajectory", "student", "loss", "estimator", "ckpts × seeds", "chosen epoch",
               f"{metric} chosen", "best epoch", f"{metric} best", "gap", "Spearman",
               "selection s", "brute force s"]
    caption = (f"Algorithm 1 (Checkpoint KD) vs brute force: student {metric} (%) mean over "
               f"seeds; gap = best − chosen; Spearman = rank correlation of score and student "
               f"accuracy across checkpoints; no choice = the estimates cannot tell the best "
               f"checkpoint from the runner-up (kdbench.mi.selection)")
    return render(body, headers, fmt, caption)


def information_plane_figures(study: Study) -> list[Figure]:
    """The information plane (Shwartz-Ziv & Tishby 2017; Checkpoint KD's Fig. 4): I(X;T)
    against I(T;Y) at every checkpoint of a teacher trajectory, joined in epoch order, one panel
    per trajectory and estimator. From the MI caches ``kdbench mi``/``kdbench select`` leave in
    ``<study>/teachers/<key>/mi/`` and the estimates runs made with ``--select`` keep."""
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


# ============================== `kdbench mi` / `kdbench select` output ==========================

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
