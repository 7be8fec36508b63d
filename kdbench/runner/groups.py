"""Lockstep groups: which runs of a ``run_many`` can train together (one data pass and one
teacher forward per batch feeding all their students), and in which order."""

from __future__ import annotations

import dataclasses

from ..config import RunConfig, canonical_json, run_id
from ..store import Store, load_resume
from .record import state_binding


def _group_key(cfg: RunConfig) -> str:
    """What runs must share to train in lockstep: all but the student, its loss and teacher."""
    d = cfg.to_dict()
    for k in ("student", "student_weights", "loss", "teacher", "preset"):
        d.pop(k)
    d.pop("student_options", None)  # the student's own options are the student's
    return canonical_json(d)


def _teacher_key(cfg: RunConfig) -> str | None:
    """The teacher a run needs, and whether it taps its features (None: no teacher)."""
    from ..losses import entry

    if cfg.teacher is None:
        return None
    # a feature forward and a logit forward may round differently: keep them apart
    return canonical_json([dataclasses.asdict(cfg.teacher), bool(entry(cfg.loss.name)
                                                                  .feature_taps)])


def lockstep_groups(configs: list[RunConfig]) -> list[list[int]]:
    """Indices of resolved ``configs`` that can train together, in first-seen order.

    Runs group when they share everything but the student, its weights and the loss, and use
    the same teacher with the same kind of forward (logits or features); runs without a
    teacher join the first group of their kind that has one (the teacher forward does not
    touch them).
    """
    groups: dict[tuple[str, str | None], list[int]] = {}
    loners: list[int] = []
    for i, cfg in enumerate(configs):
        if cfg.teacher is None:
            loners.append(i)
        else:
            groups.setdefault((_group_key(cfg), _teacher_key(cfg)), []).append(i)
    for i in loners:
        key = _group_key(configs[i])
        target = next((k for k in groups if k[0] == key), (key, None))
        groups.setdefault(target, []).append(i)
    return sorted(groups.values(), key=lambda g: g[0])


def by_resume_epoch(cfgs: list[RunConfig], force: bool) -> list[list[RunConfig]]:
    """Split a group by the epoch each run would resume from (interrupted runs' state files)."""
    if len(cfgs) == 1:
        return [cfgs]
    by_epoch: dict[int, list[RunConfig]] = {}
    for cfg in cfgs:
        state = None if force else load_resume(Store(cfg.results_dir).state_path(run_id(cfg)))
        epoch = state.get("epoch") if isinstance(state, dict) else 0
        # a state that will not be resumed (checked then) groups as a fresh start here
        fits = isinstance(state, dict) and isinstance(epoch, int) and epoch >= 0 \
            and state.get("bind") == state_binding(cfg, run_id(cfg))
        by_epoch.setdefault(epoch if fits else 0, []).append(cfg)
    return list(by_epoch.values())
