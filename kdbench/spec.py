"""Typed plugin specs, and the one value coercer for configs, plugin options and settings.

Every plugin kind has a spec class: the fields every registration has (name, factory, source,
description) and the kind's own, typed. ``register(name, factory, **fields)`` builds the kind's
spec; a field the kind does not know, a value of the wrong type, or a class whose declared
behaviour disagrees with its registration (a loss whose ``taps`` differ from its class's, an
evaluator whose metrics differ) is a :class:`~kdbench.errors.PluginError` at registration, long
before any training.

:func:`coerce` turns user input (YAML scalars, ``--opt k=v`` strings) into a typed value, and
:func:`coerce_options` checks a whole options mapping against a plugin's declared defaults and
types. Configs, loss options, stage, evaluator, transform and estimator settings all go through
them, so ``--opt T=inf`` and ``--set recipe.lr=nan`` fail the same way everywhere.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .errors import ConfigError, PluginError

# ============================== the value coercer ==============================================

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def coerce(value: Any, tp: Any, where: str) -> Any:
    """``value`` as type hint ``tp`` (int, float, bool, str, list[X], dict, X | None, Any).

    Strings are parsed as a user would mean them (``"0.1"``, ``"true"``, ``"1,2,3"`` for a
    list); floats must be finite; an int must be integral; ``"none"``/``"null"`` is None only
    where the type allows None. A bad value is a one-line ConfigError naming ``where``.
    """
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
            raise ConfigError(f"{where} must be set, got {value!r}")
        inner = [a for a in args if a is not type(None)]
        errors = []
        for a in inner:
            try:
                return coerce(value, a, where)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if value is None:
        raise ConfigError(f"{where} must be set, got None")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where + ".")
    if origin in (list, tuple) or tp in (list, tuple):
        if isinstance(value, str):
            value = [v for v in re.split(r"[,\s]+", value.strip("[]()")) if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        item = args[0] if args else Any
        out = [coerce(v, item, where) for v in value]
        return tuple(out) if (origin or tp) is tuple else out
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping of key=value, got {value!r}")
        return {str(k): v for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if tp in (int, float):
        return _number(value, tp, where)
    if tp is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return str(value)
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where} must be {tp.__name__}, got {value!r}")
    return value


def _number(value: Any, tp: type, where: str) -> int | float:
    kind = "an integer" if tp is int else "a number"
    if isinstance(value, bool):
        raise ConfigError(f"{where} must be {kind}, got {value!r}")
    try:
        number = float(value) if isinstance(value, str) else value
        if not isinstance(number, (int, float)):
            raise TypeError
    except (TypeError, ValueError):
        raise ConfigError(f"{where} must be {kind}, got {value!r}") from None
    if isinstance(number, float) and not math.isfinite(number):
        raise ConfigError(f"{where} must be a finite number, got {value!r}")
    if tp is int:
        if isinstance(number, float):
            if not number.is_integer():
                raise ConfigError(f"{where} must be an integer, got {value!r}")
            number = int(number)
        if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
            number = int(value)  # exact, where float() would round a huge integer
        return int(number)
    return float(number)


def hint_of(default: Any) -> Any:
    """The type a plugin option takes, from its default value (None: any)."""
    if default is None:
        return Any
    if isinstance(default, bool):
        return bool
    if isinstance(default, int):
        return int
    if isinstance(default, float):
        return float
    if isinstance(default, str):
        return str
    if isinstance(default, (list, tuple)):
        return list
    if isinstance(default, Mapping):
        return dict
    return type(default)


def coerce_options(given: Mapping[str, Any] | None, defaults: Mapping[str, Any], owner: str,
                   types_: Mapping[str, Any] | None = None, kind: str = "option"
                   ) -> dict[str, Any]:
    """``defaults`` overlaid with ``given``, each value typed by ``types_`` or its default.

    An unknown key is a one-line error listing the valid ones (``owner`` names the plugin, e.g.
    ``"loss 'kd'"``; ``kind`` what the keys are). A given None keeps None only where the type
    allows it.
    """
    out = dict(defaults)
    types_ = types_ or {}
    for key, value in (given or {}).items():
        if key not in defaults:
            valid = ", ".join(sorted(defaults)) or "none"
            raise ConfigError(f"{owner} has no {kind} {key!r} (valid: {valid})")
        tp = types_.get(key, hint_of(defaults[key]))
        if value is None and defaults[key] is None:
            out[key] = None
            continue
        out[key] = coerce(value, tp, f"{owner} {kind} {key}")
    return out


def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """A (nested) dataclass from a mapping, every field coerced to its annotated type; an
    unknown field lists the valid ones."""
    from .errors import UnknownNameError

    if not isinstance(data, Mapping):
        raise ConfigError(f"{where.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise UnknownNameError("config field", where + unknown[0], [where + n for n in names])
    return cls(**{k: coerce(v, hints[k], where + k) for k, v in data.items()})


# ============================== registration-field checks ======================================


def _check_field(value: Any, tp: Any) -> Any:
    """A registration field's value, normalised (lists → tuples, mappings → dicts) and checked
    against the spec's annotation; raises TypeError when it does not fit."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in (a for a in args if a is not type(None)):
            try:
                return _check_field(value, a)
            except TypeError:
                continue
        raise TypeError
    if origin is tuple or tp is tuple:
        if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)):
            raise TypeError
        item = args[0] if args else Any
        return tuple(_check_field(v, item) for v in value)
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise TypeError
        return dict(value)
    if origin is Callable or tp is Callable or typing.get_origin(tp) is \
            typing.get_origin(Callable[..., Any]):
        if not callable(value):
            raise TypeError
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(tp, type) and (not isinstance(value, tp) or
                                 (tp is int and isinstance(value, bool))):
        raise TypeError
    return value


