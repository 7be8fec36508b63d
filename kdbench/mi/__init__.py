"""Mutual-information estimators and checkpoint selection (Checkpoint KD, Algorithm 1)."""

from __future__ import annotations

#: modules that moved in 0.3 (old path -> new home; see :mod:`kdbench.compat`)
MOVED: dict[str, str | tuple[str, ...]] = {
    "report": ("kdbench.mi.summary", "kdbench.report.selection"),
}
