"""A run's record: its skeleton when training starts, its setup once built, its metrics when it
ends, its failure; and the one-line summary of a record."""

from __future__ import annotations

import datetime as _dt
import time
import traceback
from typing import Any

from ..config import RunConfig, canonical_json, identity, legacy_run_id
from ..device import environment
from ..errors import KDBenchError, UnknownNameError
from ..evaluators import Suite, summarize
from ..models import count_parameters
from ..store import SCHEMA_VERSION, Store


def existing_record(store: Store, cfg: RunConfig, run_id: str) -> dict[str, Any] | None:
    """The record of a resolved config in ``store``, adopting one stored under the id an older
    kdbench gave it (:func:`kdbench.config.legacy_run_id`)."""
    record = store.load_record(run_id, set_aside_corrupt=True)
    if record is None:
        record = store.adopt(legacy_run_id(cfg), run_id)
    return record


def state_binding(cfg: RunConfig, run_id: str) -> dict[str, str]:
    """What a run's resume state is bound to: its id and the digest of its whole identity (a
    state file of another run, or of a config that only shares a prefix of the id, is never
    resumed)."""
    import hashlib

    return {"run_id": run_id,
            "config_sha256": hashlib.sha256(canonical_json(identity(cfg)).encode()).hexdigest()}


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def data_summary(dataset: Any) -> dict[str, Any]:
    """What the record says about the data a run used: split sizes, what the transforms
    did (their reports) and what the dataset plugin says it did (``info``: e.g. its source, a
    resize)."""
    info = {k: v for k, v in dataset.info.items() if k != "transforms"}
    return {"train_size": len(dataset.train), "test_size": len(dataset.test),
            "transforms": dataset.info.get("transforms", []), **({"info": info} if info else {})}


def new_record(cfg: RunConfig, run_id: str, device: Any, dataset: Any,
               previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """The record of a run as training starts. Resuming an earlier attempt (``previous``: its
    interrupted, failed or killed record) keeps its creation time and its attempts."""
    attempts = list(((previous or {}).get("cost") or {}).get("attempts", []))
    if previous is not None and previous.get("status") == "running" and attempts:
        attempts[-1] = {**attempts[-1], "status": "killed"}  # it never wrote its end
    attempts.append({"started": now(), "ended": None, "status": "running"})
    return {"schema": SCHEMA_VERSION, "run_id": run_id, "status": "running", "error": None,
            "created": (previous or {}).get("created") or attempts[0]["started"],
            "finished": None, "config": cfg.to_dict(), "metrics": {}, "teacher": None,
            "data": data_summary(dataset), "stages": [], "cost": {"attempts": attempts},
            "env": {**environment(device), "precision": cfg.resolved_precision}, "extra": {}}


def describe_setup(record: dict[str, Any], cfg: RunConfig, trainee: Any, teacher: Any,
                   channels_last: bool, lockstep: list[str]) -> None:
    """What the record says about a run once its models are built: its lockstep group (run
    ids; empty: alone), its teacher's provenance, its stages, the student's and connectors'
    parameter counts, and the speed settings it trains with."""
    if lockstep:
        record["extra"]["lockstep"] = {"size": len(lockstep), "runs": lockstep}
    if teacher is not None:
        record["teacher"] = teacher.provenance
    record["stages"] = [s.describe() for s in trainee.stages]
    record["cost"].update(student_params=count_parameters(trainee.model),
                          connector_params=trainee.distiller.connector_parameters())
    record["env"].update(channels_last=channels_last, compile=cfg.engine.compile)


def end_attempt(record: dict[str, Any], status: str, wall_seconds: float,
                spent: dict[str, float] | None = None) -> None:
    """Close the record's current attempt and total the cost over every attempt: training
    seconds and images from the resume state (``spent``, which survives a kill), wall time
    from the attempts."""
    cost = record["cost"]
    attempt = cost["attempts"][-1]
    attempt.update(ended=now(), status=status, wall_seconds=wall_seconds)
    cost["wall_seconds"] = sum(a.get("wall_seconds") or 0.0 for a in cost["attempts"])
    if spent is not None:
        cost.update({k: v for k, v in spent.items() if v or not k.startswith("extra")})


def metrics_of(trainee: Any, suite: Suite) -> dict[str, Any]:
    """The record's metrics: every evaluator metric's last and best value and curve, and the
    curves of the extra stages (a loss's init stage, a warm-up outside the budget)."""
    metrics = summarize(trainee.history, suite.metrics, suite.best_metric,
                        suite.lower_is_better)
    extra = [{"name": s.name, "epochs": len(trainee.stage_history.get(s.name, [])),
              "lr": s.lr, "curve": trainee.stage_history.get(s.name, [])}
             for s in trainee.extra if s.epochs]
    if extra:
        metrics["stages"] = extra
    return metrics


def finish_failed(record: dict[str, Any], store: Store, exc: BaseException, t_start: float,
                  keep_existing: bool, spent: dict[str, float] | None = None) -> None:
    """Write a ``failed`` (or ``interrupted``) record, never over a ``done`` one."""
    from ..plugins import notify

    # Ctrl-C, and SystemExit (e.g. a Slurm requeue on preemption): resumable, not failed
    interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit))
    status = "interrupted" if interrupted else "failed"
    record.update(status=status, finished=now(),
                  error=None if interrupted else f"{type(exc).__name__}: {exc}")
    if not isinstance(exc, KDBenchError) and not interrupted:
        record["traceback"] = "".join(traceback.format_exception(exc, limit=8))
    end_attempt(record, status, time.perf_counter() - t_start, spent)
    if not keep_existing:
        notify("kdbench_run_end", record=record)
        store.write_record(record)


def summary_line(record: dict[str, Any]) -> str:
    """One line per run: id, status, models, teacher, the best metric's last and best value
    (with the best epoch), other evaluators' last values, time and throughput."""
    cfg, m = record["config"], record.get("metrics") or {}
    t = record.get("teacher")
    where = (f"epoch {','.join(map(str, t['epochs']))}" if t and t.get("epochs")
             else f"cohort of {t['peers']}" if t and "peers" in t else "weights" if t else "")
    teacher = (f" ← {t['arch']} ({t['source']}, {where}, "
               f"top-1 {t.get('teacher_top1', float('nan')):.2f})") if t else ""
    cost = record.get("cost") or {}
    best = (cfg.get("eval") or {}).get("best_metric", "top1")
    extra = "".join(f", {k} {m[f'{k}_last']:.4g}" for k in _other_metrics(cfg, best)
                    if isinstance(m.get(f"{k}_last"), (int, float)))
    return (f"{record['run_id']} {record['status']}: {cfg['student']}{teacher} "
            f"{cfg['loss']['name']} on {cfg['data']['name']} seed {cfg['seed']}: {best} last "
            f"{m.get(f'{best}_last', float('nan')):.2f}, best "
            f"{m.get(f'{best}_best', float('nan')):.2f} (epoch {m.get('best_epoch', '?')})"
            f"{extra}; {cost.get('wall_seconds', 0):.1f} s, "
            f"{cost.get('images_per_s', 0):.0f} img/s")


def _other_metrics(cfg: dict[str, Any], best: str) -> list[str]:
    """The metrics of the run's evaluators other than the one that picks the best epoch."""
    from ..plugins import get

    out = []
    for item in (cfg.get("eval") or {}).get("evaluators", []):
        try:
            metrics = get("evaluator", item["name"]).metrics
        except UnknownNameError:  # a record made with a plugin that is not installed here
            continue
        if best not in metrics:
            out += list(metrics)
    return out[:6]
