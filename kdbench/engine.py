"""The one training loop: teacher training and distillation, evaluation, checkpoint and resume.

One loop trains a list of *trainees* (a student, its distiller and optimiser) on one data order:
a single run is a list of one; lockstep students and online cohorts share each batch and, when
there is one, each teacher forward.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

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
    """Teacher outputs without autograd (no_grad, not inference_mode: the student's loss keeps
    them for its backward)."""
    with torch.no_grad():
        if need_features:
            return teacher.features(x)
        return Features(logits=teacher(x))


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


# ============================== the loop ========================================================


def _check_finite(name: str, value: torch.Tensor, trainee: str, epoch: int, step: int,
                  stage: str = "epoch") -> None:
    if not torch.isfinite(value).all():
        raise TrainingError(f"non-finite loss: term {name!r} = {float(value.detach()):.4g} in "
                            f"{trainee} at {stage} {epoch + 1}, step {step + 1}")


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
          acc: dict[str, float], epoch: int, step: int) -> None:
    """``w_ce·CE + Σ w_i·term_i``, finite-checked term by term, one SGD step, running sums."""
    ce = F.cross_entropy(s_feats.logits.float(), y)
    _check_finite("ce", ce, trainee.name, epoch, step)
    total = trainee.w_ce * ce
    for name, value in terms.items():
        value = value.float()
        _check_finite(name, value, trainee.name, epoch, step)
        total = total + trainee.weights[f"w_{name}"] * value
    trainee.optimizer.zero_grad(set_to_none=True)
    total.backward()
    trainee.optimizer.step()
    bs = y.shape[0]
    acc["loss"] = acc.get("loss", 0.0) + float(total.detach()) * bs
    acc["ce"] = acc.get("ce", 0.0) + float(ce.detach()) * bs
    for name, value in terms.items():
        acc[name] = acc.get(name, 0.0) + float(value.detach()) * bs
    acc["correct"] = acc.get("correct", 0.0) + accuracy_counts(
        s_feats.logits.detach().float(), y, ks=(1,))[0]


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
                 index: torch.Tensor | None, sums: list[dict[str, float]], *, epoch: int,
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


def fit(trainees: list[Trainee], data: Dataset, *, epochs: int, batch_size: int, seed: int,
        device: torch.device, precision: str = "fp32", augment: bool = True,
        teacher: nn.Module | None = None, state_path: Path | None = None,
        on_epoch_end: Callable[[int, list[Trainee]], None] | None = None,
        progress: bool = True, desc: str = "train", online: bool = False,
        update: str = "alternate") -> dict[str, float]:
    """Train ``trainees`` together for ``epochs`` on ``data`` (already on ``device``).

    First, each trainee whose loss has an init stage runs it (see :func:`_init_stage`). Then each
    epoch: one seeded pass over the training split, then test-set evaluation appended to each
    trainee's history. With ``online`` the trainees are a cohort, each distilled from the others
    (no ``teacher``; see :func:`_online_step`). If ``state_path`` is given, the full training state
    is written there atomically after every epoch and training resumes from it when present.
    Returns timing.
    """
    from .store import atomic_torch_save
    from tqdm.auto import tqdm

    if online and (teacher is not None or len(trainees) < 2):
        raise ConfigError("an online cohort needs at least two trainees and no fixed teacher")
    if update not in ("alternate", "simultaneous"):
        raise ConfigError(f"unknown cohort update {update!r} (valid: alternate, simultaneous)")
    train_loader = BatchLoader(data, "train", batch_size, train=True, augment=augment, seed=seed,
                               device=device)
    test_loader = BatchLoader(data, "test", max(batch_size, 256), train=False, device=device)
    need_teacher_feats = any(t.distiller.needs_teacher and t.distiller.needs_features
                             for t in trainees)
    need_index = any("index" in t.distiller.taps for t in trainees)
    start = 0
    if state_path is not None and state_path.exists():
        state = torch.load(state_path, map_location=device, weights_only=False)
        for trainee, s in zip(trainees, state["trainees"]):
            trainee.load_state_dict(s)
        start = int(state["epoch"])

    def save(epoch: int) -> None:
        if state_path is not None:
            atomic_torch_save({"epoch": epoch, "trainees": [t.state_dict() for t in trainees]},
                              state_path)

    if teacher is not None:
        teacher.eval()
    init_seconds, init_images = 0.0, 0
    if start == 0:
        for trainee in trainees:
            sec, n = _init_stage(trainee, train_loader, teacher, device=device,
                                 precision=precision, save=lambda: save(0), progress=progress,
                                 desc=desc)
            init_seconds += sec
            init_images += n
    for t in trainees:
        t.model.train()
        t.distiller.train()

    train_time, images = 0.0, 0
    bar = tqdm(total=epochs, initial=start, desc=desc, unit="ep", disable=not progress,
               leave=False, dynamic_ncols=True)
    for epoch in range(start, epochs):
        lrs = [t.set_epoch(epoch) for t in trainees]
        sums: list[dict[str, float]] = [{} for _ in trainees]
        seen = 0
        t0 = time.perf_counter()
        for step, (x, y, idx) in enumerate(train_loader.epoch(epoch)):
            index = idx if need_index else None
            if online:
                _online_step(trainees, x, y, index, sums, epoch=epoch, step=step, device=device,
                             precision=precision, update=update)
                seen += y.shape[0]
                continue
            t_feats = None
            if teacher is not None:
                with autocast(device, precision):
                    t_feats = teacher_features(teacher, x, need_teacher_feats)
            for trainee, acc in zip(trainees, sums):
                with autocast(device, precision):
                    s_feats = _forward(trainee, x, trainee.distiller.needs_features)
                    terms = trainee.distiller(s_feats, t_feats, y, index, epoch)
                _step(trainee, s_feats, terms, y, acc, epoch, step)
            seen += y.shape[0]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_time += time.perf_counter() - t0
        images += seen
        for trainee, acc, lr in zip(trainees, sums, lrs):
            metrics = evaluate(trainee.model, test_loader, precision)
            row = {"epoch": epoch + 1, "lr": lr, "top1": metrics["top1"], "top5": metrics["top5"],
                   "test_loss": metrics["loss"], "train_top1": 100.0 * acc.pop("correct") / seen}
            row.update({f"train_{k}": v / seen for k, v in acc.items()})
            trainee.history.append(row)
        save(epoch + 1)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, trainees)
        bar.set_postfix_str(" ".join(f"{t.name}={t.history[-1]['top1']:.1f}%" for t in trainees))
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


def set_threads() -> int:
    """Use every core this process may run on (respects affinity and OMP_NUM_THREADS)."""
    if "OMP_NUM_THREADS" in os.environ:
        return torch.get_num_threads()
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        n = os.cpu_count() or 1
    torch.set_num_threads(n)
    return n
