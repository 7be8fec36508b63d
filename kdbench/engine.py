"""The one training loop: stages of teacher training and distillation, evaluation, resume.

One loop trains a list of *trainees* (a model, its distiller and its stages) on one data order: a
single run is a list of one; lockstep students and online cohorts share each batch and, when
there is one, each teacher forward. Each trainee first runs its *extra* stages on its own (a
loss's init stage, a warm-up outside the budget), then all trainees go through the run's epochs
together, each in whichever of its timeline stages the epoch falls (see :mod:`kdbench.stages`).
The full training state is saved after every epoch of every stage, so a run resumes where it
stopped, inside any stage.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .data import BatchLoader, Dataset
from .device import autocast, default_channels_last, rng_state, set_rng_state
from .errors import ConfigError, TrainingError
from .evaluators import EvalContext, Suite, build_suite
from .losses import Distiller
from .models import Features, KDModel
from .progress import Progress
from .stages import Batch, Stage, loss_stages, main_stage

# ============================== trainees ========================================================


@dataclass
class Trainee:
    """One model being trained: its distiller (connectors), stages and per-epoch histories.

    Without ``stages`` it gets the loss's own stages and a main stage from ``recipe``.
    ``history`` has one row per epoch of the run (the timeline stages); each extra stage's
    rows are in ``stage_history[name]``.
    """

    name: str
    model: KDModel
    distiller: Distiller
    recipe: Any
    stages: list[Stage] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    stage_history: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: lockstep: this trainee's global random state between its steps (None: use the global one)
    rng: dict[str, Any] | None = None
    #: lockstep: where this trainee's resumable state goes (one file per run, as when alone)
    state_path: Path | None = None
    #: lockstep with isolated failures: the exception that stopped this trainee
    error: BaseException | None = None
    online: bool = False
    #: training time and images over every attempt (kept in the resume file, so an
    #: interrupted and resumed run accounts for all of its work)
    spent: dict[str, float] = field(default_factory=lambda: {
        "train_seconds": 0.0, "train_images": 0, "extra_seconds": 0.0, "extra_images": 0})

    def __post_init__(self) -> None:
        if not self.stages:
            self.stages = loss_stages(self.model, self.distiller, self.recipe) + [
                main_stage(self.model, self.distiller, self.recipe, online=self.online)]
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ConfigError(f"{self.name}: two stages share a name in {names}")
        self.optimizers: dict[str, torch.optim.Optimizer] = {}

    @property
    def extra(self) -> list[Stage]:
        return [s for s in self.stages if not s.timeline]

    @property
    def timeline(self) -> list[Stage]:
        return [s for s in self.stages if s.timeline]

    @property
    def epochs(self) -> int:
        """The run's epochs: the sum of the timeline stages'."""
        return sum(s.epochs for s in self.timeline)

    def stage_at(self, epoch: int) -> tuple[Stage, int]:
        """The timeline stage of the run's (0-based) ``epoch`` and the epoch within it."""
        start = 0
        for stage in self.timeline:
            if epoch < start + stage.epochs:
                return stage, epoch - start
            start += stage.epochs
        raise IndexError(f"epoch {epoch} is past the {start} epochs of {self.name}")

    def optimizer(self, stage: Stage) -> torch.optim.Optimizer:
        if stage.name not in self.optimizers:
            self.optimizers[stage.name] = stage.make_optimizer()
        return self.optimizers[stage.name]

    def start_epoch(self, stage: Stage, lr: float) -> None:
        """Set the stage's optimiser to ``lr`` for the coming epoch, first replacing it by a
        fresh one where the stage's ``reset_optimizer`` rule says so (InDistill's reference
        builds a new Adam every epoch). A resumed run reloads the saved optimiser and applies
        the same rule, so it trains as an uninterrupted one."""
        current = self.optimizers.get(stage.name)
        if current is not None and stage.reset_due(current, lr):
            del self.optimizers[stage.name]
        for group in self.optimizer(stage).param_groups:
            group["lr"] = lr

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "distiller": self.distiller.state_dict(),
                "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                "history": self.history, "stage_history": self.stage_history,
                "spent": dict(self.spent)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.distiller.load_state_dict(state["distiller"])
        stages = {s.name: s for s in self.stages}
        for name, opt_state in state["optimizers"].items():
            self.optimizer(stages[name]).load_state_dict(opt_state)
        self.history = list(state["history"])
        self.stage_history = {k: list(v) for k, v in state["stage_history"].items()}
        self.spent.update(state.get("spent", {}))


