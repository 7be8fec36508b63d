"""Composite losses: ``crd+kd`` adds the terms of several registered losses.

The first-named loss is the base: it gives ``w_ce`` and its own weights and options. Each further
loss adds its terms with the weights it declares for being *added* (its ``combo`` metadata, e.g.
KD's weight 1 in RepDistiller's "+KD" rows, run as ``-r 1 -a 1 -b <β>``), else its own defaults.
An option two parts share (e.g. ``T``) has one value, the first part's default. The parts' own
stages run one after the other, in the order the parts are named.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .base import DistillContext, Distiller

SEPARATOR = "+"


def split(name: str) -> list[str]:
    parts = [p.strip() for p in name.split(SEPARATOR)]
    if any(not p for p in parts):
        raise ConfigError(f"malformed loss {name!r}: expected NAME+NAME (e.g. crd+kd)")
    dup = sorted({p for p in parts if parts.count(p) > 1})
    if dup:
        raise ConfigError(f"loss {name!r} names {', '.join(dup)} twice")
    return parts


def merge_fields(specs: list[Any]) -> dict[str, Any]:
    """The registration fields of a composite (defaults, taps, teacher need, papers) from its
    parts' specs."""
    defaults: dict[str, Any] = dict(specs[0].defaults)
    types: dict[str, Any] = {}
    for e in specs[1:]:
        for key, value in {**e.defaults, **e.combo}.items():
            if key != "w_ce":
                defaults.setdefault(key, value)
    for e in reversed(specs):
        types.update(e.types)
    taps: set[str] = set()
    for e in specs:
        taps |= set(e.taps)
    finalizers = [e.finalize for e in specs if e.finalize is not None]

    def finalize(weights, options, **names) -> None:
        for f in finalizers:
            f(weights, options, **names)

    # the composite is as new as its newest part, whose code it is credited to (crd+wttm: TTM's)
    dated = [e for e in specs if e.year is not None]
    newest = max(dated, key=lambda e: e.year) if dated else specs[0]
    return {"defaults": defaults, "types": types, "taps": tuple(sorted(taps)),
            "year": newest.year, "repo": newest.repo or specs[0].repo,
            "needs_teacher": any(e.teacher_needed for e in specs),
            "paper": "; ".join(e.paper for e in specs), "parts": tuple(e.name for e in specs),
            "family": "+".join(dict.fromkeys(e.family for e in specs if e.family)),
            "later": tuple(dict.fromkeys(k for e in specs for k in e.later if k in defaults)),
            "finalize": finalize if finalizers else None}


class Combined(Distiller):
    """The sum of several distillers' terms (each keeps its own connectors)."""

    def __init__(self, ctx: DistillContext, factories: list[tuple[str, Callable[..., Distiller]]]):
        super().__init__(ctx)
        self.parts = nn.ModuleList(factory(ctx) for _, factory in factories)
        self.names = [name for name, _ in factories]
        self.taps = frozenset().union(*(p.taps for p in self.parts))
        self.needs_teacher = any(p.needs_teacher for p in self.parts)
        self.views = tuple(dict.fromkeys(v for p in self.parts for v in p.views))

    def forward(self, student, teacher, target, index=None, epoch=0, **step):
        terms: dict[str, torch.Tensor] = {}
        for part in self.parts:
            accepted = part.step_arguments
            terms.update(part(student, teacher, target, index, epoch,
                              **{k: v for k, v in step.items() if k in accepted}))
        return terms

    def stages(self):
        """Every part's own stages, in the order the parts are named."""
        return [s for part in self.parts for s in part.stages()]

    def main_parameters(self):
        return [p for part in self.parts for p in part.main_parameters()]
