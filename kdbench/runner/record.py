"""A run's record: its skeleton when training starts, its setup once built, its metrics when it
ends, its failure; and the one-line summary of a record."""

from __future__ import annotations

import datetime as _dt
import functools
import os
import time
import traceback
from typing import Any

from ..config import RunConfig, canonical_json, identity, legacy_run_id
from ..device import environment
from ..errors import KDBenchError, UnknownNameError
from ..evaluators import Suite, summarize
from ..models import count_parameters
from ..store import SCHEMA_VERSION, Store, set_aside
from ..teachers.trajectory import changed_checkpoints


def existing_record(store: Store, cfg: RunConfig, run_id: str) -> dict[str, Any] | None:
    """The record of a resolved config in ``store``, adopting one stored under the id an older
    kdbench gave it (:func:`kdbench.config.legacy_run_id`)."""
    record = store.load_record(run_id, set_aside_corrupt=True)
    if record is None:
        record = store.adopt(legacy_run_id(cfg), run_id)
    if record is not None and not _is_run(record, run_id):
        set_aside(store.record_path(run_id), f"is not the record of run {run_id} (its config "
                  f"does not hash to that id: edited, or put there by hand); the run is made "
                  f"again")
        return None
    return record


def _is_run(record: dict[str, Any], rid: str) -> bool:
    """The record's config hashes to the id it is filed under."""
    from ..config import run_id

    try:
        return run_id(RunConfig.from_dict(record["config"])) == rid
    except Exception:  # noqa: BLE001 - a config that is not one cannot be this run's
        return False


def state_binding(cfg: RunConfig, run_id: str) -> dict[str, str]:
    """What a run's resume state is bound to: its id and the digest of its whole identity (a
    state file of another run, or of a config that only shares a prefix of the id, is never
    resumed)."""
    import hashlib

    return {"run_id": run_id,
            "config_sha256": hashlib.sha256(canonical_json(identity(cfg)).encode()).hexdigest()}


# ============================== code identity ==================================================

#: the parts of the code identity that decide whether a record was made by the same code (git
#: is recorded, not compared: a checkout's every commit would otherwise remake every run)
COMPARED = ("kdbench", "plugins", "torch", "torchvision", "timm")


def used_items(cfg: RunConfig) -> list[tuple[str, str]]:
    """(kind, name) of every registered item a resolved config uses."""
    out = [("model", cfg.student), ("dataset", cfg.data.name),
           ("augmentation", cfg.data.augmentation), ("optimizer", cfg.recipe.optimizer),
           ("schedule", cfg.recipe.schedule)]
    out += [("loss", part) for part in cfg.loss.name.split("+")]
    out += [("data_transform", _name(t)) for t in cfg.data.transforms]
    out += [("stage", _name(w)) for w in cfg.warmup]
    out += [("evaluator", _name(e)) for e in cfg.eval.evaluators]
    if cfg.teacher is not None:
        t = cfg.teacher
        out += [("model", t.arch), ("teacher_source", t.source),
                ("optimizer", t.recipe.optimizer), ("schedule", t.recipe.schedule)]
        if t.data is not None:
            out += [("dataset", t.data.name), ("augmentation", t.data.augmentation)]
            out += [("data_transform", _name(x)) for x in t.data.transforms]
    return list(dict.fromkeys(out))


def _name(item: Any) -> str:
    return item["name"] if isinstance(item, dict) else str(item)


def plugin_versions(cfg: RunConfig) -> dict[str, str | None]:
    """Every plugin that registered something the run uses, other than kdbench's built-ins:
    an installed distribution by its version, a local plugin file (``--plugins-dir``) by the
    SHA-256 of its text (an edit shows without a version to bump)."""
    import hashlib
    import importlib.metadata
    import re

    from ..plugins import get

    out: dict[str, str | None] = {}
    for kind, name in used_items(cfg):
        try:
            source = get(kind, name).source
        except Exception:  # noqa: BLE001 - not registered here (a modifier, a composite)
            continue
        if not source or source.startswith("builtin"):
            continue
        local = re.fullmatch(r"local \((.*)\)", source)
        if local:
            try:
                with open(local.group(1), "rb") as f:
                    out[f"local:{os.path.basename(local.group(1))}"] = \
                        "sha256:" + hashlib.sha256(f.read()).hexdigest()[:16]
            except OSError:
                out[f"local:{os.path.basename(local.group(1))}"] = None
            continue
        try:
            out[source] = importlib.metadata.version(source)
        except importlib.metadata.PackageNotFoundError:
            out[source] = None
    return dict(sorted(out.items()))


