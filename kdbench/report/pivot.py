"""The general comparison table (``kdbench table``, layout ``pivot``): rows × cols of one metric,
each cell the mean ± std over seeds with the number of seeds."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from typing import Any

import pandas as pd

from ..errors import ConfigError, UnknownNameError
from .records import CELL_CODE, HIDDEN, NONE, as_text, check_metric, finished, metric_unit
from .render import check_format, format_cell, render, with_difference
from .stats import PAIRINGS, Comparison, Family, NotComparable, seed_values

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
    """Long table: one line per (rows, cols) cell with mean, std, n over seeds, the number of
    configurations it pools (``configs``) and the code versions that made its runs (``codes``:
    :func:`kdbench.report.records.code_versions`, sorted, one per distinct value)."""
    keys = list(rows) + list(cols)
    for key in keys + [metric]:
        if key not in df.columns:
            raise UnknownNameError("column", key, [c for c in df.columns if c not in HIDDEN])
    df = df.copy()
    for key in keys:  # a key a record lacks is "-", so its cell is not dropped from the pivot
        df[key] = df[key].map(lambda v: NONE if v is None or (isinstance(v, float) and pd.isna(v))
                              else v)
    grouped = df.groupby(keys, dropna=False, sort=True)
    out = grouped[metric].agg(["mean", "std", "count"]).rename(columns={"count": "n"})
    mixed = grouped["cell_config"].nunique()
    out["configs"] = mixed
    if CELL_CODE in df.columns:
        out["codes"] = grouped[CELL_CODE].agg(lambda s: tuple(sorted(set(map(as_text, s)))))
    else:
        out["codes"] = [()] * len(out)
    return out.reset_index()


def _label(values: Iterable[Any]) -> str:
    return "/".join(map(str, values))


def reference_column(vs: str, labels: list[str]) -> str:
    """The column ``--vs`` names: its full label (``kd/full``) or, when unique, one part of it
    (``kd``); anything else is an error listing the columns."""
    if vs in labels:
        return vs
    hits = [label for label in labels if vs in label.split("/")]
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise ConfigError(f"--vs {vs!r} matches several columns ({', '.join(hits)}); name one "
                          f"in full")
    raise UnknownNameError("--vs column", vs, labels)


def compare_columns(df: pd.DataFrame, long: pd.DataFrame, rows: list[str], cols: list[str],
                    metric: str, vs: str, pairing: str = "auto") -> tuple[Family, dict]:
    """Every cell against the ``vs`` column of its row: the family of comparisons (Holm over
    all of them) and ``{(row key, column label): index in the family}``."""
    if not cols:
        raise ConfigError("--vs compares columns: give --cols (e.g. --cols loss --vs ce)")
    if pairing not in PAIRINGS:
        raise UnknownNameError("pairing", pairing, PAIRINGS)
    labels = sorted({_label(k) for k in long[cols].itertuples(index=False)}, key=natural_key)
    ref = reference_column(vs, labels)
    cells: dict[tuple, dict] = {}
    errors: dict[tuple, str] = {}
    for key, grp in df.groupby(rows + cols, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        row, col = key[:len(rows)], _label(key[len(rows):])
        try:
            cells[(row, col)] = seed_values(grp["seed"].tolist(), grp[metric].tolist(),
                                            f"cell ({_label(row)}, {col})")
        except NotComparable as exc:
            errors[(row, col)] = str(exc)
    family, index = Family(pairing), {}
    for row, col in sorted(set(cells) | set(errors)):
        if col == ref:
            continue
        if (row, col) in errors or (row, ref) in errors:
            index[(row, col)] = family.add_failure(errors.get((row, col))
                                                   or errors[(row, ref)])
        elif (row, ref) not in cells:
            index[(row, col)] = family.add_failure(f"no {ref} runs in row {_label(row)}")
        else:
            index[(row, col)] = family.add(cells[(row, col)], cells[(row, ref)])
    return family, index


def make_table(df: pd.DataFrame, *, rows: list[str] | None = None, cols: list[str] | None = None,
               metric: str = "top1_last", where: Iterable[str] = (), fmt: str = "github",
               digits: int = 2, vs: str | None = None, pairing: str = "auto",
               bold: str | None = None) -> str:
    """The comparison table as text: a pivot of mean ± std (n seeds) of ``metric``; with
    ``vs``, every cell also holds its difference to the ``vs`` column of its row (95% CI, p,
    Holm over the table, MDE where not detected; :mod:`kdbench.report.stats`); with ``bold``
    (``max``/``min``) each column's best mean in bold.

    Warns (``RuntimeWarning``) when a cell averages runs of different configurations, and when
    it mixes runs made by different code: different kdbench, plugin or torch versions
    (:func:`kdbench.report.records.code_versions`; the git commit is not compared, as it
    changes with every commit, but ``--cols code`` shows it)."""
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
    for _, r in long[long["codes"].map(len) > 1].iterrows():
        cell = ", ".join(f"{k}={r[k]}" for k in rows + cols)
        warnings.warn(f"cell ({cell}) mixes runs made by {len(r['codes'])} different code "
                      f"versions ({'; '.join(r['codes'])}); add --cols code or --where "
                      f"code=... to separate them", RuntimeWarning, stacklevel=2)
    family, index = (compare_columns(df, long, rows, cols, metric, vs, pairing) if vs
                     else (None, {}))
    where_of = [(tuple(r), _label(c)) for r, c in zip(long[rows].itertuples(index=False),
                                                      long[cols].itertuples(index=False))]
    if fmt == "csv":
        out = long.drop(columns=["configs", "codes"])
        if family is not None:
            results = family.results()
            found = [results[index[w]] if w in index else None for w in where_of]
            for name in ("diff", "low", "high", "p", "p_holm", "test", "mde"):
                out[name] = [getattr(c, name) if isinstance(c, Comparison) else None
                             for c in found]
            out["n/a"] = [str(c) if isinstance(c, NotComparable) else None for c in found]
        return out.to_csv(index=False)
    unit = metric_unit(metric)
    if unit == "0-1":  # a fraction: two more digits, the resolution of a percentage's two
        digits += 2
    cells = [format_cell(m, s, n, digits)
             for m, s, n in zip(long["mean"], long["std"], long["n"])]
    if family is not None:
        cells = [with_difference(cell, *family.text(index[w], digits)) if w in index else cell
                 for cell, w in zip(cells, where_of)]
    long["cell"] = cells
    if cols:
        # pivot the cells' positions, not the cells: a marked cell keeps its marks
        long["cell_at"] = range(len(long))
        wide = long.pivot_table(index=rows, columns=cols, values="cell_at", aggfunc="first",
                                sort=True)
        # numbers in order (epoch 10, 20, ..., 100), not as text (10, 100, 20)
        wide = wide.reindex(index=sorted(wide.index, key=natural_key),
                            columns=sorted(wide.columns, key=natural_key))
        wide.columns = ["/".join(map(str, c)) if isinstance(c, tuple) else str(c)
                        for c in wide.columns]
        wide = wide.reset_index()
        # (pandas would turn the cells into plain strings: they go in as Python objects here)
        body = [row[:len(rows)] + ["" if pd.isna(i) else cells[int(i)] for i in row[len(rows):]]
                for row in wide.values.tolist()]
    else:
        wide = long[rows + ["cell"]].rename(columns={"cell": metric})
        body = [row[:-1] + [cell] for row, cell in zip(wide.values.tolist(), cells)]
    caption = (f"{metric} ({unit}) — mean ± std over seeds, (n) = seeds per cell; "
               f"{int(long['n'].sum())} runs")
    if family is not None:
        caption += (f"; [difference to {reference_column(vs, sorted(set(c for _, c in where_of)))}"
                    f" in the same row: {family.caption()}]")
    return render(body, list(wide.columns), fmt, caption, bold=bold, keys=len(rows))
