"""Algorithm 1 of Checkpoint KD: choose the checkpoint with the most total task-related MI —
when the estimates can tell the checkpoints apart.

Wang et al. (NeurIPS 2022), "optimal intermediate teacher selection": with I(X;T_e) and I(T_e;Y)
estimated at every saved checkpoint e, normalise each series across the checkpoints with min–max,

    Ĩ(X;T_e) = (I(X;T_e) − min_e' I(X;T_e')) / (max_e' I(X;T_e') − min_e' I(X;T_e'))

(likewise Ĩ(T_e;Y)), score each checkpoint by Ĩ(X;T_e) + Ĩ(T_e;Y) and choose the argmax. Min–max
normalisation makes any additive constant of an estimator (such as the Gaussian H(X) of
``recon``) and its scale irrelevant — and stretches any difference, noise included, to the whole
0..1 range. So kdbench chooses only when the estimates support the choice (kdbench's rule; the
paper does not say):

1. Resolution of each series v ∈ {I(X;T), I(T;Y)}. For an estimator whose value depends on its
   seed (``stochastic``: ``recon``, ``infonce``, random projections) with R ≥ 2 finite repeats at
   every checkpoint, s_v is the pooled repeat-to-repeat standard deviation (within checkpoints)
   and δ_v = max(τ_v, z·s_v·√(2/R)): z = 2 standard errors of the difference of two checkpoints'
   means (R the fewest repeats). With R < 2 the spread is unmeasured and there is no choice. For
   a deterministic estimator δ_v = τ_v, the numerical tolerance τ_v = 10⁻⁶·max(1, max_e |v_e|).
2. Saturation. A value is censored to its ceiling (``details["ceiling_xt"/"ceiling_ty"]``: log N
   for ``kde``/``binning``, log B for ``infonce``, H(Y) for I(T;Y)) when the estimator flags it
   (``saturated_xt``/``saturated_ty``, its own regime rule) or when it lies within
   max(1 % of the ceiling, δ_v) of the ceiling: such values say "at least this much", not how
   much. A flagged value without a ceiling makes its series unusable.
3. Each series, censored, must vary across checkpoints by more than δ_v (range_v > δ_v);
   otherwise Algorithm 1 would normalise noise, or a constant, and there is no choice.
4. The best score must beat the runner-up by more than the score's resolution,
   δ_s = δ_x/range_x + δ_y/range_y (each series' resolution carried through its normalisation);
   otherwise the checkpoints within δ_s of the best ("tied") are indistinguishable and there is
   no choice. (An exact tie is no choice too: the earlier "earliest wins" rule chose the worst
   teacher of a flat series.)

:class:`Selection` keeps every score and the rule's figures (``decision``); ``chosen`` is None
when there is no choice (``argmax`` is then what plain Algorithm 1 would have taken).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import ConfigError, KDBenchError
from .base import SATURATION

#: standard errors of a difference between two checkpoints' means that count as a difference
Z = 2.0
#: relative numerical tolerance of a deterministic estimate
TOLERANCE = 1e-6
REMEDY = ("more probe samples (samples) or repeats, another estimator, a lower-dimensional layer "
          "or an estimator projection (project=pca), or an explicit --teacher-epoch")
SERIES = ("i_xt", "i_ty")
LABEL = {"i_xt": "I(X;T)", "i_ty": "I(T;Y)"}


def minmax(values: Sequence[float]) -> list[float]:
    """Min–max normalisation to [0, 1]; a constant series gives zeros."""
    lo, hi = min(values), max(values)
    if hi <= lo:
        return [0.0] * len(values)
    return [(v - lo) / (hi - lo) for v in values]


@dataclass
class Selection:
    """Algorithm 1's inputs, normalised series, scores, choice and the decision rule's figures."""

    epochs: list[int]
    i_xt: list[float]
    i_ty: list[float]
    norm_xt: list[float]
    norm_ty: list[float]
    scores: list[float]
    chosen: int | None
    excluded: dict[int, str] = field(default_factory=dict)  # epoch -> why it had no estimate
    argmax: int | None = None
    decision: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["excluded"] = {str(k): v for k, v in self.excluded.items()}
        return d


def pooled_sd(repeats: Sequence[Sequence[float]]) -> tuple[float, int]:
    """Pooled within-group standard deviation of groups of repeats, and its degrees of freedom."""
    ss, dof = 0.0, 0
    for group in repeats:
        if len(group) < 2:
            continue
        mean = sum(group) / len(group)
        ss += sum((v - mean) ** 2 for v in group)
        dof += len(group) - 1
    return (math.sqrt(ss / dof), dof) if dof else (0.0, 0)


def _first_best(scores: Sequence[float], epochs: Sequence[int], skip: int | None = None
                ) -> int | None:
    idx = [i for i in range(len(scores)) if i != skip]
    return max(idx, key=lambda i: (scores[i], -epochs[i])) if idx else None


def algorithm1(epochs: Sequence[int], i_xt: Sequence[float], i_ty: Sequence[float],
               excluded: dict[int, str] | None = None, *,
               repeats: Sequence[Sequence[Sequence[float]]] | None = None,
               stochastic: bool = False,
               ceilings: Sequence[Sequence[float | None]] | None = None,
               saturated: Sequence[Sequence[bool]] | None = None,
               z: float = Z, tolerance: float = TOLERANCE) -> Selection:
    """Algorithm 1 with kdbench's decision rule (module docstring).

    ``repeats[e]`` holds the finite repeats [[I(X;T), I(T;Y)], ...] at checkpoint e (default: the
    means, one repeat each), ``ceilings[e]`` = (ceiling of I(X;T), of I(T;Y)) or None each, and
    ``saturated[e]`` the estimator's own flags.
    """
    if not len(epochs) == len(i_xt) == len(i_ty):
        raise ValueError("epochs, i_xt and i_ty must have the same length")
    if len(epochs) < 2:
        why = "".join(f"; epoch {e}: {r}" for e, r in (excluded or {}).items())
        raise KDBenchError(f"checkpoint selection needs estimates at two or more checkpoints, "
                           f"got {len(epochs)} (epochs {list(epochs)}){why}")
    epochs = list(epochs)
    means = {"i_xt": [float(v) for v in i_xt], "i_ty": [float(v) for v in i_ty]}
    k = len(epochs)
    repeats = repeats if repeats is not None else [[[a, b]] for a, b in zip(i_xt, i_ty)]
    ceilings = ceilings if ceilings is not None else [(None, None)] * k
    saturated = saturated if saturated is not None else [(False, False)] * k
    fewest = min(len(r) for r in repeats)
    reasons: list[str] = []
    if stochastic and fewest < 2:
        reasons.append(f"the estimator depends on its seed and its repeat-to-repeat spread is "
                       f"unmeasured with {fewest} repeat(s); give repeats >= 2")

    sd, resolution, used, censored, spread = {}, {}, {}, {}, {}
    for j, key in enumerate(SERIES):
        values = means[key]
        tau = tolerance * max(1.0, max(abs(v) for v in values))
        sd[key] = pooled_sd([[rep[j] for rep in r] for r in repeats])[0] if stochastic else 0.0
        resolution[key] = max(tau, z * sd[key] * math.sqrt(2.0 / max(fewest, 1)))
        used[key], censored[key] = [], []
        unusable = []
        for e, v, ceil, flags in zip(epochs, values, ceilings, saturated):
            c = ceil[j]
            at_ceiling = bool(flags[j]) or (
                c is not None and c - v <= max(SATURATION * abs(c), resolution[key]))
            if at_ceiling and c is None:
                unusable.append(e)
            if at_ceiling:
                censored[key].append(e)
            used[key].append(float(c) if at_ceiling and c is not None else v)
        spread[key] = max(used[key]) - min(used[key])
        if unusable:
            reasons.append(f"{LABEL[key]} is in the estimator's saturated regime at epochs "
                           f"{', '.join(map(str, unusable))}")
        elif spread[key] <= resolution[key]:
            at = (f" ({len(censored[key])} of {k} checkpoints at the estimator's ceiling)"
                  if censored[key] else "")
            reasons.append(f"{LABEL[key]} varies by {spread[key]:.3g} across checkpoints{at}, "
                           f"not more than its resolution {resolution[key]:.3g}")

    nx, ny = minmax(used["i_xt"]), minmax(used["i_ty"])
    scores = [a + b for a, b in zip(nx, ny)]
    best = _first_best(scores, epochs)
    runner = _first_best(scores, epochs, skip=best)
    score_res = sum(resolution[key] / spread[key] if spread[key] > 0 else math.inf
                    for key in SERIES)
    gap = scores[best] - scores[runner]
    tied = [e for e, sc in zip(epochs, scores) if scores[best] - sc <= score_res]
    if not reasons and gap <= score_res:
        reasons.append(f"the best checkpoint (epoch {epochs[best]}, score {scores[best]:.3f}) "
                       f"beats the runner-up (epoch {epochs[runner]}) by {gap:.3g}, not more "
                       f"than the score's resolution {score_res:.3g}: epochs "
                       f"{', '.join(map(str, tied))} are indistinguishable")
    decision = {
        "can_choose": not reasons, "reason": "; ".join(reasons) or None,
        "stochastic": stochastic, "repeats": fewest, "z": z, "tolerance": tolerance,
        "saturation": SATURATION, "noise_sd": sd, "resolution": resolution, "range": spread,
        "censored": censored, "used": used, "runner_up": epochs[runner], "gap": gap,
        "gap_raw": {key: used[key][best] - used[key][runner] for key in SERIES},
        "score_resolution": None if math.isinf(score_res) else score_res, "tied": tied,
        # the inputs, so that the decision can be recomputed from a record
        "values": [[list(map(float, rep)) for rep in r] for r in repeats],
        "ceilings": [list(c) for c in ceilings],
        "saturated": [[bool(f) for f in flags] for flags in saturated]}
    return Selection(epochs, means["i_xt"], means["i_ty"], nx, ny, scores,
                     None if reasons else epochs[best], dict(excluded or {}), epochs[best],
                     decision)


# -- selection inside `kdbench run --teacher intermediate --select ESTIMATOR` --------------------

#: ``teacher.options.select_options``: how the estimates are made (``kdbench mi``'s options).
#: Three repeats: the decision rule needs a stochastic estimator's repeat-to-repeat spread
#: (deterministic estimators run once whatever ``repeats`` says).
SELECT_DEFAULTS: dict[str, Any] = {"layer": "embedding", "samples": 1000, "seed": 0,
                                   "repeats": 3, "settings": {}}


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
    estimator = estimator_cls.create(**opts["settings"])  # bad settings fail here
    if getattr(estimator, "stochastic", True) and opts["repeats"] < 2:
        raise ConfigError(f"--select {name}: the estimator depends on its seed, so choosing "
                          f"needs its repeat-to-repeat spread: "
                          f"teacher.options.select_options.repeats must be >= 2, got "
                          f"{opts['repeats']}")
    t.options["select"] = str(name)
    t.options["select_options"] = opts