def code_identity(cfg: RunConfig) -> dict[str, Any]:
    """The code that makes a run: kdbench's version and git revision (commit, ``+dirty`` for
    local changes; None outside a checkout), the plugins that registered what it uses, and
    the versions of torch, torchvision and timm."""
    import importlib.metadata

    from ..version import __version__

    def version(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    import torch

    # torch as it says itself (with its local build tag, as ``env.torch`` always said); the
    # others from their installed metadata, without importing them
    return {"kdbench": __version__, "git": _git_revision(), "plugins": plugin_versions(cfg),
            "torch": torch.__version__, "torchvision": version("torchvision"),
            "timm": version("timm")}


@functools.lru_cache(maxsize=1)
def _git_revision() -> str | None:
    """kdbench's git revision, asked once per process (a sweep asks for every run)."""
    from ..device import git_revision

    return git_revision()


def record_code(record: dict[str, Any]) -> dict[str, Any] | None:
    """A record's code identity; for a record made before records held one, what its ``env``
    says (kdbench's and torch's versions; None when it says neither)."""
    code = record.get("code")
    if isinstance(code, dict):
        return code
    env = record.get("env") if isinstance(record.get("env"), dict) else {}
    known = {k: env[k] for k in ("kdbench", "torch") if k in env}
    return known or None


def code_changes(record: dict[str, Any], code: dict[str, Any]) -> list[str]:
    """How the code that made ``record`` differs from ``code`` (empty: the same, as far as the
    record knows), one short phrase each, e.g. ``plugin kdbench-example 0.1 → 0.2``."""
    old = record_code(record) or {}
    out = []
    for key in COMPARED:
        if key not in old:
            continue
        if key == "plugins":
            before, now_ = old.get(key) or {}, code.get(key) or {}
            for name in sorted(set(before) | set(now_)):
                if before.get(name, "absent") != now_.get(name, "absent"):
                    out.append(f"plugin {name} {before.get(name, 'absent')} → "
                               f"{now_.get(name, 'absent')}")
        elif old[key] != code.get(key):
            out.append(f"{key} {old[key]} → {code.get(key)}")
    return out


def record_changes(record: dict[str, Any], cfg: RunConfig) -> list[str]:
    """How a done record's making differs from what this config would use now: the code
    (:func:`code_changes`) and the teacher checkpoints
    (:func:`~kdbench.teachers.trajectory.changed_checkpoints`)."""
    return code_changes(record, code_identity(cfg)) + changed_checkpoints(
        record, Store(cfg.results_dir))


def made_by(changes: list[str]) -> str:
    """``made by other code``, ``made from other teacher weights``, or both, for ``changes``."""
    code = any(not c.startswith("teacher ") for c in changes)
    weights = any(c.startswith("teacher ") for c in changes)
    return " and ".join(p for p, on in (("made by other code", code),
                                        ("made from other teacher weights", weights)) if on)


def made(record: dict[str, Any]) -> str:
    """When a record was made and its wall time: ``made 2026-12-07T12:00:00+00:00 in 5.8 s``."""
    cost = record.get("cost") if isinstance(record.get("cost"), dict) else {}
    wall = cost.get("wall_seconds")
    return f"made {record.get('finished') or record.get('created') or 'at an unknown time'}" + (
        f" in {wall:.1f} s" if isinstance(wall, (int, float)) else "")


def reused_line(record: dict[str, Any], changes: list[str] | None = None) -> str:
    """The line that announces a reused record: its id, when it was made and how long it took
    (and, when reused over changed code, what changed)."""
    made_ = made(record)
    if changes:
        return (f"kdbench: run {record['run_id']} reused although its record was "
                f"{made_by(changes)} ({'; '.join(changes)}); {made_} (--rerun-changed remakes "
                f"it)")
    return f"kdbench: run {record['run_id']} reused: its record was {made_} (--force reruns it)"


def describe_run(cfg: RunConfig, run_id: str) -> dict[str, Any]:
    """What ``kdbench run --dry-run`` shows of a resolved config, reading the store only: the
    run id, where its record goes, whether one exists (its status, when and by which code it
    was made, and how that code differs from this one), and the teacher it would distil from.
    Nothing is written (no folder is made, no damaged file set aside)."""
    from ..errors import KDBenchError

    store = Store(cfg.results_dir)
    path = store.record_path(run_id)
    out: dict[str, Any] = {"run_id": run_id, "record_path": str(path), "preset": cfg.preset}
    code = code_identity(cfg)
    try:
        record = store.load_record(run_id)
    except KDBenchError as exc:
        out["record"] = {"status": "unreadable", "error": str(exc)}
    else:
        if record is None:
            out["record"] = None
        else:
            changes = code_changes(record, code) + changed_checkpoints(record, store)
            out["record"] = {"status": record["status"], "made": made(record),
                             "code": record_code(record),
                             "same_code": not changes, "changes": changes}
    out["code"] = code
    t = cfg.teacher
    if t is not None:
        teacher: dict[str, Any] = {"source": t.source, "arch": t.arch, "seed": t.seed,
                                   "epoch": t.epoch, "weights": t.weights}
        if t.weights is None:
            from ..teachers import trajectory as traj

            try:
                spec = traj.trajectory_spec(cfg)
                key = traj.trajectory_key(spec)
                found = traj.find(store, spec)
                teacher.update(trajectory=key, save_epochs=t.checkpoint_epochs(),
                               trained=("done" if found is not None and found.done else
                                        "partly" if found is not None else "not yet"))
            except (KDBenchError, KeyError, TypeError, ValueError):
                pass
        out["teacher"] = teacher
    return out


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
            "env": {**environment(device), "precision": cfg.resolved_precision},
            "code": code_identity(cfg), "extra": {}}


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
