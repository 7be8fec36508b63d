"""``run(config) -> record``: one distillation run from config to result record;
``run_many(configs)``: several, those that can share a teacher and data pass in lockstep.

Order of work: resolve and validate the config, check the results dir, load the data (and apply
its transforms), check the run against its models and data (:mod:`.checks`), build the teacher
(training its trajectory once if needed), build each student, distiller, stages and the
evaluators (each once), train (:func:`kdbench.engine.fit`), write the record (:mod:`.record`).
Bad input (KDBenchError with exit code 2) found before student training writes nothing. From
the moment student training starts the run has a ``running`` record, which ends ``done``,
``failed`` (with the error) or ``interrupted``. A ``done`` record is never overwritten by a
failing ``--force`` rerun.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
import warnings
from typing import Any

from .. import device as dev
from .. import ranks
from ..config import RunConfig, resolve, run_id
from ..data import load_data
from ..data.augment import make_augment
from ..engine import FitOptions, Trainee, fit
from ..errors import ConfigError, KDBenchError, TrainingError
from ..evaluators import EvalContext, build_suite
from ..loggers import Loggers
from ..losses import DistillContext, build
from ..models import create_model, load_weights
from ..plugins import get, notify
from ..stages.base import StageContext, arrange, build_warmups, loss_stages, main_stage
from ..store import Store, remove_resume
from ..teachers.base import TeacherContext
from .checks import check_batch, check_features, check_index, check_loss, check_stages
from .groups import by_resume_epoch, lockstep_groups
from .keep import keep_student, pending_best_path, save_best_if_new
from .opening import opening_line
from .record import (
    describe_setup,
    end_attempt,
    existing_record,
    finish_failed,
    made,
    made_by,
    metrics_of,
    new_record,
    now,
    record_changes,
    reused_line,
    state_binding,
)


def run(config: RunConfig | dict[str, Any], *, force: bool = False,
        progress: bool = True, changed: str = "ask") -> dict[str, Any]:
    """Run one configuration and return its record (the existing one if it is already done,
    announced as reused).

    A ``done`` record made by other code (:func:`~.record.code_changes`: kdbench's, a plugin's,
    torch's, torchvision's or timm's version) is never reused silently: by default
    (``changed="ask"``) that is an error naming the change, nothing trained;
    ``changed="rerun"`` makes it again with this code, ``changed="reuse"`` keeps it (both
    announced). A run that fails gets a ``failed`` record and its error is raised.
    """
    [(record, error)] = _run_configs([config], force=force, progress=progress, lockstep=False,
                                     changed=changed)
    if error is not None:
        raise error
    return record


def run_many(configs: list[RunConfig | dict[str, Any]], *, force: bool = False,
             progress: bool = True, lockstep: bool = True,
             changed: str = "ask") -> list[dict[str, Any]]:
    """Run several configurations; returns their records in order.

    With ``lockstep``, runs that share data, seed, recipe, stages, evaluators, precision, device
    and teacher train together (:func:`~kdbench.runner.groups.lockstep_groups`): one data pass
    and one teacher forward per batch feed all their students, and each record is the one the
    run would get alone. Bad input in any config is raised before anything is written; a run
    that fails during training gets a ``failed`` record and the others go on (look at each
    record's ``status``). ``changed``: as for :func:`run`.
    """
    return [record for record, _ in _run_configs(configs, force=force, progress=progress,
                                                 lockstep=lockstep, changed=changed)]


def _run_configs(configs: list[RunConfig | dict[str, Any]], *, force: bool, progress: bool,
                 lockstep: bool, changed: str = "ask"
                 ) -> list[tuple[dict[str, Any], BaseException | None]]:
    if changed not in CHANGED:
        raise ConfigError(f"changed={changed!r} is not one of {', '.join(CHANGED)}")
    asked: list[tuple[dict[str, Any], list[str]]] = []
    resolved = [resolve(RunConfig.from_dict(c) if isinstance(c, dict) else c) for c in configs]
    out: dict[str, tuple[dict[str, Any], BaseException | None]] = {}
    todo: list[RunConfig] = []
    remake: set[str] = set()  # done records made by other code, made again with this code
    for cfg in resolved:
        rid = run_id(cfg)
        if rid in out or any(run_id(c) == rid for c in todo):
            continue
        store = Store(cfg.results_dir)
        store.check_writable()
        existing = existing_record(store, cfg, rid)
        if existing is not None and existing["status"] == "done" and not force:
            changes = record_changes(existing, cfg)
            if changes and changed == "ask":
                asked.append((existing, changes))
                continue
            if _reuse(existing, cfg, changed, remake):
                out[rid] = (existing, None)
                continue
        todo.append(cfg)
    if asked:  # nothing is trained before the user chose
        raise CodeChangedError(asked)
    groups = lockstep_groups(todo) if lockstep else [[i] for i in range(len(todo))]
    for group in groups:
        with contextlib.ExitStack() as locks:
            cfgs = []
            # one process per run: wait for another one training it, then reuse its record
            for cfg in sorted((todo[i] for i in group), key=run_id):
                store, rid = Store(cfg.results_dir), run_id(cfg)
                locks.enter_context(store.run_lock(rid, say=_say))
                done = existing_record(store, cfg, rid)
                if done is not None and done["status"] == "done" and not force \
                        and _reuse(done, cfg, changed, remake, quiet=rid in remake):
                    out[rid] = (done, None)
                else:
                    cfgs.append(cfg)
            cfgs.sort(key=todo.index)  # the order they were asked for, as without locks
            # a run made again over changed code starts afresh, as a forced one
            for part, again in (([c for c in cfgs if run_id(c) not in remake], force),
                                ([c for c in cfgs if run_id(c) in remake], True)):
                for sub in by_resume_epoch(part, again) if part else []:
                    for job in _run_group(sub, force=again, progress=progress):
                        out[job.rid] = (job.record, job.error)
    return [out[run_id(cfg)] for cfg in resolved]


#: what is done with a ``done`` record made by other code: ask (the default: an error that
#: names the change and the two choices, nothing trained), made again, or reused
CHANGED = ("ask", "rerun", "reuse")


class CodeChangedError(ConfigError):
    """Done records made by other code, and the user did not say whether to reuse them."""

    def __init__(self, asked: list[tuple[dict[str, Any], list[str]]]):
        record, changes = asked[0]
        what = (f"run {record['run_id']} has a record" if len(asked) == 1 else
                f"{len(asked)} runs (the first {record['run_id']}) have records")
        super().__init__(f"{what} {made_by(changes)} ({'; '.join(changes)}; "
                         f"{made(record)}): choose --reuse to keep it or --rerun-changed to make "
                         f"it again with this code (changed='reuse' or 'rerun' in Python)")


def _reuse(record: dict[str, Any], cfg: RunConfig, changed: str, remake: set[str], *,
           quiet: bool = False) -> bool:
    """Whether a ``done`` record is reused, announced either way: as reused (with when it was
    made and its wall time), or as made by other code and made again (``remake``)."""
    rid = record["run_id"]
    changes = record_changes(record, cfg)
    if changes and changed != "reuse":
        if not quiet:
            _say(f"kdbench: run {rid} has a record {made_by(changes)} ({'; '.join(changes)}); "
                 f"it is made again with this code (--reuse keeps the old record)")
        remake.add(rid)
        return False
    remake.discard(rid)
    _say(reused_line(record, changes))
    return True


def _say(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=2)


@dataclasses.dataclass
class _Job:
    """One run inside a group: its config, record and trainee."""

    cfg: RunConfig
    store: Store
    keep_existing: bool
    record: dict[str, Any]
    trainee: Trainee | None = None
    error: BaseException | None = None
    started: bool = False
    loggers: Loggers = dataclasses.field(default_factory=lambda: Loggers([], ""))

    @property
    def rid(self) -> str:
        return self.record["run_id"]


def _run_group(cfgs: list[RunConfig], *, force: bool, progress: bool) -> list[_Job]:
    """Train ``cfgs`` (one lockstep group, or one run) and write their records."""
    first = cfgs[0]
    dev.set_threads(first.engine.threads)
    device = dev.resolve_device(first.device)
    dataset = load_data(first.data, device)
    _scale_settings(first, dataset, device)
    jobs = []
    for cfg in cfgs:
        store, rid = Store(cfg.results_dir), run_id(cfg)
        existing = store.load_record(rid)
        done = existing is not None and existing["status"] == "done"
        # a resumed attempt continues the record of the attempts before it
        resumed = existing if not (done or force) and store.state_path(rid).exists() else None
        jobs.append(_Job(cfg, store, done, new_record(cfg, rid, device, dataset, resumed)))
        jobs[-1].record["env"].update(scale_env(cfg, device))
    return _train_jobs(jobs, dataset, device, force=force, progress=progress and
                       ranks.is_primary())


def _notify(hook: str, **kwargs: Any) -> None:
    """A lifecycle hook, called by rank 0 alone in a distributed run (plugins may write)."""
    if ranks.is_primary():
        notify(hook, **kwargs)


def _scale_settings(cfg: RunConfig, dataset: Any, device: Any) -> None:
    """The speed settings of streamed data, cuDNN and a distributed run, applied."""
    from ..data.stream import configure

    configure(dataset, workers=cfg.engine.workers, pin_memory=cfg.engine.pin_memory)
    if device.type == "cuda":
        import torch

        torch.backends.cudnn.benchmark = cfg.engine.cudnn_benchmark
    world = ranks.world()
    if world is not None:
        from ..engine.distributed import check_batch

        check_batch(cfg.recipe.batch_size)
        if cfg.engine.sync_bn and device.type != "cuda":
            from ..errors import ConfigError

            raise ConfigError(f"--sync-bn needs CUDA (SyncBatchNorm has no CPU kernel; valid "
                              f"on {device.type}: --no-sync-bn)")


def scale_env(cfg: RunConfig, device: Any) -> dict[str, Any]:
    """What the record's env says about how the run was spread and fed."""
    world = ranks.world()
    return {"world_size": world[1] if world else 1,
            "backend": ranks.backend() if world else None,
            "sync_bn": bool(cfg.engine.sync_bn and world),
            "workers": cfg.engine.workers, "pin_memory": cfg.engine.pin_memory,
            "cudnn_benchmark": bool(cfg.engine.cudnn_benchmark and device.type == "cuda"),
            "grad_scaler": cfg.resolved_precision == "fp16" and device.type == "cuda"}


def _train_jobs(jobs: list[_Job], dataset: Any, device: Any, *, force: bool, progress: bool,
                teacher: Any = None) -> list[_Job]:
    """Check, build and train ``jobs`` (one lockstep group, or one run; ``teacher``: the one
    already built for them) and write their records."""
    t_start = time.perf_counter()
    lockstep = len(jobs) > 1
    try:
        # ---- checks: the loss built once on fresh models, before any teacher is trained ---------
        for job in jobs:
            check_batch(job.cfg.recipe, dataset)
            check_loss(job.cfg, dataset)
        # ---- teacher (may train its trajectory once, on its own data) --------------------------
        if teacher is None:
            teacher = _teacher(jobs, dataset, device, progress)
        if not (getattr(teacher, "online", False) and lockstep):
            _train(jobs, dataset, device, teacher, t_start, force=force, progress=progress)
            return jobs
    except BaseException as exc:
        if not any(j.started for j in jobs) and _refusal(exc):
            raise  # bad input or a damaged store: nothing is written
        for job in jobs:
            if job.record["status"] == "running":
                finish_failed(job.record, job.store, exc, t_start, job.keep_existing,
                              job.trainee.spent if job.trainee is not None else None)
                job.loggers.end(job.record)
                job.error = exc
        if isinstance(exc, (KeyboardInterrupt, SystemExit)) or not lockstep:
            raise
        return jobs
    # a cohort (a teacher of peers trained with the student) trains its own peers: one run at a
    # time, the first with the cohort made for it; a run that fails gets its failed record and
    # the others go on, as in lockstep
    out = []
    for k, job in enumerate(jobs):
        try:
            out += _train_jobs([job], dataset, device, force=force, progress=progress,
                               teacher=teacher if k == 0 else None)
        except Exception as exc:
            if not job.started and _refusal(exc):
                raise
            out.append(job)
    return out


def _refusal(exc: BaseException) -> bool:
    """An error that refuses the run before it starts (bad input, exit 2; a damaged store, exit
    1): it writes no record."""
    return isinstance(exc, KDBenchError) and not isinstance(exc, TrainingError)


def _train(jobs: list[_Job], dataset: Any, device: Any, teacher: Any, t_start: float, *,
           force: bool, progress: bool) -> None:
    """Build the students, distillers, stages and evaluators of ``jobs`` (each once), train
    them together and write their records (a student that fails: a ``failed`` one)."""
    first = jobs[0].cfg
    precision = first.resolved_precision
    lockstep = len(jobs) > 1
    online = getattr(teacher, "online", False)  # a cohort of peers trained with the student
    # ---- students, distillers, stages; evaluators ----------------------------------------------
    group = [j.rid for j in jobs] if lockstep else []
    trainees = [t for job in jobs for t in _trainees(job, dataset, device, teacher, group)]
    for job in jobs:
        check_stages(job.cfg, job.trainee)
    engine_teacher = _engine_teacher(jobs, teacher, dataset, device)
    channels_last = (dev.default_channels_last(device) if first.engine.channels_last is None
                     else first.engine.channels_last)
    suite = build_suite(first.eval.evaluators, EvalContext(dataset, teacher=engine_teacher),
                        epochs=first.recipe.epochs,
                        precision=precision, best_metric=first.eval.best_metric,
                        channels_last=channels_last)
    augment = first.data.augment and make_augment(dataset, first.data.augmentation,
                                                  first.data.augmentation_options)

    # ---- train ---------------------------------------------------------------------------------
    for job in jobs:
        if not job.keep_existing:  # a forced rerun leaves the done record until it is done
            job.store.write_record(job.record)
        job.started = True
        if progress and ranks.is_primary():
            print(opening_line(job.record, job.store.record_path(job.rid)), file=sys.stderr,
                  flush=True)
        _notify("kdbench_run_start", config=job.cfg.to_dict(), run_id=job.rid,
               record=job.record)
        job.loggers = Loggers(job.cfg.log if ranks.is_primary() else [], job.cfg.results_dir)
        job.loggers.start(job.record)
        if force:  # a forced rerun starts afresh rather than resuming an old attempt
            remove_resume(job.store.state_path(job.rid))
            pending_best_path(job.store, job.rid).unlink(missing_ok=True)
    by_trainee = {id(j.trainee): j for j in jobs}

    def on_epoch_end(epoch: int, done: list[Trainee]) -> None:
        for t in done:
            if id(t) in by_trainee:
                job = by_trainee[id(t)]
                row = {k: v for k, v in t.history[-1].items() if isinstance(v, (int, float))}
                notify("kdbench_epoch_end", run_id=job.rid, epoch=epoch, metrics=row)
                job.loggers.epoch(job.rid, t.history[-1])

    def keep_best(epoch: int, done: list[Trainee]) -> None:
        # the best weights so far are on disk before the state that says the epoch is done
        for t in done:
            if id(t) in by_trainee:
                job = by_trainee[id(t)]
                if ranks.is_primary():  # rank 0 alone writes
                    save_best_if_new(job.store, job.cfg, job.rid, t, suite.best_metric,
                                     suite.lower_is_better, dataset)

    timing = fit(trainees, dataset, FitOptions(
        batch_size=first.recipe.batch_size, seed=first.seed, device=device, evaluators=suite,
        precision=precision, augment=augment, teacher=engine_teacher,
        teacher_bn=first.teacher.bn if first.teacher is not None else "eval",
        state_path=None if lockstep else jobs[0].store.state_path(jobs[0].rid),
        state_bind=None if lockstep else state_binding(first, jobs[0].rid),
        before_save=keep_best, on_epoch_end=on_epoch_end, progress=progress,
        desc=f"lockstep ×{len(jobs)}" if lockstep else f"{first.loss.name} {first.student}",
        online=online, update=teacher.update if online else "alternate",
        channels_last=first.engine.channels_last, compile=first.engine.compile,
        isolate_failures=lockstep))

    # ---- records -------------------------------------------------------------------------------
    for job in jobs:
        trainee = job.trainee
        if trainee.error is not None:
            finish_failed(job.record, job.store, trainee.error, t_start, job.keep_existing,
                          trainee.spent)
            job.loggers.end(job.record)
            job.error = trainee.error
            continue
        job.record["metrics"] = metrics_of(trainee, suite)
        if online:
            teacher.record(job.record, trainees, suite)
        job.record["cost"]["images_per_s"] = timing["images_per_s"]  # this attempt's speed
        end_attempt(job.record, "done", time.perf_counter() - t_start, trainee.spent)
        job.record.update(status="done", finished=now())
        if ranks.is_primary():  # rank 0 alone writes (the weights too)
            keep_student(job.store, job.cfg, job.record, trainee, dataset)
        _notify("kdbench_run_end", record=job.record)
        job.loggers.end(job.record)
        job.store.write_record(job.record)
        remove_resume(job.store.state_path(job.rid))


def _teacher(jobs: list[_Job], dataset: Any, device: Any, progress: bool) -> Any:
    """The group's teacher from its source (None: no run has one), on its own data if the
    teacher has them; a trajectory it needs is trained once, here."""
    with_teacher = next((j.cfg for j in jobs if j.cfg.teacher is not None), None)
    if with_teacher is None:
        return None
    t_data = dataset if with_teacher.teacher.data is None else \
        load_data(with_teacher.teacher.data, device)
    check_batch(with_teacher.teacher.recipe, t_data, "teacher.recipe")
    ctx = TeacherContext(with_teacher, t_data, device, jobs[0].store, progress)
    return get("teacher_source", with_teacher.teacher.source).create(ctx)


def _trainees(job: _Job, dataset: Any, device: Any, teacher: Any,
              lockstep: list[str]) -> list[Trainee]:
    """The run's student (seeded as when alone), distiller and stages; with an online teacher,
    the cohort's peers too. ``lockstep``: the run ids of its lockstep group (empty: alone)."""
    cfg = job.cfg
    online = getattr(teacher, "online", False)
    fixed = teacher.module if teacher is not None and not online else None
    dev.seed_everything(cfg.seed)
    student = create_model(cfg.student, dataset.num_classes, dataset.in_chans,
                           **cfg.student_options)
    if cfg.student_weights:  # the record says what was read: format, key layout, SHA-256
        loaded = load_weights(student, cfg.student_weights, arch=cfg.student)
        job.record["student_weights"] = loaded.provenance()
    if cfg.engine.sync_bn and ranks.world() is not None:
        import torch

        student = torch.nn.SyncBatchNorm.convert_sync_batchnorm(student)
    student = student.to(device)
    mine = cfg.teacher is not None and teacher is not None
    dctx = DistillContext(student, teacher.peers[0] if online else (fixed if mine else None),
                          dataset.num_classes, dataset.input_shape, len(dataset.train),
                          cfg.loss.weights, cfg.loss.options, dataset.train.labels,
                          epochs=cfg.recipe.epochs)
    # the teacher the source gave, not a fresh model of its architecture: it may differ
    check_features(cfg, student, teacher if mine else None)
    check_index(cfg, dataset)
    distiller = build(cfg.loss.name, dctx).to(device)
    sctx = StageContext(student, fixed if mine else None, distiller, cfg.recipe,
                        dataset.num_classes, dataset.input_shape, device)
    stages = arrange(build_warmups(cfg.warmup, sctx), loss_stages(student, distiller, cfg.recipe),
                     main_stage(student, distiller, cfg.recipe, online=online))
    trainee = Trainee("student", student, distiller, cfg.recipe, stages=stages)
    job.trainee = trainee
    out = [trainee]
    if online:
        out += teacher.trainees(cfg, dctx, distiller)
    if lockstep:  # the random stream the run would continue from alone
        trainee.rng = dev.rng_state(device)
        trainee.name = f"{cfg.loss.name}:{cfg.student}"
        trainee.state_path = job.store.state_path(run_id(cfg))
        trainee.state_bind = state_binding(cfg, run_id(cfg))
    describe_setup(job.record, cfg, trainee, teacher if mine else None,
                   dev.default_channels_last(device) if cfg.engine.channels_last is None
                   else cfg.engine.channels_last, lockstep)
    return out


def _engine_teacher(jobs: list[_Job], teacher: Any, dataset: Any, device: Any) -> Any:
    """The frozen teacher the engine runs (None: none, or an online cohort): its BatchNorm
    folded into its convolutions with ``engine.fuse_teacher``, which each record says."""
    engine_teacher = teacher.module if teacher is not None and \
        not getattr(teacher, "online", False) else None
    fusion = None
    # folding BatchNorm into the convolutions freezes its running statistics: only for a
    # teacher that normalises with them (teacher.bn=eval)
    cfg0 = jobs[0].cfg
    if engine_teacher is not None and cfg0.engine.fuse_teacher and (
            cfg0.teacher is None or cfg0.teacher.bn == "eval"):
        from ..models.fuse import fuse_frozen, probe_input

        engine_teacher, report = fuse_frozen(engine_teacher,
                                             probe_input(dataset.input_shape, device))
        fusion = report.describe()
    for job in jobs:
        mine = fusion if job.cfg.teacher is not None else None
        job.record["env"].update(fuse_teacher=bool(mine and mine["folded"]),
                                 teacher_fusion=mine)
    return engine_teacher
