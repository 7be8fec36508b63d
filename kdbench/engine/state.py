"""Resume state: the full training state of the trainees (models, distillers, optimisers,
histories, time spent and random streams), written atomically after every epoch of every stage
and read back when a run starts, so an interrupted run continues where it stopped and trains
as an uninterrupted one would.

A state file is bound to what it was saved for (``bind``: a run's id and config digest, a
teacher trajectory's key and spec digest) and is checked when read: the binding, ``0 ≤ epoch ≤
epochs``, one entry per trainee, and each entry's keys and tensor shapes. A file that fails is
handled as a damaged one: set aside with a line naming it, and training starts afresh.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..device import rng_state, set_rng_state
from ..errors import ConfigError
from ..store import load_resume, reject_resume, save_resume
from . import teacher_bn
from .trainee import Trainee

#: what every trainee's entry in a state file holds
ENTRY_KEYS = ("model", "distiller", "optimizers", "history", "stage_history")


def state_problem(state: Any, trainees: list[Trainee], bind: dict[str, Any] | None) -> str | None:
    """Why ``state`` cannot be the saved state of ``trainees`` (bound to ``bind``); None when
    it can."""
    if not isinstance(state, dict) or not isinstance(state.get("trainees"), list):
        return "it is not a training state"
    if bind is not None and state.get("bind") != bind:
        saved = state.get("bind")
        return ("it was saved by another run" + (f" ({saved.get('run_id') or saved.get('key')})"
                                                 if isinstance(saved, dict) else
                                                 " (it names none)"))
    epoch = state.get("epoch")
    epochs = trainees[0].epochs if trainees else 0
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= epochs:
        return f"its epoch {epoch!r} is not in 0..{epochs}"
    if len(state["trainees"]) != len(trainees):
        return (f"it holds {len(state['trainees'])} trainee(s), the run trains "
                f"{len(trainees)}")
    for trainee, entry in zip(trainees, state["trainees"]):
        if not isinstance(entry, dict) or any(k not in entry for k in ENTRY_KEYS):
            return f"a trainee's entry lacks some of {', '.join(ENTRY_KEYS)}"
        if not isinstance(entry["history"], list) or len(entry["history"]) != epoch:
            return f"its history does not have the {epoch} epoch(s) it says were trained"
        for part, module in (("model", trainee.model), ("distiller", trainee.distiller)):
            why = _shapes(entry[part], module.state_dict(), part)
            if why:
                return why
        names = {s.name for s in trainee.stages}
        if not isinstance(entry["optimizers"], dict) or set(entry["optimizers"]) - names:
            return "its optimisers are not those of the run's stages"
    return None


def _shapes(saved: Any, expected: dict[str, Any], part: str) -> str | None:
    if not isinstance(saved, dict) or set(saved) != set(expected):
        return f"its {part} has other parameters than the run's"
    for name, value in expected.items():
        if isinstance(value, torch.Tensor) and (not isinstance(saved[name], torch.Tensor)
                                                or saved[name].shape != value.shape):
            return f"its {part} parameter {name} has another shape"
    return None


def _load(path: Path, trainees: list[Trainee], bind: dict[str, Any] | None,
          device: torch.device) -> dict[str, Any] | None:
    state = load_resume(path, device)
    if state is None:
        return None
    why = state_problem(state, trainees, bind)
    if why is not None:
        reject_resume(path, why)
        return None
    return state


def load_state(trainees: list[Trainee], state_path: Path | None, device: torch.device,
               own_streams: bool, bind: dict[str, Any] | None = None,
               teacher: torch.nn.Module | None = None) -> int:
    """Restore saved training state (one file for all, bound to ``bind``, or one per trainee,
    bound to its ``state_bind``); the run's epoch to resume from. Trainees without a saved
    state start afresh, which is only consistent while the others are still before the run's
    first epoch. ``teacher``: a teacher whose BatchNorm buffers move while it teaches
    (``teacher.bn=checkpointkd``), restored from the state."""
    if state_path is not None:
        state = _load(state_path, trainees, bind, device)
        if state is None:
            return 0
        _restore_teacher(teacher, state, state_path)
        saved = list(zip(trainees, state["trainees"]))
        epochs = {int(state["epoch"])}
    else:
        saved, epochs = [], set()
        for t in trainees:
            state = _load(t.state_path, [t], t.state_bind, device) \
                if t.state_path is not None else None
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
               bind: dict[str, Any] | None = None,
               teacher: torch.nn.Module | None = None) -> None:
    """Write the trainees' state as of the end of the run's ``epoch`` (one file for all, bound
    to ``bind``, or, without ``state_path``, one per trainee that has a ``state_path`` and has
    not failed, bound to its ``state_bind``); ``teacher``: its BatchNorm buffers too."""
    def state(t: Trainee) -> dict[str, Any]:
        s = t.state_dict()
        # the random stream too, so that a resumed run draws what an uninterrupted one would
        s["rng"] = t.rng if own_streams else rng_state(device)
        return s

    extra = {"teacher_buffers": teacher_bn.buffers(teacher)} if teacher is not None else {}
    if state_path is not None:
        save_resume({"epoch": epoch, "bind": bind, "trainees": [state(t) for t in trainees],
                     **extra},
                    state_path)
        return
    for t in trainees:
        if t.state_path is not None and t.error is None:
            save_resume({"epoch": epoch, "bind": t.state_bind, "trainees": [state(t)],
                         **extra}, t.state_path)


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