# ============================== the specs ======================================================


@dataclass(frozen=True, eq=False)
class PluginSpec:
    """What every registration has. Subclasses add the kind's own typed fields."""

    kind: ClassVar[str] = ""
    name: str
    factory: Callable[..., Any]
    source: str = ""
    description: str = ""

    def create(self, *args: Any, **kwargs: Any) -> Any:
        return self.factory(*args, **kwargs)

    @property
    def is_namespace(self) -> bool:
        return self.name.endswith("/*")

    @property
    def metadata(self) -> dict[str, Any]:
        """The kind's own fields as a mapping (read-only view)."""
        base = {f.name for f in dataclasses.fields(PluginSpec)}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in base}

    def check(self) -> None:
        """Consistency of the registration with its factory (overridden per kind)."""

    @classmethod
    def build(cls, name: str, factory: Callable[..., Any], source: str, description: str,
              fields: dict[str, Any]) -> PluginSpec:
        """Validate ``fields`` against the spec's annotations and build the spec."""
        hints = typing.get_type_hints(cls)
        own = [f.name for f in dataclasses.fields(cls) if f.name not in
               ("name", "factory", "source", "description")]
        label = f"{source}: {cls.kind.replace('_', ' ')} {name!r}"
        checked = {}
        for key, value in fields.items():
            if key not in own:
                raise PluginError(f"{label}: unknown registration field {key!r} "
                                  f"(valid: {', '.join(own) or 'none'})")
            try:
                checked[key] = _check_field(value, hints[key])
            except TypeError:
                raise PluginError(f"{label}: registration field {key!r} must be "
                                  f"{_type_name(hints[key])}, got {value!r}") from None
        spec = cls(name=name, factory=factory, source=source, description=description,
                   **checked)
        spec.check()
        return spec


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _class_attr(factory: Any, attr: str) -> Any:
    return getattr(factory, attr, None) if isinstance(factory, type) else None


def _disagrees(spec: PluginSpec, field_name: str, declared: Any, on_class: Any) -> PluginError:
    return PluginError(f"{spec.source}: {spec.kind.replace('_', ' ')} {spec.name!r} registers "
                       f"{field_name}={sorted(declared)} but its class declares "
                       f"{sorted(on_class)}")


@dataclass(frozen=True, eq=False)
class ModelSpec(PluginSpec):
    kind: ClassVar[str] = "model"
    family: str = ""
    validate: Callable[..., Any] | None = None


@dataclass(frozen=True, eq=False)
class DatasetSpec(PluginSpec):
    kind: ClassVar[str] = "dataset"


#: What a loss may tap: logits, post-activation stages, pre-activation stages, the pooled
#: embedding, and the sample index (CRD's memory bank).
TAPS = frozenset({"logits", "stages", "preact", "embedding", "index"})


