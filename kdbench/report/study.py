"""The studies of a results store, as the report sees them.

A *study* is a folder with its own ``runs/`` folder of records (and usually its own
``teachers/``): the store itself when it has ``runs/``, and every folder below it that has one
(``results/checkpoint-kd/runs/``, ``results/indistill/runs/``, ... — the committed studies of
the repository are laid out that way), searched up to :data:`MAX_DEPTH` levels down. The
folders kdbench and the trackers write inside a study (``runs``, ``teachers``, ``logs``,
``mlruns``, ``wandb``) and hidden folders are not searched. A study is named by its path
relative to the store (the store's own folder name for the store itself).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import KDBenchError, StoreError
from ..store import Store, read_json
from .records import load_records

MAX_DEPTH = 3
NOT_STUDIES = frozenset({"runs", "teachers", "logs", "mlruns", "wandb"})


@dataclass
class Study:
    """One study: its records (readable ones), the files it could not read, its records as a
    table (:func:`kdbench.report.records.load_records`), its teacher trajectories' manifests,
    and the runs whose training curves the report should draw (``chosen``; empty: the figure
    picks)."""

    name: str
    path: Path
    records: list[dict[str, Any]]
    unreadable: list[str]
    df: Any
    trajectories: list[dict[str, Any]] = field(default_factory=list)
    chosen: list[str] = field(default_factory=list)

    @property
    def slug(self) -> str:
        keep = "".join(c if c.isalnum() or c in "-_" else "-" for c in self.name)
        return keep.strip("-") or "study"


def study_folders(root: Path) -> list[Path]:
    """``root`` (if it has ``runs/``) and the folders below it that have ``runs/``."""
    found = []
    for folder, dirs, _files in os.walk(root):
        here = Path(folder)
        depth = len(here.relative_to(root).parts)
        if (here / "runs").is_dir():
            found.append(here)
        dirs[:] = sorted(d for d in dirs if d not in NOT_STUDIES and not d.startswith(".")
                         and depth < MAX_DEPTH)
    return found


def load_studies(results_dir: str | Path, chosen: list[str] | None = None) -> list[Study]:
    """Every study of the store with at least one readable record. An empty or unreadable store
    is a KDBenchError naming it."""
    root = Path(results_dir)
    if not root.exists():
        raise StoreError(f"results dir {str(root)!r} does not exist")
    if not root.is_dir():
        raise StoreError(f"results dir {str(root)!r} is not a folder")
    if not os.access(root, os.R_OK | os.X_OK):
        raise StoreError(f"results dir {str(root)!r} is not readable")
    studies, unreadable = [], []
    for folder in study_folders(root):
        records, bad = [], []
        for _path, rec in Store(folder).iter_records():
            if isinstance(rec, KDBenchError):
                bad.append(str(rec))
            else:
                records.append(rec)
        unreadable += bad
        if not records:
            continue
        rel = folder.relative_to(root).as_posix()
        name = root.resolve().name if rel == "." else rel
        ids = {r["run_id"] for r in records}
        studies.append(Study(name, folder, records, bad, load_records(folder, warn=False),
                             _trajectories(Store(folder)),
                             [c for c in (chosen or []) if c in ids]))
    if not studies:
        what = f"{len(unreadable)} unreadable (first: {unreadable[0]})" if unreadable else \
            "none found in runs/ or in study folders */runs/"
        raise StoreError(f"no run records in results dir {str(root)!r}: {what}")
    return studies


def table_records(results_dir: str | Path) -> Any:
    """The records ``kdbench table`` tabulates: the store's own ``runs/``, or, for a folder of
    studies (the repository's ``results/``), every study's with a ``study`` column naming its
    folder, so no cell pools two studies. A folder with neither is a KDBenchError."""
    import pandas as pd

    root = Path(results_dir)
    if (root / "runs").is_dir() or not root.is_dir():
        df = load_records(root)
        df.attrs["studies"] = []
        return df
    folders = study_folders(root)
    frames = []
    for folder in folders:
        df = load_records(folder)
        if not df.empty:
            df.insert(0, "study", folder.relative_to(root).as_posix())
            frames.append(df)
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    # a layout that reads more than the rows (MI caches, manifests) can do so for one study
    df.attrs["results_dir"] = str(folders[0]) if len(frames) == 1 else str(root)
    df.attrs["studies"] = [str(f) for f in folders]
    return df


def _trajectories(store: Store) -> list[dict[str, Any]]:
    """The manifests of the study's teacher trajectories (unreadable ones left out)."""
    out = []
    if not store.teachers.is_dir():
        return out
    for folder in sorted(store.teachers.iterdir()):
        path = folder / "manifest.json"
        if not path.is_file():
            continue
        try:
            manifest = read_json(path, "manifest")
        except (KDBenchError, OSError):
            continue
        if isinstance(manifest, dict):
            out.append(manifest)
    return out
