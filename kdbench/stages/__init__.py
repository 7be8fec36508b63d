"""Training stages: a run is an ordered list of them (:mod:`.base`: the :class:`Stage`, the
main stage, a loss's own stages, warm-up plugins and their order), each with its optimiser and
learning-rate schedule (:mod:`.optim`: the built-in optimiser and schedule plugins)."""

from __future__ import annotations

from .base import (
    COMMON_OPTIONS,
    COMMON_TYPES,
    Batch,
    Stage,
    StageContext,
    StageLoss,
    arrange,
    build_warmups,
    distiller_loss,
    loss_stages,
    main_stage,
    stage_from_options,
)
from .optim import Schedule, constant, make_optimizer, make_schedule

__all__ = ["COMMON_OPTIONS", "COMMON_TYPES", "Batch", "Schedule", "Stage", "StageContext",
           "StageLoss", "arrange", "build_warmups", "constant", "distiller_loss", "loss_stages",
           "main_stage", "make_optimizer", "make_schedule", "stage_from_options"]
