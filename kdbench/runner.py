"""``run(config) -> record``: one distillation run from config to result record;
``run_many(configs)``: several, those that can share a teacher and data pass in lockstep.

Order of work: resolve and validate the config, check the results dir, load the data, build the
teacher (training its trajectory once if needed), build student and distiller, train, write the
record. Bad input (KDBenchError with exit code 2) found before student training writes nothing.
From the moment student training starts the run has a ``running`` record, which ends ``done``,
``failed`` (with the error) or ``interrupted``. A ``done`` record is never overwritten by a
failing ``--force`` rerun.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import os
import platform
import socket
import subprocess
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from . import __version__, engine
from .config import RunConfig, resolve, run_id
from .errors import ConfigError, KDBenchError
from .store import SCHEMA_VERSION, Store


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@functools.lru_cache(maxsize=1)
def git_revision() -> str | None:
    """The kdbench source tree's commit (with ``+dirty`` for local changes), if it is a checkout."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def environment(device: torch.device) -> dict[str, Any]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    return {"kdbench": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "device": str(device), "device_name": name,
            "threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "git": git_revision(),
            "hostname": socket.gethostname()}


def check_input_size(model: Any, name: str, dataset: Any) -> None:
    h, w = dataset.image_size
    need = getattr(model, "min_input_size", 1)
    if min(h, w) < need:
        raise ConfigError(f"model {name!r} needs inputs of at least {need}×{need}, but dataset "
                          f"{dataset.name!r} has {h}×{w}")


def check_features(cfg: RunConfig, student: Any, teacher: Any) -> None:
    """A loss that taps features needs models that expose them (before any training)."""
    from .losses import entry

    taps = set(entry(cfg.loss.name).metadata.get("taps", ("logits",))) - {"logits", "index"}
    if not taps:
        return
    for role, name, model in (("student", cfg.student, student),
                              ("teacher", cfg.teacher.arch if cfg.teacher else None,
                               teacher.module if teacher is not None else None)):
        if model is not None and not getattr(model, "has_features", True):
            raise ConfigError(f"loss {cfg.loss.name!r} taps {', '.join(sorted(taps))} "
                              f"features, but the {role} {name!r} gives logits only; use a "
                              f"logit loss (e.g. kd)")
        if model is not None and "preact" in taps and not getattr(model, "has_preact", True):
            raise ConfigError(f"loss {cfg.loss.name!r} taps pre-activation features, but the "
                              f"{role} {name!r} has none (timm models expose post-activation "
                              f"stages only); use a zoo model or a loss tapping stages")


def check_index(cfg: RunConfig, dataset: Any) -> None:
    """A loss that taps sample indices (CRD's memory bank) needs a dataset that gives them."""
    from .losses import entry

    if "index" in entry(cfg.loss.name).metadata.get("taps", ()) and \
            not dataset.info.get("sample_index", True):
        raise ConfigError(f"loss {cfg.loss.name!r} needs sample indices (a memory bank over the "
                          f"training set), but dataset {cfg.data.name!r} cannot give them")


def check_loss(cfg: RunConfig, dataset: Any) -> None:
    """Build the loss once on fresh, untrained models of the run's architectures (on the CPU), so
    that a loss that does not fit them (FSP's unequal channels, a regressor that cannot map the
    shapes, a logits-only model, a dataset without sample indices) fails before any training."""
    from types import SimpleNamespace

    from .losses import DistillContext, build
    from .models import create_model

    check_index(cfg, dataset)
    student = create_model(cfg.student, dataset.num_classes, dataset.in_chans)
    teacher = (create_model(cfg.teacher.arch, dataset.num_classes, dataset.in_chans)
               if cfg.teacher is not None else None)
    check_features(cfg, student, SimpleNamespace(module=teacher) if teacher is not None else None)
    for name, model in ((cfg.student, student), (getattr(cfg.teacher, "arch", None), teacher)):
        if model is not None:
            check_input_size(model, name, dataset)
    build(cfg.loss.name, DistillContext(student, teacher, dataset.num_classes,
                                        dataset.input_shape, len(dataset.train),
                                        cfg.loss.weights, cfg.loss.options,
                                        dataset.train.labels.cpu()))


