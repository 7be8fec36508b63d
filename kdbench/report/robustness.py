"""The robustness study's table and figures: methods against the severity of label noise and
class imbalance, each beside the CE-only student at the same severity.

``kdbench table --layout robustness`` (:func:`robustness_table`), ``kdbench plot robustness``
(:func:`robustness_plot`) and the report page's curves (:func:`robustness_figures`) read the
run records: the severity of a run comes from its ``data.transforms`` (``label_noise`` kind and
rate, ``imbalance`` kind and ratio; a ``subset`` or any other transform does not count, a rate
of 0 or a ratio of 1 is ``clean``), and where its teacher learned from its config (``same``:
the student's corrupted data, the default; ``clean``: a ``teacher.data`` without the student's
label noise or imbalance; ``other``: any other difference; ``-``: no teacher). An online
cohort (``--teacher peers``, DML) always learns on the student's data: ``same``.

They serve the settings of Sarfraz, Arani & Zonooz, "Knowledge Distillation Beyond Model
Compression" (ICPR 2020) as kdbench's shipped sweep ``kd-beyond-compression`` runs them (the
study's settings; the paper's own tables could not be read here).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import KDBenchError
from .figures import METRIC, Figure, check_plot_file, pyplot, save_figure
from .records import (
    CLEAN,
    NONE,
    check_metric,
    corruptions,
    finished,
    metric_label,
    teacher_data,
    transform_list,
)
from .render import check_format, format_cell, render, with_difference
from .stats import Comparison, Family, NotComparable, seed_values
from .study import Study
from .svg import Series, chart

__all__ = ["ROWS", "robustness_figures", "robustness_plot", "robustness_points",
           "robustness_table", "severity", "teacher_data", "teacher_points"]

#: The row keys of the table: a method on a teacher–student pair, and where its teacher learned.
ROWS = ["dataset", "student", "loss", "teacher_arch", "teacher_data"]
ROW_HEADERS = ["dataset", "student", "method", "teacher", "teacher data"]
BASELINE = "ce"
#: The method name of the teachers' own lines (top-1 metrics only).
TEACHER = "teacher"
NOISE_ORDER = ("symmetric", "pairflip", "uniform")
IMBALANCE_ORDER = ("exponential", "step")


# ============================== what a run's config says =======================================


def severity(transforms: Any) -> tuple[tuple, str]:
    """(sort key, label) of a run's severity from its ``data.transforms``.

    Labels: ``clean``; ``symmetric 0.2`` (noise kind and rate); ``exponential ρ=10``
    (imbalance kind and ratio); several joined by `` + ``. Sorted clean first, then noise
    (symmetric, pairflip, uniform) by rate, then imbalance (exponential, step) by ratio, then
    combinations.
    """
    found = corruptions(transform_list(transforms))
    if not found:
        return (0,), CLEAN
    labels, keys = [], []
    for family, kind, level in found:
        if family == "noise":
            labels.append(f"{kind} {level:g}")
            rank = NOISE_ORDER.index(kind) if kind in NOISE_ORDER else len(NOISE_ORDER)
            keys.append((1, rank, kind, level))
        else:
            labels.append(f"{kind} ρ={level:g}")
            rank = (IMBALANCE_ORDER.index(kind) if kind in IMBALANCE_ORDER
                    else len(IMBALANCE_ORDER))
            keys.append((2, rank, kind, level))
    return ((len(found),) + tuple(x for k in keys for x in k)), " + ".join(labels)


def robustness_points(df: pd.DataFrame, *, metric: str = "top1_last",
                      where: Iterable[str] = ()) -> pd.DataFrame:
    """One line per (dataset, student, method, teacher arch, teacher data, severity): ``mean``,
    ``std``, ``n`` over seeds of ``metric``, ``gain`` = mean − the CE student's mean at the same
    dataset, student and severity (NaN where there is no CE cell), ``order`` (the severity's
    sort key), ``family`` (clean, noise:<kind>, imbalance:<kind> or mixed) and ``level``."""
    df = finished(df, where)
    check_metric(df, metric)
    df = _annotate(df)
    keys = ROWS + ["order", "severity"]
    grouped = df.groupby(keys, dropna=False, sort=False)
    out = grouped[metric].agg(["mean", "std", "count"]).rename(columns={"count": "n"})
    out["configs"] = grouped["cell_config"].nunique()
    out = out.reset_index()
    for _, r in out[out["configs"] > 1].iterrows():
        cell = ", ".join(f"{k}={r[k]}" for k in ROWS + ["severity"])
        warnings.warn(f"cell ({cell}) averages {r['configs']} different configurations, not "
                      f"just seeds; use --where to separate them", RuntimeWarning, stacklevel=2)
    base = out[out["loss"] == BASELINE].set_index(["dataset", "student", "severity"])["mean"]
    base = base[~base.index.duplicated()]
    out["gain"] = [m - base.get((d, s, v), math.nan)
                   for d, s, v, m in zip(out["dataset"], out["student"], out["severity"],
                                         out["mean"])]
    out["family"] = [_family(json.loads(o))[0] for o in out["order"]]
    out["level"] = [_family(json.loads(o))[1] for o in out["order"]]
    rank = sorted(range(len(out)), key=lambda i: (out["dataset"].iloc[i], out["student"].iloc[i],
                                                  json.loads(out["order"].iloc[i])))
    return out.iloc[rank].reset_index(drop=True)


def _annotate(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of finished runs with their severity (``order``, ``severity``) and where their
    teacher learned (``teacher_data``; ``teacher_arch`` is ``-`` without a teacher)."""
    df = df.copy()
    sev = [severity(t) for t in df.get("config.data.transforms", pd.Series([None] * len(df),
                                                                             index=df.index))]
    df["order"] = [json.dumps(k) for k, _ in sev]
    df["severity"] = [label for _, label in sev]
    if df["severity"].nunique() < 2:
        raise KDBenchError("the robustness layout compares severities of label noise or class "
                           "imbalance, and these runs have at most one (data.transforms "
                           "label_noise, imbalance)")
    df["teacher_data"] = [teacher_data(r) for _, r in df.iterrows()]
    df["teacher_arch"] = [a if d != NONE else NONE
                          for a, d in zip(df["teacher_arch"], df["teacher_data"])]
    return df


