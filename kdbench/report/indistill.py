"""InDistill (Sarridis et al.): its comparison as a ``kdbench table`` layout (``--layout
indistill``): each main loss alone and after the ``indistill`` warm-up, side by side, with the
vanilla student, for top-1 and retrieval mAP by cosine and Euclidean distance."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import pandas as pd

from ..errors import KDBenchError
from .records import finished
from .render import format_cell, render, with_difference
from .stats import Family, NotComparable, seed_values

#: (column of the records, header, scale to percent)
METRICS = (("top1", "top-1 (%)", 1.0), ("map_cosine", "mAP cos (%)", 100.0),
           ("map_euclidean", "mAP euc (%)", 100.0))


def has_indistill(warmup: Any) -> bool:
    """Whether a record's ``config.warmup`` (JSON text in the table's rows) holds the stage."""
    items = json.loads(warmup) if isinstance(warmup, str) else (warmup or [])
    return any((i if isinstance(i, str) else i.get("name")) == "indistill" for i in items)


def indistill_table(df: pd.DataFrame, *, rows: Iterable[str] | None = None,
                    cols: Iterable[str] | None = None, metric: str = "top1_last",
                    where: Iterable[str] = (), fmt: str = "github", digits: int = 2,
                    **_: Any) -> str:
    """Rows: dataset, student, teacher, loss and its ``w_ce``; per metric (top-1, mAP cosine,
    mAP Euclidean, ``_last`` or ``_best`` as ``metric`` ends) the loss alone, after the
    ``indistill`` warm-up, and the difference of the means; cells are mean ± std over seeds
    (n seeds in the last column). The vanilla student is the ``ce`` row."""
    suffix = "best" if metric.endswith("_best") else "last"
    df = finished(df, where).copy()
    df["indistill"] = (df["config.warmup"].map(has_indistill) if "config.warmup" in df
                       else False)
    if not df["indistill"].any():
        raise KDBenchError("no finished runs with the indistill warm-up (--warmup indistill)")
    w_ce = df["config.loss.weights.w_ce"] if "config.loss.weights.w_ce" in df else 1.0
    df["w_ce"] = w_ce
    keys = ["dataset", "student", "teacher_arch", "loss", "w_ce"]
    headers = [*keys]
    for _, name, _ in METRICS:
        headers += [f"{name} alone", f"{name} +InDistill", f"{name} Δ"]
    headers.append("seeds")
    family = Family()
    lines = []  # every comparison first: Holm adjusts over all of them
    for key, group in df.groupby(keys, dropna=False, sort=True):
        line = []
        for col, _, scale in METRICS:
            column = f"{col}_{suffix}"
            sides = []
            for flag in (False, True):
                part = (group[group["indistill"] == flag] if column in group
                        else group.iloc[:0])
                part = part[part[column].notna()] if column in part else part
                values = (part[column] * scale) if column in part else pd.Series(dtype=float)
                try:
                    cell: dict | NotComparable = seed_values(part["seed"].tolist(),
                                                             values.tolist())
                except NotComparable as exc:
                    cell = exc
                sides.append(((values.mean(), values.std(), len(values)), cell))
            (alone, a_cell), (warm, w_cell) = sides
            if not alone[2] or not warm[2]:  # one side has no runs (the vanilla CE row)
                index = None
            elif isinstance(a_cell, NotComparable) or isinstance(w_cell, NotComparable):
                index = family.add_failure(str(a_cell if isinstance(a_cell, NotComparable)
                                               else w_cell))
            else:
                index = family.add(w_cell, a_cell)
            line.append((alone, warm, index))
        lines.append((key, line))
    body = []
    for key, line in lines:
        row = list(key)
        seeds = []
        for alone, warm, index in line:
            row += [format_cell(*alone, digits, seeds=False),
                    format_cell(*warm, digits, seeds=False),
                    "" if index is None else with_difference("", *family.text(index, digits),
                                                             brackets="")]
            seeds += [alone[2], warm[2]]
        row.append("/".join(map(str, seeds[:2])))
        body.append(row)
    caption = (f"InDistill: each loss alone and after the indistill warm-up ({suffix} epoch); "
               f"mean ± std over seeds; Δ = +InDistill − alone, {family.caption()}; seeds = "
               f"alone/+InDistill")
    return render(body, headers, fmt, caption)
