"""The one training loop: teacher training and distillation, evaluation, checkpoint and resume.

One loop trains a list of *trainees* (a student, its distiller and optimiser) on one data order:
a single run is a list of one; lockstep students and online cohorts share each batch and, when
there is one, each teacher forward.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .config import Recipe
from .data import BatchLoader, Dataset
from .errors import ConfigError, TrainingError
from .losses import Distiller
from .models import Features, KDModel

# ============================== device and precision ===========================================


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} is not available here (valid: auto, cpu)")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None)
                                     and torch.backends.mps.is_available()):
        raise ConfigError(f"device {name!r} is not available here (valid: auto, cpu)")
    return device


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has bf16 matrix units (AMX) or AVX-512 BF16 instructions."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in ("amx_bf16", "avx512_bf16"))


def resolve_precision(precision: str, device: str) -> str:
    """``auto`` → bf16 where the hardware runs it fast (CUDA with bf16, AMX/AVX512-BF16 CPUs),
    else fp32. Explicit values pass through."""
    if precision != "auto":
        return precision
    if device in ("cuda", "auto") or device.startswith("cuda:"):
        if torch.cuda.is_available():
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        if device != "auto":
            return "fp32"
    if device in ("cpu", "auto"):
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    return "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device_type=device.type, dtype=dtype)


def default_channels_last(device: torch.device) -> bool:
    """Whether convolutions run in channels_last (NHWC) by default on ``device``.

    On CUDA it is what tensor-core convolutions want; on the CPU oneDNN's NHWC kernels were
    faster for the CIFAR ResNets in ``kdbench bench`` (see the README's Performance section).
    """
    return device.type in ("cuda", "cpu")


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


# ============================== per-trainee random streams ======================================


def rng_state(device: torch.device) -> dict[str, Any]:
    """The global random generators' state: torch CPU (and the device's), numpy, random."""
    import numpy as np

    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    import numpy as np

    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


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


# ============================== trainees ========================================================


@dataclass
class Trainee:
    """One model being trained: its distiller (connectors), optimiser and per-epoch history."""

    name: str
    model: KDModel
    distiller: Distiller
    recipe: Recipe
    optimizer: torch.optim.Optimizer = field(init=False)
    history: list[dict[str, Any]] = field(default_factory=list)

    init_history: list[dict[str, Any]] = field(default_factory=list)
    #: lockstep: this trainee's global random state between its steps (None: use the global one)
    rng: dict[str, Any] | None = None
    #: lockstep: where this trainee's resumable state goes (one file per run, as when alone)
    state_path: Path | None = None
    #: lockstep with isolated failures: the exception that stopped this trainee
    error: BaseException | None = None

    def __post_init__(self) -> None:
        params = list(self.model.parameters()) + list(self.distiller.main_parameters())
        self.optimizer = self._sgd(params, self.recipe.lr)
        self.init_optimizer: torch.optim.Optimizer | None = None
        self.weights = self.distiller.weights
        self.w_ce = float(self.weights.get("w_ce", 1.0))

    def _sgd(self, params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
        r = self.recipe
        return torch.optim.SGD(params, lr=lr, momentum=r.momentum,
                               nesterov=r.nesterov and r.momentum > 0,
                               weight_decay=r.weight_decay)

    @property
    def init_lr(self) -> float:
        lr = self.distiller.init_lr
        return float(lr) if lr is not None else self.recipe.lr

    def make_init_optimizer(self) -> torch.optim.Optimizer:
        """The init stage's SGD (recipe momentum and weight decay, constant lr) over the
        distiller's init parameters and, if it trains the student, the student's. Parameters the
        init loss does not reach get no gradient, and SGD leaves those untouched."""
        if self.init_optimizer is None:
            params = list(self.distiller.init_parameters())
            if self.distiller.init_trains_student:
                params = list(self.model.parameters()) + params
            self.init_optimizer = self._sgd(params, self.init_lr)
        return self.init_optimizer

    def set_epoch(self, epoch: int) -> float:
        lr = self.recipe.lr * self.recipe.lr_factor(epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def state_dict(self) -> dict[str, Any]:
        state = {"model": self.model.state_dict(), "distiller": self.distiller.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "history": self.history}
        if self.distiller.init_epochs > 0:
            state["init_history"] = self.init_history
            if self.init_optimizer is not None:
                state["init_optimizer"] = self.init_optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.distiller.load_state_dict(state["distiller"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.history = list(state["history"])
        self.init_history = list(state.get("init_history", []))
        if "init_optimizer" in state:
            self.make_init_optimizer().load_state_dict(state["init_optimizer"])

    @property
    def best(self) -> dict[str, Any]:
        return max(self.history, key=lambda h: (h["top1"], -h["epoch"])) if self.history else {}


# ============================== teacher forward =================================================

TeacherFn = Callable[[torch.Tensor, bool], Features]


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


# ============================== evaluation ======================================================


def accuracy_counts(logits: torch.Tensor, target: torch.Tensor, ks=(1, 5)) -> list[int]:
    maxk = min(max(ks), logits.shape[1])
    top = logits.topk(maxk, dim=1).indices
    hit = top.eq(target.view(-1, 1))
    return [int(hit[:, :min(k, maxk)].any(dim=1).sum()) for k in ks]


@torch.no_grad()
def evaluate(model: nn.Module, loader: BatchLoader, precision: str = "fp32") -> dict[str, float]:
    """Top-1/top-5 accuracy (%) and mean CE on a split, in eval mode."""
    was_training = model.training
    model.eval()
    correct1 = correct5 = 0
    loss_sum, n = 0.0, 0
    for x, y, _ in loader:
        with autocast(loader.device, precision):
            logits = model(x)
        logits = logits.float()
        c1, c5 = accuracy_counts(logits, y)
        correct1 += c1
        correct5 += c5
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        n += y.numel()
    model.train(was_training)
    return {"top1": 100.0 * correct1 / n, "top5": 100.0 * correct5 / n, "loss": loss_sum / n}


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


def _check_finite(name: str, value: torch.Tensor, trainee: str, epoch: int, step: int,
                  stage: str = "epoch") -> None:
    if not torch.isfinite(value).all():
        raise TrainingError(f"non-finite loss: term {name!r} = {float(value.detach()):.4g} in "
                            f"{trainee} at {stage} {epoch + 1}, step {step + 1}")


def _raise_non_finite(total: torch.Tensor, ce: torch.Tensor, terms: dict[str, torch.Tensor],
                      trainee: str, epoch: int, step: int) -> None:
    """Name the first non-finite term (a non-finite total always has one, or an inf·0)."""
    for name, value in [("ce", ce), *terms.items()]:
        _check_finite(name, value, trainee, epoch, step)
    _check_finite("loss", total, trainee, epoch, step)


def _forward(trainee: Trainee, x: torch.Tensor, features: bool) -> Features:
    if features:
        return trainee.model.features(x)
    return Features(logits=trainee.model(x))


def _mean_terms(calls: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Average each term over several teachers (a DML cohort member's 1/(K−1)·Σ over peers)."""
    if len(calls) == 1:
        return calls[0]
    return {name: sum(c[name] for c in calls) / len(calls) for name in calls[0]}


