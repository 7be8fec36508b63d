"""Built-in figures of ``kdbench report`` as ``report_figure`` plugins.

Each factory imports its module when the report asks for it, so listing the plugins does not
load pandas or the MI code.
"""

from __future__ import annotations

from typing import Any

from ..hookspecs import hookimpl


def checkpoint_curve(study: Any) -> list[Any]:
    """Student top-1 against the teacher checkpoint epoch, per teacher–student pair."""
    from .figures import checkpoint_curve as draw

    return draw(study)


def information_plane(study: Any) -> list[Any]:
    """I(X;T) against I(T;Y) along each teacher trajectory with MI estimates."""
    from .figures import information_plane as draw

    return draw(study)


def robustness(study: Any) -> list[Any]:
    """Student accuracy against label-noise rate or imbalance ratio, per method."""
    from .figures import robustness_curves as draw

    return draw(study)


def training_curves(study: Any) -> list[Any]:
    """Test metric per epoch of chosen runs, and each one's loss terms per epoch."""
    from .figures import training_curves as draw

    return draw(study)


@hookimpl
def register_report_figures(register):
    for fn in (checkpoint_curve, information_plane, robustness, training_curves):
        register(fn.__name__, fn)
