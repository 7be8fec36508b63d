"""Training stages: a run is an ordered list of them.

Each :class:`Stage` names what it trains, its optimiser and lr schedule, its epochs, the loss it
optimises (called with the epoch *within the stage* and the stage's name, so a curriculum knows
its phase), and the teacher view it sees. Three kinds make up a run, in this order:

1. *extra* stages, which run before the run's epochs and do not count in them: a warm-up stage
   plugin placed with ``within_budget=false`` and a loss's own init stage (RepDistiller's
   FitNet hint stage, AB, FT's paraphraser, FSP: :meth:`kdbench.losses.Distiller.stages`);
2. warm-ups that take their epochs from the run's budget (``within_budget=true``): the run's
   epochs 1..W are theirs (evaluated like any epoch, the data order that of those epochs);
3. the *main* stage: ``w_ce·CE + Σ w_i·term_i`` of the run's loss for the remaining epochs, with
   the recipe's optimiser and schedule (which counts the run's epochs, so milestones keep their
   meaning after a warm-up).

Warm-ups are plugins (``register_stages``, ``--warmup NAME[:k=v,...]``) and can be chained.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..models import Features
from .optim import Schedule, constant, make_optimizer, make_schedule

#: what a stage's loss is called with → unweighted terms {name: tensor}
StageLoss = Callable[..., dict[str, torch.Tensor]]

#: The options every warm-up stage takes (read by :func:`stage_from_options`), with defaults.
COMMON_OPTIONS: dict[str, Any] = {
    "epochs": None,  # None: the plugin's own default
    "within_budget": True,  # take the epochs from the run's budget (else extra epochs before it)
    "optimizer": None,  # None: the run's recipe optimiser
    "lr": None,  # None: the recipe's base lr
    "schedule": "constant",
    "label_weight": None,  # w_ce of the stage; None: no label term
}
COMMON_TYPES: dict[str, Any] = {"epochs": int | None, "optimizer": str | None,
                                "lr": float | None, "label_weight": float | None}


@dataclass
class Batch:
    """One training batch as a stage's loss sees it."""

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor
    views: list[torch.Tensor] = field(default_factory=list)


@dataclass
class Stage:
    """One stage of a trainee's training (see the module docstring)."""

    name: str
    epochs: int
    #: ``loss(student, teacher, batch, epoch, stage) -> {term: unweighted tensor}``
    loss: StageLoss
    #: trained by this stage's optimiser (the student's own included when it trains the student)
    parameters: list[nn.Parameter]
    lr: float
    optimizer: str = "sgd"
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    optimizer_options: dict[str, Any] = field(default_factory=dict)
    #: when the optimiser is re-created: "never", "lr_change" or "epoch"
    #: (:attr:`kdbench.config.Recipe.reset_optimizer`)
    reset_optimizer: str = "never"
    #: lr factor per epoch: of the run for timeline stages, within the stage for extra ones
    schedule: Schedule = field(default=constant(1))
    timeline: bool = False
    #: w_ce of the stage; None: no label term (and no CE computed)
    label_weight: float | None = None
    #: ``w_<term>`` of each term; None: terms are summed unweighted
    weights: dict[str, float] | None = None
    #: the student's forward: "features", "logits" or "none" (stage trains other parameters)
    student: str = "features"
    train_student: bool = True
    #: the teacher forward the stage needs: "features", "logits" or "none"
    teacher: str = "features"
    #: a transformed teacher (e.g. a pruned copy): ``view(teacher_features, batch) -> Features``
    teacher_view: Callable[[Features, Batch], Features] | None = None
    #: augmentations of the batch beyond the first (a loss's strong view), by registry name
    views: tuple[str, ...] = ()
    #: options as given, for the record
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ConfigError(f"stage {self.name!r} epochs must be >= 0, got {self.epochs}")
        if self.reset_optimizer not in ("never", "lr_change", "epoch"):
            raise ConfigError(f"stage {self.name!r} reset_optimizer {self.reset_optimizer!r} "
                              f"is unknown (valid: never, lr_change, epoch)")
        if self.epochs and not any(p.requires_grad for p in self.parameters):
            raise ConfigError(f"stage {self.name!r} trains no parameters (it needs a student, "
                              f"a connector or both)")

    def make_optimizer(self) -> torch.optim.Optimizer:
        return make_optimizer(self.optimizer, self.parameters, lr=self.lr,
                              momentum=self.momentum, nesterov=self.nesterov,
                              weight_decay=self.weight_decay, options=self.optimizer_options)

    def reset_due(self, optimizer: torch.optim.Optimizer, lr: float) -> bool:
        """Whether ``optimizer`` (the one of the epoch before) is to be replaced by a fresh one
        for an epoch at ``lr`` (see :attr:`reset_optimizer`)."""
        if self.reset_optimizer == "epoch":
            return True
        return self.reset_optimizer == "lr_change" and any(
            g["lr"] != lr for g in optimizer.param_groups)

    def describe(self) -> dict[str, Any]:
        """What the record says about the stage."""
        return {"name": self.name, "epochs": self.epochs, "timeline": self.timeline,
                "optimizer": self.optimizer, "lr": self.lr, "label_weight": self.label_weight,
                **({"reset_optimizer": self.reset_optimizer}
                   if self.reset_optimizer != "never" else {}),
                **({"options": self.options} if self.options else {})}