def _step(trainee: Trainee, s_feats: Features, terms: dict[str, torch.Tensor], y: torch.Tensor,
          acc: RunningSums, epoch: int, step: int) -> None:
    """``w_ce·CE + Σ w_i·term_i``, finite-checked, one SGD step, metrics added to ``acc``."""
    ce = F.cross_entropy(s_feats.logits.float(), y)
    total = trainee.w_ce * ce
    terms = {name: value.float() for name, value in terms.items()}
    for name, value in terms.items():
        total = total + trainee.weights[f"w_{name}"] * value
    # one check of the total per step (a device sync on GPUs); a bad total names its term
    if not bool(torch.isfinite(total)):
        _raise_non_finite(total, ce, terms, trainee.name, epoch, step)
    trainee.optimizer.zero_grad(set_to_none=True)
    total.backward()
    trainee.optimizer.step()
    bs = y.shape[0]
    acc.add("loss", total, bs)
    acc.add("ce", ce, bs)
    for name, value in terms.items():
        acc.add(name, value, bs)
    acc.add("correct", s_feats.logits.detach().argmax(dim=1).eq(y).sum())


def train_step(trainees: list[Trainee], x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, *,
               epoch: int, step: int, sums: list[RunningSums], device: torch.device,
               precision: str = "fp32", teacher: nn.Module | None = None,
               isolate_failures: bool = False) -> None:
    """One batch for every trainee: one teacher forward, then each trainee's forward, loss,
    backward and SGD step (:func:`_step`), each on its own random stream (:func:`own_rng`).

    With ``isolate_failures`` an exception in one trainee's step is stored in its ``error``
    and the others carry on (lockstep runs fail one by one, as they would alone).
    """
    t_feats = None
    if teacher is not None:
        need_feats = any(t.distiller.needs_teacher and t.distiller.needs_features
                         for t in trainees)
        with autocast(device, precision):
            t_feats = teacher_features(teacher, x, need_feats)
    for trainee, acc in zip(trainees, sums):
        try:
            with own_rng(trainee, device):
                index = idx if "index" in trainee.distiller.taps else None
                with autocast(device, precision):
                    s_feats = _forward(trainee, x, trainee.distiller.needs_features)
                    terms = trainee.distiller(s_feats, t_feats, y, index, epoch)
                _step(trainee, s_feats, terms, y, acc, epoch, step)
        except Exception as exc:
            if not isolate_failures:
                raise
            trainee.error = exc


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


