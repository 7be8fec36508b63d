"""Running a planned sweep: spec files, teachers first, then the runs, progress and the summary.

The state of a sweep is the store: a run whose record says ``done`` is skipped, everything else
(pending, failed, interrupted, a ``running`` record left by a killed process) runs again, resuming
from its last saved epoch. A job that ends without a record of its own (bad input found before
training, a crash, a failed teacher) gets a ``failed`` record with the error, so ``kdbench sweep
status`` and ``kdbench table`` see it.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, KDBenchError, StoreError
from ..progress import Progress
from ..store import SCHEMA_VERSION, Store, atomic_write_json, read_json
from .executors import Executor, Job, Outcome
from .plan import Plan, PlannedRun, PlannedTeacher, run_status
from .work import run_specs

SPECS = "specs"


@dataclass
class RunResult:
    """How one planned run stands after the sweep."""

    status: str  # done | failed | skipped | interrupted | pending
    error: str | None = None
    top1: float | None = None
    seconds: float | None = None


@dataclass
class Summary:
    """What a sweep invocation did: per-run results, teachers trained, interruption."""

    plan: Plan
    results: dict[str, RunResult] = field(default_factory=dict)
    teachers_trained: list[str] = field(default_factory=list)
    teachers_failed: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results.values())

    @property
    def succeeded(self) -> int:
        return self.count("done")

    @property
    def failed(self) -> int:
        return self.count("failed")

    @property
    def skipped(self) -> int:
        return self.count("skipped")

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if self.failed or self.teachers_failed else 0

    def line(self) -> str:
        parts = [f"{self.succeeded} succeeded", f"{self.failed} failed",
                 f"{self.skipped} skipped (already done)"]
        rest = len(self.results) - self.succeeded - self.failed - self.skipped
        if rest:
            parts.append(f"{rest} not run (interrupted)")
        teachers = f"; teachers: {len(self.teachers_trained)} trained"
        if self.teachers_failed:
            teachers += f", {len(self.teachers_failed)} failed"
        return f"sweep {self.plan.name}: " + ", ".join(parts) + teachers


# ============================== spec files and jobs ============================================


def run_job(run: PlannedRun) -> Job:
    spec = f"{SPECS}/{run.run_id}.json"
    return Job(run.run_id, "run", [spec], run.label_text(),
               inputs=[spec] + [f"teachers/{k}" for k in run.teachers],
               outputs=[f"runs/{run.run_id}.json"])


def lockstep_job(runs: list[PlannedRun]) -> Job:
    """Runs that share teacher, data, seed and recipe, trained together in one process."""
    specs = [f"{SPECS}/{run.run_id}.json" for run in runs]
    teachers = _unique(f"teachers/{k}" for run in runs for k in run.teachers)
    return Job(f"lockstep:{runs[0].run_id}", "lockstep", specs,
               f"{len(runs)} runs in lockstep: " + "; ".join(r.label_text() for r in runs),
               inputs=specs + teachers, outputs=[f"runs/{run.run_id}.json" for run in runs])


def teacher_job(teacher: PlannedTeacher) -> Job:
    spec = f"{SPECS}/teacher-{teacher.key}.json"
    return Job(f"teacher:{teacher.key}", "teacher", [spec], f"teacher {teacher.key}",
               inputs=[spec], outputs=[f"teachers/{teacher.key}"])


def write_spec(store: Store, spec: str, content: dict[str, Any]) -> None:
    """A spec file (JSON, which ``kdbench run --spec`` reads as YAML), written atomically and
    only when it changes, so a running job never sees it replaced."""
    path = store.root / spec
    if path.exists():
        try:
            if read_json(path, "spec") == content:
                return
        except StoreError:
            pass
    atomic_write_json(path, content)


def teacher_spec(teacher: PlannedTeacher) -> dict[str, Any]:
    return {"trajectory": teacher.spec, "save_epochs": teacher.save_epochs,
            "config": teacher.config.to_dict()}


def run_lockstep(spec_files: list[str | Path], results_dir: str | Path,
                 progress: bool = True, changed: str = "ask") -> list[dict[str, Any]]:
    """Run the specs together (one data pass and teacher forward per batch for all); their
    records, each the one the run would get alone."""
    return run_specs(spec_files, results_dir, progress, lockstep=True, changed=changed)


# ============================== the sweep ======================================================


def run_sweep(plan: Plan, executor: Executor, *, progress: bool = True,
              lockstep: bool = False, warn: Callable[[str], None] | None = None,
              changed: str = "ask") -> Summary:
    """Run every run of ``plan`` that is not done: its teachers first, each once.

    A done record made by other code follows the rule of :func:`kdbench.runner.run`:
    ``changed="ask"`` (the default) is an error naming the change before any job starts,
    ``"rerun"`` makes it again, ``"reuse"`` keeps it (skipped, said in one line)."""
    from ..runner.record import made_by, record_changes

    store = plan.store
    store.check_writable()
    summary = Summary(plan)
    pending: list[PlannedRun] = []
    other_code: list[tuple[PlannedRun, list[str]]] = []
    for run in plan.runs:
        record = _safe_record(store, run.run_id) if run.status(store) == "done" else None
        changes = record_changes(record, run.config) if record else []
        if record is not None and (not changes or changed == "reuse"):
            summary.results[run.run_id] = RunResult("skipped", **_metrics(store, run.run_id))
        else:
            summary.results[run.run_id] = RunResult("pending")
            pending.append(run)
        if changes:
            other_code.append((run, changes))
    if other_code:
        first, changes = other_code[0]
        what = (f"{len(other_code)} of the sweep's {len(plan.runs)} runs have finished records "
                f"{made_by(changes)} (the first, {first.run_id}: {'; '.join(changes)})")
        if changed == "ask":
            raise ConfigError(f"{what}: choose --reuse to keep them or --rerun-changed to make "
                              f"them again with this code")
        if warn is not None:
            warn(f"kdbench: {what}; " + ("they are reused" if changed == "reuse" else
                                         "they are made again with this code"))
    needed = _unique(key for run in pending for key in run.teachers)
    teachers = [plan.teachers[k] for k in needed if plan.teachers[k].status(store) != "done"]

    teacher_jobs = {}
    for teacher in teachers:
        job = teacher_job(teacher)
        write_spec(store, job.specs[0], teacher_spec(teacher))
        teacher_jobs[job.key] = (job, teacher)
    for run in pending:
        write_spec(store, run_job(run).specs[0], run.config.to_dict())
    run_jobs: dict[str, tuple[Job, list[PlannedRun]]] = {}
    for group in _groups(pending, lockstep):
        job = run_job(group[0]) if len(group) == 1 else lockstep_job(group)
        run_jobs[job.key] = (job, group)

    bar = Progress(len(teachers) + len(pending), f"sweep {plan.name}", unit="job",
                   enabled=progress)

    def advance(n: int = 1) -> None:
        left = sum(r.status == "pending" for r in summary.results.values())
        postfix = (f"done={summary.succeeded} failed={summary.failed} left={left}"
                   + (f" teachers={len(summary.teachers_trained)}" if teacher_jobs else ""))
        for _ in range(n):
            bar.update(postfix)

    def on_teacher(job: Job, outcome: Outcome) -> None:
        teacher = teacher_jobs[job.key][1]
        if teacher.status(store) == "done":
            summary.teachers_trained.append(teacher.key)
        else:
            summary.teachers_failed[teacher.key] = outcome.error or "did not finish"
        advance()

    def on_run(job: Job, outcome: Outcome) -> None:
        group = run_jobs[job.key][1]
        for run in group:
            summary.results[run.run_id] = settle(store, run, outcome)
        advance(len(group))

    try:
        with executor:
            if teacher_jobs:
                executor.run([j for j, _ in teacher_jobs.values()], plan.results_dir, on_teacher)
            ready = []
            for job, group in run_jobs.values():
                bad = [k for run in group for k in run.teachers if k in summary.teachers_failed]
                if bad:
                    error = f"teacher trajectory {bad[0]} failed: {summary.teachers_failed[bad[0]]}"
                    for run in group:
                        summary.results[run.run_id] = settle(store, run, Outcome(None, error))
                    advance(len(group))
                else:
                    ready.append(job)
            if ready:
                executor.run(ready, plan.results_dir, on_run)
    except KeyboardInterrupt:
        summary.interrupted = True
        for rid, result in summary.results.items():
            if result.status == "pending":
                status = run_status(store, rid)
                summary.results[rid] = RunResult("interrupted" if status == "interrupted"
                                                 else "pending")
    finally:
        bar.close()
    return summary


def _groups(runs: list[PlannedRun], lockstep: bool) -> list[list[PlannedRun]]:
    """One group per run, or the runner's lockstep groups (shared teacher, data, seed, recipe)."""
    if not lockstep or len(runs) < 2:
        return [[run] for run in runs]
    from ..runner import lockstep_groups

    return [[runs[i] for i in group] for group in lockstep_groups([r.config for r in runs])]


