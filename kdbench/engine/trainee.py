"""A trainee: one model being trained, with its distiller (connectors), stages, optimisers and
per-epoch histories; what the engine's loop trains and its resume state holds."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ..losses import Distiller
from ..models import KDModel
from ..stages.base import Stage, loss_stages, main_stage


@dataclass
class Trainee:
    """One model being trained: its distiller (connectors), stages and per-epoch histories.

    Without ``stages`` it gets the loss's own stages and a main stage from ``recipe``.
    ``history`` has one row per epoch of the run (the timeline stages); each extra stage's
    rows are in ``stage_history[name]``.
    """

    name: str
    model: KDModel
    distiller: Distiller
    recipe: Any
    stages: list[Stage] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    stage_history: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: lockstep: this trainee's global random state between its steps (None: use the global one)
    rng: dict[str, Any] | None = None
    #: lockstep: where this trainee's resumable state goes (one file per run, as when alone)
    state_path: Path | None = None
    #: lockstep: what that file is bound to (its run id and config digest), saved in it and
    #: required of it when resumed
    state_bind: dict[str, Any] | None = None
    #: lockstep with isolated failures: the exception that stopped this trainee
    error: BaseException | None = None
    online: bool = False
    #: training time and images over every attempt (kept in the resume file, so an
    #: interrupted and resumed run accounts for all of its work)
    spent: dict[str, float] = field(default_factory=lambda: {
        "train_seconds": 0.0, "train_images": 0, "extra_seconds": 0.0, "extra_images": 0})
    #: a distributed run: each optimiser step first averages the gradients over the ranks
    averaged: bool = False
    #: fp16 on CUDA: the gradient scaler (torch.amp.GradScaler) of every step; None: none
    scaler: Any = None

    def __post_init__(self) -> None:
        if not self.stages:
            self.stages = loss_stages(self.model, self.distiller, self.recipe) + [
                main_stage(self.model, self.distiller, self.recipe, online=self.online)]
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ConfigError(f"{self.name}: two stages share a name in {names}")
        self.optimizers: dict[str, torch.optim.Optimizer] = {}

    @property
    def extra(self) -> list[Stage]:
        return [s for s in self.stages if not s.timeline]

    @property
    def timeline(self) -> list[Stage]:
        return [s for s in self.stages if s.timeline]

    @property
    def epochs(self) -> int:
        """The run's epochs: the sum of the timeline stages'."""
        return sum(s.epochs for s in self.timeline)

    def stage_at(self, epoch: int) -> tuple[Stage, int]:
        """The timeline stage of the run's (0-based) ``epoch`` and the epoch within it."""
        start = 0
        for stage in self.timeline:
            if epoch < start + stage.epochs:
                return stage, epoch - start
            start += stage.epochs
        raise IndexError(f"epoch {epoch} is past the {start} epochs of {self.name}")

    def optimizer(self, stage: Stage) -> torch.optim.Optimizer:
        if stage.name not in self.optimizers:
            optimizer = stage.make_optimizer()
            if self.averaged:
                from .distributed import AveragedOptimizer

                optimizer = AveragedOptimizer(optimizer)
            self.optimizers[stage.name] = optimizer
        return self.optimizers[stage.name]

    def start_epoch(self, stage: Stage, lr: float) -> None:
        """Set the stage's optimiser to ``lr`` for the coming epoch, first replacing it by a
        fresh one where the stage's ``reset_optimizer`` rule says so (InDistill's reference
        builds a new Adam every epoch). A resumed run reloads the saved optimiser and applies
        the same rule, so it trains as an uninterrupted one."""
        current = self.optimizers.get(stage.name)
        if current is not None and stage.reset_due(current, lr):
            del self.optimizers[stage.name]
        for group in self.optimizer(stage).param_groups:
            group["lr"] = lr

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "distiller": self.distiller.state_dict(),
                "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                "history": self.history, "stage_history": self.stage_history,
                "spent": dict(self.spent),
                **({"scaler": self.scaler.state_dict()} if self.scaler is not None else {})}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.distiller.load_state_dict(state["distiller"])
        stages = {s.name: s for s in self.stages}
        for name, opt_state in state["optimizers"].items():
            self.optimizer(stages[name]).load_state_dict(opt_state)
        self.history = list(state["history"])
        self.stage_history = {k: list(v) for k, v in state["stage_history"].items()}
        self.spent.update(state.get("spent", {}))
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
