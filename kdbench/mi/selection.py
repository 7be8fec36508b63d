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

1. Resolution of each series v ∈ {I(X;T), I(T;Y)}: how far apart two checkpoints' estimates
   must be before the difference is more than the estimator's own noise. The noise is modelled
   as it is made. The estimates come in *blocks* shared by every checkpoint: for an estimator
   whose value depends on its seed (``stochastic``: ``recon``, ``infonce``, random projections)
   repeat r uses the same held-out split and seed r at every checkpoint; for a deterministic
   estimator (``cka``, ``kde``, ``binning``, ``nhsic``) resample b is the same seeded half of
   the probe samples at every checkpoint. So a block shifts all checkpoints alike, and only
   what is left after the checkpoint and block effects — the residual of the two-way
   (checkpoint × block) model, s_v with (K−1)(B−1) degrees of freedom — separates two
   checkpoints. A repeated estimate is the mean of its R repeats, so the standard error of a
   difference of two checkpoints is s_v·√(2/R); a deterministic estimate is the full-sample
   value, whose variance the half-samples' residual estimates (the delete-n/2 jackknife:
   Var(full) ≈ Var(half)), so its difference has standard error s_v·√2. The resolution is
   δ_v = max(τ_v, z·SE) with z = 2, τ_v = 10⁻⁶·max(1, max_e |v_e|) a floor for round-off.
   Fewer than two complete blocks leave the noise unmeasured and there is no choice (a
   numerical tolerance alone never resolves a deterministic estimate: ten checkpoints of equal
   quality differ by their sampling noise, not by round-off).
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


def blocked_residual_sd(blocks: Sequence[Sequence[float]]) -> tuple[float, int]:
    """Residual standard deviation of the two-way model v[e][b] = μ_e + β_b + ε_eb (checkpoint
    e, block b; every checkpoint has every block), and its (K−1)(B−1) degrees of freedom."""
    k, nb = len(blocks), len(blocks[0]) if blocks else 0
    if k < 2 or nb < 2 or any(len(row) != nb for row in blocks):
        return 0.0, 0
    row = [sum(r) / nb for r in blocks]
    col = [sum(blocks[e][b] for e in range(k)) / k for b in range(nb)]
    grand = sum(row) / k
    ss = sum((blocks[e][b] - row[e] - col[b] + grand) ** 2 for e in range(k) for b in range(nb))
    dof = (k - 1) * (nb - 1)
    return math.sqrt(ss / dof), dof


def complete_blocks(ids: Sequence[Sequence[int]], values: Sequence[Sequence[Sequence[float]]]
                    ) -> list[list[list[float]]]:
    """Each checkpoint's values restricted to the blocks (repeat seeds, resamples) that every
    checkpoint has, in block order: ``ids[e][i]`` names the block of ``values[e][i]``."""
    common = sorted(set.intersection(*(set(i) for i in ids))) if ids else []
    return [[dict(zip(i, v))[b] for b in common] for i, v in zip(ids, values)]


def _first_best(scores: Sequence[float], epochs: Sequence[int], skip: int | None = None
                ) -> int | None:
    idx = [i for i in range(len(scores)) if i != skip]
    return max(idx, key=lambda i: (scores[i], -epochs[i])) if idx else None


def algorithm1(epochs: Sequence[int], i_xt: Sequence[float], i_ty: Sequence[float],
               excluded: dict[int, str] | None = None, *,
               repeats: Sequence[Sequence[Sequence[float]]] | None = None,
               stochastic: bool = False,
               resamples: Sequence[Sequence[Sequence[float]]] | None = None,
               ceilings: Sequence[Sequence[float | None]] | None = None,
               saturated: Sequence[Sequence[bool]] | None = None,
               z: float = Z, tolerance: float = TOLERANCE) -> Selection:
    """Algorithm 1 with kdbench's decision rule (module docstring).

    ``repeats[e]`` holds the finite repeats [[I(X;T), I(T;Y)], ...] at checkpoint e, block by
    block (repeat r of every checkpoint shares its seed and split; default: the means, one
    repeat each) — the noise model of a ``stochastic`` estimator. A deterministic estimator's
    noise comes from ``resamples[e]``: its values on the same half-samples of the probe set at
    every checkpoint. ``ceilings[e]`` = (ceiling of I(X;T), of I(T;Y)) or None each, and
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
    if stochastic:
        blocks, per_estimate, model = repeats, 2.0 / max(fewest, 1), "repeat seeds as blocks"
    else:
        blocks, per_estimate, model = (resamples or []), 2.0, "the same halves at every checkpoint"
    nblocks = min((len(r) for r in blocks), default=0) if len(blocks) == k else 0
    if nblocks < 2:
        reasons.append(
            f"the estimator depends on its seed and its repeat-to-repeat spread is unmeasured "
            f"with {fewest} repeat(s); give repeats >= 2" if stochastic else
            "the estimator is deterministic and its sampling noise is unmeasured without "
            "resamples of its probe set; give resamples >= 2")

    sd, dof, resolution, used, censored, spread = {}, {}, {}, {}, {}, {}
    for j, key in enumerate(SERIES):
        values = means[key]
        tau = tolerance * max(1.0, max(abs(v) for v in values))
        sd[key], dof[key] = blocked_residual_sd(
            [[blk[j] for blk in r[:nblocks]] for r in blocks]) if nblocks >= 2 else (0.0, 0)
        resolution[key] = max(tau, z * sd[key] * math.sqrt(per_estimate))
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
        "stochastic": stochastic, "noise_model": model, "repeats": fewest,
        "blocks": nblocks, "residual_df": dof, "z": z, "tolerance": tolerance,
        "saturation": SATURATION, "noise_sd": sd, "resolution": resolution, "range": spread,
        "censored": censored, "used": used, "runner_up": epochs[runner], "gap": gap,
        "gap_raw": {key: used[key][best] - used[key][runner] for key in SERIES},
        "score_resolution": None if math.isinf(score_res) else score_res, "tied": tied,
        # the inputs, so that the decision can be recomputed from a record
        "values": [[list(map(float, rep)) for rep in r] for r in repeats],
        **({"resamples": [[list(map(float, rs)) for rs in r] for r in resamples]}
           if resamples and not stochastic else {}),
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
#: a deterministic estimator's half-sample resamples (``select_options.resamples``, newer than
#: the options above: it joins a run's config only when given)
RESAMPLES = 10


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
    unknown = sorted(set(given or {}) - set(SELECT_DEFAULTS) - {"resamples"})
    if unknown:
        from ..errors import UnknownNameError

        raise UnknownNameError("selection option", unknown[0], [*SELECT_DEFAULTS, "resamples"])
    opts = {**SELECT_DEFAULTS, **(given or {})}
    for key in ("samples", "seed", "repeats", "resamples"):
        if key not in opts:
            continue
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
    if not getattr(estimator, "stochastic", True) and opts.get("resamples", RESAMPLES) < 2:
        raise ConfigError(f"--select {name}: the estimator is deterministic, so choosing needs "
                          f"its sampling noise from half-sample resamples: "
                          f"teacher.options.select_options.resamples must be >= 2, got "
                          f"{opts['resamples']}")
    t.options["select"] = str(name)
    t.options["select_options"] = opts
