"""Validation and completion of a run config against the plugin registries.

:func:`resolve` checks every name (models, dataset, loss, teacher source, stages, evaluators,
loggers, optimisers, schedules) and fills in every default a config implies: loss weights and
options (plugin defaults < preset < user), the options of every warm-up stage, evaluator, data
transform, optimiser and augmentation. The result is what a record stores and what the run id
hashes. Bad input is a one-line error naming the value and what would be valid.

The functions take a :class:`~kdbench.config.schema.RunConfig` (or one of its sections); they
read its fields only, so this module does not import the dataclasses (whose ``run_id`` uses it).
"""

from __future__ import annotations

import copy
import importlib.util
import re
import warnings
from typing import Any

from ..errors import ConfigError, UnknownNameError
from ..models.options import check_model_options, get_model
from ..spec import coerce_options
from .presets import PRESETS

TEACHER_EVALUATE = ("epochs", "checkpoints")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda", "mps")
#: what is done to a teacher from weights before use (kdbench.teachers.adapt)
ADAPT_MODES = ("auto", "linear", "finetune", "none")

#: when a stage's optimiser is re-created (:attr:`kdbench.config.Recipe.reset_optimizer`)
RESET_OPTIMIZER = ("never", "lr_change", "epoch")


def resolve(config: Any) -> Any:
    """Validate a config against the registries and fill in every default it implies.

    Loss weights/options become complete (plugin defaults < preset < user), and so do the
    options of every warm-up stage, evaluator, data transform, optimiser and augmentation; a
    loss that needs no teacher drops the teacher section. The result is what the record stores
    and the id hashes.
    """
    from .. import losses
    from ..plugins import get

    c = copy.deepcopy(config)
    if c.preset not in PRESETS:
        raise UnknownNameError("preset", c.preset, PRESETS)
    get_model(c.student)
    check_model_options(c.student, c.student_options, "student")
    _resolve_data(c.data, "data")
    loss = losses.entry(c.loss.name)
    c.loss.weights, c.loss.options = losses.resolve(
        c.loss.name, c.loss.weights, c.loss.options, student=c.student,
        teacher=c.teacher.arch if c.teacher is not None else None)
    if not loss.teacher_needed:
        c.teacher = None
    elif c.teacher is None:
        raise ConfigError(f"loss {c.loss.name!r} needs a teacher but the config has none")
    else:
        source = get("teacher_source", c.teacher.source)
        get_model(c.teacher.arch)
        check_model_options(c.teacher.arch, c.teacher.model_options, "teacher")
        if loss.feature_taps and not source.features:
            from ..plugins import get_registry

            logit_losses = [e.name for e in get_registry().entries("loss")
                            if not e.feature_taps]
            raise ConfigError(
                f"loss {c.loss.name!r} taps {', '.join(sorted(loss.feature_taps))} features, "
                f"but teacher source {c.teacher.source!r} gives logits only (losses that work: "
                f"{', '.join(logit_losses)})")
        if source.resolve is not None:  # the source checks and completes its own settings
            source.resolve(c)
        check_recipe(c.teacher.recipe, "teacher.recipe")
        if c.teacher.data is not None:
            _resolve_data(c.teacher.data, "teacher.data")
        bad = [e for e in c.teacher.save_epochs if not 1 <= e <= c.teacher.recipe.epochs]
        if bad:
            raise ConfigError(f"teacher.save_epochs {bad} outside 1..{c.teacher.recipe.epochs}")
        if c.teacher.evaluate not in TEACHER_EVALUATE:
            raise UnknownNameError("teacher.evaluate", c.teacher.evaluate, TEACHER_EVALUATE)
        if c.teacher.save_every < 0:
            raise ConfigError(f"teacher.save_every must be >= 0, got {c.teacher.save_every}")
        if c.teacher.adapt not in ADAPT_MODES:
            raise UnknownNameError("teacher.adapt mode", str(c.teacher.adapt), ADAPT_MODES)
        check_recipe(c.teacher.adapt_recipe, "teacher.adapt_recipe")
    check_recipe(c.recipe, "recipe")
    for where, seed in (("seed", c.seed), ("teacher.seed", getattr(c.teacher, "seed", 0))):
        if not 0 <= seed < 2**63:
            raise ConfigError(f"{where} must be in 0..2^63-1, got {seed}")
    c.warmup = _resolve_stages(c.warmup)
    _resolve_eval(c.eval)
    c.log = _resolve_loggers(c.log)
    if c.engine.threads < 0:
        raise ConfigError(f"engine.threads must be >= 0 (0: all cores), got {c.engine.threads}")
    if c.precision not in PRECISIONS:
        raise UnknownNameError("precision", c.precision, PRECISIONS)
    if c.device not in DEVICES and not re.fullmatch(r"cuda:\d+", c.device):
        raise UnknownNameError("device", c.device, DEVICES)
    return c


