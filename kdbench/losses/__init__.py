"""KD losses: one module per method, named as it is registered (``kd``, ``dkd``, ``crd``, ...).

Each method module holds the method's pure formula (tensors in, the unweighted term out), its
:class:`Distiller` and its registration beside the code (:func:`~.base.register_loss`); the
shared pieces are :mod:`.base` (the contract and the helpers), :mod:`.compose` (composites),
:mod:`.modifiers` (``ls``, ``ctkd``) and :mod:`.connectors`; :mod:`.catalogue` registers every
built-in method through the ``register_losses`` hook. Fidelity notes: ``docs/fidelity/``.

A loss name is a registered name (``crd``), a composite of several (``crd+kd``, see
:mod:`.compose`), and either may carry *modifiers* (``kd+ls``, ``dkd+ls+ctkd``, ``kd+crd+ctkd``;
:data:`~.modifiers.MODIFIERS`): a name part that is a modifier rather than a loss changes the
loss parts it applies to, setting its options (``standardize``, ``ctkd``) and the official
weights of the method it names, per pair where the official runs had per-pair values.
:func:`entry`, :func:`resolve` and :func:`build` accept all three forms; the record keeps the
name as written and every value used.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import ConfigError, UnknownNameError
from ..spec import LossSpec
from . import compose
from .base import TAPS, DistillContext, Distiller, LossStage
from .modifiers import MODIFIERS, modifier_keys, modifiers_settings, split_modifiers

__all__ = ["TAPS", "DistillContext", "Distiller", "LossStage", "build", "describe", "entry",
           "format_table", "preset_values", "resolve"]


def _homes(*leaves: str) -> tuple[str, ...]:
    return tuple(f"{__name__}.{leaf}" for leaf in leaves)


#: the modules of 0.2 (old leaf -> the module(s) that now hold its names, searched in order; see
#: :mod:`kdbench.compat`): ``from kdbench.losses.functional import kd`` keeps working, warning
MOVED: dict[str, str | tuple[str, ...]] = {
    "functional": _homes("kd", "dml", "dkd", "fitnet", "at", "sp", "nst", "vid", "ab", "ft",
                         "fsp", "cc", "rkd", "pkt", "crd", "base"),
    "functional_modern": _homes("modifiers", "dist", "mlkd", "nkd", "ttm", "rld", "base"),
    "functional_modern_feature": _homes("reviewkd", "ofd", "kdsvd"),
    "logit": _homes("ce", "kd", "dkd", "dml", "modifiers", "base"),
    "feature": _homes("fitnet", "at", "sp", "nst", "vid", "ab", "ft", "fsp", "base"),
    "relation": _homes("rkd", "pkt", "cc"),
    "contrastive": f"{__name__}.crd",
    "modern_logit": _homes("dist", "mlkd", "nkd", "ttm", "rld", "modifiers", "base"),
    "modern_feature": _homes("reviewkd", "ofd", "kdsvd", "base"),
    # names only: the one register_losses hook is the catalogue's (registered once)
    "modern_plugin": _homes("modifiers", "dist", "mlkd", "nkd", "ttm", "rld", "compose", "base"),
    "modern_feature_plugin": _homes("reviewkd", "ofd", "kdsvd", "base"),
    "indistill_plugin": f"{__name__}.pkt_indistill",
    # a plain rename: the module that kdbench.plugins lists must hold the hook itself
    "plugin": f"{__name__}.catalogue",
    "indistill": f"{__name__}.pkt_indistill",
    "combine": f"{__name__}.compose",
    "connectors_modern": f"{__name__}.connectors",
}


def _plain_entry(name: str) -> LossSpec:
    """The registry spec of a loss, or a synthetic one for a composite ``a+b`` (no modifiers)."""
    from ..plugins import get

    if compose.SEPARATOR not in name:
        return get("loss", name)
    try:
        specs = [get("loss", part) for part in compose.split(name)]
    except UnknownNameError as exc:
        raise UnknownNameError(exc.kind, exc.name, exc.choices,
                               hint=f"or a modifier of a loss: {', '.join(MODIFIERS)} "
                                    f"(e.g. kd+ls)") from None
    factories = [(e.name, e.factory) for e in specs]

    def factory(ctx: DistillContext) -> Distiller:
        return compose.Combined(ctx, factories)

    return LossSpec(name=name, factory=factory,
                    source=", ".join(sorted({e.source for e in specs})),
                    description=" + ".join(e.name for e in specs),
                    **compose.merge_fields(specs))


def entry(name: str) -> LossSpec:
    """The registry spec of a loss, or a synthetic one for a composite ``a+b`` or a loss with
    modifiers (``kd+ls``: the loss's spec, its defaults overlaid with what the modifiers set for
    an unknown pair, its paper, year and repository the newest modifier's). A modifier on a loss
    it does not apply to is a one-line ConfigError naming both and what it applies to."""
    base, mods = split_modifiers(name)
    spec = _plain_entry(base)
    if not mods:
        return spec
    w, o = modifiers_settings(base, mods)  # raises for a modifier that applies to no part
    owned = set().union(*modifier_keys(base, mods).values())
    newest = max((MODIFIERS[m] for m in mods), key=lambda m: m.year)
    return dataclasses.replace(
        spec, name=name, defaults={**spec.defaults, **w, **o},
        description=" + ".join([spec.description or base, *(MODIFIERS[m].description
                                                             for m in mods)]),
        paper="; ".join([spec.paper, *(MODIFIERS[m].paper for m in mods)]),
        year=newest.year, repo=newest.repo, parts=spec.parts or tuple(compose.split(base)),
        # what a modifier sets is part of the run's identity even where it is a later option
        later=tuple(k for k in spec.later if k not in owned))


def resolve(name: str, weights: dict[str, float] | None = None,
            options: dict[str, Any] | None = None, *, student: str | None = None,
            teacher: str | None = None) -> tuple[dict[str, float], dict[str, Any]]:
    """The loss's full weights and options: its registered defaults, then what its modifiers
    set for this pair (``kd+ls``: LS's per-pair temperature and weight), then ``weights`` and
    ``options``, each typed by its default (or the registration's ``types``). Unknown keys are
    an error that lists the valid ones. A loss whose defaults depend on the architectures (DKD's
    per-pair β table, FT's init lr) fills them in from ``student`` and ``teacher`` (names), so
    the record holds the values actually used."""
    from ..spec import coerce_options

    e = entry(name)
    base, mods = split_modifiers(name)
    w_mod, o_mod = modifiers_settings(base, mods, student=student, teacher=teacher)
    w_defaults = {k: float(v) for k, v in {**e.defaults, **w_mod}.items() if k.startswith("w_")}
    o_defaults = {k: v for k, v in {**e.defaults, **o_mod}.items() if not k.startswith("w_")}
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


def preset_values(name: str, table: dict[str, dict[str, Any]]
                  ) -> tuple[dict[str, float], dict[str, Any]]:
    """The weights and options a preset's ``loss_defaults`` (loss name -> values) give the loss
    ``name``: the entry for ``name`` itself if there is one; else, for a composite or a loss
    with modifiers, each loss part's entry (``checkpointkd``'s KD values reach the KD of
    ``kd+at``), ``w_ce`` only from the first part (it belongs to the base loss) and an option
    two parts share from the first that sets it, without the keys a modifier sets on that part
    (``kd+ls`` is LS's KD: its temperature and weights are LS's, not the preset's)."""
    if name in table:
        chosen = dict(table[name])
    else:
        base, mods = split_modifiers(name)
        owned = modifier_keys(base, mods)
        parts = compose.split(base)
        chosen = {}
        for i, part in enumerate(parts):
            for key, value in table.get(part, {}).items():
                if (key == "w_ce" and i > 0) or key in owned.get(part, ()):
                    continue
                chosen.setdefault(key, value)
    return ({k: v for k, v in chosen.items() if k.startswith("w_")},
            {k: v for k, v in chosen.items() if not k.startswith("w_")})


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
    """``kdbench losses`` as text: one row per loss (family, year, taps, weights, paper, the
    repository its defaults come from), or with ``detail`` every field."""
    from tabulate import tabulate

    def kv(d: dict[str, Any]) -> str:
        return ", ".join(f"{k}={v}" for k, v in d.items()) or "-"

    def dash(value: Any) -> str:
        return "-" if value in (None, "") else str(value)

    if not detail:
        table = tabulate([(r["name"], dash(r["family"]), dash(r["year"]), ", ".join(r["taps"]),
                           kv(r["weights"]), r["paper"], dash(r["repo"])) for r in rows],
                         headers=["loss", "family", "year", "taps", "weights", "paper", "repo"],
                         disable_numparse=True)
        mods = tabulate([(f"+{m.name}", m.year, ", ".join(m.applies_to), m.paper, m.repo)
                         for m in MODIFIERS.values()],
                        headers=["modifier", "year", "applies to", "paper", "repo"],
                        disable_numparse=True)
        return f"{table}\n\nModifiers, added to a loss name (kd+ls, dkd+ls+ctkd):\n\n{mods}"
    blocks = []
    for r in rows:
        blocks.append("\n".join([
            f"{r['name']}: {r['description']}", f"  paper:   {r['paper']}",
            f"  family:  {dash(r['family'])}, {dash(r['year'])}", f"  repo:    {dash(r['repo'])}",
            f"  taps:    {', '.join(r['taps'])}"
            + ("" if r["needs_teacher"] else " (no teacher)"),
            f"  weights: {kv(r['weights'])}", f"  options: {kv(r['options'])}",
            *([f"  cost:    {r['cost']}"] if r["cost"] else []),
            f"  source:  {r['source']}"]))
    return "\n\n".join(blocks)