def _online_step(trainees: list[Trainee], x: torch.Tensor, y: torch.Tensor,
                 index: torch.Tensor | None, sums: list[RunningSums], *, epoch: int,
                 step: int, device: torch.device, precision: str, update: str) -> None:
    """One mini-batch of an online cohort (deep mutual learning), every member in turn.

    Member k is distilled from the others' outputs, which are constants for its update. With
    ``update="alternate"`` (the DML paper's Algorithm 1) member k sees the predictions of the
    members already updated on this batch, recomputed after their step (training-mode forward,
    running statistics untouched); members not yet updated keep the forward from the start of
    the batch, which their unchanged parameters would reproduce. ``"simultaneous"`` uses the
    start-of-batch predictions for everyone.
    """
    features = any(t.distiller.needs_features for t in trainees)
    with autocast(device, precision):
        feats = [_forward(t, x, features) for t in trainees]
    views = [f.detach() for f in feats]
    for k, (trainee, acc) in enumerate(zip(trainees, sums)):
        others = [v for j, v in enumerate(views) if j != k]
        with autocast(device, precision):
            terms = _mean_terms([trainee.distiller(feats[k], o, y, index, epoch) for o in others])
        _step(trainee, feats[k], terms, y, acc, epoch, step)
        if update == "alternate" and k < len(trainees) - 1:
            with torch.no_grad(), frozen_norm_stats(trainee.model), autocast(device, precision):
                views[k] = _forward(trainee, x, features).detach()


def _init_stage(trainee: Trainee, loader: BatchLoader, teacher: nn.Module | None, *,
                device: torch.device, precision: str, save: Callable[[], None],
                progress: bool, desc: str) -> tuple[float, int]:
    """Run (or finish) the distiller's init stage; its epochs go to ``trainee.init_history``.

    Each init epoch draws its own data order (epoch numbers −1, −2, …, distinct from the main
    stage's) and the state is saved after each, so an interrupted init stage resumes too.
    """
    from tqdm.auto import tqdm

    d = trainee.distiller
    done = len(trainee.init_history)
    if d.init_epochs <= 0 or done >= d.init_epochs:
        return 0.0, 0
    if teacher is None:
        raise ConfigError(f"the init stage of {trainee.name}'s loss needs a fixed teacher")
    optimizer = trainee.make_init_optimizer()
    lr = trainee.init_lr
    trainee.model.train(d.init_trains_student)
    d.train()
    seconds, images = 0.0, 0
    bar = tqdm(total=d.init_epochs, initial=done, desc=f"{desc} init", unit="ep",
               disable=not progress, leave=False, dynamic_ncols=True)
    for e in range(done, d.init_epochs):
        sums: dict[str, float] = {}
        seen = 0
        t0 = time.perf_counter()
        for step, (x, y, idx) in enumerate(loader.epoch(-1 - e)):
            with autocast(device, precision):
                t_feats = teacher_features(teacher, x, True)
                s_feats = trainee.model.features(x) if d.init_trains_student else None
                terms = d.init_forward(s_feats, t_feats, y, idx)
            total = torch.zeros((), device=device)
            for name, value in terms.items():
                value = value.float()
                _check_finite(name, value, f"{trainee.name}", e, step, "init epoch")
                total = total + value
                sums[name] = sums.get(name, 0.0) + float(value.detach()) * y.shape[0]
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            seen += y.shape[0]
        seconds += time.perf_counter() - t0
        images += seen
        trainee.init_history.append({"epoch": e + 1, "lr": lr,
                                     **{f"train_{k}": v / seen for k, v in sums.items()}})
        save()
        bar.update(1)
    bar.close()
    trainee.model.train()
    return seconds, images


