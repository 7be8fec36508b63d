"""The runner: ``run(config) -> record`` and ``run_many(configs)``.

How a run's config becomes a record is :mod:`.run` (resolve, check, build every model,
distiller and evaluator once, train, finish) and :mod:`.record` (what the record holds at each
step). :mod:`.checks` holds the checks made before any training, :mod:`.groups` which runs of
``run_many`` train in lockstep.
"""

from __future__ import annotations

from .groups import lockstep_groups
from .run import run, run_many

__all__ = ["lockstep_groups", "run", "run_many"]
