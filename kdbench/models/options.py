"""An architecture's own options (``--student-opt drop_path_rate=0.1``, ``--teacher-opt ...``;
the config's ``student_options`` and ``teacher.model_options``), checked before any training.

The valid names are what the model's constructor takes: for ``timm/<name>`` the timm model
class's keyword arguments (``drop_rate``, ``drop_path_rate``, ``global_pool``, ...) plus the
adapter's ``out_indices`` (which feature stages the view exposes); for a zoo model its factory's
and class's keyword arguments (``width`` of ``mobilenetv2``, ``drop_rate`` of the WRNs). A model
is then built once on the meta device with the options, so a bad value fails here too.
"""

from __future__ import annotations

import inspect
from typing import Any

from ..errors import ConfigError, UnknownNameError

#: constructor arguments that are the run's to set, never an option
_RESERVED = {"self", "num_classes", "in_chans", "pretrained", "variant", "block", "layers",
             "device", "dtype",
             "cfg", "depth", "widen", "args", "kwargs", "kw"}


def _keywords(fn: Any) -> list[str]:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            and p.name not in _RESERVED]


def get_model(name: str) -> Any:
    """The registry entry of architecture ``name``; an unknown name that timm knows
    (``resnet18``, ``convnext_tiny.fb_in1k``) says to write ``timm/<name>``."""
    from ..plugins import get

    try:
        return get("model", name)
    except UnknownNameError as exc:
        if "/" in name or not _timm_knows(name):
            raise
        raise UnknownNameError("model", name, [*exc.choices, f"timm/{name}"],
                               hint=f"timm has {name!r}: use timm/{name}") from None


def _timm_knows(name: str) -> bool:
    try:
        from .timm_adapter import timm_names
    except ImportError:  # pragma: no cover - timm is a dependency
        return False
    return name.split(".", 1)[0] in set(timm_names())


def option_names(name: str) -> list[str]:
    """The options architecture ``name`` takes."""
    from ..plugins import get
    from . import create_meta_model

    entry = get("model", name)
    names = set(_keywords(entry.create))
    model = create_meta_model(name, 10)
    inner = getattr(model, "model", None)
    if inner is not None and hasattr(model, "timm_name"):
        names |= set(_keywords(type(inner).__init__)) | {"out_indices"}
    else:
        names |= set(_keywords(type(model).__init__))
    return sorted(names)


def check_model_options(name: str, options: dict[str, Any], where: str) -> None:
    """One-line ``ConfigError`` for an option ``name`` does not take (listing the valid ones)
    or a value its constructor refuses."""
    if not options:
        return
    valid = option_names(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise UnknownNameError(f"{where} option of {name!r}", unknown[0], valid)
    from . import create_meta_model

    try:
        create_meta_model(name, 10, **options)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - the constructor's own complaint, in one line
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{where} {options} do not build {name!r}: {text}") from None
