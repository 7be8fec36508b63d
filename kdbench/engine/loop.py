"""The training loop: stages, epochs, evaluation and the save hook (:func:`fit`).

One loop trains a list of *trainees* on one data order: a single run is a list of one;
lockstep students and online cohorts share each batch and, when there is one, each teacher
forward. Each trainee first runs its *extra* stages on its own (a loss's init stage, a warm-up
outside the budget), then all trainees go through the run's epochs together, each in whichever
of its timeline stages the epoch falls (see :mod:`kdbench.stages`). Every batch is one
:func:`~kdbench.engine.step.distill_step` per trainee. The full training state is saved after
every epoch of every stage (:mod:`.state`), so a run resumes where it stopped, inside any stage.
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import ranks
from ..data import BatchLoader, Dataset
from ..data.stream import make_loader
from ..device import default_channels_last, rng_state
from ..errors import ConfigError
from ..evaluators import EvalContext, Suite, build_suite
from ..progress import Progress
from ..stages.base import Batch, Stage
from . import state, teacher_bn
from .speed import prepared
from .step import RunningSums, distill_step, online_step, own_rng, train_step
from .trainee import Trainee


@dataclass
class FitOptions:
    """How :func:`fit` trains: the data order, device and precision, the teacher, where the
    state goes, what is called after each epoch, and speed-only settings."""

    batch_size: int
    seed: int  # of the data order (each epoch's shuffle and augmentation)
    device: torch.device
    #: what is measured after each epoch (those due); None: accuracy
    evaluators: Suite | None = None
    precision: str = "fp32"
    #: the batch augmentation: True for the default, False for none, or a callable
    augment: bool | Callable = True
    #: the frozen teacher every trainee distils from (None: none, or an online cohort)
    teacher: nn.Module | None = None
    #: the teacher's BatchNorm while it teaches (:mod:`kdbench.engine.teacher_bn`)
    teacher_bn: str = "eval"
    #: one file for the full training state of all trainees, written after every epoch and
    #: resumed from when present; None: each trainee's own ``state_path`` (lockstep runs)
    state_path: Path | None = None
    #: what that state file is bound to (a run's id and config digest, a teacher trajectory's
    #: key and spec digest): saved in it, and a file bound to anything else is not resumed
    state_bind: dict[str, Any] | None = None
    #: after each epoch, what must be on disk before the state (e.g. a teacher's checkpoint)
    before_save: Callable[[int, list[Trainee]], None] | None = None
    #: after each epoch, once the state is saved
    on_epoch_end: Callable[[int, list[Trainee]], None] | None = None
    progress: bool = True
    desc: str = "train"
    #: the trainees are an online cohort, each distilled from the others (no ``teacher``)
    online: bool = False
    #: a cohort's update order: "alternate" (DML's Algorithm 1) or "simultaneous"
    update: str = "alternate"
    #: NHWC convolutions (None: :func:`kdbench.device.default_channels_last`); speed only
    channels_last: bool | None = None
    compile: bool = False  # torch.compile the models; speed only
    #: a trainee whose step raises stops (its ``error`` is set) and the others go on
    isolate_failures: bool = False


def fit(trainees: list[Trainee], data: Dataset, options: FitOptions | None = None,
        **legacy: Any) -> dict[str, float]:
    """Train ``trainees`` together on ``data`` (already on ``options.device``).

    First each trainee runs its extra stages on its own (:func:`_extra_stages`). Then the run's
    epochs: one seeded pass over the training split, each trainee stepping in its current
    timeline stage, then the evaluators (those due; default: accuracy) appended to each
    trainee's history. With ``online`` the trainees are a cohort, each distilled from the
    others (no teacher; see :func:`~kdbench.engine.step.online_step`); otherwise they are
    independent runs in lockstep (:func:`~kdbench.engine.step.train_step`), each on its own
    global random stream, so each trains exactly as it would alone. After each epoch
    ``before_save`` runs before the state is saved (what must be on disk first, e.g. a
    checkpoint), then ``on_epoch_end``. Returns timing.

    The options' fields as keyword arguments (``fit(trainees, data, batch_size=64, ...)``, as
    before 0.3) still work, with a DeprecationWarning.
    """
    if legacy:
        if options is not None:
            raise TypeError("fit() takes a FitOptions or its fields as keywords, not both")
        warnings.warn("fit(trainees, data, batch_size=..., ...) is deprecated and will be "
                      "removed in kdbench 0.4; pass a kdbench.engine.FitOptions",
                      DeprecationWarning, stacklevel=2)
        options = FitOptions(**legacy)
    if options is None:
        raise TypeError("fit() needs a FitOptions (batch_size, seed, device, ...)")
    o = options
    device, precision, teacher = o.device, o.precision, o.teacher
    if o.online and (teacher is not None or len(trainees) < 2):
        raise ConfigError("an online cohort needs at least two trainees and no fixed teacher")
    if o.update not in ("alternate", "simultaneous"):
        raise ConfigError(f"unknown cohort update {o.update!r} (valid: alternate, simultaneous)")
    epochs = {t.epochs for t in trainees}
    if len(epochs) != 1:
        raise ConfigError(f"trainees trained together must have as many epochs, got "
                          f"{sorted(epochs)}")
    epochs_total = epochs.pop()
    evaluators = o.evaluators
    if evaluators is None:
        evaluators = build_suite([{"name": "accuracy"}], EvalContext(data), epochs=epochs_total,
                                 precision=precision)
    channels_last = default_channels_last(device) if o.channels_last is None \
        else o.channels_last
    views = tuple(dict.fromkeys(v for t in trainees for s in t.stages for v in s.views))
    extra_views = ()
    if views:
        from ..data.augment import make_augment

        extra_views = tuple(make_augment(data, v) for v in views)
        for t in trainees:
            for s in t.stages:
                if s.views and s.views != views:
                    raise ConfigError(f"trainees trained together must ask for the same extra "
                                      f"views, got {list(s.views)} and {list(views)}")
    # a distributed run: each rank trains on its part of every global batch (ranks.py)
    dist = ranks.world()
    train_loader = make_loader(data, "train", o.batch_size, train=True, augment=o.augment,
                               seed=o.seed, device=device, channels_last=channels_last,
                               extra_views=extra_views, **({"dist": dist} if dist else {}))
    own_streams = len(trainees) > 1 and not o.online
    if dist is not None:
        from .distributed import broadcast_modules

        for t in trainees:
            t.averaged = True
    if precision == "fp16" and device.type == "cuda":  # fp16's range needs a loss scale
        for t in trainees:
            t.scaler = t.scaler or torch.amp.GradScaler("cuda")
    # a teacher whose BatchNorm statistics move (teacher.bn=checkpointkd) resumes with them
    moving = teacher if teacher is not None and o.teacher_bn == "checkpointkd" else None
    start = state.load_state(trainees, o.state_path, device, own_streams, o.state_bind,
                             teacher=moving)
    if own_streams:
        for t in trainees:
            if t.rng is None:
                t.rng = rng_state(device)

    if dist is not None:  # every rank starts from rank 0's weights (DDP does the same)
        broadcast_modules([m for t in trainees for m in (t.model, t.distiller)])

    def save(epoch: int) -> None:
        state.save_state(trainees, epoch, o.state_path, device, own_streams, o.state_bind,
                         teacher=moving)
        ranks.barrier()  # rank 0 wrote the state (the others write nothing)

    if teacher is not None:
        teacher.eval()
    active = [t for t in trainees if t.error is None]
    timing = {"train_seconds": 0.0, "train_images": 0, "extra_seconds": 0.0, "extra_images": 0}
    models = [t.model for t in trainees] + [teacher]
    with prepared(models, channels_last=channels_last, compile=o.compile):
        # ============================== extra stages, each trainee on its own ==================
        if start == 0:
            for trainee in active:
                try:
                    with own_rng(trainee, device):
                        sec, n = _extra_stages(trainee, train_loader, teacher, device=device,
                                               precision=precision, save=functools.partial(
                                                   save, 0), progress=o.progress, desc=o.desc)
                except Exception as exc:
                    if not o.isolate_failures:
                        raise
                    trainee.error = exc
                    continue
                timing["extra_seconds"] += sec
                timing["extra_images"] += n
            active = [t for t in active if t.error is None]

        # ============================== the run's epochs, all trainees together ================
        bar = Progress(epochs_total, o.desc, initial=start,
                       enabled=o.progress and ranks.is_primary())
        for epoch in range(start, epochs_total):
            if not active:
                break
            if teacher is not None:
                teacher_bn.apply(teacher, teacher_bn.forward_mode(o.teacher_bn, epoch,
                                                                  epochs_total))
            lrs = []
            for t in active:
                stage, stage_epoch = t.stage_at(epoch)
                # a timeline stage's schedule counts the run's epochs; extra ones their own
                lr = stage.lr * stage.schedule(epoch if stage.name == "main" else stage_epoch)
                t.start_epoch(stage, lr)
                _train_mode(t, stage)
                lrs.append(lr)
            sums = [RunningSums(device) for _ in active]
            seen = 0
            t0 = time.perf_counter()
            for step, batch in enumerate(_batches(train_loader, epoch)):
                if o.online:
                    online_step(active, batch, sums, epoch=epoch, step=step, device=device,
                                precision=precision, update=o.update)
                else:
                    train_step(active, batch, epoch=epoch, step=step, sums=sums,
                               device=device, precision=precision, teacher=teacher,
                               isolate_failures=o.isolate_failures)
                seen += batch.y.shape[0]
                if any(t.error is not None for t in active):
                    keep = [k for k, t in enumerate(active) if t.error is None]
                    active = [active[k] for k in keep]
                    sums, lrs = [sums[k] for k in keep], [lrs[k] for k in keep]
                    if not active:
                        break
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if dist is not None:  # the epoch's training metrics over every rank's samples
                for acc in sums:
                    acc.sums, total = ranks.sum_over_ranks(acc.sums, seen)
                seen = total if sums else seen * dist[1]
                broadcast_modules([t.model for t in active], buffers_only=True)
            epoch_seconds = time.perf_counter() - t0
            timing["train_seconds"] += epoch_seconds
            timing["train_images"] += seen
            for t in active:
                t.spent["train_seconds"] += epoch_seconds
                t.spent["train_images"] += seen
            if not active:
                break
            # ---- evaluation: one history row per trainee
            for trainee, acc, lr in zip(active, sums, lrs):
                row = {"epoch": epoch + 1, "lr": lr,
                       **evaluators.evaluate(trainee.model, epoch + 1)}
                row.update({k: v for k, v in _epoch_row(epoch + 1, lr, acc, seen).items()
                            if k not in ("epoch", "lr")})
                if len(trainee.timeline) > 1:
                    row["stage"] = trainee.stage_at(epoch)[0].name
                trainee.history.append(row)
            # ---- save: what the caller keeps of the epoch (a teacher's checkpoint and
            # manifest) is on disk before the state that says the epoch is done
            if o.before_save is not None:
                o.before_save(epoch + 1, active)
            save(epoch + 1)
            if o.on_epoch_end is not None and ranks.is_primary():
                o.on_epoch_end(epoch + 1, active)
            bar.update(_postfix(active, evaluators.best_metric))
        bar.close()
    t_sec = timing["train_seconds"]
    timing["images_per_s"] = (timing["train_images"] * len(trainees) / t_sec if t_sec > 0
                              else math.nan)
    if not timing["extra_images"]:
        del timing["extra_seconds"], timing["extra_images"]
    return timing


def _extra_stages(trainee: Trainee, loader: BatchLoader, teacher: nn.Module | None, *,
                  device: torch.device, precision: str, save: Callable[[], None],
                  progress: bool, desc: str) -> tuple[float, int]:
    """Run (or finish) the trainee's extra stages, one after the other; their epochs go to
    ``trainee.stage_history``. Each draws its own data order (epoch numbers −1, −2, …, counted
    across the extra stages, distinct from the run's), and the state is saved after each epoch,
    so an interrupted stage resumes too."""
    seconds, images, offset = 0.0, 0, 0
    for stage in trainee.extra:
        rows = trainee.stage_history.setdefault(stage.name, [])
        if len(rows) >= stage.epochs:
            offset += stage.epochs
            continue
        if teacher is None and stage.teacher != "none":
            raise ConfigError(f"stage {stage.name!r} of {trainee.name} needs a fixed teacher")
        _train_mode(trainee, stage)
        bar = Progress(stage.epochs, f"{desc} {stage.name}", initial=len(rows),
                       enabled=progress)
        for e in range(len(rows), stage.epochs):
            lr = stage.lr * stage.schedule(e)
            trainee.start_epoch(stage, lr)
            acc, seen = RunningSums(device), 0
            t0 = time.perf_counter()
            for step, batch in enumerate(_batches(loader, -1 - offset - e)):
                distill_step(trainee, stage, batch, acc, epoch=e, step=step, device=device,
                             precision=precision, teacher=teacher)
                seen += batch.y.shape[0]
            seconds += time.perf_counter() - t0
            images += seen
            trainee.spent["extra_seconds"] += time.perf_counter() - t0
            trainee.spent["extra_images"] += seen
            rows.append(_epoch_row(e + 1, lr, acc, seen))
            save()
            bar.update()
        bar.close()
        offset += stage.epochs
    return seconds, images


def _postfix(trainees: list[Trainee], metric: str) -> str:
    """Each trainee's latest ``metric`` (or its training accuracy in an epoch not tested), its
    training loss and its learning rate."""
    def one(t: Trainee) -> str:
        row = t.history[-1]
        shown = (f"{metric}={row[metric]:.1f}" if metric in row
                 else f"train_top1={row.get('train_top1', math.nan):.1f}")
        return (f"{t.name} {shown} loss={row.get('train_loss', math.nan):.4g} "
                f"lr={row.get('lr', math.nan):.3g}")
    return "; ".join(one(t) for t in trainees)


def _batches(loader: BatchLoader, epoch: int) -> Iterator[Batch]:
    for b in loader.epoch(epoch):
        yield Batch(*b[:3], views=b[3] if len(b) > 3 else [])


def _train_mode(trainee: Trainee, stage: Stage) -> None:
    trainee.model.train(stage.train_student)
    trainee.distiller.train()


def _epoch_row(epoch: int, lr: float, acc: RunningSums, seen: int) -> dict[str, Any]:
    means = acc.means(seen)
    row: dict[str, Any] = {"epoch": epoch, "lr": lr}
    if "correct" in means:
        row["train_top1"] = 100.0 * means.pop("correct")
    row.update({f"train_{k}": v for k, v in means.items()})
    return row
