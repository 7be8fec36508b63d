"""The engine: trainees, the distillation step, the training loop and its resume state.

:mod:`.step` holds one distillation step on one screen (:func:`distill_step`: teacher forward,
student forward, loss terms, weighted sum, finite check, backward, update), and the two ways
several trainees share a batch, which wrap it: lockstep (:func:`train_step`, one teacher forward
for all) and an online cohort (:func:`online_step`, each member distilled from the others).
:mod:`.loop` holds :func:`fit` (extra stages, the run's epochs, evaluation, the save hook),
:mod:`.state` the resume state, :mod:`.trainee` what is trained, :mod:`.speed` the speed-only
model preparation.
"""

from __future__ import annotations

from .loop import FitOptions, fit
from .speed import prepared
from .state import load_state, save_state
from .step import (
    RunningSums,
    distill_step,
    frozen_norm_stats,
    online_step,
    own_rng,
    teacher_features,
    train_step,
)
from .trainee import Trainee

__all__ = ["FitOptions", "RunningSums", "Trainee", "distill_step", "fit", "frozen_norm_stats",
           "load_state", "online_step", "own_rng", "prepared", "save_state",
           "teacher_features", "train_step"]