@dataclass
class StageContext:
    """What a stage plugin is built with: the run's models, loss, recipe and data shape."""

    student: nn.Module
    teacher: nn.Module | None
    distiller: nn.Module
    recipe: Any
    num_classes: int
    input_shape: tuple[int, int, int]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


# ============================== the main stage and a loss's own stages ==========================


def distiller_loss(distiller: nn.Module) -> StageLoss:
    """The main stage's loss: the distiller's forward, given only the newer arguments its
    signature accepts (:attr:`kdbench.losses.Distiller.step_arguments`)."""
    extras = distiller.step_arguments
    wants_index = "index" in getattr(distiller, "taps", ())

    def loss(student: Features, teacher: Features | None, batch: Batch, epoch: int,
             stage: str, views: list[tuple[Features, Features | None]] | None = None
             ) -> dict[str, torch.Tensor]:
        given = {"stage": stage, "batch": batch, "views": views}
        kw = {k: v for k, v in given.items() if k in extras and v is not None}
        return distiller(student, teacher, batch.y, batch.index if wants_index else None, epoch,
                         **kw)
    return loss


def main_stage(model: nn.Module, distiller: nn.Module, recipe: Any, *, epochs: int | None = None,
               online: bool = False) -> Stage:
    """``w_ce·CE + Σ w_i·term_i`` over the student and the distiller's main parameters with the
    recipe's optimiser and schedule, for ``epochs`` (default: the recipe's)."""
    weights = distiller.weights
    return Stage(
        name="main", epochs=recipe.epochs if epochs is None else epochs,
        loss=distiller_loss(distiller),
        parameters=list(model.parameters()) + list(distiller.main_parameters()),
        lr=recipe.lr, optimizer=recipe.optimizer, momentum=recipe.momentum,
        nesterov=recipe.nesterov, weight_decay=recipe.weight_decay,
        optimizer_options=dict(recipe.optimizer_options), schedule=make_schedule(recipe),
        reset_optimizer=recipe.reset_optimizer, timeline=True,
        label_weight=float(weights.get("w_ce", 1.0)), weights=weights,
        student="features" if distiller.needs_features else "logits",
        teacher=("none" if not distiller.needs_teacher and not online else
                 "features" if distiller.needs_features else "logits"),
        views=tuple(getattr(distiller, "views", ())))