@dataclass(frozen=True, eq=False)
class LossSpec(PluginSpec):
    kind: ClassVar[str] = "loss"
    paper: str = "-"
    year: int | None = None
    repo: str = ""
    family: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)
    types: dict[str, Any] = field(default_factory=dict)
    taps: tuple[str, ...] = ("logits",)
    combo: dict[str, Any] = field(default_factory=dict)
    finalize: Callable[..., Any] | None = None
    needs_teacher: bool | None = None
    cost: str = ""
    parts: tuple[str, ...] = ()
    #: options added after records were made with this loss: at their default value they are
    #: left out of the run id, so those records keep their ids
    later: tuple[str, ...] = ()

    def check(self) -> None:
        bad = sorted(set(self.taps) - TAPS)
        if bad:
            raise PluginError(f"{self.source}: loss {self.name!r} taps {bad[0]!r}, which no model "
                              f"gives (valid: {', '.join(sorted(TAPS))})")
        for key, value in self.defaults.items():
            if key.startswith("w_") and not isinstance(value, (int, float)):
                raise PluginError(f"{self.source}: loss {self.name!r} weight {key} must be a "
                                  f"number, got {value!r}")
        unknown = sorted(set(self.later) - set(self.defaults))
        if unknown:
            raise PluginError(f"{self.source}: loss {self.name!r} lists later option "
                              f"{unknown[0]!r}, which it has no default for")
        on_class = _class_attr(self.factory, "taps")
        if on_class is not None and set(on_class) != set(self.taps):
            raise _disagrees(self, "taps", self.taps, on_class)
        teacher = _class_attr(self.factory, "needs_teacher")
        if self.needs_teacher is not None and teacher is not None and \
                bool(teacher) != self.needs_teacher:
            raise PluginError(f"{self.source}: loss {self.name!r} registers needs_teacher="
                              f"{self.needs_teacher} but its class says {bool(teacher)}")

    @property
    def teacher_needed(self) -> bool:
        if self.needs_teacher is not None:
            return self.needs_teacher
        return bool(getattr(self.factory, "needs_teacher", True))

    @property
    def feature_taps(self) -> set[str]:
        return set(self.taps) - {"logits", "index"}


@dataclass(frozen=True, eq=False)
class TeacherSourceSpec(PluginSpec):
    kind: ClassVar[str] = "teacher_source"
    features: bool = True
    resolve: Callable[..., Any] | None = None
    seeds: Callable[..., Any] | None = None


@dataclass(frozen=True, eq=False)
class MIEstimatorSpec(PluginSpec):
    kind: ClassVar[str] = "mi_estimator"
    unit: str = "nats"
    bound: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)
    paper: str = ""


@dataclass(frozen=True, eq=False)
class ExecutorSpec(PluginSpec):
    kind: ClassVar[str] = "executor"


@dataclass(frozen=True, eq=False)
class StageSpec(PluginSpec):
    """A training stage placed before the main one (``--warmup NAME``)."""

    kind: ClassVar[str] = "stage"
    paper: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)
    types: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class OptimizerSpec(PluginSpec):
    """``factory(params, lr=, **options) -> torch.optim.Optimizer``."""

    kind: ClassVar[str] = "optimizer"
    defaults: dict[str, Any] = field(default_factory=dict)
    types: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class ScheduleSpec(PluginSpec):
    """``factory(epochs, **options) -> (epoch -> lr factor)``."""

    kind: ClassVar[str] = "schedule"
    defaults: dict[str, Any] = field(default_factory=dict)
    types: dict[str, Any] = field(default_factory=dict)


#: The model outputs an evaluator may ask for, per split (train = un-augmented), and the
#: run's fixed teacher's test logits.
EVAL_NEEDS = frozenset({"test_logits", "test_embedding", "train_logits", "train_embedding",
                        "teacher_test_logits"})


