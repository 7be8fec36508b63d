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
import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError, UnknownNameError

SCHEDULES = ("multistep", "step", "cosine", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass
class Recipe:
    """Optimisation recipe (SGD): shared shape for teacher training and distillation."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "multistep"  # multistep | step | cosine | constant
    milestones: list[int] = field(default_factory=list)  # multistep: epochs where lr ×= gamma
    step_size: int = 0  # step: lr ×= gamma every step_size epochs
    gamma: float = 0.1

    def lr_factor(self, epoch: int) -> float:
        """Multiplier of the base lr during ``epoch`` (0-based)."""
        if self.schedule == "multistep":
            return self.gamma ** sum(epoch >= m for m in self.milestones)
        if self.schedule == "step":
            return self.gamma ** (epoch // self.step_size)
        if self.schedule == "cosine":
            import math
            return 0.5 * (1.0 + math.cos(math.pi * epoch / self.epochs))
        return 1.0


@dataclass
class DataConfig:
    name: str = "digits"
    dir: str | None = None  # where the files are: not part of the run's identity
    augment: bool = True
    options: dict[str, Any] = field(default_factory=dict)  # the dataset factory's keyword args


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
    seed: int = 0
    precision: str = "auto"
    device: str = "auto"
    results_dir: str = "results"
    engine: EngineConfig = field(default_factory=EngineConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        return _from_dict(cls, data, "")

    @property
    def run_id(self) -> str:
        """The id of this run: the hash of the resolved config (defaults filled in)."""
        return run_id(resolve(self))


#: Fields that say where or on what a run happens, not what it is.
NON_IDENTITY = ("results_dir", "device", "data.dir", "engine")


def identity(config: RunConfig) -> dict[str, Any]:
    d = config.to_dict()
    for dotted in NON_IDENTITY:
        *parents, leaf = dotted.split(".")
        node = d
        for p in parents:
            node = node[p]
        node.pop(leaf, None)
    return d


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def run_id(config: RunConfig) -> str:
    """Stable id of an already *resolved* config: 16 hex digits of the SHA-256 of its canonical
    JSON (``RunConfig.run_id`` resolves first)."""
    return hashlib.sha256(canonical_json(identity(config)).encode()).hexdigest()[:16]


# -- presets ------------------------------------------------------------------------------------

#: name -> nested overrides. ``arch`` maps a student-architecture prefix to extra overrides;
#: ``loss_defaults`` maps a loss name to weights/options that replace the plugin's defaults.
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {
        "description": "minutes on a 2-core CPU: 30 epochs, lr 0.05 ×0.1 at 18/24/28, batch 128",
        "recipe": {"epochs": 30, "batch_size": 128, "lr": 0.05, "schedule": "multistep",
                   "milestones": [18, 24, 28], "weight_decay": 5e-4},
        "teacher": {"recipe": {"epochs": 30, "batch_size": 128, "lr": 0.05,
                               "schedule": "multistep", "milestones": [18, 24, 28]},
                    "save_every": 3},
    },
    "repdistiller": {
        "description": "RepDistiller/CRD CIFAR-100 protocol: 240 epochs, lr 0.05 ×0.1 at "
                       "150/180/210, wd 5e-4, batch 64",
        "recipe": {"epochs": 240, "batch_size": 64, "lr": 0.05, "momentum": 0.9,
                   "schedule": "multistep", "milestones": [150, 180, 210], "weight_decay": 5e-4},
        "teacher": {"recipe": {"epochs": 240, "batch_size": 64, "lr": 0.05, "momentum": 0.9,
                               "schedule": "multistep", "milestones": [150, 180, 210],
                               "weight_decay": 5e-4},
                    "save_every": 20},
        # RepDistiller uses lr 0.01 for MobileNetV2 and ShuffleNet students
        "arch": {"mobilenetv2": {"recipe": {"lr": 0.01}}, "shufflev": {"recipe": {"lr": 0.01}}},
    },
    "checkpointkd": {
        "description": "Checkpoint KD (NeurIPS 2022): 200 epochs, SGD Nesterov lr 0.1 ÷10 every "
                       "60, wd 5e-4, batch 128, checkpoints every 20; KD α 0.5, T 5",
        "recipe": {"epochs": 200, "batch_size": 128, "lr": 0.1, "momentum": 0.9, "nesterov": True,
                   "schedule": "step", "step_size": 60, "gamma": 0.1, "weight_decay": 5e-4},
        "teacher": {"recipe": {"epochs": 200, "batch_size": 128, "lr": 0.1, "momentum": 0.9,
                               "nesterov": True, "schedule": "step", "step_size": 60,
                               "gamma": 0.1, "weight_decay": 5e-4},
                    "save_every": 20},
        "loss_defaults": {"kd": {"w_ce": 0.5, "w_kd": 0.5, "T": 5.0}},
    },
}


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
    if preset not in PRESETS:
        raise UnknownNameError("preset", preset, PRESETS)
    p = PRESETS[preset]
    layers = [{k: v for k, v in p.items() if k in ("recipe", "teacher")}]
    for prefix, extra in p.get("arch", {}).items():
        if student.startswith(prefix):
            layers.append(extra)
    if loss in p.get("loss_defaults", {}):
        d = p["loss_defaults"][loss]
        layers.append({"loss": {"weights": {k: v for k, v in d.items() if k.startswith("w_")},
                                "options": {k: v for k, v in d.items()
                                            if not k.startswith("w_")}}})
    return layers


def build_config(overrides: dict[str, Any] | None = None, spec: dict[str, Any] | None = None,
                 ) -> RunConfig:
    """A RunConfig from a spec dict and dotted overrides (``{"recipe.epochs": 5}``), on top of
    the preset they name. None values are ignored."""
    flat = {k: v for k, v in (overrides or {}).items() if v is not None}
    nested_over = unflatten(flat)
    spec = copy.deepcopy(spec or {})
    merged_top = deep_merge(spec, nested_over)
    preset = merged_top.get("preset", RunConfig.preset)
    student = merged_top.get("student", RunConfig.student)
    loss = (merged_top.get("loss") or {}).get("name", LossConfig.name)
    base: dict[str, Any] = {}
    for layer in _preset_layers(preset, student, loss):
        base = deep_merge(base, layer)
    return RunConfig.from_dict(deep_merge(base, merged_top))


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


# -- typed construction -------------------------------------------------------------------------

def _from_dict(cls: type, data: Any, where: str) -> Any:
    if data is None and where.rstrip(".") == "teacher":
        return None
    if not isinstance(data, dict):
        raise ConfigError(f"{where.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UnknownNameError("config field", where + unknown[0],
                               [where + n for n in sorted(names)])
    kwargs = {k: _coerce(hints[k], v, where + k) for k, v in data.items()}
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, where)
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, value, where + ".")
    if origin is list:
        if isinstance(value, str):
            value = [v for v in re.split(r"[,\s]+", value.strip("[]")) if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return [_coerce(args[0], v, where) for v in value] if args else list(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping of key=value, got {value!r}")
        return {str(k): v for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false",
                                                         "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if tp in (int, float):
        try:
            number = tp(value) if not isinstance(value, str) else tp(float(value)) if tp is int \
                else float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be {'an integer' if tp is int else 'a number'}, "
                              f"got {value!r}") from None
        if tp is int and float(value) != number:
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return number
    if tp is str:
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return str(value)
    return value


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

    Loss weights/options become complete (plugin defaults < preset < user); a loss that needs no
    teacher drops the teacher section. The result is what the record stores and the id hashes.
    """
    from . import losses
    from .plugins import get

    c = copy.deepcopy(config)
    if c.preset not in PRESETS:
        raise UnknownNameError("preset", c.preset, PRESETS)
    get("dataset", c.data.name)
    get("model", c.student)
    loss_entry = losses.entry(c.loss.name)
    c.loss.weights, c.loss.options = losses.resolve(
        c.loss.name, c.loss.weights, c.loss.options, student=c.student,
        teacher=c.teacher.arch if c.teacher is not None else None)
    needs_teacher = loss_entry.metadata.get("needs_teacher", _needs_teacher(loss_entry))
    if not needs_teacher:
        c.teacher = None
    elif c.teacher is None:
        raise ConfigError(f"loss {c.loss.name!r} needs a teacher but the config has none")
    else:
        source = get("teacher_source", c.teacher.source)
        get("model", c.teacher.arch)
        feature_taps = set(loss_entry.metadata.get("taps", ("logits",))) - {"logits", "index"}
        if feature_taps and not source.metadata.get("features", True):
            from .plugins import get_registry

            logit_losses = [e.name for e in get_registry().entries("loss")
                            if set(e.metadata.get("taps", ("logits",))) <= {"logits", "index"}]
            raise ConfigError(
                f"loss {c.loss.name!r} taps {', '.join(sorted(feature_taps))} features, but "
                f"teacher source {c.teacher.source!r} gives logits only (losses that work: "
                f"{', '.join(logit_losses)})")
        resolve_source = source.metadata.get("resolve")
        if resolve_source is not None:  # the source checks and completes its own settings
            resolve_source(c)
        _check_recipe(c.teacher.recipe, "teacher.recipe")
        bad = [e for e in c.teacher.save_epochs if not 1 <= e <= c.teacher.recipe.epochs]
        if bad:
            raise ConfigError(f"teacher.save_epochs {bad} outside 1..{c.teacher.recipe.epochs}")
        if c.teacher.save_every < 0:
            raise ConfigError(f"teacher.save_every must be >= 0, got {c.teacher.save_every}")
    _check_recipe(c.recipe, "recipe")
    if c.engine.threads < 0:
        raise ConfigError(f"engine.threads must be >= 0 (0: all cores), got {c.engine.threads}")
    if c.precision not in PRECISIONS:
        raise UnknownNameError("precision", c.precision, PRECISIONS)
    if c.device not in DEVICES and not re.fullmatch(r"cuda:\d+", c.device):
        raise UnknownNameError("device", c.device, DEVICES)
    from .engine import resolve_precision
    c.precision = resolve_precision(c.precision, c.device)
    return c


def _needs_teacher(entry: Any) -> bool:
    return bool(getattr(entry.factory, "needs_teacher", True))


def _check_recipe(r: Recipe, where: str) -> None:
    if r.epochs < 1:
        raise ConfigError(f"{where}.epochs must be >= 1, got {r.epochs}")
    if r.batch_size < 2:
        raise ConfigError(f"{where}.batch_size must be >= 2, got {r.batch_size}")
    if not r.lr > 0:
        raise ConfigError(f"{where}.lr must be > 0, got {r.lr}")
    if r.schedule not in SCHEDULES:
        raise UnknownNameError(f"{where}.schedule", r.schedule, SCHEDULES)
    if r.schedule == "step" and r.step_size < 1:
        raise ConfigError(f"{where}.step_size must be >= 1 with schedule 'step'")
