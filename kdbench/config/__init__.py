"""Run configuration: typed dataclasses, presets, layered overrides, validation and the run id.

Layers, lowest first: dataclass defaults < preset (with its per-architecture and per-loss
defaults) < spec file < command-line flags. Values that are None are dropped before layering, so
an unset flag never clobbers a preset. :func:`resolve` validates every name against the plugin
registries and fills in each loss's full weights and options, so a record shows every value
that shaped the run and the run id is the hash of exactly those values.

The rooms: :mod:`.schema` (the dataclasses), :mod:`.presets`, :mod:`.layering` (building a config
from presets, spec files and flags), :mod:`.resolve` (validation and completion) and
:mod:`.identity` (the run id).
"""

from __future__ import annotations

from .identity import (
    LATER_FIELDS,
    NON_IDENTITY,
    canonical_json,
    drop_later_defaults,
    identity,
    later_defaults,
    legacy_run_id,
    run_id,
)
from .layering import (
    ALIASES,
    build_config,
    dealias,
    deep_merge,
    load_spec,
    parse_assignments,
    parse_plugin_item,
    preset_default,
    unflatten,
)
from .presets import PRESETS
from .resolve import (
    DEVICES,
    PRECISIONS,
    RESET_OPTIMIZER,
    TEACHER_EVALUATE,
    check_recipe,
    resolve,
    resolve_config,
    resolve_items,
)
from .schema import (
    DataConfig,
    EngineConfig,
    EvalConfig,
    LossConfig,
    Recipe,
    RunConfig,
    TeacherConfig,
)

__all__ = [
    "ALIASES", "DEVICES", "LATER_FIELDS", "NON_IDENTITY", "PRECISIONS", "PRESETS",
    "RESET_OPTIMIZER", "TEACHER_EVALUATE", "DataConfig", "EngineConfig", "EvalConfig",
    "LossConfig", "Recipe", "RunConfig", "TeacherConfig", "build_config", "canonical_json",
    "check_recipe", "dealias", "deep_merge", "drop_later_defaults", "identity",
    "later_defaults", "legacy_run_id", "load_spec", "parse_assignments", "parse_plugin_item",
    "preset_default", "resolve", "resolve_config", "resolve_items", "run_id", "unflatten",
]
