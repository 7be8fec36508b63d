"""Figures: what the report page shows, the figure registry, and writing figure files.

A figure is a ``report_figure`` plugin (``register_report_figures``): ``factory(study) ->
list[Figure]`` draws what one study of a results store holds as inline SVG for the report page
(an empty list where it has nothing to draw). A third-party figure does the same and may use
:func:`kdbench.report.svg.chart`, or any markup that needs nothing from the network (an
``<img>`` with a ``data:`` URI is fine).

A figure that can also be written to a file registers a :class:`ReportFigure`: the page's
factory plus its ``plot`` name and ``save(df, path, **options)``. A study's ``figures:``
(``plot: checkpoint-curve``) find it by that name through the registry (:func:`find_plot`).

Figure files are reproducible (:func:`save_figure`): the same data give the same file, byte
for byte (no software version or creation date written into it), so committed figures can be
checked against the records that made them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..plugins import get_registry

#: the suffixes of figure files
PLOT_FORMATS = (".png", ".pdf")
#: the student metric the report page's figures show
METRIC = "top1_last"


@dataclass
class Figure:
    """A figure of the report: its title, its markup, a caption saying what it shows."""

    title: str
    body: str
    caption: str = ""


@dataclass(frozen=True)
class ReportFigure:
    """A registered figure: called with a study it draws the page's figures
    (``page(study) -> list[Figure]``); where it has a file form, ``save(df, path, **options)``
    writes it from the records' DataFrame (:func:`kdbench.report.records.load_records`) as PNG
    or PDF, under the name ``plot`` (a study's ``plot:``)."""

    page: Callable[[Any], list[Figure]]
    plot: str | None = None
    save: Callable[..., Any] | None = None

    def __call__(self, study: Any) -> list[Figure]:
        return self.page(study)


def plots() -> dict[str, ReportFigure]:
    """plot name -> its registered figure, in the registry's order."""
    out = {}
    for entry in get_registry().entries("report_figure"):
        if isinstance(entry.factory, ReportFigure) and entry.factory.plot:
            out[entry.factory.plot] = entry.factory
    return out


def find_plot(plot: str, context: str = "") -> ReportFigure:
    """The figure registered under the plot name ``plot``; an unknown name is a ConfigError
    (prefixed with ``context``) listing the known ones."""
    known = plots()
    if plot not in known:
        raise ConfigError(f"{context}unknown plot {plot!r} (valid: {', '.join(known)})")
    return known[plot]


def check_plot_file(out: str | Path) -> Path:
    """``out`` as a Path if it names a figure file kdbench writes (:data:`PLOT_FORMATS`)."""
    out = Path(out)
    if out.suffix.lower() not in PLOT_FORMATS:
        raise ConfigError(f"plot file {str(out)!r} must end in {' or '.join(PLOT_FORMATS)}")
    return out


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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
