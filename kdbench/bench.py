"""``kdbench bench``: the classic KD loop, kdbench's engine and the compute bound, side by side.

One process, one teacher–student pair, one batch size, one data set, and the variants take turns
(a few steps each, for several rounds) so that a machine shared with other work slows them alike:

(a) ``classic`` — what KD repositories run: a torchvision-style CIFAR dataset whose
    ``__getitem__`` makes a PIL image and applies ``RandomCrop(32, 4)``, ``RandomHorizontalFlip``,
    ``ToTensor`` and ``Normalize``, a ``DataLoader`` with worker processes, eager fp32 NCHW
    models, the teacher under ``no_grad`` and the loss read back every step.
(b) ``engine`` — kdbench's training step (:func:`kdbench.engine.train_step`) fed by its
    device-resident batched loader, with the engine's settings (precision, channels_last,
    compile).
(c) ``compute`` — the same step on one pre-made batch already on the device: the bound that a
    perfect data path would reach.
(d) ``lockstep`` — the engine step for N students of one teacher (one teacher forward per
    batch), reported as student-images/s and as a speed-up over N separate runs of (b).

Images/s are medians over the rounds; FLOP/s count the step's convolution and matrix-product
FLOPs (teacher forward, student forward and backward; what ``torch.utils.flop_counter``
counts); peak memory is the proportional set size
(PSS) of the process and its DataLoader workers while the variant runs, all variants' models
included, and how much of it the variant's steps added (on a GPU: the CUDA allocator's peak).
"""

from __future__ import annotations

import contextlib
import copy
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import engine
from .data import BatchLoader, Dataset, Split
from .device import default_channels_last, environment, resolve_device, rng_state, set_threads
from .errors import ConfigError
from .stages import Batch

#: CIFAR-100's per-channel statistics: the random default data stands in for it
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))


@dataclass
class BenchOptions:
    """What ``kdbench bench`` measures (the defaults are the issue's resnet56 → resnet20 case)."""

    teacher: str = "resnet56"
    student: str = "resnet20"
    batch_size: int = 128
    steps: int = 6  # timed steps per variant and round
    rounds: int = 3
    warmup: int = 2  # untimed steps per variant before the first round (compilation happens here)
    num_train: int = 10_000  # random images when no data dir is given
    num_classes: int = 100
    image_size: int = 32
    data_dir: str | None = None  # real CIFAR-10 (train.npz/test.npz or torchvision's files)
    workers: int = 0  # classic DataLoader workers; 0: one per core
    device: str = "auto"
    precision: str = "fp32"  # of the engine variants; the classic loop is always fp32
    channels_last: bool | None = None  # engine variants; None: the engine's default
    compile: bool = False
    lockstep: int = 4  # students in the lockstep variant; 0 leaves it out
    threads: int = 0
    seed: int = 0
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))


VARIANTS = ("classic", "engine", "compute", "lockstep")


# ============================== data ===========================================================


def bench_data(opts: BenchOptions) -> Dataset:
    """The images both loops train on: CIFAR-10 from ``data_dir``, else seeded random uint8
    images shaped like CIFAR-100 (``num_train`` × 3 × 32 × 32, 100 classes)."""
    if opts.data_dir:
        from .data import load_dataset

        return load_dataset("cifar10", opts.data_dir)
    g = torch.Generator().manual_seed(opts.seed)
    s, n = opts.image_size, opts.num_train
    images = torch.randint(0, 256, (n, 3, s, s), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, opts.num_classes, (n,), generator=g)
    split = Split(images, labels)
    mean, std = CIFAR100_STATS
    return Dataset(f"random-{opts.num_classes}-class", split, Split(images[:2], labels[:2]),
                   opts.num_classes, mean, std, crop_padding=4, hflip=True)


class ClassicCIFAR(torch.utils.data.Dataset):
    """torchvision's ``CIFAR10``/``CIFAR100`` item access: an HWC uint8 array, one PIL image
    per sample, the transform applied per sample."""

    def __init__(self, data: Dataset, transform: Callable):
        self.data = np.ascontiguousarray(data.train.images.permute(0, 2, 3, 1).cpu().numpy())
        self.targets = data.train.labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.data[index])), self.targets[index]


def classic_loader(data: Dataset, batch_size: int, workers: int, seed: int,
                   pin_memory: bool) -> torch.utils.data.DataLoader:
    """RepDistiller's CIFAR training pipeline (crop 32 pad 4, flip, ToTensor, Normalize)."""
    from torchvision import transforms

    size = data.image_size[0]
    transform = transforms.Compose([
        transforms.RandomCrop(size, padding=data.crop_padding),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(data.mean, data.std),
    ])
    return torch.utils.data.DataLoader(
        ClassicCIFAR(data, transform), batch_size=batch_size, shuffle=True, drop_last=True,
        num_workers=workers, pin_memory=pin_memory, persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(seed))