# ============================== teacher forward =================================================


def teacher_features(teacher: nn.Module, x: torch.Tensor, need_features: bool) -> Features:
    """Teacher outputs without autograd.

    Logits come from ``torch.inference_mode`` and are copied out of it (a loss may save them
    for its backward, which inference tensors forbid; the copy is B×C numbers). Feature maps
    come from ``no_grad``: copying them would cost more than inference mode saves.
    """
    if need_features:
        with torch.no_grad():
            return teacher.features(x)
    with torch.inference_mode():
        logits = teacher(x)
    return Features(logits=logits.clone())


# ============================== one step ========================================================


class RunningSums:
    """Per-epoch sums of a trainee's training metrics, kept on the device.

    Adding is a tensor op, so a step never waits for the device; the numbers are read once per
    epoch. Float64 where the device has it, as the Python floats they replace.
    """

    def __init__(self, device: torch.device):
        self.dtype = torch.float32 if device.type == "mps" else torch.float64
        self.sums: dict[str, torch.Tensor] = {}

    def add(self, name: str, value: torch.Tensor, weight: int = 1) -> None:
        value = value.detach().to(self.dtype) * weight
        if name in self.sums:
            self.sums[name] += value
        else:
            self.sums[name] = value

    def means(self, count: int) -> dict[str, float]:
        return {k: float(v) / count for k, v in self.sums.items()}


def _raise_non_finite(terms: dict[str, torch.Tensor], total: torch.Tensor, trainee: str,
                      stage: Stage, epoch: int, step: int) -> None:
    """Name the first non-finite term (a non-finite total always has one, or an inf·0)."""
    where = "epoch" if stage.name == "main" else f"stage {stage.name!r} epoch"
    for name, value in [*terms.items(), ("loss", total)]:
        if not torch.isfinite(value).all():
            raise TrainingError(f"non-finite loss: term {name!r} = {float(value.detach()):.4g} "
                                f"in {trainee} at {where} {epoch + 1}, step {step + 1}")


def _forward(model: nn.Module, x: torch.Tensor, how: str) -> Features | None:
    if how == "none":
        return None
    return model.features(x) if how == "features" else Features(logits=model(x))


