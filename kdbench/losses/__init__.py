"""KD losses: a pure functional core (:mod:`.functional`) and a loss plugin per method.

A loss name is a registered name (``crd``) or a composite of several (``crd+kd``, see
:mod:`.combine`); :func:`entry`, :func:`resolve` and :func:`build` accept both.
"""

from __future__ import annotations

from typing import Any

from .base import TAPS, DistillContext, Distiller

__all__ = ["TAPS", "DistillContext", "Distiller", "build", "describe", "entry", "format_table",
           "resolve"]


def entry(name: str):
    """The registry entry of a loss, or a synthetic one for a composite ``a+b``."""
    from ..plugins import Entry, get
    from . import combine

    if combine.SEPARATOR not in name:
        return get("loss", name)
    entries = [get("loss", part) for part in combine.split(name)]
    factories = [(e.name, e.factory) for e in entries]

    def factory(ctx: DistillContext) -> Distiller:
        return combine.Combined(ctx, factories)

    meta = combine.merge_metadata(entries)
    description = " + ".join(e.name for e in entries)
    source = ", ".join(sorted({e.source for e in entries}))
    return Entry("loss", name, factory, source, description, meta)


def resolve(name: str, weights: dict[str, float] | None = None,
            options: dict[str, Any] | None = None, *, student: str | None = None,
            teacher: str | None = None) -> tuple[dict[str, float], dict[str, Any]]:
    """The loss's full weights and options: its registered defaults overlaid with ``weights`` and
    ``options``. Unknown keys are an error that lists the valid ones. A loss whose defaults depend
    on the architectures (DKD's per-pair β table, FT's init lr) fills them in from ``student`` and
    ``teacher`` (names), so the record holds the values actually used."""
    from ..errors import ConfigError

    e = entry(name)
    defaults: dict[str, Any] = dict(e.metadata.get("defaults", {}))
    w = {k: float(v) for k, v in defaults.items() if k.startswith("w_")}
    o = {k: v for k, v in defaults.items() if not k.startswith("w_")}
    for given, target, kind in ((weights or {}, w, "weight"), (options or {}, o, "option")):
        for key, value in given.items():
            if key not in target:
                valid = ", ".join(sorted(target)) or "none"
                raise ConfigError(f"loss {name!r} has no {kind} {key!r} (valid: {valid})")
            default = target[key]
            if default is None or value is None:
                target[key] = value
                continue
            try:
                target[key] = _coerce(default, value)
            except (TypeError, ValueError):
                raise ConfigError(f"loss {name!r} {kind} {key} must be "
                                  f"{type(default).__name__}, got {value!r}") from None
    finalize = e.metadata.get("finalize")
    if finalize is not None:
        finalize(w, o, student=student, teacher=teacher)
    return w, o


def _coerce(default: Any, value: Any) -> Any:
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ValueError(value)
    if isinstance(default, int) and not isinstance(value, bool):
        if float(value) != int(float(value)):
            raise ValueError(value)
        return int(float(value))
    return type(default)(value)


def build(name: str, ctx: DistillContext) -> Distiller:
    return entry(name).create(ctx)


def describe(names: list[str] | None = None) -> list[dict[str, Any]]:
    """What ``kdbench losses`` shows: name, paper, taps, weights and options of each loss."""
    from ..plugins import names as registered

    rows = []
    for name in names or registered("loss"):
        e = entry(name)
        d = e.metadata.get("defaults", {})
        rows.append({"name": name, "description": e.description,
                     "paper": e.metadata.get("paper", "-"),
                     "taps": list(e.metadata.get("taps", ("logits",))),
                     "needs_teacher": bool(e.metadata.get(
                         "needs_teacher", getattr(e.factory, "needs_teacher", True))),
                     "weights": {k: v for k, v in d.items() if k.startswith("w_")},
                     "options": {k: v for k, v in d.items() if not k.startswith("w_")},
                     "source": e.source})
    return rows


def format_table(rows: list[dict[str, Any]], detail: bool = False) -> str:
    """``kdbench losses`` as text: one row per loss, or with ``detail`` every field and the
    docstring of the loss's functional form."""
    from tabulate import tabulate

    def kv(d: dict[str, Any]) -> str:
        return ", ".join(f"{k}={v}" for k, v in d.items()) or "-"

    if not detail:
        return tabulate([(r["name"], ", ".join(r["taps"]), kv(r["weights"]), kv(r["options"]),
                          r["paper"]) for r in rows],
                        headers=["loss", "taps", "weights", "options", "paper"])
    blocks = []
    for r in rows:
        blocks.append("\n".join([
            f"{r['name']}: {r['description']}", f"  paper:   {r['paper']}",
            f"  taps:    {', '.join(r['taps'])}"
            + ("" if r["needs_teacher"] else " (no teacher)"),
            f"  weights: {kv(r['weights'])}", f"  options: {kv(r['options'])}",
            f"  source:  {r['source']}"]))
    return "\n\n".join(blocks)