def run(config: RunConfig | dict[str, Any], *, force: bool = False,
        progress: bool = True) -> dict[str, Any]:
    """Run one configuration and return its record (the existing one if it is already done).

    A run that fails gets a ``failed`` record and its error is raised.
    """
    [(record, error)] = _run_configs([config], force=force, progress=progress, lockstep=False)
    if error is not None:
        raise error
    return record


def run_many(configs: list[RunConfig | dict[str, Any]], *, force: bool = False,
             progress: bool = True, lockstep: bool = True) -> list[dict[str, Any]]:
    """Run several configurations; returns their records in order.

    With ``lockstep``, runs that share data, seed, recipe, precision, device and teacher train
    together (:func:`lockstep_groups`): one data pass and one teacher forward per batch feed all
    their students, and each record is the one the run would get alone. Bad input in any
    config is raised before anything is written; a run that fails during training gets a
    ``failed`` record and the others go on (look at each record's ``status``).
    """
    return [record for record, _ in _run_configs(configs, force=force, progress=progress,
                                                 lockstep=lockstep)]


def _group_key(cfg: RunConfig) -> str:
    """What runs must share to train in lockstep: all but the student, its loss and teacher."""
    from .config import canonical_json

    d = cfg.to_dict()
    for k in ("student", "student_weights", "loss", "teacher", "preset"):
        d.pop(k)
    return canonical_json(d)


def _teacher_key(cfg: RunConfig) -> str | None:
    """The teacher a run needs, and whether it taps its features (None: no teacher)."""
    import dataclasses

    from .config import canonical_json
    from .losses import entry

    if cfg.teacher is None:
        return None
    taps = set(entry(cfg.loss.name).metadata.get("taps", ("logits",)))
    # a feature forward and a logit forward may round differently: keep them apart
    return canonical_json([dataclasses.asdict(cfg.teacher), bool(taps - {"logits", "index"})])


def lockstep_groups(configs: list[RunConfig]) -> list[list[int]]:
    """Indices of resolved ``configs`` that can train together, in first-seen order.

    Runs group when they share everything but the student, its weights and the loss, and use
    the same teacher with the same kind of forward (logits or features); runs without a
    teacher join the first group of their kind that has one (the teacher forward does not
    touch them).
    """
    groups: dict[tuple[str, str | None], list[int]] = {}
    loners: list[int] = []
    for i, cfg in enumerate(configs):
        if cfg.teacher is None:
            loners.append(i)
        else:
            groups.setdefault((_group_key(cfg), _teacher_key(cfg)), []).append(i)
    for i in loners:
        key = _group_key(configs[i])
        target = next((k for k in groups if k[0] == key), (key, None))
        groups.setdefault(target, []).append(i)
    return sorted(groups.values(), key=lambda g: g[0])


@dataclasses.dataclass
class _Job:
    """One run inside a group: its config, record and trainee."""

    cfg: RunConfig
    store: Store
    keep_existing: bool
    record: dict[str, Any]
    trainee: engine.Trainee | None = None
    error: BaseException | None = None
    started: bool = False

    @property
    def rid(self) -> str:
        return self.record["run_id"]


def _run_configs(configs: list[RunConfig | dict[str, Any]], *, force: bool, progress: bool,
                 lockstep: bool) -> list[tuple[dict[str, Any], BaseException | None]]:
    resolved = [resolve(RunConfig.from_dict(c) if isinstance(c, dict) else c) for c in configs]
    out: dict[str, tuple[dict[str, Any], BaseException | None]] = {}
    todo: list[RunConfig] = []
    for cfg in resolved:
        rid = run_id(cfg)
        if rid in out or any(run_id(c) == rid for c in todo):
            continue
        store = Store(cfg.results_dir)
        store.check_writable()
        existing = store.load_record(rid)
        if existing is not None and existing["status"] == "done" and not force:
            out[rid] = (existing, None)
        else:
            todo.append(cfg)
    groups = lockstep_groups(todo) if lockstep else [[i] for i in range(len(todo))]
    for group in groups:
        for sub in _by_resume_epoch([todo[i] for i in group], force):
            for job in _run_group(sub, force=force, progress=progress):
                out[job.rid] = (job.record, job.error)
    return [out[run_id(cfg)] for cfg in resolved]


