"""Run configuration: typed dataclasses, presets, layered overrides, validation and the run id.

Layers, lowest first: dataclass defaults < preset (with its per-architecture and per-loss
defaults) < spec file < command-line flags. Values that are None are dropped before layering, so
an unset flag never clobbers a preset. :func:`resolve` validates every name against the plugin
registries and fills in each loss's full weights and options, so a record shows every value
that shaped the run and the run id is the hash of exactly those values.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib.util
import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .device import resolve_precision
from .errors import ConfigError, UnknownNameError
from .presets import PRESETS
from .spec import coerce_options, from_dict

TEACHER_EVALUATE = ("epochs", "checkpoints")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass
class Recipe:
    """Optimisation recipe: shared shape for teacher training and distillation.

    ``momentum`` and ``nesterov`` are SGD's; another optimiser's own settings (Adam's betas)
    go in ``optimizer_options``. ``warmup_epochs`` puts a linear lr warm-up in front of any
    schedule.

    ``reset_optimizer`` says when the optimiser is re-created (its state, e.g. Adam's moment
    estimates, thrown away): ``"never"`` (the default: one optimiser per stage, its state kept
    across lr changes, as RepDistiller and most KD code do), ``"lr_change"`` (a fresh optimiser
    at every epoch whose lr differs from the previous epoch's: the reference baselines of
    InDistill, which build a new Adam per lr phase) or ``"epoch"`` (a fresh optimiser every
    epoch: InDistill's ``kd_from_aux_to_student.py``, line 22).
    """

    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "multistep"  # a registered schedule: multistep | step | cosine | constant ...
    milestones: list[int] = field(default_factory=list)  # multistep: epochs where lr ×= gamma
    step_size: int = 0  # step: lr ×= gamma every step_size epochs
    gamma: float = 0.1
    optimizer: str = "sgd"  # a registered optimiser: sgd | adam | adamw ...
    optimizer_options: dict[str, Any] = field(default_factory=dict)
    schedule_options: dict[str, Any] = field(default_factory=dict)
    warmup_epochs: int = 0
    reset_optimizer: str = "never"  # never | lr_change | epoch


#: when a stage's optimiser is re-created (:attr:`Recipe.reset_optimizer`)
RESET_OPTIMIZER = ("never", "lr_change", "epoch")


@dataclass
class DataConfig:
    name: str = "digits"
    dir: str | None = None  # where the files are: not part of the run's identity
    augment: bool = True
    options: dict[str, Any] = field(default_factory=dict)  # the dataset factory's keyword args
    #: data transforms applied in order after loading: [{name: subset, per_class: 500}, ...]
    transforms: list[dict[str, Any] | str] = field(default_factory=list)
    augmentation: str = "crop_flip"  # the batch augmentation (a registered name)
    augmentation_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TeacherConfig:
    source: str = "full"
    arch: str = "resnet56"
    seed: int = 0  # teachers are shared across student seeds, as in RepDistiller
    recipe: Recipe = field(default_factory=Recipe)
    save_every: int = 0  # 0: every max(1, epochs // 10) epochs; the last epoch is always saved
    save_epochs: list[int] = field(default_factory=list)  # explicit list, overrides save_every
    epoch: int | None = None  # checkpoint for `intermediate` (None: half-way)
    weights: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # source-specific settings
    #: the data the teacher trains on (None: the student's) — e.g. clean labels for the teacher
    data: DataConfig | None = None
    #: when a trajectory is tested: every epoch, or only at its saved checkpoints (cheaper;
    #: the running training accuracy is kept every epoch either way). Not part of any id.
    evaluate: str = "epochs"

    def checkpoint_epochs(self) -> list[int]:
        epochs = self.recipe.epochs
        if self.save_epochs:
            chosen = set(self.save_epochs)
        else:
            every = self.save_every or max(1, epochs // 10)
            chosen = set(range(every, epochs + 1, every))
        return sorted(chosen | {epochs})


@dataclass
class LossConfig:
    name: str = "kd"
    weights: dict[str, float] = field(default_factory=dict)  # w_ce and w_<term>
    options: dict[str, Any] = field(default_factory=dict)  # e.g. T


@dataclass
class EngineConfig:
    """How the engine runs a config: speed only, so not part of the run's identity."""

    channels_last: bool | None = None  # NHWC convolutions; None: the engine's default per device
    compile: bool = False  # torch.compile the student and teacher models
    threads: int = 0  # torch threads; 0: every core the process may use
    ensemble_vmap: bool = False  # ensemble teachers of one architecture: one vmapped forward
    fuse_teacher: bool = False  # fold the frozen teacher's BatchNorm into its convolutions


def _default_evaluators() -> list[dict[str, Any]]:
    return [{"name": "accuracy"}]


@dataclass
class EvalConfig:
    """What is measured: evaluator plugins (``--eval NAME``), and the metric that picks the
    best epoch."""

    evaluators: list[dict[str, Any] | str] = field(default_factory=_default_evaluators)
    best_metric: str = "top1"


@dataclass
class RunConfig:
    """Everything that defines one run. ``run_id`` hashes all of it but the paths and device."""

    preset: str = "quick"
    data: DataConfig = field(default_factory=DataConfig)
    student: str = "resnet20"
    student_weights: str | None = None
    teacher: TeacherConfig | None = field(default_factory=TeacherConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    recipe: Recipe = field(default_factory=Recipe)
    #: warm-up stages before the loss's own (``--warmup NAME[:k=v]``): [{name: ..., ...}]
    warmup: list[dict[str, Any] | str] = field(default_factory=list)
    eval: EvalConfig = field(default_factory=EvalConfig)
    #: loggers (``--log NAME``): where progress goes besides the record; not part of the id
    log: list[dict[str, Any] | str] = field(default_factory=list)
    seed: int = 0
    precision: str = "auto"
    device: str = "auto"
    results_dir: str = "results"
    engine: EngineConfig = field(default_factory=EngineConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        return from_dict(cls, data, "")

    @property
    def resolved_precision(self) -> str:
        """The precision the run computes in here: ``auto`` resolved for this machine's device
        (the config, and so the run id, keep what was asked for)."""
        return resolve_precision(self.precision, self.device)

    @property
    def teacher_data(self) -> DataConfig:
        """The data the teacher trains on: its own (``teacher.data``), else the student's."""
        return self.teacher.data if self.teacher is not None and self.teacher.data is not None \
            else self.data

    @property
    def run_id(self) -> str:
        """The id of this run: the hash of the resolved config (defaults filled in)."""
        return run_id(resolve(self))


#: Fields that say where or on what a run happens, not what it is.
NON_IDENTITY = ("results_dir", "device", "data.dir", "engine", "log", "teacher.evaluate")


#: Fields added after records were first written: the identity leaves each out while it holds
#: the value a default config resolves it to, so a config that does not use them keeps its id.
LATER_FIELDS: tuple[str, ...] = (
    *(f"{r}.{k}" for r in ("recipe", "teacher.recipe") for k in (
        "optimizer", "optimizer_options", "schedule_options", "warmup_epochs",
        "reset_optimizer")),
    "data.transforms", "data.augmentation", "data.augmentation_options", "teacher.data",
    "warmup", "eval",
)

_unused: dict[str, Any] | None = None


def _unused_values() -> dict[str, Any]:
    """Each later field's value in the resolved default config (computed once)."""
    global _unused
    if _unused is None:
        d = resolve(RunConfig()).to_dict()
        _unused = {}
        for dotted in LATER_FIELDS:
            node: Any = d
            for part in dotted.split("."):
                node = node[part]
            _unused[dotted] = node
    return _unused


def drop_later_defaults(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``d`` (a config as a dict, or the part of one at ``prefix``, e.g. ``"teacher."``) without
    the later fields that hold their default config's value."""
    for dotted, unused in _unused_values().items():
        if not dotted.startswith(prefix):
            continue
        *parents, leaf = dotted[len(prefix):].split(".")
        node: Any = d
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf in node and node[leaf] == unused:
            node.pop(leaf)
    return d


def identity(config: RunConfig) -> dict[str, Any]:
    """What a run id hashes: the resolved config without paths, device and engine settings,
    without the preset's name (its effect is spelled out in the recipe and loss values), and
    without fields and loss options newer than the run's kind at their default. Precision is
    the one asked for (``auto`` stays ``auto``), so an id does not depend on the machine that
    computes it."""
    from .losses import entry

    d = config.to_dict()
    d.pop("preset")
    for dotted in NON_IDENTITY:
        *parents, leaf = dotted.split(".")
        node = d
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    spec = entry(config.loss.name)
    for key in spec.later:
        if key in d["loss"]["options"] and d["loss"]["options"][key] == spec.defaults[key]:
            del d["loss"]["options"][key]
    return drop_later_defaults(d)


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def run_id(config: RunConfig) -> str:
    """Stable id of an already *resolved* config: 16 hex digits of the SHA-256 of its canonical
    JSON (``RunConfig.run_id`` resolves first)."""
    return _digest(identity(config))


def legacy_run_id(config: RunConfig) -> str:
    """The id kdbench 0.1 gave the same config (it hashed the preset's name and the resolved
    precision): records stored under it are found and adopted (see :meth:`Store.adopt`)."""
    d = identity(config)
    d["preset"] = config.preset
    d["precision"] = config.resolved_precision
    return _digest(d)


def _digest(ident: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(ident).encode()).hexdigest()[:16]


# -- presets ------------------------------------------------------------------------------------

def preset_default(preset: str, dotted: str) -> Any:
    """A preset's value for a dotted field, falling back to the dataclass default."""
    node: Any = PRESETS.get(preset, {})
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            node = None
            break
        node = node[part]
    if node is not None:
        return node
    value: Any = RunConfig()
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def _preset_layers(preset: str, student: str, loss: str) -> list[dict[str, Any]]:
    """The preset's layers for a run of ``loss`` by ``student``: its recipe and teacher, its
    per-architecture overrides, and its ``loss_defaults`` as they reach ``loss`` (a composite's
    or a modified loss's parts too: :func:`kdbench.losses.preset_values`)."""
    if preset not in PRESETS:
        raise UnknownNameError("preset", preset, PRESETS)
    p = PRESETS[preset]
    layers = [{k: v for k, v in p.items() if k in ("recipe", "teacher")}]
    for prefix, extra in p.get("arch", {}).items():
        if student.startswith(prefix):
            layers.append(extra)
    if p.get("loss_defaults") and isinstance(loss, str):  # a bad name fails in resolve
        from .losses import preset_values

        weights, options = preset_values(loss, p["loss_defaults"])
        if weights or options:
            layers.append({"loss": {"weights": weights, "options": options}})
    return layers


#: Command-line names accepted as top-level keys of a spec or sweep file, and the config path
#: each stands for (a mapping under ``loss``/``teacher`` is the section itself).
ALIASES: dict[str, str] = {
    "dataset": "data.name", "data_dir": "data.dir", "teacher_arch": "teacher.arch",
    "teacher": "teacher.source", "teacher_epoch": "teacher.epoch",
    "teacher_seed": "teacher.seed", "teacher_weights": "teacher.weights", "loss": "loss.name",
    "epochs": "recipe.epochs", "lr": "recipe.lr", "batch_size": "recipe.batch_size",
    "members": "teacher.options.members", "members_count": "teacher.options.members_count",
    "save_every": "teacher.save_every", "save_epochs": "teacher.save_epochs",
}


def dealias(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` with command-line names (``dataset: digits``, ``loss: kd``) turned into the nested
    config they stand for; a name that is also a section keeps its mapping."""
    out: dict[str, Any] = {}
    flat = {}
    for key, value in d.items():
        if key in ALIASES and value is not None and not isinstance(value, dict):
            flat[ALIASES[key]] = value
        else:
            out[key] = value
    return deep_merge(out, unflatten(flat))


def build_config(overrides: dict[str, Any] | None = None, spec: dict[str, Any] | None = None,
                 explicit: dict[str, Any] | None = None) -> RunConfig:
    """A RunConfig from a spec dict and dotted overrides (``{"recipe.epochs": 5}``), on top of
    the preset they name. None values in ``overrides`` are ignored (an unset flag); those in
    ``explicit`` (``--set KEY=null``) are kept.

    A preset's lr milestones (and step size) follow the epochs asked for: when ``epochs`` is
    given without them, they are scaled as fractions of the preset's own epochs.
    """
    flat = {k: v for k, v in (overrides or {}).items() if v is not None}
    flat.update(explicit or {})
    nested_over = unflatten(flat)
    spec = dealias(copy.deepcopy(spec or {}))
    merged_top = deep_merge(spec, nested_over)
    preset = merged_top.get("preset", RunConfig.preset)
    student = merged_top.get("student", RunConfig.student)
    loss = (merged_top.get("loss") or {}).get("name", LossConfig.name)
    base: dict[str, Any] = {}
    for layer in _preset_layers(preset, student, loss):
        base = deep_merge(base, layer)
    for path in (("recipe",), ("teacher", "recipe")):
        _scale_schedule(_section(base, path), _section(merged_top, path))
    merged = deep_merge(base, merged_top)
    teacher = merged.get("teacher")
    if isinstance(teacher, dict) and isinstance(teacher.get("data"), dict):
        # the teacher's own data settings are layered over the student's
        teacher["data"] = deep_merge(merged.get("data") or {}, teacher["data"])
    return RunConfig.from_dict(merged)


def _section(d: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any] | None:
    for part in path:
        d = d.get(part) if isinstance(d, dict) else None
    return d if isinstance(d, dict) else None


def _scale_schedule(preset: dict[str, Any] | None, given: dict[str, Any] | None) -> None:
    """Scale a preset recipe's milestones/step size to the epochs ``given`` asks for (in place),
    unless ``given`` sets them itself."""
    if not preset or not given or "epochs" not in given or "epochs" not in preset:
        return
    old, new = int(preset["epochs"]), given["epochs"]
    try:
        new = int(new)
    except (TypeError, ValueError):
        return  # a bad value is reported by the typed construction
    if new == old or new < 1:
        return
    if "milestones" in preset and "milestones" not in given:
        preset["milestones"] = sorted({max(1, round(m * new / old))
                                       for m in preset["milestones"]})
    if preset.get("step_size") and "step_size" not in given:
        preset["step_size"] = max(1, round(preset["step_size"] * new / old))


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = out
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"cannot set {dotted!r}: {p!r} is not a section")
        node[leaf] = value
    return out


def deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_assignments(items: typing.Iterable[str], what: str) -> dict[str, Any]:
    """``["a=1", "b=x"]`` → ``{"a": 1, "b": "x"}`` (YAML scalars); malformed items are errors."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"malformed {what} {item!r}: expected KEY=VALUE")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        out[key.strip()] = value
    return out


def parse_plugin_item(text: str, what: str) -> dict[str, Any]:
    """``"NAME:k=v,k2=v2"`` → ``{"name": NAME, "k": v, "k2": v2}`` (YAML scalars)."""
    name, _, rest = text.partition(":")
    if not name.strip():
        raise ConfigError(f"malformed {what} {text!r}: expected NAME or NAME:KEY=VALUE,...")
    items = [x for x in rest.split(",") if x.strip()] if rest else []
    return {"name": name.strip(), **parse_assignments(items, what)}


def load_spec(path: str | Path) -> dict[str, Any]:
    """Read a run spec (YAML or JSON); a record file works too (its ``config`` is used)."""
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"spec file {str(p)!r} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"spec file {str(p)!r} is not valid YAML/JSON: "
                          f"{str(exc).splitlines()[0]}") from None
    if isinstance(data, dict) and "config" in data and "run_id" in data:
        data = data["config"]
    if not isinstance(data, dict):
        raise ConfigError(f"spec file {str(p)!r} must hold a mapping of config fields")
    return data


# -- validation and resolution ------------------------------------------------------------------

def resolve(config: RunConfig) -> RunConfig:
    """Validate a config against the registries and fill in every default it implies.

    Loss weights/options become complete (plugin defaults < preset < user), and so do the
    options of every warm-up stage, evaluator, data transform, optimiser and augmentation; a
    loss that needs no teacher drops the teacher section. The result is what the record stores
    and the id hashes.
    """
    from . import losses
    from .plugins import get

    c = copy.deepcopy(config)
    if c.preset not in PRESETS:
        raise UnknownNameError("preset", c.preset, PRESETS)
    get("model", c.student)
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
        get("model", c.teacher.arch)
        if loss.feature_taps and not source.features:
            from .plugins import get_registry

            logit_losses = [e.name for e in get_registry().entries("loss")
                            if not e.feature_taps]
            raise ConfigError(
                f"loss {c.loss.name!r} taps {', '.join(sorted(loss.feature_taps))} features, "
                f"but teacher source {c.teacher.source!r} gives logits only (losses that work: "
                f"{', '.join(logit_losses)})")
        if source.resolve is not None:  # the source checks and completes its own settings
            source.resolve(c)
        _check_recipe(c.teacher.recipe, "teacher.recipe")
        if c.teacher.data is not None:
            _resolve_data(c.teacher.data, "teacher.data")
        bad = [e for e in c.teacher.save_epochs if not 1 <= e <= c.teacher.recipe.epochs]
        if bad:
            raise ConfigError(f"teacher.save_epochs {bad} outside 1..{c.teacher.recipe.epochs}")
        if c.teacher.evaluate not in TEACHER_EVALUATE:
            raise UnknownNameError("teacher.evaluate", c.teacher.evaluate, TEACHER_EVALUATE)
        if c.teacher.save_every < 0:
            raise ConfigError(f"teacher.save_every must be >= 0, got {c.teacher.save_every}")
    _check_recipe(c.recipe, "recipe")
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
    from .plugins import KINDS, get

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


def _resolve_data(d: DataConfig, where: str) -> None:
    from .plugins import get

    get("dataset", d.name)
    d.transforms = resolve_items(d.transforms, "data_transform", f"{where}.transforms")
    spec = get("augmentation", d.augmentation)
    d.augmentation_options = coerce_options(
        d.augmentation_options, spec.defaults, f"augmentation {spec.name!r}", spec.types)


def _resolve_stages(items: list[Any]) -> list[dict[str, Any]]:
    from .stages import COMMON_OPTIONS, COMMON_TYPES

    out = resolve_items(items, "stage", "warmup", COMMON_OPTIONS, COMMON_TYPES)
    for item in out:
        if item["epochs"] is not None and item["epochs"] < 0:
            raise ConfigError(f"stage {item['name']!r} epochs must be >= 0, got "
                              f"{item['epochs']}")
        if item["optimizer"] is not None:
            from .plugins import get

            get("optimizer", item["optimizer"])
        from .plugins import get

        get("schedule", item["schedule"])
    return out


def _resolve_loggers(items: list[Any]) -> list[dict[str, Any]]:
    from .loggers import EXTERNAL_LOGGERS
    from .plugins import get, names

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


def _resolve_eval(e: EvalConfig) -> None:
    from .plugins import get

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
    from .plugins import get, names

    try:
        return get(kind, name)
    except UnknownNameError:
        raise UnknownNameError(where, name, names(kind)) from None


def _check_recipe(r: Recipe, where: str) -> None:

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
        import warnings

        warnings.warn(f"kdbench: {where} drops its lr for the last time at epoch "
                      f"{max(r.milestones)} of {r.epochs}: the second half of training runs at "
                      f"the final lr (set {where}.milestones if that is not meant)",
                      RuntimeWarning, stacklevel=3)
