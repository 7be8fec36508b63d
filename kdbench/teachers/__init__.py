"""Teacher sources and the trajectories (checkpoints along training) they draw from."""

from __future__ import annotations

from typing import Any

__all__ = ["Teacher", "TeacherContext", "Trajectory", "trajectory_key", "trajectory_spec"]

#: modules that moved in 0.3 (old path -> new home; see :mod:`kdbench.compat`)
MOVED: dict[str, str | tuple[str, ...]] = {
    "tables": "kdbench.report.checkpoint",
    "plots": "kdbench.report.checkpoint",
    "indistill_table": "kdbench.report.indistill",
    "online": "kdbench.teachers.peers",
}


def __getattr__(name: str) -> Any:
    # lazy, so that tables and the CLI can import kdbench.teachers.* without loading torch
    if name in ("Teacher", "TeacherContext"):
        from . import base

        return getattr(base, name)
    if name in ("Trajectory", "trajectory_key", "trajectory_spec"):
        from . import trajectory

        return getattr(trajectory, name)
    raise AttributeError(name)
