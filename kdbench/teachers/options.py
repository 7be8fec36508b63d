"""Validation and completion of a teacher source's settings, before any training.

A source registers ``resolve=settings(...)``: the options it reads from ``teacher.options`` with
their defaults, whether it takes ``teacher.epoch`` and ``teacher.weights``, and a check of its
own. :func:`kdbench.config.resolve` calls it, so a record holds every option that shaped the
teacher (an unset option and its default give the same run id) and bad input fails before a
teacher is trained.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ConfigError, UnknownNameError

ENSEMBLE_MODES = ("logit", "prob")
#: Ensemble size when neither members nor a count is given (the size of the issue's example,
#: ``--members 100,150,200``).
ENSEMBLE_SIZE = 3


def accepting(flag: str) -> list[str]:
    """Names of the registered teacher sources that accept ``flag`` (``epoch``, ``weights``)."""
    from ..plugins import get_registry

    return [e.name for e in get_registry().entries("teacher_source")
            if getattr(e.metadata.get("resolve"), flag, False)]


def settings(defaults: dict[str, Any] | None = None, *, epoch: bool = False,
             weights: bool = False, check: Callable[[Any], None] | None = None
             ) -> Callable[[Any], None]:
    """A resolver for a source taking ``defaults`` options (+ ``teacher.epoch``/``weights``)."""
    defaults = dict(defaults or {})

    def resolve(config: Any) -> None:
        t = config.teacher
        unknown = sorted(set(t.options) - set(defaults))
        if unknown:
            raise UnknownNameError(f"option of teacher source {t.source!r}", unknown[0],
                                   defaults or ["(none)"])
        if t.epoch is not None and not epoch:
            raise ConfigError(f"teacher.epoch ({t.epoch}) is not used by teacher source "
                              f"{t.source!r} (sources that take it: "
                              f"{', '.join(accepting('epoch'))})")
        if t.weights is not None and not weights:
            raise ConfigError(f"teacher.weights ({t.weights!r}) is not used by teacher source "
                              f"{t.source!r}, which trains its own trajectory (sources that "
                              f"take it: {', '.join(accepting('weights'))})")
        t.options = {**defaults, **{k: v for k, v in t.options.items() if v is not None}}
        if check is not None:
            check(config)

    resolve.epoch = epoch  # type: ignore[attr-defined]
    resolve.weights = weights  # type: ignore[attr-defined]
    return resolve


# -- checks of the built-in sources --------------------------------------------------------------

def check_intermediate(config: Any) -> None:
    t = config.teacher
    frac = t.options.get("epoch_frac")
    if frac is None:
        return
    if t.epoch is not None:
        raise ConfigError(f"give teacher.epoch ({t.epoch}) or teacher.options.epoch_frac "
                          f"({frac}), not both")
    if not isinstance(frac, (int, float)) or isinstance(frac, bool) or not 0 < frac <= 1:
        raise ConfigError(f"teacher epoch fraction must be in (0, 1], got {frac!r}")
    t.options["epoch_frac"] = float(frac)


def _check_ensemble(config: Any) -> None:
    t = config.teacher
    mode = t.options["ensemble_mode"]
    if mode not in ENSEMBLE_MODES:
        raise UnknownNameError("ensemble mode", str(mode), ENSEMBLE_MODES)
    k = t.options["members_count"]
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ConfigError(f"teacher source {t.source!r} is an ensemble and needs at least 2 "
                          f"members, got members_count {k!r}")


def check_snapshot(config: Any) -> None:
    t = config.teacher
    members = t.options.get("members")
    if members is not None:
        if (not isinstance(members, list) or not members
                or not all(isinstance(e, int) and not isinstance(e, bool) for e in members)):
            raise ConfigError(f"teacher members must be a list of epochs, got {members!r}")
        if len(set(members)) != len(members):
            raise ConfigError(f"teacher members {members} name an epoch twice")
        count = t.options.get("members_count")
        if count is not None and count != len(members):
            raise ConfigError(f"teacher members {members} are {len(members)} checkpoints but "
                              f"members_count is {count}; give one of them")
        t.options["members"] = sorted(members)
        t.options["members_count"] = len(members)
    elif t.options.get("members_count") is None:
        t.options["members_count"] = ENSEMBLE_SIZE
    _check_ensemble(config)


def check_independent(config: Any) -> None:
    _check_ensemble(config)
