"""The methods table: the literature's CIFAR-100 table recomputed under one protocol.

``kdbench table --layout methods`` (:func:`methods_table`) reads the run records and shows one
row per method (a loss name as the runs spell it: ``kd``, ``crd+kd``, ``dkd+ls``) with its
family and year from the loss registry (:func:`kdbench.losses.entry`: ``family``, ``year``),
and for each teacher–student pair the metric at the last epoch and at the best epoch, each as
mean ± std over seeds with the number of seeds. A method that needs no teacher (the CE-only
student) fills every pair with its student. It needs runs of at least two distillation methods
(else there is nothing to compare, and ``kdbench report`` leaves it out). Rows: the baseline
first, then by family, year and name. It serves the shipped sweeps ``modern-kd-cifar100`` and
``repdistiller-cifar100``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import pandas as pd

from ..errors import KDBenchError, UnknownNameError
from .records import NONE, finished, metric_columns
from .render import check_format, format_cell, render

__all__ = ["method_info", "methods_points", "methods_table"]

#: what a cell's mean ± std is taken over: the last epoch's and the best epoch's value
WHEN = ("last", "best")


def method_info(name: str) -> tuple[str, int | None]:
    """(family, year) of a loss name from the registry; ``("-", None)`` for a name no loaded
    plugin registers (records from a plugin that is not installed here)."""
    from ..losses import entry

    try:
        spec = entry(name)
    except KDBenchError:
        return NONE, None
    return spec.family or NONE, spec.year


def _base_metric(metric: str, df: pd.DataFrame) -> str:
    """``top1_last`` / ``top1_best`` / ``top1`` → ``top1``, checked: the records must hold both
    ``<base>_last`` and ``<base>_best``."""
    base = metric.removesuffix("_last").removesuffix("_best")
    missing = [f"{base}_{w}" for w in WHEN if f"{base}_{w}" not in df.columns]
    if missing:
        valid = sorted({c.removesuffix("_last").removesuffix("_best")
                        for c in metric_columns(df)})
        raise UnknownNameError("metric", metric, valid,
                               hint="the layout shows its _last and _best columns both")
    return base


def methods_points(df: pd.DataFrame, *, metric: str = "top1", where: Iterable[str] = ()
                   ) -> pd.DataFrame:
    """One line per (method, dataset, teacher, student) and ``when`` (last, best): ``mean``,
    ``std``, ``n`` over seeds of ``<metric>_<when>``, with the method's ``family`` and
    ``year``. Runs without a teacher are counted in every pair of their student (and dataset);
    a method run with several teacher sources gets one row per source (``kd (intermediate)``)."""
    df = finished(df, where)
    base = _base_metric(metric, df)
    distilled = sorted(set(df.loc[df["teacher_arch"] != NONE, "loss"]))
    if len(distilled) < 2:
        raise KDBenchError(f"the methods layout compares distillation methods, and these runs "
                           f"distil with {len(distilled)} ({', '.join(distilled) or 'none'}); "
                           f"use the pivot layout, or add runs of other --loss values")
    df = df.copy()
    sources = sorted({s for s in df["teacher"] if s != NONE})
    df["method"] = [loss if len(sources) < 2 or source == NONE else f"{loss} ({source})"
                    for loss, source in zip(df["loss"], df["teacher"])]
    paired = df[df["teacher_arch"] != NONE]
    pairs = paired[["dataset", "teacher_arch", "student"]].drop_duplicates()
    alone = df[df["teacher_arch"] == NONE].drop(columns="teacher_arch")
    if len(alone):  # a teacherless run stands in every pair of its student
        alone = alone.merge(pairs, on=["dataset", "student"], how="inner")
    rows = pd.concat([paired, alone], ignore_index=True)
    if rows.empty:
        raise KDBenchError("no teacher–student pair to tabulate (only runs without a teacher, "
                           "and no distilled run of their students)")
    keys = ["method", "loss", "dataset", "teacher_arch", "student"]
    out = []
    for when in WHEN:
        column = f"{base}_{when}"
        grouped = rows[rows[column].notna()].groupby(keys, sort=False)
        agg = grouped[column].agg(["mean", "std", "count"]).rename(columns={"count": "n"})
        agg["configs"] = grouped["cell_config"].nunique()
        agg["when"] = when
        out.append(agg.reset_index())
    points = pd.concat(out, ignore_index=True)
    for _, r in points[(points["configs"] > 1) & (points["when"] == "last")].iterrows():
        warnings.warn(f"cell ({r['method']}, {r['teacher_arch']} -> {r['student']}) averages "
                      f"{r['configs']} different configurations, not just seeds; use --where "
                      f"to separate them", RuntimeWarning, stacklevel=2)
    info = {m: method_info(m) for m in points["loss"].unique()}
    points["family"] = [info[m][0] for m in points["loss"]]
    points["year"] = pd.array([info[m][1] for m in points["loss"]], dtype="Int64")
    return points


def _year(value: Any) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def _order(method: str, family: str, year: int | None) -> tuple:
    return (family != "baseline", family, 9999 if year is None else year, method)


def methods_table(df: pd.DataFrame, *, metric: str = "top1", where: Iterable[str] = (),
                  fmt: str = "github", digits: int = 2, **_: Any) -> str:
    """Rows = methods (family, year), columns = each teacher → student pair's ``<metric>`` at
    the last and at the best epoch, cells = mean ± std (n seeds). ``--metric`` names the metric
    with or without ``_last``/``_best`` (top1, top5, ...); ``--rows``/``--cols`` do not apply;
    ``--where`` filters first. The dataset is named in the pair's header when the records hold
    more than one."""
    check_format(fmt)
    points = methods_points(df, metric=metric, where=where)
    base = _base_metric(metric, df)
    if fmt == "csv":
        return points.drop(columns="configs").to_csv(index=False)
    several = points["dataset"].nunique() > 1
    pairs = list(dict.fromkeys(
        (d, t, s) for d, t, s in sorted(zip(points["dataset"], points["teacher_arch"],
                                            points["student"]))))
    methods = sorted({(m, f, _year(y)) for m, f, y in zip(points["method"], points["family"],
                                                           points["year"])},
                     key=lambda mfy: _order(*mfy))
    cells = points.set_index(["method", "dataset", "teacher_arch", "student", "when"])
    headers = ["method", "family", "year"]
    for d, t, s in pairs:
        label = f"{d}: {t} → {s}" if several else f"{t} → {s}"
        headers += [f"{label} {when}" for when in WHEN]
    body = []
    for method, family, year in methods:
        line = [method, family, NONE if year is None else str(year)]
        for d, t, s in pairs:
            for when in WHEN:
                key = (method, d, t, s, when)
                if key in cells.index:
                    p = cells.loc[key]
                    p = p.iloc[0] if isinstance(p, pd.DataFrame) else p
                    line.append(format_cell(p["mean"], p["std"], int(p["n"]), digits))
                else:
                    line.append("")
        body.append(line)
    runs = int(points[points["when"] == "last"]["n"].sum())
    caption = (f"{base} (%) at the last and at the best epoch — mean ± std over seeds, (n) = "
               f"seeds per cell; {len(methods)} methods, {len(pairs)} pairs, {runs} runs "
               f"(a run without a teacher counts once in each pair of its student)")
    return render(body, headers, fmt, caption)
