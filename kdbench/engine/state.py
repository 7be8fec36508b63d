"""Resume state: the full training state of the trainees (models, distillers, optimisers,
histories, time spent and random streams), written atomically after every epoch of every stage
and read back when a run starts, so an interrupted run continues where it stopped and trains
as an uninterrupted one would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..device import rng_state, set_rng_state
from ..errors import ConfigError
from ..store import load_resume, save_resume
from . import teacher_bn
from .trainee import Trainee


def load_state(trainees: list[Trainee], state_path: Path | None, device: torch.device,
               own_streams: bool, teacher: torch.nn.Module | None = None) -> int:
    """Restore saved training state (one file for all, or one per trainee); the run's epoch to
    resume from. Trainees without a saved state start afresh, which is only consistent while
    the others are still before the run's first epoch. ``teacher``: a teacher whose BatchNorm
    buffers move while it teaches (``teacher.bn=checkpointkd``), restored from the state."""
    if state_path is not None:
        state = load_resume(state_path, device)
        if state is None:
            return 0
        _restore_teacher(teacher, state, state_path)
        saved = list(zip(trainees, state["trainees"]))
        epochs = {int(state["epoch"])}
    else:
        saved, epochs = [], set()
        for t in trainees:
            state = load_resume(t.state_path, device) if t.state_path is not None else None
            if state is None:
                epochs.add(0)
            else:
                saved.append((t, state["trainees"][0]))
                epochs.add(int(state["epoch"]))
                _restore_teacher(teacher, state, t.state_path)
    if len(epochs) > 1:
        raise ConfigError(f"lockstep trainees saved at different epochs {sorted(epochs)}: resume "
                          "them separately")
    for trainee, s in saved:
        trainee.load_state_dict(s)
        rng = s.get("rng")
        if rng is not None:
            if own_streams:
                trainee.rng = rng
            else:
                set_rng_state(rng, device)
    return epochs.pop() if epochs else 0


def save_state(trainees: list[Trainee], epoch: int, state_path: Path | None,
               device: torch.device, own_streams: bool,
               teacher: torch.nn.Module | None = None) -> None:
    """Write the trainees' state as of the end of the run's ``epoch`` (one file for all, or,
    without ``state_path``, one per trainee that has a ``state_path`` and has not failed)."""
    def state(t: Trainee) -> dict[str, Any]:
        s = t.state_dict()
        # the random stream too, so that a resumed run draws what an uninterrupted one would
        s["rng"] = t.rng if own_streams else rng_state(device)
        return s

    extra = {"teacher_buffers": teacher_bn.buffers(teacher)} if teacher is not None else {}
    if state_path is not None:
        save_resume({"epoch": epoch, "trainees": [state(t) for t in trainees], **extra},
                    state_path)
        return
    for t in trainees:
        if t.state_path is not None and t.error is None:
            save_resume({"epoch": epoch, "trainees": [state(t)], **extra}, t.state_path)


def _restore_teacher(teacher: torch.nn.Module | None, state: dict[str, Any], path: Any) -> None:
    """A teacher whose BatchNorm statistics move as it teaches gets them back from the state."""
    if teacher is None:
        return
    saved = state.get("teacher_buffers")
    if not isinstance(saved, dict):
        raise ConfigError(f"{path}: the state has no teacher BatchNorm buffers, which "
                          f"teacher.bn=checkpointkd needs to resume; remove it to train from "
                          f"the start")
    missing, unexpected = teacher.load_state_dict(saved, strict=False)
    if unexpected:
        raise ConfigError(f"{path}: teacher buffers {unexpected[:3]} do not fit the teacher")