def settle(store: Store, run: PlannedRun, outcome: Outcome) -> RunResult:
    """The run's result from its record; a job that left none (or a stale ``running`` one) gets
    a ``failed`` record carrying the executor's error."""
    try:
        record = store.load_record(run.run_id)
    except KDBenchError as exc:
        return RunResult("failed", str(exc), seconds=outcome.seconds)
    if record is not None and record["status"] == "done":
        return RunResult("done", **_metrics(store, run.run_id, record))
    if outcome.interrupted:
        return RunResult("interrupted", "interrupted", seconds=outcome.seconds)
    error = (record or {}).get("error") if (record or {}).get("status") == "failed" else None
    error = error or outcome.error or "no record written"
    if record is None or record["status"] in ("running", "interrupted"):
        # under the run's lock, never beside a process still training it (an orphaned or
        # retried child): its record is its own to write
        with store.run_lock(run.run_id, wait=False) as holder:
            if holder:
                return RunResult("failed", f"{error} (the run is still being trained by "
                                 f"{holder}; its record is left to it)",
                                 seconds=outcome.seconds)
            try:
                record = store.load_record(run.run_id)
            except KDBenchError as exc:
                return RunResult("failed", str(exc), seconds=outcome.seconds)
            if record is not None and record["status"] == "done":
                return RunResult("done", **_metrics(store, run.run_id, record))
            if record is None or record["status"] in ("running", "interrupted"):
                now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
                base = record or {"schema": SCHEMA_VERSION, "run_id": run.run_id,
                                  "created": now, "config": run.config.to_dict(),
                                  "metrics": {}, "teacher": None, "cost": {}, "env": {},
                                  "extra": {}}
                failed = {**base, "status": "failed", "error": error, "finished": now}
                failed.setdefault("extra", {})["sweep"] = {"returncode": outcome.returncode,
                                                           "attempts": outcome.attempts,
                                                           "log": outcome.log}
                store.write_record(failed)
    return RunResult("failed", error, seconds=outcome.seconds)


