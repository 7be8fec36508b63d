"""The logic behind ``kdbench mi`` and ``kdbench select`` (the CLI functions only call these)."""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..report.selection import format_result, plot_information_plane
from .analysis import (
    MIRequest,
    TrajectoryMI,
    estimate_trajectory,
    resolve_trajectory,
    trajectory_dataset,
)
from .selection import REMEDY, Selection


def _estimate(trajectory: str, estimator: str, layer: str, samples: int, seed: int,
              repeats: int, options: tuple[str, ...], data_dir: str | None, device: str,
              results_dir: str, force: bool, quiet: bool, resamples: int = 10
              ) -> TrajectoryMI:
    from ..config import parse_assignments
    from ..device import resolve_device, set_threads

    traj = resolve_trajectory(trajectory, results_dir)
    if not traj.done:
        warnings.warn(f"kdbench: trajectory {traj.key!r} is still training; using its "
                      f"{len(traj.epochs)} saved checkpoints", RuntimeWarning, stacklevel=2)
    set_threads()
    dataset = trajectory_dataset(traj, data_dir)
    request = MIRequest(estimator, layer, samples, seed, repeats,
                        parse_assignments(options, "--opt"), resamples=resamples)
    return estimate_trajectory(traj, dataset, request, resolve_device(device), force=force,
                               progress=not quiet)


def _as_json(result: TrajectoryMI, selection: Selection | None, plot: Path | None) -> str:
    out: dict[str, Any] = {
        "trajectory": result.trajectory, "request": asdict(result.request),
        "settings": result.settings, "unit": result.unit, "kind": result.kind,
        "cache": str(result.cache), "checkpoints": [asdict(r) for r in result.rows]}
    if plot is not None:
        out["plot"] = str(plot)
    if selection is not None:
        out["selection"] = selection.to_dict()
    return json.dumps(out, indent=2, default=str)


def mi_command(*, plot: str | None, as_json: bool, **kwargs: Any) -> str:
    """Estimate every checkpoint, draw the information plane, return the text to print."""
    result = _estimate(**kwargs)
    path = plot_information_plane(result, plot or result.cache.with_suffix(".png"))
    if as_json:
        return _as_json(result, None, path)
    return f"{format_result(result)}\n\ninformation plane: {path}\ncache: {result.cache}"


def select_command(*, as_json: bool, **kwargs: Any) -> str:
    """Run Algorithm 1 and its decision rule on the (cached) estimates; the text to print.

    With no choice (:mod:`kdbench.mi.selection`) the scores are printed with the reason; the
    command still succeeds: the estimates are a result too.
    """
    result = _estimate(**kwargs)
    selection = result.select()
    if as_json:
        return _as_json(result, selection, None)
    return f"{format_result(result, selection)}\n\n{format_decision(selection)}"


def format_decision(selection: Selection) -> str:
    """The choice (or "no choice") and the figures of the decision rule, in a few lines."""
    d = selection.decision
    res = d["resolution"]
    lines = []
    for key, label in (("i_xt", "I(X;T)"), ("i_ty", "I(T;Y)")):
        censored = d["censored"][key]
        at = f"; at its ceiling: epochs {', '.join(map(str, censored))}" if censored else ""
        blocks = d.get("blocks", d["repeats"])
        what = "repeats" if d["stochastic"] else "half-sample resamples"
        noise = (f", residual sd {d['noise_sd'][key]:.3g} over {blocks} {what} per checkpoint "
                 f"({d.get('noise_model', 'repeat seeds as blocks')})" if blocks >= 2 else
                 f" (noise unmeasured: {blocks} {what})")
        lines.append(f"  {label}: range {d['range'][key]:.3g}, resolution {res[key]:.3g}"
                     f"{noise}{at}")
    score_res = d["score_resolution"]
    lines.append(f"  score: best − runner-up (epoch {d['runner_up']}) = {d['gap']:.3g}, "
                 f"resolution {'∞' if score_res is None else f'{score_res:.3g}'}")
    if selection.chosen is None:
        head = (f"no choice: {d['reason']}\n(plain Algorithm 1 would take epoch "
                f"{selection.argmax}; use {REMEDY})")
    else:
        i = selection.epochs.index(selection.chosen)
        head = (f"chosen: epoch {selection.chosen} (score {selection.scores[i]:.3f} = "
                f"{selection.norm_xt[i]:.3f} + {selection.norm_ty[i]:.3f})")
    return head + "\ndecision rule:\n" + "\n".join(lines)
