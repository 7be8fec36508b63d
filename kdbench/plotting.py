"""Saving figures reproducibly: the same data give the same file, byte for byte (no software
version or creation date written into it), so committed figures can be checked against the
records that made them."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def save_figure(fig: Any, path: str | Path, dpi: int = 150) -> Path:
    """Write a matplotlib figure to ``path`` (PNG, PDF or SVG by suffix) and close it."""
    import matplotlib
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    metadata: dict[str, Any] = {}
    if suffix == ".png":
        metadata = {"Software": None}
    elif suffix == ".pdf":
        metadata = {"Creator": None, "Producer": None, "CreationDate": None}
    elif suffix == ".svg":
        metadata = {"Creator": None, "Date": None}
    with matplotlib.rc_context({"svg.hashsalt": "kdbench"}):
        fig.savefig(path, dpi=dpi, metadata=metadata)
    plt.close(fig)
    return path