def _metrics(store: Store, run_id: str, record: dict[str, Any] | None = None) -> dict[str, Any]:
    if record is None:
        try:
            record = store.load_record(run_id)
        except KDBenchError:
            record = None
    record = record or {}
    return {"top1": headline(record), "seconds": (record.get("cost") or {}).get("wall_seconds")}


def headline(record: dict[str, Any] | None) -> float | None:
    """A record's last value of the metric that picks its best epoch (top-1 by default)."""
    record = record or {}
    best = ((record.get("config") or {}).get("eval") or {}).get("best_metric", "top1")
    return (record.get("metrics") or {}).get(f"{best}_last")


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


# ============================== reports ========================================================


def runs_table(plan: Plan, rows: list[tuple[PlannedRun, str, str | None, Any]],
               limit: int | None = None) -> str:
    """Runs as a table: id, the sweep's varying values, status, the last value of each run's
    best-epoch metric (top-1 unless its config says otherwise), error."""
    from tabulate import tabulate

    shown = rows if limit is None or len(rows) <= limit else rows[:limit]
    body = []
    for run, status, error, top1 in shown:
        body.append([run.run_id, *[_cell(run.label.get(a)) for a in plan.axes], status,
                     "" if top1 is None or (isinstance(top1, float) and math.isnan(top1))
                     else f"{top1:.2f}", _clip(error or "", 70)])
    text = tabulate(body, headers=["run", *plan.axes, "status", "best metric, last", "error"])
    if len(shown) < len(rows):
        text += f"\n... and {len(rows) - len(shown)} more"
    return text


