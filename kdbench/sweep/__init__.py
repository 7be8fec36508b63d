"""Sweeps: grid expansion, run de-duplication and the executor plugins (inline, local, slurm).

``kdbench sweep FILE`` expands a sweep file into runs identified by their config hash
(:mod:`.plan`), trains the teacher trajectories the pending runs need, once each, then runs the
students (:mod:`.driver`) through an executor (:mod:`.executors`, :mod:`.slurm`; ``ray`` is the
``kdbench-ray`` plugin package); :mod:`.plugin` registers the built-in executors.
"""

from __future__ import annotations

from .driver import (
    Summary,
    dry_run_report,
    run_lockstep,
    run_sweep,
    status_report,
    summary_report,
)
from .executors import (
    EXTERNAL_EXECUTORS,
    Executor,
    InlineExecutor,
    Job,
    LocalExecutor,
    Outcome,
    make_executor,
)
from .plan import Plan, count_points, expand, load_sweep, shipped
from .slurm import SlurmExecutor
from .work import execute, run_specs, train_teacher

__all__ = ["EXTERNAL_EXECUTORS", "Executor", "InlineExecutor", "Job", "LocalExecutor", "Outcome",
           "Plan", "SlurmExecutor", "Summary", "count_points", "dry_run_report", "execute",
           "expand",
           "list_sweeps", "load_sweep", "make_executor", "run_lockstep", "run_specs", "run_sweep",
           "shipped",
           "status_report", "summary_report", "train_teacher"]


def list_sweeps() -> str:
    """The shipped sweep files: name, grid points and description."""
    from tabulate import tabulate

    rows = []
    for name in shipped():
        try:
            data = load_sweep(name)
            rows.append([name, count_points(data),
                         " ".join(str(data.get("description") or "").split())[:90]])
        except Exception as exc:  # noqa: BLE001 - a broken file is listed, not fatal
            rows.append([name, "?", f"unreadable: {exc}"])
    return tabulate(rows, headers=["sweep", "grid points", "description"])
