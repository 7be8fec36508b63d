"""How well each MI estimator's checkpoint choice predicts the student: the numbers behind
``kdbench table --layout selection`` (:mod:`kdbench.report.selection` formats them).

Input: records of students distilled from every checkpoint of a trajectory (the checkpoint
curve: ``kdbench run --teacher intermediate --teacher-epoch all``, any number of seeds) and MI
estimates of that trajectory — the caches ``kdbench mi``/``kdbench select`` leave in
``<results>/teachers/<key>/mi/`` and the scores kept by runs made with ``--select``
(:func:`mi_sources`). Per trajectory, student and loss, and per estimator (with its layer and
probe size), :func:`selection_rows` gives: Algorithm 1's chosen epoch (or "no choice" when its
decision rule finds the estimates cannot tell the checkpoints apart, with the plain argmax
beside it), the student accuracy there (mean over seeds), the best epoch by brute force, the
gap between the two, the Spearman rank correlation between the score and the student accuracy
across checkpoints, and the wall time of the selection (estimating every checkpoint) beside the
brute force's (the students' ``cost.wall_seconds`` summed).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import KDBenchError
from ..store import Store, read_json
from .analysis import CACHE_VERSION
from .selection import Selection, algorithm1


@dataclass
class Source:
    """One estimator's estimates of one trajectory: per epoch (I(X;T), I(T;Y), seconds) and the
    decision rule's inputs (repeats, ceilings, saturation flags)."""

    stochastic: bool
    points: dict[int, tuple[float, float, float]] = field(default_factory=dict)
    repeats: dict[int, list[list[float]]] = field(default_factory=dict)
    ceilings: dict[int, tuple[Any, Any]] = field(default_factory=dict)
    saturated: dict[int, tuple[bool, bool]] = field(default_factory=dict)
    #: a deterministic estimator's half-sample values per epoch (its sampling noise)
    resamples: dict[int, list[list[float]]] = field(default_factory=dict)

    def select(self, epochs: list[int]) -> Selection:
        return algorithm1(
            epochs, [self.points[e][0] for e in epochs], [self.points[e][1] for e in epochs],
            repeats=[self.repeats.get(e) or [list(self.points[e][:2])] for e in epochs],
            stochastic=self.stochastic,
            ceilings=[self.ceilings.get(e, (None, None)) for e in epochs],
            saturated=[self.saturated.get(e, (False, False)) for e in epochs],
            resamples=None if self.stochastic else [self.resamples.get(e) or [] for e in epochs])


def mi_sources(results_dir: Path, key: str, records: list[dict[str, Any]]
                ) -> dict[str, Source]:
    """estimator label -> its :class:`Source`, from caches and --select runs."""
    sources: dict[str, Source] = {}
    folder = Store(results_dir).teachers / key / "mi"
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            doc = read_json(path, "MI cache")
            if doc.get("version") != CACHE_VERSION:
                raise ValueError(f"made by an older kdbench (cache version "
                                 f"{doc.get('version')}, now {CACHE_VERSION}); run `kdbench "
                                 f"select` again")
            req = doc["request"]
            label = f"{req['estimator']} ({req['layer']}, n={req['samples']})"
            source = Source(bool(doc.get("stochastic", True)))
            for e, v in doc["epochs"].items():
                if v.get("i_xt") is None or v.get("i_ty") is None:
                    continue
                det = v.get("details") or {}
                source.points[int(e)] = (v["i_xt"], v["i_ty"], float(v.get("seconds", 0.0)))
                source.repeats[int(e)] = v.get("values") or []
                source.resamples[int(e)] = v.get("resamples") or []
                source.ceilings[int(e)] = (det.get("ceiling_xt"), det.get("ceiling_ty"))
                source.saturated[int(e)] = (bool(det.get("saturated_xt")),
                                            bool(det.get("saturated_ty")))
        except (KDBenchError, KeyError, TypeError, ValueError, AttributeError) as exc:
            warnings.warn(f"kdbench: skipping MI cache {str(path)!r}: {exc}", RuntimeWarning,
                          stacklevel=3)
            continue
        if label in sources:  # same estimator and layer, other settings: keep both apart
            label = f"{label} [{path.stem.rsplit('-', 1)[-1]}]"
        sources[label] = source
    for rec in records:
        sel = (rec.get("teacher") or {}).get("selection")
        if not sel:
            continue
        label = f"{sel['estimator']} ({sel['layer']}, n={sel['samples']})"
        if label in sources:
            continue
        per = sel.get("estimate_seconds", 0.0) / max(len(sel["epochs"]), 1)
        decision = sel.get("decision") or {}
        source = Source(bool(decision.get("stochastic", False)))
        for i, (e, a, b) in enumerate(zip(sel["epochs"], sel["i_xt"], sel["i_ty"])):
            source.points[int(e)] = (a, b, per)
            for name, default in (("values", []), ("ceilings", (None, None)),
                                  ("saturated", (False, False)), ("resamples", [])):
                items = decision.get(name)
                value = items[i] if items and i < len(items) else default
                target = {"values": source.repeats, "ceilings": source.ceilings,
                          "saturated": source.saturated, "resamples": source.resamples}[name]
                target[int(e)] = value if name in ("values", "resamples") else tuple(value)
        sources[label] = source
    return sources


