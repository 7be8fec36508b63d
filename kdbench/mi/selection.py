"""Algorithm 1 of Checkpoint KD: choose the checkpoint with the most total task-related MI.

Wang et al. (NeurIPS 2022), "optimal intermediate teacher selection": with I(X;T_e) and I(T_e;Y)
estimated at every saved checkpoint e, normalise each series across the checkpoints with min–max,

    Ĩ(X;T_e) = (I(X;T_e) − min_e' I(X;T_e')) / (max_e' I(X;T_e') − min_e' I(X;T_e'))

(likewise Ĩ(T_e;Y); a series that is constant across checkpoints normalises to 0), score each
checkpoint by Ĩ(X;T_e) + Ĩ(T_e;Y) and choose the argmax. Min–max normalisation makes any additive
constant of an estimator (such as the Gaussian H(X) of ``recon``) and its scale irrelevant. On a
tie the earlier checkpoint wins: it is the cheaper teacher to train.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import ConfigError, KDBenchError


def minmax(values: Sequence[float]) -> list[float]:
    """Min–max normalisation to [0, 1]; a constant series gives zeros."""
    lo, hi = min(values), max(values)
    if hi <= lo:
        return [0.0] * len(values)
    return [(v - lo) / (hi - lo) for v in values]


@dataclass
class Selection:
    """Algorithm 1's inputs, normalised series, scores and choice."""

    epochs: list[int]
    i_xt: list[float]
    i_ty: list[float]
    norm_xt: list[float]
    norm_ty: list[float]
    scores: list[float]
    chosen: int
    excluded: dict[int, str] = field(default_factory=dict)  # epoch -> why it had no estimate

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["excluded"] = {str(k): v for k, v in self.excluded.items()}
        return d


def algorithm1(epochs: Sequence[int], i_xt: Sequence[float], i_ty: Sequence[float],
               excluded: dict[int, str] | None = None) -> Selection:
    """Min–max normalise both series, score = sum, choose the argmax (earliest on a tie)."""
    if not len(epochs) == len(i_xt) == len(i_ty):
        raise ValueError("epochs, i_xt and i_ty must have the same length")
    if len(epochs) < 2:
        why = "".join(f"; epoch {e}: {r}" for e, r in (excluded or {}).items())
        raise KDBenchError(f"checkpoint selection needs estimates at two or more checkpoints, "
                           f"got {len(epochs)} (epochs {list(epochs)}){why}")
    nx, ny = minmax(list(i_xt)), minmax(list(i_ty))
    scores = [a + b for a, b in zip(nx, ny)]
    best = max(range(len(scores)), key=lambda i: (scores[i], -epochs[i]))
    return Selection(list(epochs), list(i_xt), list(i_ty), nx, ny, scores, epochs[best],
                     dict(excluded or {}))


# -- selection inside `kdbench run --teacher intermediate --select ESTIMATOR` --------------------

#: ``teacher.options.select_options``: how the estimates are made (``kdbench mi``'s options).
SELECT_DEFAULTS: dict[str, Any] = {"layer": "embedding", "samples": 1000, "seed": 0,
                                   "repeats": 1, "settings": {}}


def check_select(config: Any) -> None:
    """Validate ``teacher.options.select``/``select_options`` at config time, before training.

    With ``select`` set, ``select_options`` is completed with its defaults (so the record holds
    every value that shaped the choice); without it both keys are dropped, so runs that do not
    select keep the options and run id they always had.
    """
    from ..plugins import get

    t = config.teacher
    name, given = t.options.get("select"), t.options.get("select_options")
    if name is None:
        if given:
            raise ConfigError("teacher.options.select_options is set but no estimator is "
                              "(--select ESTIMATOR)")
        t.options.pop("select", None)
        t.options.pop("select_options", None)
        return
    estimator_cls = get("mi_estimator", str(name))
    if t.epoch is not None or t.options.get("epoch_frac") is not None:
        raise ConfigError("--select and --teacher-epoch/--teacher-epoch-frac all choose the "
                          "checkpoint; give one")
    if given is not None and not isinstance(given, dict):
        raise ConfigError(f"teacher.options.select_options must be a mapping, got {given!r}")
    unknown = sorted(set(given or {}) - set(SELECT_DEFAULTS))
    if unknown:
        from ..errors import UnknownNameError

        raise UnknownNameError("selection option", unknown[0], SELECT_DEFAULTS)
    opts = {**SELECT_DEFAULTS, **(given or {})}
    for key in ("samples", "seed", "repeats"):
        if isinstance(opts[key], bool) or not isinstance(opts[key], int):
            raise ConfigError(f"teacher.options.select_options.{key} must be an integer, got "
                              f"{opts[key]!r}")
    if not isinstance(opts["settings"], dict):
        raise ConfigError(f"teacher.options.select_options.settings must be a mapping, got "
                          f"{opts['settings']!r}")
    estimator_cls.create(**opts["settings"])  # unknown or bad estimator settings fail here
    t.options["select"] = str(name)
    t.options["select_options"] = opts


def select_teacher_epoch(ctx: Any) -> tuple[int, dict[str, Any]]:
    """The checkpoint Algorithm 1 picks for a run, and the provenance to record.

    Reads ``teacher.options.select`` (the estimator) and ``select_options`` (completed by
    :func:`check_select`). The layer and probe size are checked before the trajectory is
    trained; the estimates are cached in the trajectory folder and reused.
    """
    from .analysis import MIRequest, estimate_trajectory, prepare

    t = ctx.config.teacher
    opts = {**SELECT_DEFAULTS, **(t.options.get("select_options") or {})}
    request = MIRequest(str(t.options["select"]), str(opts["layer"]), int(opts["samples"]),
                        int(opts["seed"]), int(opts["repeats"]), dict(opts["settings"]))
    prepare(request, t.arch, ctx.dataset)  # fail before any teacher training
    trajectory = ctx.trajectory()
    t0 = time.perf_counter()
    result = estimate_trajectory(trajectory, ctx.dataset, request, ctx.device,
                                 progress=ctx.progress)
    selection = result.select()
    return selection.chosen, {
        "estimator": request.estimator, "layer": request.layer, "samples": request.samples,
        "seed": request.seed, "repeats": request.repeats, "settings": result.settings,
        "unit": result.unit, "kind": result.kind, **selection.to_dict(),
        # the cost of estimating every checkpoint (cached or not) and of this call
        "estimate_seconds": result.seconds, "wall_seconds": time.perf_counter() - t0,
        "cache": str(result.cache)}
