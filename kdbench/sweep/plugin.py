"""Built-in executor plugin: inline, local and slurm."""

from __future__ import annotations

from ..hookspecs import hookimpl
from .executors import InlineExecutor, LocalExecutor
from .slurm import SlurmExecutor


@hookimpl
def register_executors(register):
    register("inline", InlineExecutor)
    register("local", LocalExecutor)
    register("slurm", SlurmExecutor)
