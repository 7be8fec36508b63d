"""Composite losses: ``crd+kd`` adds the terms of several registered losses.

The first-named loss is the base: it gives ``w_ce`` and its own weights and options. Each further
loss adds its terms with the weights it declares for being *added* (its ``combo`` metadata, e.g.
KD's weight 1 in RepDistiller's "+KD" rows, run as ``-r 1 -a 1 -b <β>``), else its own defaults.
An option two parts share (e.g. ``T``) has one value, the first part's default. At most one part
may have an init stage.
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


def merge_metadata(entries: list[Any]) -> dict[str, Any]:
    """Defaults, taps, teacher need and papers of a composite from its parts' entries."""
    defaults: dict[str, Any] = dict(entries[0].metadata.get("defaults", {}))
    for e in entries[1:]:
        added = {**e.metadata.get("defaults", {}), **e.metadata.get("combo", {})}
        for key, value in added.items():
            if key != "w_ce":
                defaults.setdefault(key, value)
    taps: set[str] = set()
    for e in entries:
        taps |= set(e.metadata.get("taps", ("logits",)))
    finalizers = [e.metadata["finalize"] for e in entries if "finalize" in e.metadata]

    def finalize(weights, options, **names) -> None:
        for f in finalizers:
            f(weights, options, **names)

    meta: dict[str, Any] = {
        "defaults": defaults, "taps": tuple(sorted(taps)),
        "needs_teacher": any(e.metadata.get("needs_teacher",
                                            getattr(e.factory, "needs_teacher", True))
                             for e in entries),
        "paper": "; ".join(e.metadata.get("paper", "-") for e in entries),
        "parts": tuple(e.name for e in entries),
    }
    if finalizers:
        meta["finalize"] = finalize
    return meta


class Combined(Distiller):
    """The sum of several distillers' terms (each keeps its own connectors)."""

    def __init__(self, ctx: DistillContext, factories: list[tuple[str, Callable[..., Distiller]]]):
        super().__init__(ctx)
        self.parts = nn.ModuleList(factory(ctx) for _, factory in factories)
        self.names = [name for name, _ in factories]
        self.taps = frozenset().union(*(p.taps for p in self.parts))
        self.needs_teacher = any(p.needs_teacher for p in self.parts)
        staged = [(n, p) for n, p in zip(self.names, self.parts) if p.init_epochs > 0]
        if len(staged) > 1:
            raise ConfigError(f"losses {' and '.join(n for n, _ in staged)} both have an init "
                              f"stage; combine at most one of them")
        self.init_part = staged[0][1] if staged else None
        if self.init_part is not None:
            self.init_epochs = self.init_part.init_epochs
            self.init_lr = self.init_part.init_lr
            self.init_trains_student = self.init_part.init_trains_student

    def forward(self, student, teacher, target, index=None, epoch=0):
        terms: dict[str, torch.Tensor] = {}
        for part in self.parts:
            terms.update(part(student, teacher, target, index, epoch))
        return terms

    def init_forward(self, student, teacher, target, index=None):
        assert self.init_part is not None
        return self.init_part.init_forward(student, teacher, target, index)

    def init_parameters(self):
        return self.init_part.init_parameters() if self.init_part is not None else []

    def main_parameters(self):
        return [p for part in self.parts for p in part.main_parameters()]
