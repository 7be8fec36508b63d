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
from ..spec import coerce_options
from .presets import PRESETS

TEACHER_EVALUATE = ("epochs", "checkpoints")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda", "mps")
#: sane upper bounds: beyond them a value is a typo, and honouring it fills the machine (a
#: process table, a disk, years of training)
MAX_EPOCHS = 100_000
MAX_BATCH_SIZE = 1 << 20
#: threads per core at most (``engine.threads``)
THREADS_PER_CORE = 4
#: what is done to a teacher from weights before use (kdbench.teachers.adapt)
ADAPT_MODES = ("auto", "linear", "finetune", "none")

#: when a stage's optimiser is re-created (:attr:`kdbench.config.Recipe.reset_optimizer`)
RESET_OPTIMIZER = ("never", "lr_change", "epoch")


def resolve(config: Any) -> Any:
    """Validate a config against the registries and fill in every default it implies.

    Loss weights/options become complete (plugin defaults < preset < user), and so do the
    options of every warm-up stage, evaluator, data transform, optimiser and augmentation; a
    loss that needs no teacher drops the teacher section. The result is what the record stores
    and the id hashes. The first error found is raised (:func:`resolve_config`: all of them).
    """
    c = copy.deepcopy(config)
    for step in _steps(c):
        step()
    return c


def resolve_config(config: Any) -> Any:
    """The fully resolved config (:func:`resolve`), reporting every error it can find rather
    than the first: each independent part (names, data, loss, teacher, recipes, seeds, stages,
    evaluators, loggers, engine) is checked, and a ConfigError lists every problem, one
    ``; ``-separated clause each. Nothing is trained or written."""
    c = copy.deepcopy(config)
    errors: list[str] = []
    for step in _steps(c):
        try:
            step()
        except ConfigError as exc:
            errors += [str(e) for e in getattr(exc, "errors", [exc])]
    if errors:
        error = ConfigError(f"{len(errors)} problems: "
                          + " ".join(f"({i}) {e}" for i, e in enumerate(errors, 1))
                            if len(errors) > 1 else errors[0])
        error.errors = errors  # type: ignore[attr-defined]
        raise error
    return c


def _steps(c: Any) -> list[Any]:
    """The independent checks of :func:`resolve`, in order, each completing its part of
    ``c``; a step that depends on an earlier one that failed does nothing."""
    from .. import losses

    done: dict[str, Any] = {}

    def preset() -> None:
        if c.preset not in PRESETS:
            raise UnknownNameError("preset", c.preset, PRESETS)

    def student() -> None:
        from ..models.options import check_model_options, get_model  # torch: only here

        get_model(c.student)
        check_model_options(c.student, c.student_options, "student")

    def data() -> None:
        _resolve_data(c.data, "data")

    def loss() -> None:
        entry = losses.entry(c.loss.name)
        c.loss.weights, c.loss.options = losses.resolve(
            c.loss.name, c.loss.weights, c.loss.options, student=c.student,
            teacher=c.teacher.arch if c.teacher is not None else None)
        done["loss"] = entry
        weights = {k: v for k, v in c.loss.weights.items() if isinstance(v, (int, float))}
        if weights and not any(weights.values()):
            raise ConfigError(f"every weight of loss {c.loss.name!r} is 0 "
                              f"({', '.join(sorted(weights))}): nothing would be trained; "
                              f"give one a value > 0")

    def teacher() -> None:
        entry = done.get("loss")
        if entry is None:
            return
        if not entry.teacher_needed:
            c.teacher = None
        elif c.teacher is None:
            raise ConfigError(f"loss {c.loss.name!r} needs a teacher but the config has none")
        else:
            _resolve_teacher(c, entry)

    def recipe() -> None:
        check_recipe(c.recipe, "recipe")

    def seeds() -> None:
        for where, seed in (("seed", c.seed), ("teacher.seed", getattr(c.teacher, "seed", 0))):
            if not 0 <= seed < 2**63:
                raise ConfigError(f"{where} must be in 0..2^63-1, got {seed}")

    def warmup() -> None:
        c.warmup = _resolve_stages(c.warmup)

    def evaluators() -> None:
        _resolve_eval(c.eval)

    def log() -> None:
        c.log = _resolve_loggers(c.log)

    def engine() -> None:
        import os

        if c.engine.threads < 0:
            raise ConfigError(f"engine.threads must be >= 0 (0: all cores), got "
                              f"{c.engine.threads}")
        cores = os.cpu_count() or 1
        if c.engine.threads > THREADS_PER_CORE * cores:
            raise ConfigError(f"engine.threads {c.engine.threads} is more than "
                              f"{THREADS_PER_CORE} per core of the {cores} here (valid: "
                              f"0..{THREADS_PER_CORE * cores}; 0: all cores)")

    def paths() -> None:
        if not str(c.results_dir).strip():
            raise ConfigError("results_dir is empty; give a folder (e.g. --results-dir "
                              "results)")

    def precision() -> None:
        if c.precision not in PRECISIONS:
            raise UnknownNameError("precision", c.precision, PRECISIONS)

    def device() -> None:
        if c.device not in DEVICES and not re.fullmatch(r"cuda:\d+", c.device):
            raise UnknownNameError("device", c.device, DEVICES)

    return [preset, student, data, loss, teacher, recipe, seeds, warmup, evaluators, log,
            engine, paths, precision, device]