def _mean_terms(calls: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Average each term over several teachers (a DML cohort member's 1/(K−1)·Σ over peers)."""
    if len(calls) == 1:
        return calls[0]
    return {name: sum(c[name] for c in calls) / len(calls) for name in calls[0]}


def _update(trainee: Trainee, stage: Stage, s_feats: Features | None,
            terms: dict[str, torch.Tensor], batch: Batch, acc: RunningSums, epoch: int,
            step: int) -> None:
    """The stage's ``label_weight·CE + Σ w_i·term_i`` (or the unweighted sum of its terms),
    finite-checked, one optimiser step, metrics added to ``acc``."""
    terms = {name: value.float() for name, value in terms.items()}
    logged = dict(terms)
    if stage.label_weight is not None:
        assert s_feats is not None
        ce = F.cross_entropy(s_feats.logits.float(), batch.y)
        total = stage.label_weight * ce
        logged = {"ce": ce, **terms}
    else:
        total = torch.zeros((), device=batch.y.device)
    for name, value in terms.items():
        total = total + (stage.weights[f"w_{name}"] * value if stage.weights is not None
                         else value)
    # one check of the total per step (a device sync on GPUs); a bad total names its term
    if not bool(torch.isfinite(total)):
        _raise_non_finite(logged, total, trainee.name, stage, epoch, step)
    optimizer = trainee.optimizer(stage)
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    bs = batch.y.shape[0]
    acc.add("loss", total, bs)
    for name, value in logged.items():
        acc.add(name, value, bs)
    if s_feats is not None:
        acc.add("correct", s_feats.logits.detach().argmax(dim=1).eq(batch.y).sum())


def _trainee_step(trainee: Trainee, stage: Stage, batch: Batch, t_feats: Features | None,
                  acc: RunningSums, *, epoch: int, step: int, device: torch.device,
                  precision: str, teacher: nn.Module | None) -> None:
    """One batch of one trainee in ``stage``: its forward(s), the stage's loss, the update."""
    with own_rng(trainee, device):
        with autocast(device, precision):
            s_feats = _forward(trainee.model, batch.x, stage.student)
            t_view = t_feats
            if t_feats is not None and stage.teacher_view is not None:
                t_view = stage.teacher_view(t_feats, batch)
            views = None
            if stage.views:
                views = [(_forward(trainee.model, v, stage.student),
                          teacher_features(teacher, v, stage.teacher == "features")
                          if teacher is not None and stage.teacher != "none" else None)
                         for v in batch.views]
            terms = stage.loss(s_feats, t_view, batch, epoch, stage.name, views=views)
        _update(trainee, stage, s_feats, terms, batch, acc, epoch, step)


def train_step(trainees: list[Trainee], batch: Batch, *, epoch: int, step: int,
               sums: list[RunningSums], device: torch.device, precision: str = "fp32",
               teacher: nn.Module | None = None, isolate_failures: bool = False) -> None:
    """One batch of the run's ``epoch`` for every trainee: one teacher forward, then each
    trainee's step in its current stage (:func:`_trainee_step`), each on its own random stream.

    With ``isolate_failures`` an exception in one trainee's step is stored in its ``error``
    and the others carry on (lockstep runs fail one by one, as they would alone).
    """
    current = [t.stage_at(epoch) for t in trainees]
    t_feats = None
    if teacher is not None and any(s.teacher != "none" for s, _ in current):
        need = any(s.teacher == "features" for s, _ in current)
        with autocast(device, precision):
            t_feats = teacher_features(teacher, batch.x, need)
    for trainee, (stage, stage_epoch), acc in zip(trainees, current, sums):
        try:
            _trainee_step(trainee, stage, batch, t_feats if stage.teacher != "none" else None,
                          acc, epoch=stage_epoch, step=step, device=device,
                          precision=precision, teacher=teacher)
        except Exception as exc:
            if not isolate_failures:
                raise
            trainee.error = exc


@contextlib.contextmanager
def own_rng(trainee: Trainee, device: torch.device) -> Iterator[None]:
    """Run a block on the trainee's own global random stream (dropout, a loss's sampling), so
    that trainees in lockstep draw exactly what each would draw alone."""
    if trainee.rng is None:
        yield
        return
    set_rng_state(trainee.rng, device)
    try:
        yield
    finally:
        trainee.rng = rng_state(device)


@contextlib.contextmanager
def frozen_norm_stats(model: nn.Module):
    """Forward in training mode (batch statistics) without moving BatchNorm's running stats."""
    saved = [(m, {k: getattr(m, k).clone() for k in ("running_mean", "running_var",
                                                     "num_batches_tracked")
                  if getattr(m, k, None) is not None})
             for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    try:
        yield
    finally:
        for m, buffers in saved:
            for k, v in buffers.items():
                getattr(m, k).copy_(v)


def _online_step(trainees: list[Trainee], batch: Batch, sums: list[RunningSums], *, epoch: int,
                 step: int, device: torch.device, precision: str, update: str) -> None:
    """One mini-batch of an online cohort (deep mutual learning), every member in turn.

    Member k is distilled from the others' outputs, which are constants for its update. With
    ``update="alternate"`` (the DML paper's Algorithm 1) member k sees the predictions of the
    members already updated on this batch, recomputed after their step (training-mode forward,
    running statistics untouched); members not yet updated keep the forward from the start of
    the batch, which their unchanged parameters would reproduce. ``"simultaneous"`` uses the
    start-of-batch predictions for everyone.
    """
    how = "features" if any(t.distiller.needs_features for t in trainees) else "logits"
    with autocast(device, precision):
        feats = [_forward(t.model, batch.x, how) for t in trainees]
    views = [f.detach() for f in feats]
    for k, (trainee, acc) in enumerate(zip(trainees, sums)):
        stage, _ = trainee.stage_at(epoch)
        others = [v for j, v in enumerate(views) if j != k]
        with autocast(device, precision):
            terms = _mean_terms([stage.loss(feats[k], o, batch, epoch, stage.name)
                                 for o in others])
        _update(trainee, stage, feats[k], terms, batch, acc, epoch, step)
        if update == "alternate" and k < len(trainees) - 1:
            with torch.no_grad(), frozen_norm_stats(trainee.model), autocast(device, precision):
                views[k] = _forward(trainee.model, batch.x, how).detach()


def _postfix(trainees: list[Trainee], metric: str) -> str:
    """Each trainee's latest ``metric`` (or its training accuracy in an epoch not tested)."""
    def one(t: Trainee) -> str:
        row = t.history[-1]
        if metric in row:
            return f"{t.name} {metric}={row[metric]:.1f}"
        return f"{t.name} train_top1={row.get('train_top1', math.nan):.1f}"
    return " ".join(one(t) for t in trainees)


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
                t_feats = None
                if teacher is not None and stage.teacher != "none":
                    with autocast(device, precision):
                        t_feats = teacher_features(teacher, batch.x, stage.teacher == "features")
                _trainee_step(trainee, stage, batch, t_feats, acc, epoch=e, step=step,
                              device=device, precision=precision, teacher=teacher)
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


# ============================== the loop ========================================================


def _load_state(trainees: list[Trainee], state_path: Path | None, device: torch.device,
                own_streams: bool) -> int:
    """Restore saved training state (one file for all, or one per trainee); the run's epoch to
    resume from. Trainees without a saved state start afresh, which is only consistent while
    the others are still before the run's first epoch."""
    from .store import load_resume

    if state_path is not None:
        state = load_resume(state_path, device)
        if state is None:
            return 0
        saved = list(zip(trainees, state["trainees"]))
        epochs = {int(state["epoch"])}
    else:
        saved, epochs = [], set()
        for t in trainees:
            state = load_resume(t.state_path, device) if t.state_path is not None else None
            if state is None:
                epochs.add(0)
            else:
                saved.append((t, state["trainees"][0]))
                epochs.add(int(state["epoch"]))
    if len(epochs) > 1:
        raise ConfigError(f"lockstep trainees saved at different epochs {sorted(epochs)}: resume "
                          "them separately")
    for trainee, s in saved:
        trainee.load_state_dict(s)
        rng = s.get("rng")
        if rng is not None:
            if own_streams:
                trainee.rng = rng
            else:
                set_rng_state(rng, device)
    return epochs.pop() if epochs else 0


def _save_state(trainees: list[Trainee], epoch: int, state_path: Path | None,
                device: torch.device, own_streams: bool) -> None:
    from .store import save_resume

    def state(t: Trainee) -> dict[str, Any]:
        s = t.state_dict()
        # the random stream too, so that a resumed run draws what an uninterrupted one would
        s["rng"] = t.rng if own_streams else rng_state(device)
        return s

    if state_path is not None:
        save_resume({"epoch": epoch, "trainees": [state(t) for t in trainees]}, state_path)
        return
    for t in trainees:
        if t.state_path is not None and t.error is None:
            save_resume({"epoch": epoch, "trainees": [state(t)]}, t.state_path)


def fit(trainees: list[Trainee], data: Dataset, *, batch_size: int, seed: int,
        device: torch.device, evaluators: Suite | None = None, precision: str = "fp32",
        augment: bool | Callable = True, teacher: nn.Module | None = None,
        state_path: Path | None = None,
        before_save: Callable[[int, list[Trainee]], None] | None = None,
        on_epoch_end: Callable[[int, list[Trainee]], None] | None = None,
        progress: bool = True, desc: str = "train", online: bool = False,
        update: str = "alternate", channels_last: bool | None = None, compile: bool = False,
        isolate_failures: bool = False) -> dict[str, float]:
    """Train ``trainees`` together on ``data`` (already on ``device``).

    First each trainee runs its extra stages on its own (:func:`_extra_stages`). Then the run's
    epochs: one seeded pass over the training split, each trainee stepping in its current
    timeline stage, then ``evaluators`` (those due; default: accuracy) appended to each
    trainee's history. With
    ``online`` the trainees are a cohort, each distilled from the others (no ``teacher``; see
    :func:`_online_step`); otherwise they are independent runs in lockstep, each on its own
    global random stream (:func:`own_rng`), so each trains exactly as it would alone. If
    ``state_path`` is given, the full training state is written there atomically after every
    epoch and training resumes from it when present; without it, each trainee with a
    ``state_path`` of its own gets its own file (lockstep runs). After each epoch
    ``before_save`` runs before the state is saved (what must be on disk first, e.g. a
    checkpoint), then ``on_epoch_end``. ``channels_last`` (None:
    :func:`kdbench.device.default_channels_last`) and ``compile`` change speed only. With
    ``isolate_failures`` a trainee whose step raises stops (its ``error`` is set) and the rest
    go on. Returns timing.
    """
    if online and (teacher is not None or len(trainees) < 2):
        raise ConfigError("an online cohort needs at least two trainees and no fixed teacher")
    if update not in ("alternate", "simultaneous"):
        raise ConfigError(f"unknown cohort update {update!r} (valid: alternate, simultaneous)")
    epochs = {t.epochs for t in trainees}
    if len(epochs) != 1:
        raise ConfigError(f"trainees trained together must have as many epochs, got "
                          f"{sorted(epochs)}")
    epochs_total = epochs.pop()
    if evaluators is None:
        evaluators = build_suite([{"name": "accuracy"}], EvalContext(data), epochs=epochs_total,
                                 precision=precision)
    if channels_last is None:
        channels_last = default_channels_last(device)
    views = tuple(dict.fromkeys(v for t in trainees for s in t.stages for v in s.views))
    extra_views = ()
    if views:
        from .data.augment import make_augment

        extra_views = tuple(make_augment(data, v) for v in views)
        for t in trainees:
            for s in t.stages:
                if s.views and s.views != views:
                    raise ConfigError(f"trainees trained together must ask for the same extra "
                                      f"views, got {list(s.views)} and {list(views)}")
    train_loader = BatchLoader(data, "train", batch_size, train=True, augment=augment, seed=seed,
                               device=device, channels_last=channels_last,
                               extra_views=extra_views)
    own_streams = len(trainees) > 1 and not online
    start = _load_state(trainees, state_path, device, own_streams)
    if own_streams:
        for t in trainees:
            if t.rng is None:
                t.rng = rng_state(device)

    def save(epoch: int) -> None:
        _save_state(trainees, epoch, state_path, device, own_streams)

    if teacher is not None:
        teacher.eval()
    active = [t for t in trainees if t.error is None]
    timing = {"train_seconds": 0.0, "train_images": 0, "extra_seconds": 0.0, "extra_images": 0}
    models = [t.model for t in trainees] + [teacher]
    with prepared(models, channels_last=channels_last, compile=compile):
        if start == 0:
            for trainee in active:
                try:
                    with own_rng(trainee, device):
                        sec, n = _extra_stages(trainee, train_loader, teacher, device=device,
                                               precision=precision, save=functools.partial(
                                                   save, 0), progress=progress, desc=desc)
                except Exception as exc:
                    if not isolate_failures:
                        raise
                    trainee.error = exc
                    continue
                timing["extra_seconds"] += sec
                timing["extra_images"] += n
            active = [t for t in active if t.error is None]

        bar = Progress(epochs_total, desc, initial=start, enabled=progress)
        for epoch in range(start, epochs_total):
            if not active:
                break
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
                if online:
                    _online_step(active, batch, sums, epoch=epoch, step=step, device=device,
                                 precision=precision, update=update)
                else:
                    train_step(active, batch, epoch=epoch, step=step, sums=sums,
                               device=device, precision=precision, teacher=teacher,
                               isolate_failures=isolate_failures)
                seen += batch.y.shape[0]
                if any(t.error is not None for t in active):
                    keep = [k for k, t in enumerate(active) if t.error is None]
                    active = [active[k] for k in keep]
                    sums, lrs = [sums[k] for k in keep], [lrs[k] for k in keep]
                    if not active:
                        break
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            epoch_seconds = time.perf_counter() - t0
            timing["train_seconds"] += epoch_seconds
            timing["train_images"] += seen
            for t in active:
                t.spent["train_seconds"] += epoch_seconds
                t.spent["train_images"] += seen
            if not active:
                break
            for trainee, acc, lr in zip(active, sums, lrs):
                row = {"epoch": epoch + 1, "lr": lr,
                       **evaluators.evaluate(trainee.model, epoch + 1)}
                row.update({k: v for k, v in _epoch_row(epoch + 1, lr, acc, seen).items()
                            if k not in ("epoch", "lr")})
                if len(trainee.timeline) > 1:
                    row["stage"] = trainee.stage_at(epoch)[0].name
                trainee.history.append(row)
            # what the caller keeps of the epoch (a teacher's checkpoint and manifest) is on
            # disk before the state that says the epoch is done
            if before_save is not None:
                before_save(epoch + 1, active)
            save(epoch + 1)
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, active)
            bar.update(_postfix(active, evaluators.best_metric))
        bar.close()
    t_sec = timing["train_seconds"]
    timing["images_per_s"] = (timing["train_images"] * len(trainees) / t_sec if t_sec > 0
                              else math.nan)
    if not timing["extra_images"]:
        del timing["extra_seconds"], timing["extra_images"]
    return timing


# ============================== speed-only model preparation ====================================


@contextlib.contextmanager
def prepared(models: list[nn.Module | None], *, channels_last: bool = False,
             compile: bool = False) -> Iterator[None]:
    """Models set up for fast training for the duration of the block: NHWC weights and, with
    ``compile``, ``forward`` and ``features`` compiled by ``torch.compile``.

    Only speed changes. State dicts taken inside the block hold ordinary contiguous tensors
    (checkpoints stay portable, e.g. to safetensors), and on exit the models get back their
    layout and methods.
    """
    def contiguous_state(module, state, prefix, local_metadata):
        for k, v in state.items():
            if isinstance(v, torch.Tensor) and v.dim() == 4 and not v.is_contiguous():
                state[k] = v.contiguous()

    undo: list[Callable[[], None]] = []
    for model in models:
        if model is None:
            continue
        if channels_last:
            model.to(memory_format=torch.channels_last)
            undo.append(functools.partial(model.to, memory_format=torch.contiguous_format))
            undo.append(model._register_state_dict_hook(contiguous_state).remove)
        if compile:
            for name in ("forward", "features"):
                fn = getattr(model, name, None)
                if fn is None:
                    continue
                before = model.__dict__.get(name, _MISSING)
                undo.append(functools.partial(_restore_attr, model, name, before))
                # shapes are fixed within a run (the last batch and eval compile once more)
                setattr(model, name, torch.compile(fn, dynamic=False))
    try:
        yield
    finally:
        for fn in reversed(undo):
            fn()


def _restore_attr(obj: Any, name: str, before: Any) -> None:
    if before is _MISSING:
        delattr(obj, name)
    else:
        setattr(obj, name, before)


_MISSING = object()