# ============================== the loop ========================================================


def _load_state(trainees: list[Trainee], state_path: Path | None, device: torch.device,
                own_streams: bool) -> int:
    """Restore saved training state (one file for all, or one per trainee); the start epoch."""
    if state_path is not None:
        if not state_path.exists():
            return 0
        state = torch.load(state_path, map_location=device, weights_only=False)
        saved = list(zip(trainees, state["trainees"]))
        epochs = {int(state["epoch"])}
    else:
        files = [(t, t.state_path) for t in trainees if t.state_path is not None]
        present = [(t, f) for t, f in files if f.exists()]
        if not present:
            return 0
        if len(present) != len(trainees):
            raise ConfigError("lockstep trainees must all resume from a saved state or all start "
                              "afresh (" + ", ".join(str(f) for _, f in present) + " exist)")
        states = [(t, torch.load(f, map_location=device, weights_only=False)) for t, f in present]
        saved = [(t, s["trainees"][0]) for t, s in states]
        epochs = {int(s["epoch"]) for _, s in states}
    if len(epochs) != 1:
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
    return epochs.pop()


def _save_state(trainees: list[Trainee], epoch: int, state_path: Path | None,
                device: torch.device, own_streams: bool) -> None:
    from .store import atomic_torch_save

    def state(t: Trainee) -> dict[str, Any]:
        s = t.state_dict()
        # the random stream too, so that a resumed run draws what an uninterrupted one would
        s["rng"] = t.rng if own_streams else rng_state(device)
        return s

    if state_path is not None:
        atomic_torch_save({"epoch": epoch, "trainees": [state(t) for t in trainees]}, state_path)
        return
    for t in trainees:
        if t.state_path is not None and t.error is None:
            atomic_torch_save({"epoch": epoch, "trainees": [state(t)]}, t.state_path)


