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

A built-in method registers itself beside its code with :func:`register_loss` (the fields
``register`` takes: paper, year, official repository, taps, default weights and options);
:mod:`kdbench.losses.catalogue` hands the whole :data:`CATALOGUE` to the ``register_losses`` hook,
the one third-party plugins implement. The helpers below (probing, option checks, the init-stage
and every-stage mixins) are shared by the method modules.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..models.base import Features, KDModel
from ..spec import TAPS

__all__ = ["CATALOGUE", "INIT_DEFAULTS", "REPDISTILLER", "STEP_ARGUMENTS", "TAPS", "Checked",
           "DistillContext", "Distiller", "EveryStage", "InitStage", "LossStage", "Temperature",
           "arch_key", "check_weights", "choice", "linear_warmup", "need_maps", "option",
           "paired", "pool_to_common", "probe", "probe_pair", "register_loss", "require_teacher",
           "shape_of", "stage_pairs"]

#: a temperature: a float or a 0-dim tensor (CTKD's learnable one)
Temperature = float | torch.Tensor

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


# ============================== registration beside the code ==================================

#: where the defaults of RepDistiller's thirteen methods come from (the CRD authors' benchmark
#: code, ``scripts/run_cifar_distill.sh`` and ``train_student.py``: ``-r`` is ``w_ce``, ``-b`` the
#: method's weight; several methods have older official code of their own, with other recipes)
REPDISTILLER = "https://github.com/HobbitLong/RepDistiller"

#: every built-in loss: name -> (factory, the fields ``register`` takes), filled by
#: :func:`register_loss` as the method modules are imported (:mod:`kdbench.losses.catalogue`
#: imports them all and registers the catalogue through the ``register_losses`` hook)
CATALOGUE: dict[str, tuple[Callable[..., Distiller], dict[str, Any]]] = {}


def register_loss(name: str, **fields: Any) -> Callable[[Any], Any]:
    """Class decorator: record a built-in loss under ``name`` in :data:`CATALOGUE`, with the
    fields the ``register`` callable takes (``description``, ``paper``, ``year``, ``repo``,
    ``family``, ``defaults``, ``taps``, ``finalize``, ...). A :class:`Checked` distiller
    registered without ``finalize`` gets its own (its checks then also run when a run is
    resolved). Third-party plugins call ``register`` in their own ``register_losses`` hook."""

    def decorate(factory: Any) -> Any:
        previous = CATALOGUE.get(name)
        if previous is not None and previous[0].__module__ != factory.__module__:
            raise ValueError(f"loss {name!r} is registered by {previous[0].__module__} and by "
                             f"{factory.__module__}")
        meta = dict(fields)
        if "finalize" not in meta and isinstance(factory, type) and issubclass(factory, Checked):
            meta["finalize"] = factory.finalize
        CATALOGUE[name] = (factory, meta)
        return factory

    return decorate


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


def choice(options: dict[str, Any], name: str, loss: str, choices: tuple[str, ...]) -> str:
    value = options[name]
    if value not in choices:
        raise ConfigError(f"loss {loss!r} option {name}={value!r} is not one of "
                          f"{', '.join(choices)}")
    return value


def check_weights(weights: dict[str, float], loss: str) -> None:
    """Every weight must be a number >= 0 (a negative weight would reward the term)."""
    for name, value in weights.items():
        if not isinstance(value, (int, float)) or not value >= 0:
            raise ConfigError(f"loss {loss!r} weight {name} must be >= 0, got {value!r}")


def arch_key(name: str | None) -> str:
    """An architecture name compared across projects: lower case, letters and digits only (the
    key of the per-pair tables: DKD's β, LS's values, ReviewKD's weights, FT's low-lr students)."""
    return re.sub(r"[^a-z0-9]", "", (name or "").lower())


def linear_warmup(epoch: int, warmup: int) -> float:
    """mdistiller's ``min(epoch / warmup, 1)`` with its 1-based epochs, for a 0-based ``epoch``:
    the first epoch gets 1/warmup of the term; ``warmup`` 0 means no warm-up."""
    return min((epoch + 1) / warmup, 1.0) if warmup > 0 else 1.0


def probe_pair(ctx: DistillContext, loss: str) -> tuple[Features, Features]:
    """The student's and the teacher's features on a probe batch (:func:`probe`)."""
    teacher = require_teacher(ctx, loss)
    return probe(ctx.student, ctx.input_shape), probe(teacher, ctx.input_shape)


def shape_of(t: torch.Tensor) -> tuple[int, ...]:
    """A feature map's shape without the batch dimension."""
    return tuple(t.shape[1:])


def need_maps(maps: list[torch.Tensor], role: str, what: str, loss: str) -> None:
    """A loss that needs feature maps the model does not give fails with a one-line error."""
    if not maps:
        raise ConfigError(f"loss {loss!r} needs the {role}'s {what}, but the model gives none "
                          f"(use a CIFAR-zoo model)")


