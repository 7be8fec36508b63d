"""Built-in teacher-source plugin."""

from __future__ import annotations

from ..hookspecs import hookimpl
from . import sources


@hookimpl
def register_teacher_sources(register):
    register("full", sources.full)
    register("intermediate", sources.intermediate)