def teacher_points(df: pd.DataFrame, *, where: Iterable[str] = ()) -> pd.DataFrame:
    """The teachers' own test top-1 beside the students: one line per (dataset, student,
    teacher arch, teacher data, severity) with ``loss`` = ``teacher``, ``mean``/``std``/``n``
    over the distinct teachers (trajectories) the runs of that cell distilled from (usually
    one: the seeds vary the student, not the teacher), no gain; the columns of
    :func:`robustness_points`. Runs without a teacher or without its recorded top-1 give no
    line, and neither does an online cohort (``--teacher peers``, DML): its peers train with
    the student instead of before it (their top-1 is the record's ``peer_top1``)."""
    df = _annotate(finished(df, where))
    columns = ROWS + ["order", "severity", "mean", "std", "n", "gain", "family", "level"]
    if "teacher_top1" not in df:
        return pd.DataFrame(columns=columns)
    df = df[(df["teacher_data"] != NONE) & (df["teacher"] != "peers")
            & pd.to_numeric(df["teacher_top1"], errors="coerce").notna()]
    if df.empty:
        return pd.DataFrame(columns=columns)
    df = df.assign(loss=TEACHER, teacher_top1=df["teacher_top1"].astype(float))
    which = "teacher_trajectory" if "teacher_trajectory" in df else "teacher_top1"
    keys = ROWS + ["order", "severity"]
    df = df.drop_duplicates(subset=keys + [which])
    out = (df.groupby(keys, dropna=False, sort=False)["teacher_top1"]
           .agg(["mean", "std", "count"]).rename(columns={"count": "n"}).reset_index())
    out["gain"] = math.nan
    out["family"] = [_family(json.loads(o))[0] for o in out["order"]]
    out["level"] = [_family(json.loads(o))[1] for o in out["order"]]
    return out[columns]


def _with_teachers(points: pd.DataFrame, df: pd.DataFrame, metric: str,
                   where: Iterable[str]) -> pd.DataFrame:
    """``points`` and, for a top-1 metric, the teachers' lines (:func:`teacher_points`)."""
    if not metric.startswith("top1"):
        return points
    teachers = teacher_points(df, where=where)
    return points if teachers.empty else pd.concat([points, teachers], ignore_index=True)


def _family(order: list) -> tuple[str, float]:
    """The severity's family and level from its sort key (clean: level 0)."""
    if order[0] == 0:
        return CLEAN, 0.0
    if order[0] > 1:
        return "mixed", math.nan
    _, group, _, kind, level = order
    return ("noise:" if group == 1 else "imbalance:") + kind, float(level)


# ============================== the table ======================================================


