"""Built-in figures of ``kdbench report`` as ``report_figure`` plugins.

Each is found by name through the registry: on the report page by its registered name, as a
file (a study's ``figures:``) by its plot name (:class:`~kdbench.report.figures.ReportFigure`).
Each function imports its module when the figure is asked for, so listing the plugins does not
load pandas or the MI code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..hookspecs import hookimpl
from .figures import ReportFigure


def checkpoint_curve(study: Any) -> list[Any]:
    """Student top-1 against the teacher checkpoint epoch, per teacher–student pair."""
    from .checkpoint import checkpoint_curve_figures

    return checkpoint_curve_figures(study)


def save_checkpoint_curve(df: Any, path: str | Path, **options: Any) -> Any:
    """The checkpoint curve as a PNG or PDF (a twin axis for the teacher's accuracy)."""
    from .checkpoint import checkpoint_curve

    return checkpoint_curve(df, path, **options)


def information_plane(study: Any) -> list[Any]:
    """I(X;T) against I(T;Y) along each teacher trajectory with MI estimates."""
    from .selection import information_plane_figures

    return information_plane_figures(study)


def robustness(study: Any) -> list[Any]:
    """Student accuracy against label-noise rate or imbalance ratio, per method."""
    from .robustness import robustness_figures

    return robustness_figures(study)


def save_robustness(df: Any, path: str | Path, **options: Any) -> Any:
    """Accuracy against severity as a PNG or PDF (error bars: the std over seeds)."""
    from .robustness import robustness_plot

    return robustness_plot(df, path, **options)


def training_curves(study: Any) -> list[Any]:
    """Test metric per epoch of chosen runs, and each one's loss terms per epoch."""
    from .curves import training_curve_figures

    return training_curve_figures(study)


def save_training_curves(df: Any, path: str | Path, *, runs: list[str],
                         **options: Any) -> Any:
    """The curves of ``runs`` (ids or unique prefixes) of the records' store."""
    from .curves import find_records, plot_curves

    return plot_curves(find_records(df.attrs["results_dir"], runs), path, **options)


#: name -> what the report page draws, and the file form (plot name, writer) where there is one
FIGURES = {
    "checkpoint_curve": ReportFigure(checkpoint_curve, "checkpoint-curve", save_checkpoint_curve),
    "information_plane": ReportFigure(information_plane),
    "robustness": ReportFigure(robustness, "robustness", save_robustness),
    "training_curves": ReportFigure(training_curves, "curves", save_training_curves),
}


@hookimpl
def register_report_figures(register):
    for name, figure in FIGURES.items():
        register(name, figure, description=figure.page.__doc__.splitlines()[0])
