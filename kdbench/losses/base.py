"""The loss-plugin contract: a :class:`Distiller` built from a :class:`DistillContext`.

The engine computes ``w_ce · CE(student, y) + Σ_i w_i · term_i`` where the distiller returns the
unweighted terms ``{name_i: term_i}`` and every ``w_<name_i>`` comes from the loss's resolved
weights. Connectors (regressors, embeddings) are the distiller's own parameters: they are trained
with the student, counted in the record, and never exported with the student.

A distiller may also declare stages of its own that run before the main one (RepDistiller's init
stages: AB, FT's paraphraser, FSP, FitNet's hint stage): :meth:`Distiller.stages` returns them as
:class:`LossStage` (epochs, the terms to minimise, the parameters, whether the student trains);
the engine runs each with its own optimiser at a constant learning rate (see
:mod:`kdbench.stages`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..models.base import Features, KDModel
from ..spec import TAPS

__all__ = ["STEP_ARGUMENTS", "TAPS", "DistillContext", "Distiller", "LossStage"]

#: The forward arguments newer than the first loss plugins, passed when a forward takes them.
STEP_ARGUMENTS = frozenset({"stage", "batch", "views"})


@dataclass
class DistillContext:
    """Everything a loss factory may need to size its connectors, known before training.

    ``train_labels`` (the training split's labels, indexed like the loader's sample indices)
    lets CRD draw negatives from other classes. ``epochs`` is the run's epoch count
    (``recipe.epochs``), for losses whose weights follow a schedule over training (BSS): the
    main stage's length unless a warm-up takes epochs from the run's budget (the distiller is
    built before the warm-ups, so it cannot know their length).
    """

    student: KDModel
    teacher: KDModel | None
    num_classes: int
    input_shape: tuple[int, int, int]
    num_train: int
    weights: dict[str, float] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    train_labels: torch.Tensor | None = None
    epochs: int | None = None


@dataclass
class LossStage:
    """A stage a loss runs before its main one: ``epochs`` epochs minimising the unweighted sum
    of ``loss(student, teacher, target, index)``'s terms over ``parameters`` (and the student's
    own when ``trains_student``), at ``lr`` (None: the recipe's base lr)."""

    name: str
    epochs: int
    loss: Callable[..., dict[str, torch.Tensor]]
    parameters: list[nn.Parameter]
    trains_student: bool = True
    lr: float | None = None


class Distiller(nn.Module):
    """Base class of every loss plugin's module.

    Subclasses set ``taps`` (subset of :data:`TAPS`) and ``needs_teacher`` and implement
    ``forward(student, teacher, target, index, epoch) -> {term name: unweighted tensor}``;
    ``epoch`` counts from 0 within the main stage. A forward that also accepts ``stage`` (the
    stage's name), ``batch`` (a :class:`kdbench.stages.Batch`: the inputs, labels, indices) or
    ``views`` (Features of the extra augmented views named in ``views``) gets them.
    """

    taps: frozenset[str] = frozenset({"logits"})
    needs_teacher: bool = True
    #: augmentations (registry names) of extra views of each batch the loss needs
    views: tuple[str, ...] = ()

    def __init__(self, ctx: DistillContext):
        super().__init__()
        self.weights = dict(ctx.weights)
        self.options = dict(ctx.options)

    def forward(self, student: Features, teacher: Features | None, target: torch.Tensor,
                index: torch.Tensor | None = None, epoch: int = 0) -> dict[str, torch.Tensor]:
        raise NotImplementedError  # pragma: no cover

    def stages(self) -> list[LossStage]:
        """The loss's own stages before the main one (none by default)."""
        return []

    def main_parameters(self) -> list[nn.Parameter]:
        """The distiller's own parameters trained with the student in the main stage."""
        return [p for p in self.parameters() if p.requires_grad]

    @property
    def needs_features(self) -> bool:
        return bool(self.taps - {"logits", "index"})

    def connector_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    @property
    def step_arguments(self) -> frozenset[str]:
        """Which of the newer forward arguments (``stage``, ``batch``, ``views``) this
        distiller's forward accepts; the engine passes only those."""
        import inspect

        params = inspect.signature(self.forward).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return STEP_ARGUMENTS
        return frozenset(k for k in STEP_ARGUMENTS if k in params)


# ============================== helpers for plugins =============================================


@torch.no_grad()
def probe(model: nn.Module, input_shape: tuple[int, int, int]) -> Features:
    """The model's features for a batch of two zero images, in eval mode (shapes for connectors).

    Zeros rather than noise so that probing consumes no random numbers (connector initialisation
    stays the same whatever is probed); eval mode so BatchNorm statistics are untouched.
    """
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    try:
        return model.features(torch.zeros(2, *input_shape, device=device))
    finally:
        model.train(was_training)


def require_teacher(ctx: DistillContext, loss: str) -> KDModel:
    if ctx.teacher is None:
        raise ConfigError(f"loss {loss!r} needs a teacher model to size its connectors")
    return ctx.teacher


def paired(student: list[torch.Tensor], teacher: list[torch.Tensor], loss: str,
           what: str = "stages") -> None:
    """Per-stage losses pair the student's and the teacher's stages shallow to deep."""
    if len(student) != len(teacher):
        raise ConfigError(f"loss {loss!r} pairs {what} one to one, but the student has "
                          f"{len(student)} and the teacher {len(teacher)}")


def option(options: dict[str, Any], name: str, loss: str, *, positive: bool = False,
           nonneg: bool = False, integer: bool = False) -> Any:
    """An option's value, checked (a bad value is a one-line ConfigError naming it)."""
    value = options[name]
    if integer and (not isinstance(value, (int, float)) or int(value) != value):
        raise ConfigError(f"loss {loss!r} option {name} must be an integer, got {value!r}")
    if positive and not value > 0:
        raise ConfigError(f"loss {loss!r} option {name} must be > 0, got {value!r}")
    if nonneg and not value >= 0:
        raise ConfigError(f"loss {loss!r} option {name} must be >= 0, got {value!r}")
    return int(value) if integer else value