# ============================== memory =========================================================


def _pss_bytes(pid: int | str) -> int:
    """Proportional set size of a process (shared pages split among their users); 0 if gone."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _children(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []


class MemoryPeak:
    """Peak memory while a block runs: PSS of this process and its children (DataLoader
    workers), sampled every ``interval`` seconds, or the CUDA allocator's peak on a GPU."""

    def __init__(self, device: torch.device, interval: float = 0.05):
        self.device, self.interval = device, interval
        self.peak = 0
        self.start = 0  # memory when the block began: the peak above it is what the steps add
        self._stop = threading.Event()

    @staticmethod
    def _now() -> int:
        pid = os.getpid()
        return _pss_bytes(pid) + sum(_pss_bytes(c) for c in _children(pid))

    def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, self._now())
            if self._stop.wait(self.interval):
                return

    @contextlib.contextmanager
    def measure(self) -> Iterator[None]:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
            yield
            self.peak = max(self.peak, torch.cuda.max_memory_allocated(self.device))
            return
        if not Path("/proc/self/statm").exists():  # pragma: no cover - not Linux
            yield
            return
        self._stop.clear()
        self.start = self.peak = self._now()
        thread = threading.Thread(target=self._sample, daemon=True)
        thread.start()
        try:
            yield
        finally:
            self._stop.set()
            thread.join()


# ============================== the variants ===================================================


