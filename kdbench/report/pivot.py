"""The general comparison table (``kdbench table``, layout ``pivot``): rows × cols of one metric,
each cell the mean ± std over seeds with the number of seeds."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from typing import Any

import pandas as pd

from ..errors import UnknownNameError
from .records import NONE, as_text, check_metric, finished, metric_unit
from .render import check_format, format_cell, render

DEFAULT_ROWS = ("dataset", "student")
DEFAULT_COLS = ("loss", "teacher")


def natural_key(value: Any) -> tuple:
    """Sort key that orders the numbers inside labels as numbers: ``"9" < "10" < "10,20"``; a
    tuple of labels (a pivot's multi-level key) sorts level by level."""
    if isinstance(value, tuple):
        return tuple(natural_key(v) for v in value)
    parts = re.split(r"(\d+(?:\.\d+)?)", as_text(value))
    return tuple((0, float(p), "") if i % 2 else (1, 0.0, p) for i, p in enumerate(parts) if p)


def aggregate(df: pd.DataFrame, rows: list[str], cols: list[str], metric: str) -> pd.DataFrame:
    """Long table: one line per (rows, cols) cell with mean, std, n over seeds."""
    keys = list(rows) + list(cols)
    for key in keys + [metric]:
        if key not in df.columns:
            raise UnknownNameError("column", key, [c for c in df.columns if c != "cell_config"])
    df = df.copy()
    for key in keys:  # a key a record lacks is "-", so its cell is not dropped from the pivot
        df[key] = df[key].map(lambda v: NONE if v is None or (isinstance(v, float) and pd.isna(v))
                              else v)
    grouped = df.groupby(keys, dropna=False, sort=True)
    out = grouped[metric].agg(["mean", "std", "count"]).rename(columns={"count": "n"})
    mixed = grouped["cell_config"].nunique()
    out["configs"] = mixed
    return out.reset_index()


def make_table(df: pd.DataFrame, *, rows: list[str] | None = None, cols: list[str] | None = None,
               metric: str = "top1_last", where: Iterable[str] = (), fmt: str = "github",
               digits: int = 2, bold: str | None = None) -> str:
    """The comparison table as text: a pivot of mean ± std (n seeds) of ``metric``; with
    ``bold`` (``max``/``min``) each column's best mean in bold."""
    check_format(fmt)
    rows = list(rows or DEFAULT_ROWS)
    cols = list(cols if cols is not None else DEFAULT_COLS)
    df = finished(df, where)
    check_metric(df, metric)
    long = aggregate(df, rows, cols, metric)
    mixed = long[long["configs"] > 1]
    for _, r in mixed.iterrows():
        cell = ", ".join(f"{k}={r[k]}" for k in rows + cols)
        warnings.warn(f"cell ({cell}) averages {r['configs']} different configurations, not just "
                      f"seeds; add a --rows/--cols key or --where to separate them",
                      RuntimeWarning, stacklevel=2)
    if fmt == "csv":
        return long.drop(columns="configs").to_csv(index=False)
    unit = metric_unit(metric)
    if unit == "0-1":  # a fraction: two more digits, the resolution of a percentage's two
        digits += 2
    long["cell"] = [format_cell(m, s, n, digits)
                    for m, s, n in zip(long["mean"], long["std"], long["n"])]
    if cols:
        wide = long.pivot_table(index=rows, columns=cols, values="cell", aggfunc="first",
                                sort=True)
        # numbers in order (epoch 10, 20, ..., 100), not as text (10, 100, 20)
        wide = wide.reindex(index=sorted(wide.index, key=natural_key),
                            columns=sorted(wide.columns, key=natural_key))
        wide.columns = ["/".join(map(str, c)) if isinstance(c, tuple) else str(c)
                        for c in wide.columns]
        wide = wide.fillna("").reset_index()
    else:
        wide = long[rows + ["cell"]].rename(columns={"cell": metric})
    caption = (f"{metric} ({unit}) — mean ± std over seeds, (n) = seeds per cell; "
               f"{int(long['n'].sum())} runs")
    return render(wide.values.tolist(), list(wide.columns), fmt, caption, bold=bold,
                  keys=len(rows))