def _by_resume_epoch(cfgs: list[RunConfig], force: bool) -> list[list[RunConfig]]:
    """Split a group by the epoch each run would resume from (interrupted runs' state files)."""
    if len(cfgs) == 1:
        return [cfgs]
    by_epoch: dict[int, list[RunConfig]] = {}
    for cfg in cfgs:
        path = Store(cfg.results_dir).state_path(run_id(cfg))
        epoch = 0
        if path.exists() and not force:
            try:
                epoch = int(torch.load(path, map_location="cpu", weights_only=False)["epoch"])
            except Exception:  # noqa: BLE001 - an unreadable state fails in its own run
                epoch = -1
        by_epoch.setdefault(epoch, []).append(cfg)
    return list(by_epoch.values())


def _run_group(cfgs: list[RunConfig], *, force: bool, progress: bool) -> list[_Job]:
    """Train ``cfgs`` (one lockstep group, or one run) and write their records."""
    from .data import load_dataset
    from .losses import DistillContext, build
    from .models import count_parameters, create_model, load_weights
    from .plugins import get, notify
    from .teachers import TeacherContext

    first = cfgs[0]
    engine.set_threads(first.engine.threads)
    device = engine.resolve_device(first.device)
    dataset = load_dataset(first.data.name, first.data.dir, **first.data.options).to(device)
    t_start = time.perf_counter()
    jobs = []
    for cfg in cfgs:
        store = Store(cfg.results_dir)
        existing = store.load_record(run_id(cfg))
        jobs.append(_Job(cfg, store, existing is not None and existing["status"] == "done", {
            "schema": SCHEMA_VERSION, "run_id": run_id(cfg), "status": "running", "error": None,
            "created": _now(), "finished": None, "config": cfg.to_dict(), "metrics": {},
            "teacher": None, "cost": {}, "env": environment(device), "extra": {}}))
    lockstep = len(jobs) > 1
    try:
        for cfg in cfgs:
            check_loss(cfg, dataset)
        # ---- teacher (may train its trajectory once) -------------------------------------------
        teacher = None
        with_teacher = next((c for c in cfgs if c.teacher is not None), None)
        if with_teacher is not None:
            arch = with_teacher.teacher.arch
            check_input_size(create_model(arch, dataset.num_classes, dataset.in_chans), arch,
                             dataset)
            ctx = TeacherContext(with_teacher, dataset, device, jobs[0].store, progress)
            teacher = get("teacher_source", with_teacher.teacher.source).create(ctx)
        online = getattr(teacher, "online", False)  # a cohort of peers trained with the student
        if online and lockstep:  # a cohort trains its own peers: one run at a time
            return [job for cfg in cfgs for job in _run_group([cfg], force=force,
                                                              progress=progress)]
        fixed = teacher.module if teacher is not None and not online else None

        # ---- students and distillers, each seeded as when alone ---------------------------------
        trainees: list[engine.Trainee] = []
        for job in jobs:
            cfg = job.cfg
            engine.seed_everything(cfg.seed)
            student = create_model(cfg.student, dataset.num_classes, dataset.in_chans)
            check_input_size(student, cfg.student, dataset)
            if cfg.student_weights:
                load_weights(student, cfg.student_weights)
            student = student.to(device)
            mine = cfg.teacher is not None and teacher is not None
            dctx = DistillContext(student, teacher.peers[0] if online else
                                  (fixed if mine else None), dataset.num_classes,
                                  dataset.input_shape, len(dataset.train), cfg.loss.weights,
                                  cfg.loss.options, dataset.train.labels)
            check_features(cfg, student, teacher if mine else None)
            check_index(cfg, dataset)
            distiller = build(cfg.loss.name, dctx).to(device)
            job.trainee = engine.Trainee("student", student, distiller, cfg.recipe)
            trainees.append(job.trainee)
            if online:
                trainees += teacher.trainees(cfg, dctx, distiller)
            if lockstep:  # the random stream the run would continue from alone
                job.trainee.rng = engine.rng_state(device)
                job.trainee.name = f"{cfg.loss.name}:{cfg.student}"
                job.trainee.state_path = job.store.state_path(run_id(cfg))
                job.record["extra"]["lockstep"] = {"size": len(jobs),
                                                   "runs": [j.rid for j in jobs]}
            if mine:
                job.record["teacher"] = teacher.provenance
            job.record["cost"].update(student_params=count_parameters(student),
                                      connector_params=distiller.connector_parameters())
            job.record["env"].update(channels_last=(
                engine.default_channels_last(device) if cfg.engine.channels_last is None
                else cfg.engine.channels_last), compile=cfg.engine.compile)

        # ---- train ------------------------------------------------------------------------------
        for job in jobs:
            if not job.keep_existing:  # a forced rerun leaves the done record until it is done
                job.store.write_record(job.record)
            job.started = True
            notify("kdbench_run_start", config=job.cfg.to_dict(), run_id=job.rid)
            if force:  # a forced rerun starts afresh rather than resuming an old attempt
                job.store.state_path(job.rid).unlink(missing_ok=True)
        by_trainee = {id(j.trainee): j for j in jobs}

        def on_epoch_end(epoch: int, done: list[engine.Trainee]) -> None:
            for t in done:
                if id(t) in by_trainee:
                    notify("kdbench_epoch_end", run_id=by_trainee[id(t)].rid, epoch=epoch,
                           metrics={k: v for k, v in t.history[-1].items()
                                    if isinstance(v, (int, float))})

        timing = engine.fit(trainees, dataset, epochs=first.recipe.epochs,
                            batch_size=first.recipe.batch_size, seed=first.seed, device=device,
                            precision=first.precision, augment=first.data.augment, teacher=fixed,
                            state_path=None if lockstep else jobs[0].store.state_path(jobs[0].rid),
                            on_epoch_end=on_epoch_end, progress=progress,
                            desc=(f"lockstep ×{len(jobs)}" if lockstep
                                  else f"{first.loss.name} {first.student}"),
                            online=online, update=teacher.update if online else "alternate",
                            channels_last=first.engine.channels_last,
                            compile=first.engine.compile, isolate_failures=lockstep)
        for job in jobs:
            trainee = job.trainee
            if trainee.error is not None:
                _finish_failed(job, trainee.error, t_start)
                continue
            job.record["metrics"] = summarize(trainee.history)
            if trainee.init_history:
                job.record["metrics"]["init"] = {"epochs": len(trainee.init_history),
                                                 "lr": trainee.init_lr,
                                                 "curve": trainee.init_history}
            if online:
                teacher.record(job.record, trainees)
            job.record["cost"].update(wall_seconds=time.perf_counter() - t_start, **timing)
            job.record.update(status="done", finished=_now())
            notify("kdbench_run_end", record=job.record)
            job.store.write_record(job.record)
            job.store.state_path(job.rid).unlink(missing_ok=True)
        return jobs
    except BaseException as exc:
        if not any(j.started for j in jobs) and isinstance(exc, KDBenchError) \
                and exc.exit_code == 2:
            raise  # bad input: nothing is written
        for job in jobs:
            if job.record["status"] == "running":
                _finish_failed(job, exc, t_start)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)) or not lockstep:
            raise
        return jobs