def resolve_items(items: list[Any], kind: str, where: str,
                  common: dict[str, Any] | None = None,
                  common_types: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """A list of ``{name: ..., option: value}`` plugin uses (or bare names), each name checked
    against the registry of ``kind`` and its options completed and typed from the plugin's
    declared defaults (plus ``common`` options every plugin of the kind takes)."""
    from ..plugins import KINDS, get

    out = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ConfigError(f"{where}[{i}] must be a mapping with a 'name' (a "
                              f"{KINDS[kind][1]}), got {item!r}")
        spec = get(kind, item["name"])
        defaults = {**(common or {}), **spec.defaults}
        types = {**(common_types or {}), **spec.types}
        options = coerce_options({k: v for k, v in item.items() if k != "name"}, defaults,
                                 f"{KINDS[kind][1]} {spec.name!r}", types)
        out.append({"name": spec.name, **options})
    return out


def _resolve_data(d: Any, where: str) -> None:
    from ..plugins import get

    get("dataset", d.name)
    d.transforms = resolve_items(d.transforms, "data_transform", f"{where}.transforms")
    spec = get("augmentation", d.augmentation)
    d.augmentation_options = coerce_options(
        d.augmentation_options, spec.defaults, f"augmentation {spec.name!r}", spec.types)


def _resolve_stages(items: list[Any]) -> list[dict[str, Any]]:
    from ..plugins import get
    from ..stages.base import COMMON_OPTIONS, COMMON_TYPES

    out = resolve_items(items, "stage", "warmup", COMMON_OPTIONS, COMMON_TYPES)
    for item in out:
        if item["epochs"] is not None and item["epochs"] < 0:
            raise ConfigError(f"stage {item['name']!r} epochs must be >= 0, got "
                              f"{item['epochs']}")
        if item["optimizer"] is not None:
            get("optimizer", item["optimizer"])
        get("schedule", item["schedule"])
    return out


def _resolve_loggers(items: list[Any]) -> list[dict[str, Any]]:
    from ..loggers import EXTERNAL_LOGGERS
    from ..plugins import get, names

    for item in items:
        name = item if isinstance(item, str) else (item or {}).get("name")
        if name in EXTERNAL_LOGGERS and name not in names("logger"):
            raise ConfigError(f"logger {name!r} is not installed: pip install "
                              f"{EXTERNAL_LOGGERS[name]}")
    out = resolve_items(items, "logger", "log")
    for item in out:  # a logger whose package is missing fails now, not after training
        package = get("logger", item["name"]).package
        if package and importlib.util.find_spec(package.replace("-", "_")) is None:
            raise ConfigError(f"logger {item['name']!r} needs the package {package!r}, which is "
                              f"not installed: pip install {package}")
    return out


def _resolve_eval(e: Any) -> None:
    from ..plugins import get

    e.evaluators = resolve_items(e.evaluators, "evaluator", "eval.evaluators", {"every": None},
                                 {"every": int | None})
    names = [item["name"] for item in e.evaluators]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"evaluator {dup[0]!r} is listed twice in eval.evaluators")
    for item in e.evaluators:
        if item["every"] is None:
            item.pop("every")
        elif item["every"] < 0:
            raise ConfigError(f"evaluator {item['name']!r} every must be >= 0 (0: after the "
                              f"last epoch), got {item['every']}")
    metrics = {m: item["name"] for item in e.evaluators
               for m in get("evaluator", item["name"]).metrics}
    if e.best_metric not in metrics:
        raise UnknownNameError("eval.best_metric", e.best_metric, metrics,
                               hint="a metric of the run's evaluators")


def _named(kind: str, name: str, where: str) -> Any:
    """The registry entry ``name`` of ``kind``; an unknown one is named by its config field."""
    from ..plugins import get, names

    try:
        return get(kind, name)
    except UnknownNameError:
        raise UnknownNameError(where, name, names(kind)) from None


def check_recipe(r: Any, where: str) -> None:
    """Check a recipe (the run's, the teacher's, or another a plugin trains with) and complete
    its optimiser's and schedule's options from their registered defaults."""
    if r.epochs < 1:
        raise ConfigError(f"{where}.epochs must be >= 1, got {r.epochs}")
    if r.batch_size < 2:
        raise ConfigError(f"{where}.batch_size must be >= 2, got {r.batch_size}")
    if not r.lr > 0:
        raise ConfigError(f"{where}.lr must be > 0, got {r.lr}")
    opt = _named("optimizer", r.optimizer, f"{where}.optimizer")
    r.optimizer_options = coerce_options(r.optimizer_options, opt.defaults,
                                         f"optimizer {opt.name!r}", opt.types)
    sched = _named("schedule", r.schedule, f"{where}.schedule")
    r.schedule_options = coerce_options(r.schedule_options, sched.defaults,
                                        f"schedule {sched.name!r}", sched.types)
    if r.schedule == "step" and r.step_size < 1:
        raise ConfigError(f"{where}.step_size must be >= 1 with schedule 'step'")
    if r.warmup_epochs < 0:
        raise ConfigError(f"{where}.warmup_epochs must be >= 0, got {r.warmup_epochs}")
    if r.reset_optimizer not in RESET_OPTIMIZER:
        raise UnknownNameError(f"{where}.reset_optimizer", r.reset_optimizer, RESET_OPTIMIZER)
    for name, value, ok, valid in (("momentum", r.momentum, r.momentum >= 0, ">= 0"),
                                   ("weight_decay", r.weight_decay, r.weight_decay >= 0, ">= 0"),
                                   ("gamma", r.gamma, r.gamma > 0, "> 0")):
        if not ok:
            raise ConfigError(f"{where}.{name} must be {valid}, got {value}")
    if r.schedule == "multistep" and r.milestones and max(r.milestones) <= r.epochs / 2:
        warnings.warn(f"kdbench: {where} drops its lr for the last time at epoch "
                      f"{max(r.milestones)} of {r.epochs}: the second half of training runs at "
                      f"the final lr (set {where}.milestones if that is not meant)",
                      RuntimeWarning, stacklevel=3)