def robustness_table(df: pd.DataFrame, *, metric: str = "top1_last", where: Iterable[str] = (),
                     fmt: str = "github", digits: int = 2, **_: Any) -> str:
    """Rows = methods (on their teacher–student pair, with where the teacher learned), columns =
    severity (clean, noise kind and rate, imbalance kind and ratio), cells = mean ± std (n
    seeds) of ``metric`` and, in brackets, the gain over the CE-only student at the same
    severity. The CE row comes first and is always there (empty, with a warning, when no CE run
    matches); for a top-1 metric the teachers' own top-1 comes last, a row per teacher
    architecture and teacher data (:func:`teacher_points`). ``--rows``/``--cols`` do not
    apply; ``--where`` filters first."""
    check_format(fmt)
    points = _with_teachers(robustness_points(df, metric=metric, where=where), df, metric,
                            where)
    family, found = gain_comparisons(df, points, metric, where)
    if fmt == "csv":
        out = points.drop(columns=["configs", "order"])
        results = family.results()
        picked = [results[found[k]] if k in found else None
                  for k in map(tuple, points[ROWS + ["severity"]].values.tolist())]
        for name in ("low", "high", "p", "p_holm", "test", "mde"):
            out[f"gain_{name}"] = [getattr(c, name) if isinstance(c, Comparison) else None
                                   for c in picked]
        out["gain_n/a"] = [str(c) if isinstance(c, NotComparable) else None for c in picked]
        return out.to_csv(index=False)
    columns = [label for _, label in sorted(
        {(o, v) for o, v in zip(points["order"], points["severity"])},
        key=lambda ov: json.loads(ov[0]))]
    body = []
    for (dataset, student), block in points.groupby(["dataset", "student"], sort=True):
        rows = list(dict.fromkeys(map(tuple, block[ROWS[2:]].values.tolist())))
        if not any(r[0] == BASELINE for r in rows):
            warnings.warn(f"no CE-only runs for {dataset} {student}: no gains to show "
                          f"(run --loss ce at the same severities)", RuntimeWarning,
                          stacklevel=2)
            rows.insert(0, (BASELINE, NONE, NONE))
        rows.sort(key=lambda r: (0 if r[0] == BASELINE else 2 if r[0] == TEACHER else 1,
                                 r[0], r[1], r[2]))
        index = block.set_index(ROWS[2:] + ["severity"])
        for r in rows:
            line = [dataset, student, *r]
            for col in columns:
                key = (*r, col)
                if key in index.index:
                    p = index.loc[key]
                    p = p.iloc[0] if isinstance(p, pd.DataFrame) else p
                    # the gain over CE in brackets, but not on the CE and teacher rows
                    cell = format_cell(p["mean"], p["std"], int(p["n"]), digits)
                    at = (dataset, student, *r, col)
                    line.append(with_difference(cell, *family.text(found[at], digits))
                                if at in found else cell)
                else:
                    line.append("")
            body.append(line)
    headers = ROW_HEADERS + columns
    caption = (f"{metric} (%) — mean ± std over seeds (n seeds), [gain over CE at the same "
               f"severity: method − CE, {family.caption()}]; teacher data: same = the "
               f"student's corrupted data, clean = uncorrupted; "
               f"{int(points['n'][points['loss'] != TEACHER].sum())} runs")
    if (points["loss"] == TEACHER).any():
        caption += ("; teacher rows: the teachers' own top-1 on the test split (n = distinct "
                    "teachers)")
    return render(body, headers, fmt, caption)


def gain_comparisons(df: pd.DataFrame, points: pd.DataFrame, metric: str,
                     where: Iterable[str]) -> tuple[Family, dict[tuple, int]]:
    """Every method cell against the CE student at the same dataset, student and severity:
    the table's family of comparisons (paired by seed where the seeds match, else Welch; Holm
    over all of them) and ``{(*ROWS, severity): index in the family}``."""
    runs = _annotate(finished(df, where))
    cells: dict[tuple, dict | NotComparable] = {}
    for key, grp in runs.groupby(ROWS + ["severity"], dropna=False, sort=True):
        try:
            cells[key] = seed_values(grp["seed"].tolist(), grp[metric].tolist(),
                                     f"cell ({', '.join(map(str, key))})")
        except NotComparable as exc:
            cells[key] = exc
    ce = {(k[0], k[1], k[-1]): v for k, v in cells.items() if k[2] == BASELINE}
    family, found = Family(), {}
    for key in map(tuple, points[ROWS + ["severity"]].values.tolist()):
        if key[2] in (BASELINE, TEACHER) or key not in cells:
            continue
        a, b = cells[key], ce.get((key[0], key[1], key[-1]))
        if isinstance(a, NotComparable) or isinstance(b, NotComparable):
            found[key] = family.add_failure(str(a if isinstance(a, NotComparable) else b))
        elif b is None:
            found[key] = family.add_failure(f"no CE runs at {key[-1]}")
        else:
            found[key] = family.add(a, b)
    return family, found


# ============================== the figures ====================================================