def _finish_failed(job: _Job, exc: BaseException, t_start: float) -> None:
    """Write a ``failed`` (or ``interrupted``) record, never over a ``done`` one."""
    from .plugins import notify

    record = job.record
    # Ctrl-C, and SystemExit (e.g. a Slurm requeue on preemption): resumable, not failed
    interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit))
    record.update(status="interrupted" if interrupted else "failed", finished=_now(),
                  error=None if interrupted else f"{type(exc).__name__}: {exc}")
    if not isinstance(exc, KDBenchError) and not interrupted:
        record["traceback"] = "".join(traceback.format_exception(exc, limit=8))
    record["cost"]["wall_seconds"] = time.perf_counter() - t_start
    job.error = exc
    if not job.keep_existing:
        notify("kdbench_run_end", record=record)
        job.store.write_record(record)


def summarize(history: list[dict[str, Any]]) -> dict[str, Any]:
    """Last and best epoch metrics from a per-epoch history.

    ``top1_last10_best`` is Checkpoint KD's metric: the best top-1 of the last 10 epochs (its
    reference code evaluates only those).
    """
    last = history[-1]
    best = max(history, key=lambda h: (h["top1"], -h["epoch"]))
    return {"top1_last": last["top1"], "top5_last": last["top5"], "top1_best": best["top1"],
            "top5_best": best["top5"], "best_epoch": best["epoch"],
            "top1_last10_best": max(h["top1"] for h in history[-10:]), "epochs": last["epoch"],
            "curve": history}


def default_results_dir() -> str:
    return os.environ.get("KDBENCH_RESULTS_DIR", "results")
