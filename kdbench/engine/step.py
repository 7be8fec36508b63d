"""The distillation step: one trainee, one batch, one update (:func:`distill_step`).

Everything a step does is in that one function: the teacher forward, the student forward, the
stage's loss terms, the weighted sum ``label_weight·CE + Σ w_i·term_i``, the finite check, the
backward pass and the optimiser update. Training several trainees on a batch wraps it:
:func:`train_step` (lockstep: one teacher forward shared by every trainee) and
:func:`online_step` (an online cohort: each member distilled from the others' outputs).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..device import autocast, rng_state, set_rng_state
from ..errors import TrainingError
from ..models import Features
from ..stages.base import Batch, Stage
from .trainee import Trainee


def distill_step(trainee: Trainee, stage: Stage, batch: Batch, acc: RunningSums, *,
                 epoch: int, step: int, device: torch.device, precision: str = "fp32",
                 teacher: nn.Module | None = None, t_feats: Features | None = None,
                 s_feats: Features | None = None, peers: list[Features] | None = None) -> None:
    """One step of ``trainee`` on ``batch`` in ``stage`` (``epoch``: the stage's loss sees it),
    its metrics added to ``acc``.

    ``t_feats`` is the batch's teacher forward when it was made already (lockstep trainees share
    one); otherwise the step runs ``teacher``. A cohort member passes its own forward
    (``s_feats``) and its peers' outputs (``peers``, constants): each term is then the mean
    over the peers (deep mutual learning's 1/(K−1)·Σ_l). The step runs on the trainee's own
    random stream (:func:`own_rng`).
    """
    with own_rng(trainee, device):
        with autocast(device, precision):
            # ---- teacher forward (without autograd), as the stage views it
            uses_teacher = teacher is not None and stage.teacher != "none"
            if t_feats is None and uses_teacher:
                t_feats = teacher_features(teacher, batch.x, stage.teacher == "features")
            if t_feats is not None and stage.teacher_view is not None:
                t_feats = stage.teacher_view(t_feats, batch)
            # ---- student forward (and both forwards on each extra view a loss asks for)
            if s_feats is None:
                s_feats = _forward(trainee.model, batch.x, stage.student)
            views = None
            if stage.views and peers is None:  # a cohort's peers see the batch itself only
                views = [(_forward(trainee.model, v, stage.student),
                          teacher_features(teacher, v, stage.teacher == "features")
                          if uses_teacher else None) for v in batch.views]
            # ---- the stage's loss terms, unweighted
            if peers is None:
                terms = stage.loss(s_feats, t_feats, batch, epoch, stage.name, views=views)
            else:
                terms = _mean_terms([stage.loss(s_feats, p, batch, epoch, stage.name)
                                     for p in peers])
        # ---- label_weight·CE + Σ w_i·term_i (a stage without weights sums its terms)
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
        # ---- one finite check per step (a device sync on GPUs); a bad total names its term
        if not bool(torch.isfinite(total)):
            _raise_non_finite(logged, total, trainee.name, stage, epoch, step)
        # ---- backward and update
        optimizer = trainee.optimizer(stage)
        optimizer.zero_grad(set_to_none=True)
        if trainee.scaler is None:
            total.backward()
            optimizer.step()
        else:  # fp16 on CUDA: the loss scaled against underflow; a step with inf/nan skipped
            trainee.scaler.scale(total).backward()
            if hasattr(optimizer, "average"):  # every rank decides on the same gradients
                optimizer.average()
            trainee.scaler.step(optimizer)
            trainee.scaler.update()
        # ---- metrics, summed on the device
        bs = batch.y.shape[0]
        acc.add("loss", total, bs)
        for name, value in logged.items():
            acc.add(name, value, bs)
        if s_feats is not None:
            acc.add("correct", s_feats.logits.detach().argmax(dim=1).eq(batch.y).sum())


# ============================== several trainees on one batch ===================================


def train_step(trainees: list[Trainee], batch: Batch, *, epoch: int, step: int,
               sums: list[RunningSums], device: torch.device, precision: str = "fp32",
               teacher: nn.Module | None = None, isolate_failures: bool = False) -> None:
    """One batch of the run's ``epoch`` for every trainee, each in its current stage
    (:func:`distill_step`, each on its own random stream). Trainees in lockstep share one
    teacher forward (features if any of them taps them).

    With ``isolate_failures`` an exception in one trainee's step is stored in its ``error``
    and the others carry on (lockstep runs fail one by one, as they would alone).
    """
    current = [t.stage_at(epoch) for t in trainees]
    shared = None
    if len(trainees) > 1 and teacher is not None and any(s.teacher != "none"
                                                         for s, _ in current):
        need = any(s.teacher == "features" for s, _ in current)
        with autocast(device, precision):
            shared = teacher_features(teacher, batch.x, need)
    for trainee, (stage, stage_epoch), acc in zip(trainees, current, sums):
        try:
            distill_step(trainee, stage, batch, acc, epoch=stage_epoch, step=step,
                         device=device, precision=precision, teacher=teacher,
                         t_feats=shared if stage.teacher != "none" else None)
        except Exception as exc:
            if not isolate_failures:
                raise
            trainee.error = exc


def online_step(trainees: list[Trainee], batch: Batch, sums: list[RunningSums], *, epoch: int,
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
        distill_step(trainee, stage, batch, acc, epoch=epoch, step=step, device=device,
                     precision=precision, s_feats=feats[k],
                     peers=[v for j, v in enumerate(views) if j != k])
        if update == "alternate" and k < len(trainees) - 1:
            with torch.no_grad(), frozen_norm_stats(trainee.model), autocast(device, precision):
                views[k] = _forward(trainee.model, batch.x, how).detach()


# ============================== the pieces of a step ============================================


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


def _forward(model: nn.Module, x: torch.Tensor, how: str) -> Features | None:
    if how == "none":
        return None
    return model.features(x) if how == "features" else Features(logits=model(x))


def _mean_terms(calls: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Average each term over several teachers (a DML cohort member's 1/(K−1)·Σ over peers)."""
    if len(calls) == 1:
        return calls[0]
    return {name: sum(c[name] for c in calls) / len(calls) for name in calls[0]}


def _raise_non_finite(terms: dict[str, torch.Tensor], total: torch.Tensor, trainee: str,
                      stage: Stage, epoch: int, step: int) -> None:
    """Name the first non-finite term (a non-finite total always has one, or an inf·0)."""
    where = "epoch" if stage.name == "main" else f"stage {stage.name!r} epoch"
    for name, value in [*terms.items(), ("loss", total)]:
        if not torch.isfinite(value).all():
            raise TrainingError(f"non-finite loss: term {name!r} = {float(value.detach()):.4g} "
                                f"in {trainee} at {where} {epoch + 1}, step {step + 1}")


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