class Variant:
    """One way of training: ``step()`` trains on one batch; ``images`` per step."""

    name = ""
    label = ""

    def __init__(self, images_per_step: int):
        self.images = images_per_step

    def step(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        pass


def _kd_loss(w_ce: float, w_kd: float, T: float):
    from .losses import functional as KF

    def loss(s_logits: torch.Tensor, t_logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return w_ce * F.cross_entropy(s_logits, y) + w_kd * KF.kd(s_logits, t_logits, T)
    return loss


class Classic(Variant):
    name, label = "classic", "(a) classic loop: PIL transforms, DataLoader, fp32"

    def __init__(self, teacher, student, data: Dataset, opts: BenchOptions,
                 device: torch.device, workers: int, weights: dict[str, float], T: float):
        super().__init__(opts.batch_size)
        self.teacher, self.student, self.device = teacher, student, device
        self.optimizer = _sgd(student)
        self.loss = _kd_loss(weights["w_ce"], weights["w_kd"], T)
        self.loader = classic_loader(data, opts.batch_size, workers, opts.seed,
                                     device.type == "cuda")
        self._batches = iter(self.loader)

    def _next(self):
        try:
            return next(self._batches)
        except StopIteration:  # a new epoch, as the classic loop starts one
            self._batches = iter(self.loader)
            return next(self._batches)

    def step(self) -> None:
        x, y = self._next()
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        with torch.no_grad():
            t_logits = self.teacher(x)
        s_logits = self.student(x)
        loss = self.loss(s_logits, t_logits, y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        loss.item()  # the classic loop logs the loss every step

    def close(self) -> None:
        del self._batches  # shuts the workers down


class Engine(Variant):
    """kdbench's step on its batched loader (``fixed_batch``: on one pre-made batch)."""

    def __init__(self, trainees: list[engine.Trainee], teacher, data: Dataset, opts: BenchOptions,
                 device: torch.device, channels_last: bool, fixed_batch: bool = False):
        super().__init__(opts.batch_size * len(trainees))
        self.trainees, self.teacher, self.device = trainees, teacher, device
        self.precision = opts.precision
        self.loader = BatchLoader(data, "train", opts.batch_size, train=True, seed=opts.seed,
                                  device=device, channels_last=channels_last)
        self.sums = [engine.RunningSums(device) for _ in trainees]
        self.epoch, self.n = 0, 0
        self._batches = self.loader.epoch(0)
        self.fixed = tuple(t.clone() for t in self._next()) if fixed_batch else None
        if len(trainees) > 1:
            for t in trainees:
                t.rng = rng_state(device)

    def _next(self):
        try:
            return next(self._batches)
        except StopIteration:
            self.epoch += 1
            self._batches = self.loader.epoch(self.epoch)
            return next(self._batches)

    def step(self) -> None:
        x, y, idx = self.fixed if self.fixed is not None else self._next()
        engine.train_step(self.trainees, Batch(x, y, idx), epoch=0, step=self.n,
                          sums=self.sums, device=self.device, precision=self.precision,
                          teacher=self.teacher)
        self.n += 1


def _sgd(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)


# ============================== measuring ======================================================


def step_flops(teacher, student, data: Dataset, batch_size: int, loss) -> int:
    """FLOPs of one KD step: teacher forward, student forward and backward (eager, fp32)."""
    from torch.utils.flop_counter import FlopCounterMode

    teacher, student = copy.deepcopy(teacher), copy.deepcopy(student)
    c, (h, w) = data.in_chans, data.image_size
    x = torch.randn(batch_size, c, h, w, device=next(student.parameters()).device)
    y = torch.zeros(batch_size, dtype=torch.long, device=x.device)
    with FlopCounterMode(display=False) as counter:
        with torch.no_grad():
            t_logits = teacher(x)
        loss(student(x), t_logits, y).backward()
    return int(counter.get_total_flops())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def run_bench(opts: BenchOptions, progress: Callable[[str], None] | None = None
              ) -> dict[str, Any]:
    """Measure the variants side by side; returns the figures (see :func:`format_report`)."""
    from .losses import DistillContext, build
    from .losses import resolve as resolve_loss
    from .models import create_model

    say = progress or (lambda _msg: None)
    unknown = [v for v in opts.variants if v not in VARIANTS]
    if unknown:
        from .errors import UnknownNameError
        raise UnknownNameError("bench variant", unknown[0], VARIANTS)
    if opts.batch_size < 2 or opts.steps < 1 or opts.rounds < 1:
        raise ConfigError("bench needs batch size >= 2, steps >= 1 and rounds >= 1")
    threads = set_threads(opts.threads)
    device = resolve_device(opts.device)
    channels_last = (default_channels_last(device) if opts.channels_last is None
                     else opts.channels_last)
    workers = opts.workers or len(os.sched_getaffinity(0))
    data = bench_data(opts)
    if len(data.train) < opts.batch_size:
        raise ConfigError(f"bench needs at least one batch of data: {len(data.train)} images < "
                          f"batch size {opts.batch_size}")
    weights, options = resolve_loss("kd")
    load_before = os.getloadavg()

    def model(name: str, seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        return create_model(name, data.num_classes, data.in_chans).to(device)

    teacher = model(opts.teacher, opts.seed + 1000).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    loss = _kd_loss(weights["w_ce"], weights["w_kd"], options["T"])
    flops = step_flops(teacher, model(opts.student, opts.seed), data, opts.batch_size, loss)

    def trainee(k: int) -> engine.Trainee:
        from .config import Recipe

        student = model(opts.student, opts.seed + k)
        ctx = DistillContext(student, teacher, data.num_classes, data.input_shape,
                             len(data.train), weights, options)
        return engine.Trainee(f"student{k}", student, build("kd", ctx).to(device),
                              Recipe(lr=0.05, momentum=0.9, weight_decay=5e-4))

    variants: list[Variant] = []
    engine_teacher = teacher
    if "classic" in opts.variants:
        classic = Classic(copy.deepcopy(teacher), model(opts.student, opts.seed), data.to("cpu"),
                          opts, device, workers, weights, options["T"])
        variants.append(classic)
    engine_data = data.to(device)
    engine_trainees: list[engine.Trainee] = []
    if "engine" in opts.variants:
        v = Engine([trainee(0)], engine_teacher, engine_data, opts, device, channels_last)
        v.name, v.label = "engine", "(b) kdbench engine: resident batched data"
        variants.append(v)
        engine_trainees += v.trainees
    if "compute" in opts.variants:
        v = Engine([trainee(0)], engine_teacher, engine_data, opts, device, channels_last,
                   fixed_batch=True)
        v.name, v.label = "compute", "(c) compute bound: one pre-made device batch"
        variants.append(v)
        engine_trainees += v.trainees
    if "lockstep" in opts.variants and opts.lockstep > 0:
        v = Engine([trainee(k) for k in range(opts.lockstep)], engine_teacher, engine_data, opts,
                   device, channels_last)
        v.name = "lockstep"
        v.label = f"(d) lockstep: {opts.lockstep} students, one teacher forward"
        variants.append(v)
        engine_trainees += v.trainees

    times: dict[str, list[float]] = {v.name: [] for v in variants}
    peaks: dict[str, int] = {}
    added: dict[str, int] = {}
    warmup_s: dict[str, float] = {}
    models = [t.model for t in engine_trainees] + [engine_teacher]
    try:
        with engine.prepared(models, channels_last=channels_last, compile=opts.compile):
            for v in variants:
                say(f"warm-up {v.name}")
                t0 = time.perf_counter()
                for _ in range(opts.warmup):
                    v.step()
                _sync(device)
                warmup_s[v.name] = time.perf_counter() - t0
            for r in range(opts.rounds):
                for v in variants:
                    mem = MemoryPeak(device)
                    with mem.measure():
                        _sync(device)
                        t0 = time.perf_counter()
                        for _ in range(opts.steps):
                            v.step()
                        _sync(device)
                        times[v.name].append(time.perf_counter() - t0)
                    peaks[v.name] = max(peaks.get(v.name, 0), mem.peak)
                    added[v.name] = max(added.get(v.name, 0), mem.peak - mem.start)
                say(f"round {r + 1}/{opts.rounds}: " + ", ".join(
                    f"{v.name} {opts.steps * v.images / times[v.name][-1]:.0f} img/s"
                    for v in variants))
    finally:
        for v in variants:
            v.close()

    results: dict[str, Any] = {}
    for v in variants:
        per_round = [opts.steps * v.images / t for t in times[v.name]]
        ips = _median(per_round)
        n_students = v.images // opts.batch_size
        step_f = flops if n_students == 1 else _lockstep_flops(flops, teacher, data, opts)
        results[v.name] = {"label": v.label, "images_per_s": ips, "per_round": per_round,
                           "flops_per_s": step_f * ips / v.images,
                           "peak_memory_mib": peaks.get(v.name, 0) / 2**20,
                           "step_memory_mib": added.get(v.name, 0) / 2**20,
                           "warmup_seconds": warmup_s.get(v.name)}
    ratios = _ratios(results, opts)
    return {"options": asdict(opts), "resolved": {
        "device": str(device), "threads": threads, "channels_last": channels_last,
        "workers": workers, "data": data.name, "num_train": len(data.train),
        "flops_per_step": flops, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "load_before": load_before, "load_after": os.getloadavg()},
        "env": environment(device), "variants": results, "ratios": ratios}


def _lockstep_flops(flops: int, teacher, data: Dataset, opts: BenchOptions) -> int:
    """One teacher forward and N student steps: N·(step) − (N−1)·(teacher forward)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(opts.batch_size, data.in_chans, *data.image_size,
                    device=next(teacher.parameters()).device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        copy.deepcopy(teacher)(x)
    t_flops = int(counter.get_total_flops())
    return opts.lockstep * flops - (opts.lockstep - 1) * t_flops


def _ratios(results: dict[str, Any], opts: BenchOptions) -> dict[str, float]:
    ips = {k: v["images_per_s"] for k, v in results.items()}
    out: dict[str, float] = {}
    if "classic" in ips and "engine" in ips:
        out["engine_over_classic"] = ips["engine"] / ips["classic"]
    if "classic" in ips and "compute" in ips:
        out["compute_over_classic"] = ips["compute"] / ips["classic"]
    if "engine" in ips and "compute" in ips:
        out["engine_over_compute"] = ips["engine"] / ips["compute"]
    if "engine" in ips and "lockstep" in ips:
        # N separate runs take N times one run's time per batch
        out["lockstep_speedup"] = ips["lockstep"] / ips["engine"]
    return out


def format_report(result: dict[str, Any]) -> str:
    """The figures as a table plus the ratios and the conditions they were taken in."""
    from tabulate import tabulate

    r, o = result["resolved"], result["options"]
    rows = []
    for v in result["variants"].values():
        spread = v["per_round"]
        rows.append((v["label"], f"{v['images_per_s']:.1f}",
                     f"{min(spread):.1f}–{max(spread):.1f}",
                     f"{v['flops_per_s'] / 1e9:.2f}", f"{v['peak_memory_mib']:.0f}",
                     f"{v['step_memory_mib']:.0f}"))
    table = tabulate(rows, headers=["variant", "images/s (median)", "range over rounds",
                                    "GFLOP/s", "peak MiB", "+MiB in steps"],
                     disable_numparse=True)
    names = {"engine_over_classic": "engine / classic",
             "compute_over_classic": "compute bound / classic",
             "engine_over_compute": "engine / compute bound (data-path efficiency)",
             "lockstep_speedup": f"lockstep of {o['lockstep']} / {o['lockstep']} separate runs"}
    ratios = "\n".join(f"  {names[k]}: {v:.2f}×" if k != "engine_over_compute"
                       else f"  {names[k]}: {100 * v:.0f}%" for k, v in result["ratios"].items())
    head = (f"{o['teacher']} → {o['student']}, batch {o['batch_size']}, {r['data']} "
            f"({r['num_train']} images), {r['device']} ({result['env']['device_name']}, "
            f"{r['cpu_capability']}), {r['threads']} threads, engine {o['precision']}"
            f"{' channels_last' if r['channels_last'] else ''}"
            f"{' compiled' if o['compile'] else ''}, classic with {r['workers']} workers; "
            f"{o['rounds']} rounds × {o['steps']} steps; load average "
            f"{r['load_before'][0]:.1f} → {r['load_after'][0]:.1f}")
    return f"{head}\n{table}\nratios (medians):\n{ratios}"
