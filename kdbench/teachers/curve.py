"""The checkpoint curve of Checkpoint KD: one student per saved teacher checkpoint.

``--teacher intermediate --teacher-epoch all`` runs :func:`run_each_checkpoint`; every student
is an ordinary run with its own record (``teacher.epoch`` set), so the curve is just the records
and reruns skip the points already done.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from ..config import RunConfig, resolve
from ..errors import ConfigError
from ..store import Store
from . import trajectory as traj


def saved_epochs(config: RunConfig) -> list[int]:
    """The checkpoint epochs of the config's teacher trajectory: the stored trajectory's if it
    exists, else the ones its training will save."""
    cfg = resolve(config)
    if cfg.teacher is None:
        raise ConfigError(f"loss {cfg.loss.name!r} uses no teacher, so there are no teacher "
                          f"checkpoints to run")
    existing = traj.find(Store(cfg.results_dir), traj.trajectory_spec(cfg))
    if existing is not None:
        return existing.epochs if existing.done else list(existing.manifest["save_epochs"])
    return cfg.teacher.checkpoint_epochs()


def run_each_checkpoint(config: RunConfig, *, force: bool = False, progress: bool = True,
                        on_record: Callable[[dict[str, Any]], None] | None = None,
                        changed: str = "ask") -> list[dict[str, Any]]:
    """Distil one student from every saved checkpoint of the teacher trajectory, in epoch order
    (the first run trains the trajectory, the others reuse it); ``changed`` as for
    :func:`kdbench.runner.run`."""
    from ..runner import run

    t = config.teacher
    if t is None or t.source != "intermediate":
        raise ConfigError(f"--teacher-epoch all needs --teacher intermediate, got "
                          f"{t.source if t else None!r}")
    if t.options.get("epoch_frac") is not None:
        raise ConfigError("give --teacher-epoch all or --teacher-epoch-frac, not both")
    records = []
    for epoch in saved_epochs(config):
        one = copy.deepcopy(config)
        assert one.teacher is not None
        one.teacher.epoch = epoch
        record = run(one, force=force, progress=progress, changed=changed)
        records.append(record)
        if on_record is not None:
            on_record(record)
    return records
