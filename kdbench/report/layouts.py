"""Built-in table-layout plugin: the general pivot and the paper layouts, one module of
:mod:`kdbench.report` per study kind.

Each factory imports its module when the layout is asked for, so listing the plugins does not
load pandas and the figure code.
"""

from __future__ import annotations

from typing import Any

from ..hookspecs import hookimpl


def pivot(df: Any, **options: Any) -> str:
    """rows × cols of one metric: mean ± std (n seeds)."""
    from .pivot import make_table

    return make_table(df, **options)


def checkpoint(df: Any, **options: Any) -> str:
    """Checkpoint KD's Table 1: full teacher vs half-way vs best intermediate checkpoint."""
    from .checkpoint import checkpoint_table

    return checkpoint_table(df, **options)


def ensemble(df: Any, **options: Any) -> str:
    """Checkpoint KD's Table 2: snapshot vs independent ensembles, with training cost."""
    from .checkpoint import ensemble_table

    return ensemble_table(df, **options)


def selection(df: Any, **options: Any) -> str:
    """Algorithm 1: the chosen checkpoint vs the brute-force best, gap, Spearman, cost."""
    from .selection import selection_table

    return selection_table(df, **options)


def robustness(df: Any, **options: Any) -> str:
    """KD beyond compression: methods × severity of label noise and class imbalance, the gain
    over CE at each severity, where the teacher learned."""
    from .robustness import robustness_table

    return robustness_table(df, **options)


def methods(df: Any, **options: Any) -> str:
    """The literature's table under one protocol: one row per method (family, year), top-1 at
    the last and at the best epoch per teacher–student pair."""
    from .methods import methods_table

    return methods_table(df, **options)


def indistill(df: Any, **options: Any) -> str:
    """InDistill's comparison: each loss alone vs after the indistill warm-up, top-1 and mAP."""
    from .indistill import indistill_table

    return indistill_table(df, **options)


@hookimpl
def register_table_layouts(register):
    for fn in (pivot, checkpoint, ensemble, selection, robustness, methods, indistill):
        register(fn.__name__, fn)
