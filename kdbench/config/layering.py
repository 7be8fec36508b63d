"""Building a run config in layers, lowest first: dataclass defaults < preset (with its
per-architecture and per-loss defaults) < spec file < command-line flags.

Values that are None are dropped before layering, so an unset flag never clobbers a preset.
Also here: reading spec files, the command-line names a spec may use (:data:`ALIASES`), and
parsing ``KEY=VALUE`` and ``NAME:k=v`` items.
"""

from __future__ import annotations

import copy
import re
import typing
from pathlib import Path
from typing import Any

from ..errors import ConfigError, UnknownNameError
from .presets import PRESETS
from .schema import LossConfig, RunConfig


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
    layers = [{k: v for k, v in p.items() if k in ("recipe", "teacher", "data", "student")}]
    for prefix, extra in p.get("arch", {}).items():
        if student.startswith(prefix):
            layers.append(extra)
    if p.get("loss_defaults") and isinstance(loss, str):  # a bad name fails in resolve
        from ..losses import preset_values

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
        if key == "student" and isinstance(value, dict):  # student: {name, options}
            unknown = sorted(set(value) - {"name", "options"})
            if unknown or "name" not in value:
                raise ConfigError(f"student as a mapping takes name and options, got "
                                  f"{sorted(value)}")
            out["student"] = value["name"]
            out["student_options"] = {**(d.get("student_options") or {}),
                                      **(value.get("options") or {})}
        elif key in ALIASES and value is not None and not isinstance(value, dict):
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


#: integers joined by colons (``2:4``), kept as text rather than YAML 1.1's base-60 numbers
_COLON_INTS = re.compile(r"\d+(?::\d+)+")


def parse_assignments(items: typing.Iterable[str], what: str) -> dict[str, Any]:
    """``["a=1", "b=x"]`` → ``{"a": 1, "b": "x"}`` (YAML scalars); malformed items are errors."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"malformed {what} {item!r}: expected KEY=VALUE")
        if _COLON_INTS.fullmatch(raw.strip()):
            # YAML 1.1 reads 2:4 as the base-60 number 124; on a command line it is a pair
            # (a loss's option stages=2:4)
            value: Any = raw.strip()
        else:
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
    except UnicodeDecodeError:
        raise ConfigError(f"spec file {str(p)!r} is not text (not UTF-8): give a YAML or JSON "
                          f"spec") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"spec file {str(p)!r} is not valid YAML/JSON: "
                          f"{str(exc).splitlines()[0]}") from None
    if isinstance(data, dict) and "config" in data and "run_id" in data:
        data = data["config"]
    if not isinstance(data, dict):
        raise ConfigError(f"spec file {str(p)!r} must hold a mapping of config fields")
    return data