def pool_to_common(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Average-pool the spatially larger of two feature maps to the other's size.

    RepDistiller's rule for AT, NST, FT, VID and FSP when the student's and the teacher's maps
    differ in resolution (it compares heights and pools to a square of the smaller height).
    """
    ha, hb = a.shape[2], b.shape[2]
    if ha > hb:
        a = F.adaptive_avg_pool2d(a, (hb, hb))
    elif ha < hb:
        b = F.adaptive_avg_pool2d(b, (ha, ha))
    return a, b


# ============================== shared distiller shapes =========================================


class Checked(Distiller):
    """A distiller whose weights and options are checked by :meth:`check`, both when it is built
    and, through :meth:`finalize`, when a run's configuration is resolved (before training)."""

    name = "?"

    @classmethod
    def check(cls, options: dict[str, Any]) -> None:
        """Raise a one-line ConfigError for a bad option value."""

    @classmethod
    def finalize(cls, weights: dict[str, float], options: dict[str, Any], *,
                 student: str | None = None, teacher: str | None = None) -> None:
        check_weights(weights, cls.name)
        cls.check(options)

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        self.finalize(self.weights, self.options)


class InitStage:
    """Options shared by the methods with an init stage (``init_epochs``, ``init_lr``)."""

    def _setup_init(self, loss: str, enabled: bool = True) -> None:
        o = self.options  # type: ignore[attr-defined]
        epochs = option(o, "init_epochs", loss, nonneg=True, integer=True)
        self.init_epochs = epochs if enabled else 0
        lr = o.get("init_lr")
        try:
            ok = lr is None or float(lr) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ConfigError(f"loss {loss!r} option init_lr must be a number > 0, got {lr!r}")
        self.init_lr = None if lr is None else float(lr)

    def init_stage(self, name: str, loss, parameters, trains_student: bool = True
                   ) -> list[LossStage]:
        if self.init_epochs <= 0:
            return []
        return [LossStage(name, self.init_epochs, loss, list(parameters), trains_student,
                          self.init_lr)]


#: the init-stage options' defaults (RepDistiller's 30 epochs at the base lr)
INIT_DEFAULTS: dict[str, Any] = {"init_epochs": 30, "init_lr": None}


def stage_pairs(value: Any, student: list[torch.Tensor], teacher: list[torch.Tensor],
                loss: str, *, what: str = "stages", default: list[tuple[int, int]] | None = None,
                exactly_one: bool = False, min_pairs: int = 1, why: str = ""
                ) -> list[tuple[int, int]]:
    """The (student stage, teacher stage) pairs of option ``stages``: ``[[s, t], ...]`` or
    ``"s:t,s:t"`` (0-based indices into the models' lists of ``what``: a timm model's
    ``out_indices`` choose what those are). None gives ``default``, or, without one, the
    stages one to one, shallow to deep (then their counts must agree).

    A given value must name exactly one pair with ``exactly_one`` (a loss on one stage), at
    least ``min_pairs`` otherwise; ``why`` ends the count error (the reason, or another option
    that does the job). Every error is one line naming what the models have."""
    if value is None:
        if default is not None:
            return list(default)
        paired(student, teacher, loss, what)
        return list(zip(range(len(student)), range(len(teacher))))
    if isinstance(value, str):
        items: Any = [p.split(":") for p in value.replace(" ", "").split(",") if p]
    else:
        items = value
    try:
        pairs = [(int(s), int(t)) for s, t in items]
    except (TypeError, ValueError):
        hint = ""
        if isinstance(value, int) and not isinstance(value, bool) and value >= 60:
            s, t = divmod(value, 60)
            hint = (f" (YAML 1.1 reads an unquoted {s}:{t} as the base-60 number {value}: write "
                    f"\"{s}:{t}\" in quotes, or [[{s}, {t}]])")
        raise ConfigError(f"loss {loss!r} option stages must be pairs of stage indices, e.g. "
                          f"[[0, 1], [2, 3]] or \"0:1,2:3\", got {value!r}{hint}") from None
    if not pairs:
        raise ConfigError(f"loss {loss!r} option stages names no pair")
    wanted = "exactly one" if exactly_one else f"at least {min_pairs}"
    if (exactly_one and len(pairs) != 1) or len(pairs) < min_pairs:
        raise ConfigError(f"loss {loss!r} option stages names {len(pairs)} "
                          f"pair{'s' if len(pairs) > 1 else ''}, but takes {wanted}"
                          f"{': ' + why if why else ''} (got {value!r})")
    one = what[:-1] if what.endswith("s") else what
    for s, t in pairs:
        for role, i, maps in (("student", s, student), ("teacher", t, teacher)):
            if not maps:
                raise ConfigError(f"loss {loss!r} option stages pairs {role} {one} {i}, but the "
                                  f"{role} has no {what}")
            if not 0 <= i < len(maps):
                raise ConfigError(f"loss {loss!r} option stages pairs {role} {one} {i}, but the "
                                  f"{role} has {what} 0..{len(maps) - 1}")
    return pairs


class EveryStage(Distiller):
    """A term computed on each (student, teacher) stage pair, summed over the pairs: the
    stages one to one by default, or the pairs of option ``stages`` (:func:`stage_pairs`)."""

    taps = frozenset({"logits", "stages"})
    name = ""

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        fs, ft = probe_pair(ctx, self.name)
        # the terms pool both maps to the smaller one: any two stages can pair
        self.pairs = stage_pairs(self.options.get("stages"), fs.stages, ft.stages, self.name)

    def pair(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover

    def forward(self, student, teacher, target, index=None, epoch=0):
        return {self.name: sum(self.pair(student.stages[s], teacher.stages[t])
                               for s, t in self.pairs)}