def fit(trainees: list[Trainee], data: Dataset, *, epochs: int, batch_size: int, seed: int,
        device: torch.device, precision: str = "fp32", augment: bool = True,
        teacher: nn.Module | None = None, state_path: Path | None = None,
        on_epoch_end: Callable[[int, list[Trainee]], None] | None = None,
        progress: bool = True, desc: str = "train", online: bool = False,
        update: str = "alternate", channels_last: bool | None = None, compile: bool = False,
        isolate_failures: bool = False) -> dict[str, float]:
    """Train ``trainees`` together for ``epochs`` on ``data`` (already on ``device``).

    First, each trainee whose loss has an init stage runs it (see :func:`_init_stage`). Then each
    epoch: one seeded pass over the training split, then test-set evaluation appended to each
    trainee's history. With ``online`` the trainees are a cohort, each distilled from the others
    (no ``teacher``; see :func:`_online_step`); otherwise they are independent runs in lockstep,
    each on its own global random stream (:func:`own_rng`), so each trains exactly as it would
    alone. If ``state_path`` is given, the full training state is written there atomically after
    every epoch and training resumes from it when present; without it, each trainee with a
    ``state_path`` of its own gets its own file (lockstep runs). ``channels_last`` (None:
    :func:`default_channels_last`) and ``compile`` change speed only. With ``isolate_failures``
    a trainee whose step raises stops (its ``error`` is set) and the rest go on. Returns timing.
    """
    from tqdm.auto import tqdm

    if online and (teacher is not None or len(trainees) < 2):
        raise ConfigError("an online cohort needs at least two trainees and no fixed teacher")
    if update not in ("alternate", "simultaneous"):
        raise ConfigError(f"unknown cohort update {update!r} (valid: alternate, simultaneous)")
    if channels_last is None:
        channels_last = default_channels_last(device)
    train_loader = BatchLoader(data, "train", batch_size, train=True, augment=augment, seed=seed,
                               device=device, channels_last=channels_last)
    test_loader = BatchLoader(data, "test", max(batch_size, 256), train=False, device=device,
                              channels_last=channels_last)
    need_index = any("index" in t.distiller.taps for t in trainees)
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
    init_seconds, init_images = 0.0, 0
    train_time, images = 0.0, 0
    models = [t.model for t in trainees] + [teacher]
    with prepared(models, channels_last=channels_last, compile=compile):
        if start == 0:
            for trainee in active:
                try:
                    with own_rng(trainee, device):
                        sec, n = _init_stage(trainee, train_loader, teacher, device=device,
                                             precision=precision, save=lambda: save(0),
                                             progress=progress, desc=desc)
                except Exception as exc:
                    if not isolate_failures:
                        raise
                    trainee.error = exc
                    continue
                init_seconds += sec
                init_images += n
            active = [t for t in active if t.error is None]
        for t in trainees:
            t.model.train()
            t.distiller.train()

        bar = tqdm(total=epochs, initial=start, desc=desc, unit="ep", disable=not progress,
                   leave=False, dynamic_ncols=True)
        for epoch in range(start, epochs):
            if not active:
                break
            lrs = [t.set_epoch(epoch) for t in active]
            sums = [RunningSums(device) for _ in active]
            seen = 0
            t0 = time.perf_counter()
            for step, (x, y, idx) in enumerate(train_loader.epoch(epoch)):
                if online:
                    _online_step(active, x, y, idx if need_index else None, sums, epoch=epoch,
                                 step=step, device=device, precision=precision, update=update)
                else:
                    train_step(active, x, y, idx, epoch=epoch, step=step, sums=sums,
                               device=device, precision=precision, teacher=teacher,
                               isolate_failures=isolate_failures)
                seen += y.shape[0]
                if any(t.error is not None for t in active):
                    keep = [k for k, t in enumerate(active) if t.error is None]
                    active = [active[k] for k in keep]
                    sums, lrs = [sums[k] for k in keep], [lrs[k] for k in keep]
                    if not active:
                        break
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            train_time += time.perf_counter() - t0
            images += seen
            if not active:
                break
            for trainee, acc, lr in zip(active, sums, lrs):
                metrics = evaluate(trainee.model, test_loader, precision)
                means = acc.means(seen)
                row = {"epoch": epoch + 1, "lr": lr, "top1": metrics["top1"],
                       "top5": metrics["top5"], "test_loss": metrics["loss"],
                       "train_top1": 100.0 * means.pop("correct")}
                row.update({f"train_{k}": v for k, v in means.items()})
                trainee.history.append(row)
            save(epoch + 1)
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, active)
            bar.set_postfix_str(" ".join(f"{t.name}={t.history[-1]['top1']:.1f}%"
                                         for t in active))
            bar.update(1)
        bar.close()
    timing = {"train_seconds": train_time, "train_images": images,
              "images_per_s": images * len(trainees) / train_time if train_time > 0 else math.nan}
    if init_images:
        timing.update(init_seconds=init_seconds, init_images=init_images)
    return timing


def seed_everything(seed: int) -> None:
    """Seed the global generators used for initialisation (data order uses its own)."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_threads(threads: int = 0) -> int:
    """Size torch's thread pool: ``threads`` if > 0, else every core this process may run on
    (its CPU affinity), unless OMP_NUM_THREADS says otherwise. Returns the number in use."""
    if threads > 0:
        torch.set_num_threads(threads)
        return threads
    if "OMP_NUM_THREADS" in os.environ:
        return torch.get_num_threads()
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        n = os.cpu_count() or 1
    torch.set_num_threads(n)
    return n
