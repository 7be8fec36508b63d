"""Built-in MI-estimator plugin (estimators arrive with the MI issue)."""

from __future__ import annotations

from ..hookspecs import hookimpl


@hookimpl
def register_mi_estimators(register):
    return None