def _resolve_teacher(c: Any, loss: Any) -> None:
    from ..models.options import check_model_options, get_model
    from ..plugins import get

    source = get("teacher_source", c.teacher.source)
    get_model(c.teacher.arch)
    check_model_options(c.teacher.arch, c.teacher.model_options, "teacher")
    if loss.feature_taps and not source.features:
        from ..plugins import get_registry

        logit_losses = [e.name for e in get_registry().entries("loss") if not e.feature_taps]
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
    from ..engine.teacher_bn import MODES as TEACHER_BN

    if c.teacher.bn not in TEACHER_BN:
        raise UnknownNameError("teacher.bn", c.teacher.bn, TEACHER_BN)
    if c.teacher.save_every < 0:
        raise ConfigError(f"teacher.save_every must be >= 0, got {c.teacher.save_every}")
    if c.teacher.adapt not in ADAPT_MODES:
        raise UnknownNameError("teacher.adapt mode", str(c.teacher.adapt), ADAPT_MODES)
    check_recipe(c.teacher.adapt_recipe, "teacher.adapt_recipe")


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
    its optimiser's and schedule's options from their registered defaults. The first problem
    is raised; the error's ``errors`` holds every one found."""
    errors: list[ConfigError] = []

    def check(ok: bool, message: str) -> None:
        if not ok:
            errors.append(ConfigError(message))

    def named(kind: str, name: str, field: str) -> Any:
        try:
            return _named(kind, name, f"{where}.{field}")
        except ConfigError as exc:
            errors.append(exc)
            return None

    check(r.epochs >= 1, f"{where}.epochs must be >= 1, got {r.epochs}")
    check(r.epochs <= MAX_EPOCHS, f"{where}.epochs {r.epochs} is beyond any sane run "
                                  f"(valid: 1..{MAX_EPOCHS})")
    check(r.batch_size >= 2, f"{where}.batch_size must be >= 2, got {r.batch_size}")
    check(r.batch_size <= MAX_BATCH_SIZE, f"{where}.batch_size {r.batch_size} is beyond any "
                                          f"sane batch (valid: 2..{MAX_BATCH_SIZE})")
    check(r.momentum < 1, f"{where}.momentum must be < 1 (SGD diverges at 1 and above), got "
                          f"{r.momentum}")
    bad = [m for m in r.milestones if not isinstance(m, int) or m < 0]
    check(not bad, f"{where}.milestones must be epochs >= 0, got {bad}")
    check(r.lr > 0, f"{where}.lr must be > 0, got {r.lr}")
    opt = named("optimizer", r.optimizer, "optimizer")
    if opt is not None:
        try:
            r.optimizer_options = coerce_options(r.optimizer_options, opt.defaults,
                                                 f"optimizer {opt.name!r}", opt.types)
        except ConfigError as exc:
            errors.append(exc)
    sched = named("schedule", r.schedule, "schedule")
    if sched is not None:
        try:
            r.schedule_options = coerce_options(r.schedule_options, sched.defaults,
                                                f"schedule {sched.name!r}", sched.types)
        except ConfigError as exc:
            errors.append(exc)
    check(r.schedule != "step" or r.step_size >= 1,
          f"{where}.step_size must be >= 1 with schedule 'step'")
    check(r.warmup_epochs >= 0, f"{where}.warmup_epochs must be >= 0, got {r.warmup_epochs}")
    if r.reset_optimizer not in RESET_OPTIMIZER:
        errors.append(UnknownNameError(f"{where}.reset_optimizer", r.reset_optimizer,
                                       RESET_OPTIMIZER))
    for name, value, ok, valid in (("momentum", r.momentum, r.momentum >= 0, ">= 0"),
                                   ("weight_decay", r.weight_decay, r.weight_decay >= 0, ">= 0"),
                                   ("gamma", r.gamma, r.gamma > 0, "> 0")):
        check(ok, f"{where}.{name} must be {valid}, got {value}")
    if errors:
        first = errors[0]
        first.errors = errors  # type: ignore[attr-defined]
        raise first
    if r.schedule == "multistep" and r.milestones and max(r.milestones) <= r.epochs / 2:
        warnings.warn(f"kdbench: {where} drops its lr for the last time at epoch "
                      f"{max(r.milestones)} of {r.epochs}: the second half of training runs at "
                      f"the final lr (set {where}.milestones if that is not meant)",
                      RuntimeWarning, stacklevel=3)
