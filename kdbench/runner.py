"""``run(config) -> record``: one distillation run from config to result record.

Order of work: resolve and validate the config, check the results dir, load the data, build the
teacher (training its trajectory once if needed), build student and distiller, train, write the
record. Bad input (KDBenchError with exit code 2) found before student training writes nothing.
From the moment student training starts the run has a ``running`` record, which ends ``done``,
``failed`` (with the error) or ``interrupted``. A ``done`` record is never overwritten by a
failing ``--force`` rerun.
"""

from __future__ import annotations

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
            "threads": torch.get_num_threads(), "git": git_revision(),
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
    """Run one configuration and return its record (the existing one if it is already done)."""
    from .data import load_dataset
    from .losses import DistillContext, build
    from .models import count_parameters, create_model, load_weights
    from .plugins import get, notify
    from .teachers import TeacherContext

    if isinstance(config, dict):
        config = RunConfig.from_dict(config)
    cfg = resolve(config)
    rid = run_id(cfg)
    store = Store(cfg.results_dir)
    store.check_writable()
    existing = store.load_record(rid)
    if existing is not None and existing["status"] == "done" and not force:
        return existing
    keep_existing = existing is not None and existing["status"] == "done"

    engine.set_threads()
    device = engine.resolve_device(cfg.device)
    dataset = load_dataset(cfg.data.name, cfg.data.dir, **cfg.data.options).to(device)
    t_start = time.perf_counter()
    record: dict[str, Any] = {
        "schema": SCHEMA_VERSION, "run_id": rid, "status": "running", "error": None,
        "created": _now(), "finished": None, "config": cfg.to_dict(), "metrics": {},
        "teacher": None, "cost": {}, "env": environment(device), "extra": {}}
    started = False
    try:
        check_loss(cfg, dataset)
        # ---- teacher (may train its trajectory once) -------------------------------------------
        teacher = None
        if cfg.teacher is not None:
            check_input_size(create_model(cfg.teacher.arch, dataset.num_classes,
                                          dataset.in_chans), cfg.teacher.arch, dataset)
            ctx = TeacherContext(cfg, dataset, device, store, progress)
            teacher = get("teacher_source", cfg.teacher.source).create(ctx)
            record["teacher"] = teacher.provenance

        # ---- student and distiller --------------------------------------------------------------
        engine.seed_everything(cfg.seed)
        student = create_model(cfg.student, dataset.num_classes, dataset.in_chans)
        check_input_size(student, cfg.student, dataset)
        if cfg.student_weights:
            load_weights(student, cfg.student_weights)
        student = student.to(device)
        online = getattr(teacher, "online", False)  # a cohort of peers trained with the student
        fixed = teacher.module if teacher is not None and not online else None
        dctx = DistillContext(student, teacher.peers[0] if online else fixed,
                              dataset.num_classes, dataset.input_shape, len(dataset.train),
                              cfg.loss.weights, cfg.loss.options, dataset.train.labels)
        check_features(cfg, student, teacher)
        check_index(cfg, dataset)
        distiller = build(cfg.loss.name, dctx).to(device)
        trainee = engine.Trainee("student", student, distiller, cfg.recipe)
        trainees = [trainee] + (teacher.trainees(cfg, dctx, distiller) if online else [])

        # ---- train ------------------------------------------------------------------------------
        record["cost"].update(student_params=count_parameters(student),
                              connector_params=distiller.connector_parameters())
        if not keep_existing:  # a forced rerun leaves the done record until it is done too
            store.write_record(record)
        started = True
        notify("kdbench_run_start", config=cfg.to_dict(), run_id=rid)

        def on_epoch_end(epoch: int, trainees: list[engine.Trainee]) -> None:
            row = trainees[0].history[-1]
            notify("kdbench_epoch_end", run_id=rid, epoch=epoch,
                   metrics={k: v for k, v in row.items() if isinstance(v, (int, float))})

        state_path = store.state_path(rid)
        if force:  # a forced rerun starts afresh rather than resuming an old attempt
            state_path.unlink(missing_ok=True)
        timing = engine.fit(trainees, dataset, epochs=cfg.recipe.epochs,
                            batch_size=cfg.recipe.batch_size, seed=cfg.seed, device=device,
                            precision=cfg.precision, augment=cfg.data.augment, teacher=fixed,
                            state_path=state_path, on_epoch_end=on_epoch_end, progress=progress,
                            desc=f"{cfg.loss.name} {cfg.student}", online=online,
                            update=teacher.update if online else "alternate")
        record["metrics"] = summarize(trainee.history)
        if trainee.init_history:
            record["metrics"]["init"] = {"epochs": len(trainee.init_history),
                                         "lr": trainee.init_lr, "curve": trainee.init_history}
        if online:
            teacher.record(record, trainees)
        record["cost"].update(wall_seconds=time.perf_counter() - t_start, **timing)
        record.update(status="done", finished=_now())
        notify("kdbench_run_end", record=record)
        store.write_record(record)
        state_path.unlink(missing_ok=True)
        return record
    except BaseException as exc:
        if not started and isinstance(exc, KDBenchError) and exc.exit_code == 2:
            raise  # bad input: nothing is written
        # Ctrl-C, and SystemExit (e.g. a Slurm requeue on preemption): resumable, not failed
        interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit))
        record.update(status="interrupted" if interrupted else "failed", finished=_now(),
                      error=None if interrupted else f"{type(exc).__name__}: {exc}")
        if not isinstance(exc, KDBenchError) and not interrupted:
            record["traceback"] = traceback.format_exc(limit=8)
        record["cost"]["wall_seconds"] = time.perf_counter() - t_start
        if not keep_existing:
            notify("kdbench_run_end", record=record)
            store.write_record(record)
        raise


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
