"""KD losses: a pure functional core (:mod:`.functional`) and a loss plugin per method."""

from __future__ import annotations

from typing import Any

from .base import TAPS, DistillContext, Distiller

__all__ = ["TAPS", "DistillContext", "Distiller", "resolve", "build"]


def resolve(name: str, weights: dict[str, float] | None = None,
            options: dict[str, Any] | None = None) -> tuple[dict[str, float], dict[str, Any]]:
    """The loss's full weights and options: its registered defaults overlaid with ``weights`` and
    ``options``. Unknown keys are an error that lists the valid ones."""
    from ..errors import ConfigError
    from ..plugins import get

    entry = get("loss", name)
    defaults: dict[str, Any] = dict(entry.metadata.get("defaults", {}))
    w = {k: float(v) for k, v in defaults.items() if k.startswith("w_")}
    o = {k: v for k, v in defaults.items() if not k.startswith("w_")}
    for given, target, kind in ((weights or {}, w, "weight"), (options or {}, o, "option")):
        for key, value in given.items():
            if key not in target:
                valid = ", ".join(sorted(target)) or "none"
                raise ConfigError(f"loss {name!r} has no {kind} {key!r} (valid: {valid})")
            target[key] = type(target[key])(value) if target[key] is not None else value
    return w, o


def build(name: str, ctx: DistillContext) -> Distiller:
    from ..plugins import get

    return get("loss", name).create(ctx)