def loss_stages(model: nn.Module, distiller: nn.Module, recipe: Any) -> list[Stage]:
    """The extra stages a loss declares (:meth:`Distiller.stages`), with the recipe's SGD
    momentum and weight decay at a constant lr, as RepDistiller runs its init stages."""
    out = []
    for s in distiller.stages():
        params = list(s.parameters)
        if s.trains_student:
            params = list(model.parameters()) + params
        out.append(Stage(
            name=s.name, epochs=s.epochs,
            loss=_unweighted(s.loss), parameters=params,
            lr=recipe.lr if s.lr is None else s.lr, optimizer=recipe.optimizer,
            momentum=recipe.momentum, nesterov=recipe.nesterov,
            weight_decay=recipe.weight_decay, optimizer_options=dict(recipe.optimizer_options),
            reset_optimizer=recipe.reset_optimizer,
            schedule=constant(s.epochs), timeline=False, label_weight=None, weights=None,
            student="features" if s.trains_student else "none", train_student=s.trains_student,
            teacher="features"))
    return out


def _unweighted(fn: Callable[..., dict[str, torch.Tensor]]) -> StageLoss:
    def loss(student, teacher, batch, epoch, stage, views=None):
        return fn(student, teacher, batch.y, batch.index)
    return loss


# ============================== warm-up stage plugins ===========================================


def stage_from_options(name: str, ctx: StageContext, options: dict[str, Any], *,
                       loss: StageLoss, parameters: list[nn.Parameter], default_epochs: int,
                       student: str = "features", teacher: str = "features",
                       teacher_view: Callable[[Features, Batch], Features] | None = None,
                       train_student: bool = True) -> Stage:
    """A warm-up :class:`Stage` from the common options (:data:`COMMON_OPTIONS`) and what the
    plugin decides itself (its loss, parameters, forwards, teacher view)."""
    r = ctx.recipe
    epochs = default_epochs if options.get("epochs") is None else int(options["epochs"])
    lr = r.lr if options.get("lr") is None else float(options["lr"])
    if not lr > 0:
        raise ConfigError(f"stage {name!r} lr must be > 0, got {lr}")
    optimizer = options.get("optimizer") or r.optimizer
    sched_name = options.get("schedule", "constant")
    from ..plugins import get

    schedule = get("schedule", sched_name).create(
        max(epochs, 1), milestones=[], step_size=max(epochs, 1), gamma=r.gamma)
    return Stage(name=name, epochs=epochs, loss=loss, parameters=parameters, lr=lr,
                 optimizer=optimizer, momentum=r.momentum, nesterov=r.nesterov,
                 weight_decay=r.weight_decay,
                 optimizer_options=dict(r.optimizer_options) if optimizer == r.optimizer else {},
                 reset_optimizer=r.reset_optimizer, schedule=schedule,
                 timeline=bool(options.get("within_budget", True)),
                 label_weight=options.get("label_weight"), weights=None, student=student,
                 train_student=train_student, teacher=teacher, teacher_view=teacher_view,
                 options=dict(options))


def build_warmups(items: list[dict[str, Any]], ctx: StageContext) -> list[Stage]:
    """The resolved ``warmup`` list as stages, each name made unique within the run."""
    from ..plugins import get

    out: list[Stage] = []
    for item in items:
        spec = get("stage", item["name"])
        options = {k: v for k, v in item.items() if k != "name"}
        made = spec.create(ctx, **options)
        for stage in made if isinstance(made, list) else [made]:
            taken = {s.name for s in out}
            base, k = stage.name, 2
            while stage.name in taken:
                stage.name = f"{base}#{k}"
                k += 1
            out.append(stage)
    return out


def arrange(warmups: list[Stage], loss_own: list[Stage], main: Stage) -> list[Stage]:
    """The run's stage order: extra warm-ups, the loss's own stages, budget warm-ups, main —
    with the main stage shortened by the budget warm-ups' epochs."""
    budget = sum(s.epochs for s in warmups if s.timeline)
    if budget >= main.epochs:
        raise ConfigError(f"the warm-up stages take {budget} of the run's {main.epochs} epochs, "
                          f"leaving none for the main stage (lower their epochs, set "
                          f"within_budget=false, or raise --epochs)")
    main.epochs -= budget
    return ([s for s in warmups if not s.timeline] + loss_own +
            [s for s in warmups if s.timeline] + [main])
