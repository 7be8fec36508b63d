"""Sweeps: grid expansion, run de-duplication and the executor plugins (arrive with the sweep issue)."""

from __future__ import annotations

from .hookspecs import hookimpl


@hookimpl
def register_executors(register):
    return None