def summary_report(summary: Summary, limit: int = 40) -> str:
    """The table at the end of a sweep: every run it attempted (failures first), the counts."""
    plan = summary.plan
    by_id = {r.run_id: r for r in plan.runs}
    attempted = [(rid, res) for rid, res in summary.results.items() if res.status != "skipped"]
    attempted.sort(key=lambda item: item[1].status != "failed")
    rows = [(by_id[rid], res.status, res.error, res.top1) for rid, res in attempted]
    parts = []
    if rows:
        parts.append(runs_table(plan, rows, limit))
    for key, error in summary.teachers_failed.items():
        parts.append(f"teacher {key} failed: {error}")
    parts.append(summary.line())
    return "\n".join(parts)


def status_report(plan: Plan, *, all_runs: bool = False, limit: int | None = 40) -> str:
    """Where a sweep stands, read from the store: counts by status, teachers, unfinished runs."""
    store = plan.store
    statuses = {run.run_id: run.status(store) for run in plan.runs}
    counts: dict[str, int] = {}
    for status in statuses.values():
        counts[status] = counts.get(status, 0) + 1
    teacher_status = {k: t.status(store) for k, t in plan.teachers.items()}
    rows = []
    for run in plan.runs:
        status = statuses[run.run_id]
        if all_runs or status != "done":
            record = _safe_record(store, run.run_id)
            rows.append((run, status, (record or {}).get("error"), headline(record)))
    parts = [f"sweep {plan.name}: {len(plan.runs)} runs in {plan.results_dir} — "
             + ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=_status_order))]
    if plan.teachers:
        done = sum(s == "done" for s in teacher_status.values())
        parts.append(f"teachers: {done}/{len(plan.teachers)} trained")
    if rows:
        parts.append(runs_table(plan, rows, limit))
    return "\n".join(parts)


def dry_run_report(plan: Plan) -> str:
    """Every run the sweep expands to, with its id and status, and the teachers it needs."""
    from tabulate import tabulate

    text = status_report(plan, all_runs=True, limit=None)
    store = plan.store
    if plan.teachers:
        users: dict[str, int] = {}
        for run in plan.runs:
            for key in run.teachers:
                users[key] = users.get(key, 0) + 1
        text += "\n\n" + tabulate(
            [[t.key, t.status(store), ",".join(map(str, t.save_epochs)), users.get(t.key, 0)]
             for t in plan.teachers.values()],
            headers=["teacher trajectory", "status", "saved epochs", "runs"])
    if plan.duplicates:
        text += (f"\n({plan.duplicates} grid point(s) resolve to a run listed already and are "
                 f"run once)")
    return text


def _safe_record(store: Store, run_id: str) -> dict[str, Any] | None:
    try:
        return store.load_record(run_id)
    except KDBenchError:
        return None


_ORDER = ("done", "failed", "interrupted", "running", "pending", "corrupt")


def _status_order(item: tuple[str, int]) -> int:
    return _ORDER.index(item[0]) if item[0] in _ORDER else len(_ORDER)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def _clip(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"
