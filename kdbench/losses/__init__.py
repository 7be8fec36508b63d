"""KD losses: a pure functional core (:mod:`.functional`) and a loss plugin per method.

A loss name is a registered name (``crd``) or a composite of several (``crd+kd``, see
:mod:`.combine`); :func:`entry`, :func:`resolve` and :func:`build` accept both.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..spec import LossSpec
from .base import TAPS, DistillContext, Distiller, LossStage

__all__ = ["TAPS", "DistillContext", "Distiller", "LossStage", "build", "describe", "entry",
           "format_table", "resolve"]


def entry(name: str) -> LossSpec:
    """The registry spec of a loss, or a synthetic one for a composite ``a+b``."""
    from ..plugins import get
    from . import combine

    if combine.SEPARATOR not in name:
        return get("loss", name)
    specs = [get("loss", part) for part in combine.split(name)]
    factories = [(e.name, e.factory) for e in specs]

    def factory(ctx: DistillContext) -> Distiller:
        return combine.Combined(ctx, factories)

    return LossSpec(name=name, factory=factory,
                    source=", ".join(sorted({e.source for e in specs})),
                    description=" + ".join(e.name for e in specs),
                    **combine.merge_fields(specs))


def resolve(name: str, weights: dict[str, float] | None = None,
            options: dict[str, Any] | None = None, *, student: str | None = None,
            teacher: str | None = None) -> tuple[dict[str, float], dict[str, Any]]:
    """The loss's full weights and options: its registered defaults overlaid with ``weights`` and
    ``options``, each typed by its default (or the registration's ``types``). Unknown keys are
    an error that lists the valid ones. A loss whose defaults depend on the architectures (DKD's
    per-pair β table, FT's init lr) fills them in from ``student`` and ``teacher`` (names), so
    the record holds the values actually used."""
    from ..spec import coerce_options

    e = entry(name)
    w_defaults = {k: float(v) for k, v in e.defaults.items() if k.startswith("w_")}
    o_defaults = {k: v for k, v in e.defaults.items() if not k.startswith("w_")}
    w = coerce_options(weights, w_defaults, f"loss {name!r}", {k: float for k in w_defaults},
                       kind="weight")
    o = coerce_options(options, o_defaults, f"loss {name!r}", e.types)
    negative = {k: v for k, v in w.items() if v < 0}
    if negative:
        k, v = next(iter(negative.items()))
        raise ConfigError(f"loss {name!r} weight {k} must be >= 0, got {v} (a negative weight "
                          f"turns minimising the term into maximising it)")
    if e.finalize is not None:
        e.finalize(w, o, student=student, teacher=teacher)
    return w, o


def build(name: str, ctx: DistillContext) -> Distiller:
    return entry(name).create(ctx)


def describe(names: list[str] | None = None) -> list[dict[str, Any]]:
    """What ``kdbench losses`` shows: name, paper, taps, weights and options of each loss."""
    from ..plugins import names as registered

    rows = []
    for name in names or registered("loss"):
        e = entry(name)
        rows.append({"name": name, "description": e.description, "paper": e.paper,
                     "year": e.year, "repo": e.repo, "family": e.family,
                     "taps": list(e.taps), "needs_teacher": e.teacher_needed,
                     "weights": {k: v for k, v in e.defaults.items() if k.startswith("w_")},
                     "options": {k: v for k, v in e.defaults.items() if not k.startswith("w_")},
                     "cost": e.cost, "source": e.source})
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
            *([f"  cost:    {r['cost']}"] if r["cost"] else []),
            f"  source:  {r['source']}"]))
    return "\n\n".join(blocks)