def robustness_plot(df: pd.DataFrame, out: str | Path, *, metric: str = "top1_last",
                    where: Iterable[str] = ()) -> tuple[Path, int]:
    """Accuracy against severity, one line per method (error bars: the std over seeds), one
    panel per dataset/student and severity family (noise kind, imbalance kind; the clean runs
    are each panel's first point: rate 0, ratio 1); for a top-1 metric the teachers' own
    top-1 as a grey dotted line. Returns the file and the number of panels."""
    plt = pyplot()
    out = check_plot_file(out)
    points = _with_teachers(robustness_points(df, metric=metric, where=where), df, metric,
                            where)
    families = [f for f in dict.fromkeys(points["family"]) if f not in (CLEAN, "mixed")]
    if not families:
        raise KDBenchError("no runs with label noise or class imbalance to plot")
    panels = [(ds, st, fam) for (ds, st), block in points.groupby(["dataset", "student"],
                                                                   sort=True)
              for fam in families if (block["family"] == fam).any()]
    # one colour per method in every panel (its clean-teacher line dashed in the same colour)
    colours = {loss: f"C{i}" for i, loss in enumerate(sorted(
        set(points["loss"]) - {BASELINE, TEACHER}))}
    cols = min(2, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.6 * cols, 4.0 * rows), squeeze=False)
    for ax, (ds, st, fam) in zip(axes.flat, panels):
        block = points[(points["dataset"] == ds) & (points["student"] == st)
                       & points["family"].isin([fam, CLEAN])]
        imbalance = fam.startswith("imbalance:")
        for (loss, arch, tdata), line in block.groupby(ROWS[2:], sort=True):
            if tdata == CLEAN:  # on clean data a clean teacher is the student's own: start there
                start = block[(block["loss"] == loss) & (block["teacher_arch"] == arch)
                              & (block["teacher_data"] == "same") & (block["family"] == CLEAN)]
                line = pd.concat([start, line], ignore_index=True)
            x = [1.0 if (imbalance and f == CLEAN) else lv
                 for f, lv in zip(line["family"], line["level"])]
            order = sorted(range(len(x)), key=x.__getitem__)
            label = loss if tdata in ("same", NONE) else f"{loss} ({tdata} teacher)"
            style = {"linewidth": 1.2, "color": colours.get(loss)}
            if loss == BASELINE:
                style = {"linewidth": 2.2, "color": "black"}
            elif loss == TEACHER:
                label = f"teacher {arch}" + ("" if tdata == "same" else f" ({tdata} data)")
                style = {"linewidth": 1.0, "color": "grey"}
            ax.errorbar([x[i] for i in order], [line["mean"].iloc[i] for i in order],
                        yerr=[0.0 if pd.isna(line["std"].iloc[i]) else line["std"].iloc[i]
                              for i in order],
                        marker="s" if loss == TEACHER else "o", capsize=3,
                        linestyle="--" if tdata == CLEAN else ":" if loss == TEACHER else "-",
                        label=label, **style)
        kind = fam.split(":", 1)[1]
        if imbalance:
            ax.set_xscale("log")
            ax.set_xlabel(f"{kind} imbalance ratio ρ")
        else:
            ax.set_xlabel(f"{kind} label-noise rate")
        ax.set_ylabel(metric_label(metric))
        ax.set_title(f"{st} on {ds}: {kind}", fontsize=10)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    # one legend for all panels, below them, so that no line is hidden behind it
    legend: dict[str, Any] = {}
    for ax in axes.flat[:len(panels)]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    ncol = min(4, len(legend))
    legend_rows = math.ceil(len(legend) / ncol)
    height = 4.0 * rows + 0.25 * legend_rows
    fig.set_size_inches(5.6 * cols, height)
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=ncol, fontsize=8,
               frameon=False)
    fig.suptitle("Accuracy against severity (mean ± std over seeds)", fontsize=11)
    fig.tight_layout(rect=(0, (0.22 * legend_rows + 0.05) / height, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, out, dpi=150)
    return out, len(panels)


def robustness_figures(study: Study) -> list[Figure]:
    """Knowledge Distillation Beyond Model Compression (Sarfraz, Arani & Zonooz, ICPR 2020):
    accuracy against the severity of label noise or class imbalance, one line per method (the
    CE-only student in black), one panel per dataset, student and kind of corruption; the clean
    runs are each panel's first point (rate 0, ratio 1). The data are those of ``kdbench table
    --layout robustness`` (:func:`robustness_points`: mean ± std over seeds of ``top1_last``,
    severity from each run's data transforms); a study with no corrupted runs has no such
    figure.

    Differs from ``kdbench plot robustness``: the std over seeds is in each point's hover text
    rather than drawn as error bars (lines of several methods overlap at the clean point).
    """
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
                              chart(series, title=title, xlabel=what, ylabel=metric_label(METRIC),
                                    log_x=imbalance, width=520,
                                    height=300 + 16 * math.ceil(len(series) / 2)),
                              f"Student {METRIC} (mean over seeds; hover: ± std, n, gain over "
                              f"CE) against the severity; black: the CE-only student, dashed: "
                              f"a teacher trained on clean data."))
    return out
