"""A run's identity: the run id (a hash of the resolved config), its canonical JSON, and the ids
older kdbench versions gave the same config.

The id hashes what determines the result and nothing else: not the paths, device and engine
settings (:data:`NON_IDENTITY`), not the preset's name (its values are spelled out), and not
fields added after records were first written while they hold their default value
(:data:`LATER_FIELDS`), so a config that does not use them keeps the id it always had.

The functions take a resolved :class:`~kdbench.config.schema.RunConfig`; the default a later
field is compared with is that of a fresh config of the same class, resolved.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .resolve import resolve

#: Fields that say where or on what a run happens, not what it is.
NON_IDENTITY = ("results_dir", "device", "data.dir", "engine", "log", "teacher.evaluate",
                "keep")


#: Fields added after records were first written: the identity leaves each out while it holds
#: the value a default config resolves it to, so a config that does not use them keeps its id.
LATER_FIELDS: tuple[str, ...] = (
    *(f"{r}.{k}" for r in ("recipe", "teacher.recipe") for k in (
        "optimizer", "optimizer_options", "schedule_options", "warmup_epochs",
        "reset_optimizer")),
    "data.transforms", "data.augmentation", "data.augmentation_options", "teacher.data",
    "warmup", "eval", "teacher.bn",
    # kdbench 0.3: published teachers (adapting a teacher from weights) and model options
    "teacher.adapt", "teacher.adapt_recipe", "teacher.allow_weak", "teacher.model_options",
    "student_options",
)

#: config class -> each later field's value in its resolved default config
_unused: dict[type, dict[str, Any]] = {}


def later_defaults(config: Any) -> dict[str, Any]:
    """Each later field's value in the resolved default config (computed once per class)."""
    cls = type(config)
    if cls not in _unused:
        d = resolve(cls()).to_dict()
        values = {}
        for dotted in LATER_FIELDS:
            node: Any = d
            for part in dotted.split("."):
                node = node[part]
            values[dotted] = node
        _unused[cls] = values
    return _unused[cls]


def drop_later_defaults(d: dict[str, Any], prefix: str = "", *, config: Any) -> dict[str, Any]:
    """``d`` (``config`` as a dict, or the part of one at ``prefix``, e.g. ``"teacher."``)
    without the later fields that hold their default config's value."""
    for dotted, unused in later_defaults(config).items():
        if not dotted.startswith(prefix):
            continue
        *parents, leaf = dotted[len(prefix):].split(".")
        node: Any = d
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf in node and node[leaf] == unused:
            node.pop(leaf)
    return d


def identity(config: Any) -> dict[str, Any]:
    """What a run id hashes: the resolved config without paths, device and engine settings,
    without the preset's name (its effect is spelled out in the recipe and loss values), and
    without fields and loss options newer than the run's kind at their default. Precision is
    the one asked for (``auto`` stays ``auto``), so an id does not depend on the machine that
    computes it."""
    from ..losses import entry

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
    return drop_later_defaults(d, config=config)


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def run_id(config: Any) -> str:
    """Stable id of an already *resolved* config: 16 hex digits of the SHA-256 of its canonical
    JSON (``RunConfig.run_id`` resolves first)."""
    return _digest(identity(config))


def legacy_run_id(config: Any) -> str:
    """The id kdbench 0.1 gave the same config (it hashed the preset's name and the resolved
    precision): records stored under it are found and adopted (see :meth:`Store.adopt`)."""
    d = identity(config)
    d["preset"] = config.preset
    d["precision"] = config.resolved_precision
    return _digest(d)


def _digest(ident: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(ident).encode()).hexdigest()[:16]