@dataclass(frozen=True, eq=False)
class EvaluatorSpec(PluginSpec):
    """``factory(ctx, **options)`` → an object called with the outputs it needs."""

    kind: ClassVar[str] = "evaluator"
    needs: tuple[str, ...] = ("test_logits",)
    metrics: tuple[str, ...] = ()
    every: int = 1  # evaluate every N epochs; 0: only after the last epoch
    lower_is_better: tuple[str, ...] = ()
    #: a metric's unit where it is not a percentage (tables say it), e.g. {"map_cosine": "0-1"}
    units: dict[str, str] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    types: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        bad = sorted(set(self.needs) - EVAL_NEEDS)
        if bad:
            raise PluginError(f"{self.source}: evaluator {self.name!r} needs {bad[0]!r} "
                              f"(valid: {', '.join(sorted(EVAL_NEEDS))})")
        if not self.metrics:
            raise PluginError(f"{self.source}: evaluator {self.name!r} declares no metrics")
        stray = sorted(set(self.units) - set(self.metrics))
        if stray:
            raise PluginError(f"{self.source}: evaluator {self.name!r} gives a unit to "
                              f"{stray[0]!r}, not one of its metrics ({', '.join(self.metrics)})")
        if self.every < 0:
            raise PluginError(f"{self.source}: evaluator {self.name!r} every={self.every} "
                              f"(valid: 0 = after the last epoch, N >= 1 = every N epochs)")
        for attr in ("needs", "metrics"):
            on_class = _class_attr(self.factory, attr)
            if on_class is not None and set(on_class) != set(getattr(self, attr)):
                raise _disagrees(self, attr, getattr(self, attr), on_class)


@dataclass(frozen=True, eq=False)
class DataTransformSpec(PluginSpec):
    """``factory(**options)`` → an object with ``apply(dataset, split) -> (dataset, report)``."""

    kind: ClassVar[str] = "data_transform"
    splits: tuple[str, ...] = ("train",)
    needs_labels: bool = True
    defaults: dict[str, Any] = field(default_factory=dict)
    types: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        bad = sorted(set(self.splits) - {"train", "test"})
        if bad or not self.splits:
            raise PluginError(f"{self.source}: data transform {self.name!r} splits "
                              f"{list(self.splits)} (valid: train, test)")


@dataclass(frozen=True, eq=False)
class AugmentationSpec(PluginSpec):
    """``factory(dataset, **options)`` → ``augment(images uint8, generator) -> images``."""

    kind: ClassVar[str] = "augmentation"
    defaults: dict[str, Any] = field(default_factory=dict)
    types: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class LoggerSpec(PluginSpec):
    """``factory(results_dir=, **options)`` → an object with ``start(record)``,
    ``epoch(run_id, row)`` and ``end(record)``."""

    kind: ClassVar[str] = "logger"
    package: str = ""  # the distribution that provides it (named when it is missing)
    defaults: dict[str, Any] = field(default_factory=dict)
    types: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class LayoutSpec(PluginSpec):
    """``factory(df, **options) -> str``: a table layout of ``kdbench table --layout``."""

    kind: ClassVar[str] = "table_layout"


@dataclass(frozen=True, eq=False)
class FigureSpec(PluginSpec):
    """``factory(study) -> list[Figure]``: figures of ``kdbench report`` (:mod:`kdbench.report`)."""

    kind: ClassVar[str] = "report_figure"


#: kind -> (hook name, label used in messages, spec class)
SPECS: dict[str, tuple[str, str, type[PluginSpec]]] = {
    "model": ("register_models", "model", ModelSpec),
    "dataset": ("register_datasets", "dataset", DatasetSpec),
    "loss": ("register_losses", "loss", LossSpec),
    "teacher_source": ("register_teacher_sources", "teacher source", TeacherSourceSpec),
    "mi_estimator": ("register_mi_estimators", "MI estimator", MIEstimatorSpec),
    "executor": ("register_executors", "executor", ExecutorSpec),
    "stage": ("register_stages", "stage", StageSpec),
    "optimizer": ("register_optimizers", "optimizer", OptimizerSpec),
    "schedule": ("register_schedules", "lr schedule", ScheduleSpec),
    "evaluator": ("register_evaluators", "evaluator", EvaluatorSpec),
    "data_transform": ("register_data_transforms", "data transform", DataTransformSpec),
    "augmentation": ("register_augmentations", "augmentation", AugmentationSpec),
    "table_layout": ("register_table_layouts", "table layout", LayoutSpec),
    "logger": ("register_loggers", "logger", LoggerSpec),
    "report_figure": ("register_report_figures", "report figure", FigureSpec),
}