def _spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    if len(set(a)) < 2 or len(set(b)) < 2:
        return math.nan
    return float(spearmanr(a, b).statistic)


def selection_rows(df: pd.DataFrame, results_dir: str | Path, metric: str = "top1_last"
                   ) -> list[dict[str, Any]]:
    """One dict per (trajectory, student, loss, estimator); see the module docstring."""
    results_dir = Path(results_dir)
    raw = {rec["run_id"]: rec for _, rec in Store(results_dir).iter_records()
           if isinstance(rec, dict)}
    curve: dict[tuple[str, str, str], list[tuple[int, float, float]]] = {}
    by_key: dict[str, list[dict[str, Any]]] = {}
    for run_id, value in zip(df["run_id"], df[metric]):
        rec = raw.get(run_id)
        prov = (rec or {}).get("teacher") or {}
        if rec is None or not prov.get("trajectory"):
            continue
        by_key.setdefault(prov["trajectory"], []).append(rec)
        if prov.get("selection") or len(prov.get("epochs", [])) != 1:
            continue  # chosen by --select, or an ensemble: not a point of the checkpoint curve
        group = (prov["trajectory"], rec["config"]["student"], rec["config"]["loss"]["name"])
        curve.setdefault(group, []).append(
            (int(prov["epochs"][0]), float(value),
             float((rec.get("cost") or {}).get("wall_seconds", 0.0))))
    out = []
    for (key, student, loss), points in sorted(curve.items()):
        frame = pd.DataFrame(points, columns=["epoch", "acc", "seconds"])
        acc = frame.groupby("epoch")["acc"].mean()
        runs = frame.groupby("epoch").size()
        sources = mi_sources(results_dir, key, by_key.get(key, []))
        if not sources:
            warnings.warn(f"kdbench: no MI estimates for trajectory {key!r} (run `kdbench "
                          f"select {key}`)", RuntimeWarning, stacklevel=3)
        for label, source in sources.items():
            series = source.points
            epochs = sorted(set(series) & set(acc.index))
            if len(epochs) < 2:
                continue
            sel = source.select(epochs)
            accs = [float(acc[e]) for e in epochs]
            best = max(epochs, key=lambda e: (acc[e], -e))
            acc_chosen = math.nan if sel.chosen is None else float(acc[sel.chosen])
            out.append({
                "trajectory": key, "student": student, "loss": loss, "estimator": label,
                "checkpoints": len(epochs), "seeds": int(runs[epochs].min()),
                "chosen": sel.chosen, "acc_chosen": acc_chosen, "best": best,
                "acc_best": float(acc[best]), "gap": float(acc[best]) - acc_chosen,
                "argmax": sel.argmax, "reason": sel.decision["reason"] or "",
                "spearman": _spearman(sel.scores, accs),
                "selection_s": sum(series[e][2] for e in epochs),
                "brute_force_s": float(frame[frame["epoch"].isin(epochs)]["seconds"].sum())})
    return out
