"""``kdbench bench``: what users get, side by side with the classic KD loop and the bounds.

One process, one teacher–student pair, one batch size, one data set; the variants take turns (a
few steps each, for several rounds) so that a machine shared with other work slows them alike.
The defaults are RepDistiller's protocol (Tian et al., "Contrastive Representation
Distillation", ICLR 2020, github.com/HobbitLong/RepDistiller, ``train_student.py``): resnet56 →
resnet20, batch 64, KD ``0.9·T²·KL + 0.1·CE`` at T = 4, SGD momentum 0.9, lr 0.05, wd 5e-4.

(a) ``classic`` — what KD repositories run: a torchvision-style CIFAR dataset whose
    ``__getitem__`` makes a PIL image and applies ``RandomCrop(32, 4)``, ``RandomHorizontalFlip``,
    ``ToTensor`` and ``Normalize``, a ``DataLoader`` with worker processes, eager fp32 NCHW
    models, the teacher under ``no_grad`` and the loss read back every step.
(b) ``engine`` — kdbench's training step (:func:`kdbench.engine.train_step`) fed by its
    device-resident batched loader, at the settings ``kdbench run`` uses by default (all cores,
    its precision and layout, ``engine.fuse_teacher``'s default).
(g) ``grid`` — the same step at the other settings of threads (all cores, one), layout
    (channels_last, NCHW) and teacher fusion (:mod:`kdbench.models.fuse`), and at the default's
    settings in the other precision (fp32 ↔ bf16); the fastest of (b) and (g) is the *best*
    setting, and the fused/unfused pair at the default's threads and layout gives the fusion
    gain on a whole step.
(c) ``compute`` — the default step on one pre-made batch already on the device: the bound that a
    perfect data path would reach.
(t) ``teacher`` — the teacher's forward alone at the default's threads and layout, unfused and
    fused, on one pre-made batch: its share of a step and the fusion gain on the forward itself.
(d) ``lockstep`` — the default step for N students of one teacher (one teacher forward per
    batch), reported as student-images/s and as a speed-up over N separate runs of (b).
(k) ``compiled`` (opt-in: ``--variants ...,compiled``; it compiles for about a minute on a
    CPU) — the default step with its own student and teacher copy under ``torch.compile``
    (``kdbench run --compile``), beside the eager one: the compile gain on a whole step. Not a
    default because compiled kernels round differently, so records would change.
(p) ``peak`` — the fastest fp32 kernels torch has here, on all cores: an n×n matrix product
    (MKL's GEMM) and a large 3×3 convolution in channels_last (oneDNN: n/8 channels in and out,
    a 32×32 map, batch 16), in the same turns as the rest so they see the same load; the
    faster of the two is the *measured peak*. A CNN step is convolutions, and on the Zen 4
    development machine oneDNN's convolution beat MKL's GEMM by a quarter, so the GEMM alone
    would flatter the engine. GFLOP/s are also given against the nominal peak, cores × clock ×
    FLOP/cycle (:func:`nominal_peak`), which no kernel reaches.

Images/s are medians over the rounds; FLOP/s count the step's convolution and matrix-product
FLOPs (teacher forward, student forward and backward; what ``torch.utils.flop_counter``
counts); peak memory is the proportional set size (PSS) of the process and its DataLoader
workers while the variant runs, all variants' models included, and how much of it the
variant's steps added (on a GPU: the CUDA allocator's peak). The CPUs other processes keep busy
are measured before the first variant (:func:`kdbench.openmp.busy_cpus`), and the 1-minute
load average before, after and at the end of every round.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
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
from .device import (
    autocast,
    cpu_name,
    default_channels_last,
    environment,
    resolve_device,
    resolve_precision,
    rng_state,
    set_threads,
)
from .errors import ConfigError
from .openmp import busy_cpus
from .stages import Batch

#: CIFAR-100's per-channel statistics: the random default data stands in for it
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))


@dataclass
class BenchOptions:
    """What ``kdbench bench`` measures (the defaults: RepDistiller's resnet56 → resnet20 KD)."""

    teacher: str = "resnet56"
    student: str = "resnet20"
    batch_size: int = 64
    steps: int = 5  # timed steps per variant and round
    rounds: int = 3
    warmup: int = 2  # untimed steps per variant before the first round (compilation happens here)
    num_train: int = 10_000  # random images when no data dir is given
    num_classes: int = 100
    image_size: int = 32
    data_dir: str | None = None  # real CIFAR-10 (train.npz/test.npz or torchvision's files)
    workers: int = 0  # classic DataLoader workers; 0: one per core
    device: str = "auto"
    precision: str = "auto"  # of the engine variants, resolved as `kdbench run` does; classic: fp32
    # the default engine variant's settings; None: what `kdbench run` uses
    channels_last: bool | None = None
    fuse_teacher: bool | None = None
    threads: int = 0  # 0: every core, as `kdbench run`
    compile: bool = False
    lockstep: int = 4  # students in the lockstep variant; 0 leaves it out
    peak_size: int = 2048  # n of the peak's n×n GEMM; its convolution has n/8 channels
    seed: int = 0
    variants: list[str] = field(default_factory=lambda: list(DEFAULT_VARIANTS))


VARIANTS = ("classic", "engine", "grid", "compute", "teacher", "lockstep", "peak", "compiled")
#: What ``kdbench bench`` runs unless told (``compiled`` costs a minute of compilation).
DEFAULT_VARIANTS = VARIANTS[:-1]


@dataclass(frozen=True)
class Setting:
    """How the engine runs: torch threads, memory layout, teacher fusion, precision."""

    threads: int
    channels_last: bool
    fuse: bool
    precision: str = "fp32"

    @property
    def key(self) -> str:
        return (f"t{self.threads}-{'nhwc' if self.channels_last else 'nchw'}-"
                f"{'fused' if self.fuse else 'plain'}-{self.precision}")

    def describe(self) -> str:
        return (f"{_plural(self.threads, 'thread')}, "
                f"{'channels_last' if self.channels_last else 'NCHW'}, "
                f"teacher {'fused' if self.fuse else 'unfused'}, {self.precision}")

    def but(self, **changes: Any) -> Setting:
        return dataclasses.replace(self, **changes)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


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
    """One way of training: ``step()`` trains on one batch of ``images`` images, on
    ``threads`` torch threads (set before its turn)."""

    name = ""
    label = ""
    settings = ""
    flops = 0  # per step

    def __init__(self, images_per_step: int, threads: int):
        self.images, self.threads = images_per_step, threads

    def step(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        pass


def _kd_loss(w_ce: float, w_kd: float, T: float):
    from .losses.kd import kd

    def loss(s_logits: torch.Tensor, t_logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return w_ce * F.cross_entropy(s_logits, y) + w_kd * kd(s_logits, t_logits, T)
    return loss


class Classic(Variant):
    name, label = "classic", "(a) classic loop: PIL transforms, DataLoader, fp32"

    def __init__(self, teacher, student, data: Dataset, opts: BenchOptions,
                 device: torch.device, workers: int, threads: int, weights: dict[str, float],
                 T: float):
        super().__init__(opts.batch_size, threads)
        self.settings = f"{_plural(threads, 'thread')}, NCHW, {_plural(workers, 'worker')}, fp32"
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
                 device: torch.device, setting: Setting, fixed_batch: bool = False):
        super().__init__(opts.batch_size * len(trainees), setting.threads)
        self.trainees, self.teacher, self.device = trainees, teacher, device
        self.setting, self.precision = setting, setting.precision
        self.settings = setting.describe()
        if setting.channels_last:
            for t in trainees:
                t.model.to(memory_format=torch.channels_last)
        self.loader = BatchLoader(data, "train", opts.batch_size, train=True, seed=opts.seed,
                                  device=device, channels_last=setting.channels_last)
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


class TeacherForward(Variant):
    """The teacher's forward alone, as the engine runs it for a logit loss, on one batch."""

    def __init__(self, teacher, x: torch.Tensor, device: torch.device, setting: Setting):
        super().__init__(x.shape[0], setting.threads)
        self.teacher, self.x, self.device = teacher, x, device
        self.precision = setting.precision
        self.settings = setting.describe()

    def step(self) -> None:
        with autocast(self.device, self.precision):
            engine.teacher_features(self.teacher, self.x, False)


class Gemm(Variant):
    """An n×n fp32 matrix product on ``threads`` threads (2n³ FLOPs a step)."""

    name, label = "peak:gemm", "(p) fp32 peak: n×n GEMM"

    def __init__(self, n: int, device: torch.device, threads: int, seed: int):
        super().__init__(0, threads)
        g = torch.Generator().manual_seed(seed)
        self.a = torch.randn(n, n, generator=g).to(device)
        self.b = torch.randn(n, n, generator=g).to(device)
        self.flops = 2 * n ** 3
        self.settings = f"{_plural(threads, 'thread')}, n = {n}"

    def step(self) -> None:
        torch.mm(self.a, self.b)


class Conv(Variant):
    """A 3×3 fp32 convolution, c → c channels on a 32×32 map, batch 16, channels_last, on
    ``threads`` threads (2·16·c²·9·32·32 FLOPs a step)."""

    name, label = "peak:conv", "(p) fp32 peak: large 3×3 conv"

    def __init__(self, c: int, device: torch.device, threads: int, seed: int):
        super().__init__(0, threads)
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(16, c, 32, 32, generator=g).to(device).contiguous(
            memory_format=torch.channels_last)
        self.w = torch.randn(c, c, 3, 3, generator=g).to(device).contiguous(
            memory_format=torch.channels_last)
        self.flops = 2 * 16 * c * c * 9 * 32 * 32
        self.settings = f"{_plural(threads, 'thread')}, {c} channels, channels_last"

    def step(self) -> None:
        F.conv2d(self.x, self.w, padding=1)


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


def forward_flops(model, data: Dataset, batch_size: int) -> int:
    """FLOPs of one forward of ``model`` on a batch (what a frozen teacher costs)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(batch_size, data.in_chans, *data.image_size,
                    device=next(model.parameters()).device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        copy.deepcopy(model)(x)
    return int(counter.get_total_flops())


def nominal_peak(cores: int) -> dict[str, Any]:
    """This CPU's nominal fp32 peak: cores × clock × FLOP/cycle.

    FLOP/cycle per core = 2 (a fused multiply-add) × fp32 lanes × FMA pipes. AMD's Zen 2–4 have
    two 256-bit FMA pipes (Zen 4 runs AVX-512 as two 256-bit halves): 2 × 8 × 2 = 32. Intel
    server cores with AVX-512 have two 512-bit FMA units: 2 × 16 × 2 = 64; with AVX2 only,
    32. The clock is ``cpu MHz`` of /proc/cpuinfo (in a virtual machine the host's base or TSC
    clock; boost clocks make the real peak higher). None where these are unknown (no
    /proc/cpuinfo, GPUs): the measured GEMM peak is then the only reference.
    """
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"gflops": None, "how": "unknown (no /proc/cpuinfo)"}
    mhz = [float(line.split(":", 1)[1]) for line in info.splitlines()
           if line.startswith("cpu MHz")]
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines()
                  if line.startswith("flags")), [])
    if not mhz or "fma" not in flags:
        return {"gflops": None, "how": "unknown (no clock or no FMA in /proc/cpuinfo)"}
    intel512 = "GenuineIntel" in info and "avx512f" in flags
    per_cycle = 64 if intel512 else 32
    ghz = max(mhz) / 1000
    return {"gflops": cores * ghz * per_cycle, "how": (
        f"{cores} cores × {ghz:.2f} GHz × {per_cycle} FLOP/cycle (2 FMA pipes × "
        f"{'16' if intel512 else '8'} fp32 lanes × 2)"), "cores": cores, "ghz": ghz,
        "flop_per_cycle": per_cycle}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _grid(default: Setting, cores: int) -> list[Setting]:
    """The other settings the best one is picked from: threads (the default's, all cores, one)
    × layout × fusion at the default's precision, and the default with the other precision
    (fp32 ↔ bf16)."""
    threads = sorted({default.threads, cores, 1}, reverse=True)
    grid = [default.but(threads=t, channels_last=cl, fuse=fuse) for t in threads
            for cl in (True, False) for fuse in (False, True)]
    grid.append(default.but(precision="bf16" if default.precision == "fp32" else "fp32"))
    return [s for s in grid if s != default]


def run_bench(opts: BenchOptions, progress: Callable[[str], None] | None = None
              ) -> dict[str, Any]:
    """Measure the variants side by side; returns the figures (see :func:`format_report`)."""
    from .config import EngineConfig
    from .losses import DistillContext, build
    from .losses import resolve as resolve_loss
    from .models import create_model
    from .models.fuse import fuse_frozen, probe_input

    say = progress or (lambda _msg: None)
    unknown = [v for v in opts.variants if v not in VARIANTS]
    if unknown:
        from .errors import UnknownNameError
        raise UnknownNameError("bench variant", unknown[0], VARIANTS)
    if opts.batch_size < 2 or opts.steps < 1 or opts.rounds < 1 or opts.peak_size < 8:
        raise ConfigError(f"bench needs batch size >= 2, steps >= 1, rounds >= 1 and peak "
                          f"size >= 8, got {opts.batch_size}, {opts.steps}, {opts.rounds}, "
                          f"{opts.peak_size}")
    threads = set_threads(0)  # what `kdbench run` uses
    cores = len(os.sched_getaffinity(0))
    device = resolve_device(opts.device)
    default = Setting(
        opts.threads or threads,
        default_channels_last(device) if opts.channels_last is None else opts.channels_last,
        EngineConfig().fuse_teacher if opts.fuse_teacher is None else opts.fuse_teacher,
        resolve_precision(opts.precision, opts.device))
    workers = opts.workers or len(os.sched_getaffinity(0))
    data = bench_data(opts)
    if len(data.train) < opts.batch_size:
        raise ConfigError(f"bench needs at least one batch of data: {len(data.train)} images < "
                          f"batch size {opts.batch_size}")
    weights, options = resolve_loss("kd")
    load_before = os.getloadavg()
    busy_before = busy_cpus()  # other processes' use of the CPUs now: the load average lags

    def model(name: str, seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        return create_model(name, data.num_classes, data.in_chans).to(device)

    teacher = model(opts.teacher, opts.seed + 1000).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    fused_teacher, fusion = fuse_frozen(teacher, probe_input(data.input_shape, device))
    teachers: dict[tuple[bool, bool], torch.nn.Module] = {}

    def teacher_for(s: Setting) -> torch.nn.Module:
        """The frozen teacher in the setting's layout and fusion (one copy per pair)."""
        key = (s.channels_last, s.fuse)
        if key not in teachers:
            t = copy.deepcopy(fused_teacher if s.fuse else teacher)
            teachers[key] = t.to(memory_format=torch.channels_last) if s.channels_last else t
        return teachers[key]

    loss = _kd_loss(weights["w_ce"], weights["w_kd"], options["T"])
    flops = step_flops(teacher, model(opts.student, opts.seed), data, opts.batch_size, loss)
    t_flops = forward_flops(teacher, data, opts.batch_size)

    def trainee(k: int) -> engine.Trainee:
        from .config import Recipe

        student = model(opts.student, opts.seed + k)
        ctx = DistillContext(student, teacher, data.num_classes, data.input_shape,
                             len(data.train), weights, options)
        return engine.Trainee(f"student{k}", student, build("kd", ctx).to(device),
                              Recipe(lr=0.05, momentum=0.9, weight_decay=5e-4))

    def engine_variant(s: Setting, name: str, label: str, n: int = 1,
                       fixed_batch: bool = False) -> Engine:
        v = Engine([trainee(k) for k in range(n)], teacher_for(s), engine_data, opts, device,
                   s, fixed_batch=fixed_batch)
        v.name, v.label = name, label
        v.flops = flops if n == 1 else n * flops - (n - 1) * t_flops
        return v

    variants: list[Variant] = []
    if "classic" in opts.variants:
        variants.append(Classic(copy.deepcopy(teacher), model(opts.student, opts.seed),
                                data.to("cpu"), opts, device, workers, threads, weights,
                                options["T"]))
        variants[-1].flops = flops
    engine_data = data.to(device)
    if "engine" in opts.variants:
        variants.append(engine_variant(default, "engine",
                                       "(b) kdbench engine, default settings"))
    if "grid" in opts.variants:
        for s in _grid(default, cores):
            variants.append(engine_variant(s, f"grid:{s.key}", "(g) engine"))
    if "compute" in opts.variants:
        variants.append(engine_variant(default, "compute",
                                       "(c) compute bound: one pre-made device batch",
                                       fixed_batch=True))
    if "teacher" in opts.variants:
        loader = BatchLoader(engine_data, "train", opts.batch_size, train=True, seed=opts.seed,
                             device=device, channels_last=default.channels_last)
        x = next(iter(loader.epoch(0)))[0].clone()
        for fuse in (False, True):
            s = default.but(fuse=fuse)
            v = TeacherForward(teacher_for(s), x, device, s)
            v.name = f"teacher:{'fused' if fuse else 'plain'}"
            v.label = f"(t) teacher forward alone, {'fused' if fuse else 'unfused'}"
            v.flops = t_flops
            variants.append(v)
    if "lockstep" in opts.variants and opts.lockstep > 0:
        variants.append(engine_variant(
            default, "lockstep", f"(d) lockstep: {opts.lockstep} students, one teacher forward",
            n=opts.lockstep))
    compiled: list[torch.nn.Module] = []
    if "compiled" in opts.variants:
        v = engine_variant(default, "compiled", "(k) engine, default settings, torch.compile")
        v.teacher = copy.deepcopy(v.teacher)  # compiled apart from the eager variants' teacher
        v.settings += ", compiled"
        compiled = [t.model for t in v.trainees] + [v.teacher]
        variants.append(v)
    if "peak" in opts.variants:
        variants.append(Gemm(opts.peak_size, device, threads, opts.seed))
        variants.append(Conv(opts.peak_size // 8, device, threads, opts.seed))

    times: dict[str, list[float]] = {v.name: [] for v in variants}
    peaks: dict[str, int] = {}
    added: dict[str, int] = {}
    warmup_s: dict[str, float] = {}
    round_load: list[float] = []
    models = [m for v in variants if isinstance(v, Engine) and v.name != "compiled" for m in
              [t.model for t in v.trainees]] + list(teachers.values())
    try:
        with engine.prepared(models, compile=opts.compile), \
                engine.prepared(compiled, compile=True):
            for v in variants:
                say(f"warm-up {v.name}")
                torch.set_num_threads(v.threads)
                t0 = time.perf_counter()
                for _ in range(opts.warmup):
                    v.step()
                _sync(device)
                warmup_s[v.name] = time.perf_counter() - t0
            for r in range(opts.rounds):
                for v in variants:
                    torch.set_num_threads(v.threads)
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
                round_load.append(os.getloadavg()[0])
                say(f"round {r + 1}/{opts.rounds} (load {round_load[-1]:.1f}): " + ", ".join(
                    f"{v.name} {opts.steps * (v.images or 1) / times[v.name][-1]:.1f}"
                    f"{' img/s' if v.images else ' steps/s'}" for v in variants))
    finally:
        for v in variants:
            v.close()
        torch.set_num_threads(threads)

    results: dict[str, Any] = {}
    for v in variants:
        per_round = [opts.steps * (v.images or 1) / t for t in times[v.name]]
        rate = _median(per_round)  # images/s (steps/s for the GEMM)
        results[v.name] = {
            "label": v.label, "settings": v.settings, "images_per_s": rate if v.images else None,
            "per_round": per_round, "flops_per_s": v.flops * rate / (v.images or 1),
            "peak_memory_mib": peaks.get(v.name, 0) / 2**20,
            "step_memory_mib": added.get(v.name, 0) / 2**20,
            "warmup_seconds": warmup_s.get(v.name)}
        if isinstance(v, Engine) and v.name.startswith(("engine", "grid")):
            results[v.name]["setting"] = asdict(v.setting)
    measured = [v["flops_per_s"] for k, v in results.items() if k.startswith("peak:")]
    peak = {"measured_gflops": max(measured) / 1e9 if measured else None,
            "nominal": nominal_peak(cores)}
    return {"options": asdict(opts), "resolved": {
        "device": str(device), "cores": cores, "threads": threads, "default": asdict(default),
        "workers": workers, "data": data.name,
        "num_train": len(data.train), "flops_per_step": flops, "teacher_forward_flops": t_flops,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "teacher_fusion": fusion.describe(), "load_before": load_before,
        "busy_cpus_before": busy_before,
        "load_rounds": round_load, "load_after": os.getloadavg()},
        "env": environment(device), "variants": results, "peak": peak,
        "ratios": _ratios(results, default, peak)}


def _ratios(results: dict[str, Any], default: Setting, peak: dict[str, Any]
            ) -> dict[str, Any]:
    ips = {k: v["images_per_s"] for k, v in results.items() if v["images_per_s"]}
    out: dict[str, Any] = {}
    if "classic" in ips and "engine" in ips:
        out["engine_over_classic"] = ips["engine"] / ips["classic"]
    candidates = {k: v for k, v in ips.items() if k == "engine" or k.startswith("grid:")}
    if len(candidates) > 1:
        best = max(candidates, key=candidates.__getitem__)
        out["best"] = best
        out["best_settings"] = results[best]["settings"]
        if "classic" in ips:
            out["best_over_classic"] = ips[best] / ips["classic"]
        if "engine" in ips:
            out["engine_over_best"] = ips["engine"] / ips[best]
    # the fusion gain on a whole step, at the default's threads and layout
    twin = default.but(fuse=not default.fuse).key
    plain, fused = ("engine", f"grid:{twin}") if not default.fuse else (f"grid:{twin}", "engine")
    if plain in ips and fused in ips:
        out["fusion_gain_step"] = ips[fused] / ips[plain]
    if "teacher:plain" in ips and "teacher:fused" in ips:
        out["fusion_gain_teacher_forward"] = ips["teacher:fused"] / ips["teacher:plain"]
        own = "teacher:fused" if default.fuse else "teacher:plain"
        if "engine" in ips:  # time per batch of the forward over time per batch of the step
            out["teacher_forward_share"] = ips["engine"] / ips[own]
    if "classic" in ips and "compute" in ips:
        out["compute_over_classic"] = ips["compute"] / ips["classic"]
    if "engine" in ips and "compute" in ips:
        out["engine_over_compute"] = ips["engine"] / ips["compute"]
    if "engine" in ips and "compiled" in ips:
        out["compile_gain"] = ips["compiled"] / ips["engine"]
    if "classic" in ips and "compiled" in ips:
        out["compiled_over_classic"] = ips["compiled"] / ips["classic"]
    if "engine" in ips and "lockstep" in ips:
        # N separate runs take N times one run's time per batch
        out["lockstep_speedup"] = ips["lockstep"] / ips["engine"]
    if peak["measured_gflops"] and "engine" in results:
        out["engine_of_measured_peak"] = (results["engine"]["flops_per_s"]
                                          / (peak["measured_gflops"] * 1e9))
    if peak["nominal"].get("gflops") and "engine" in results:
        out["engine_of_nominal_peak"] = (results["engine"]["flops_per_s"]
                                         / (peak["nominal"]["gflops"] * 1e9))
    return out


RATIO_NAMES = {
    "engine_over_classic": "engine (default settings) / classic",
    "best_over_classic": "engine (best settings) / classic",
    "engine_over_best": "engine default / best setting",
    "fusion_gain_step": "teacher fusion: step speed-up",
    "fusion_gain_teacher_forward": "teacher fusion: teacher-forward speed-up",
    "teacher_forward_share": "teacher forward / default step (time per batch)",
    "compute_over_classic": "compute bound / classic",
    "engine_over_compute": "engine / compute bound (data-path efficiency)",
    "lockstep_speedup": "lockstep of N / N separate runs",
    "compile_gain": "torch.compile: step speed-up over the eager default",
    "compiled_over_classic": "engine compiled / classic",
    "engine_of_measured_peak": "engine GFLOP/s / measured fp32 peak",
    "engine_of_nominal_peak": "engine GFLOP/s / nominal fp32 peak",
}
PERCENT = {"engine_over_best", "teacher_forward_share", "engine_over_compute",
           "engine_of_measured_peak", "engine_of_nominal_peak"}


def _busy(cpus: float | None) -> str:
    return "an unknown number of CPUs" if cpus is None else f"{cpus:.2f} CPUs"


def format_report(result: dict[str, Any]) -> str:
    """The figures as a table plus the ratios and the conditions they were taken in."""
    from tabulate import tabulate

    r, o, peak = result["resolved"], result["options"], result["peak"]
    nominal = peak["nominal"].get("gflops")
    measured = peak["measured_gflops"]
    rows = []
    for v in result["variants"].values():
        spread = v["per_round"]
        gflops = v["flops_per_s"] / 1e9
        rate = (f"{v['images_per_s']:.1f}" if v["images_per_s"] else "—")
        rows.append((v["label"], v["settings"], rate,
                     f"{min(spread):.1f}–{max(spread):.1f}" if v["images_per_s"] else "—",
                     f"{gflops:.1f}", f"{100 * gflops / measured:.0f}%" if measured else "—",
                     f"{100 * gflops / nominal:.0f}%" if nominal else "—",
                     f"{v['peak_memory_mib']:.0f}", f"{v['step_memory_mib']:.0f}"))
    table = tabulate(rows, headers=["variant", "settings", "images/s (median)", "range",
                                    "GFLOP/s", "of measured peak", "of nominal peak", "peak MiB",
                                    "+MiB in steps"], disable_numparse=True)
    lines = []
    for k, v in result["ratios"].items():
        if k in ("best", "best_settings"):
            continue
        name = RATIO_NAMES[k].replace("N", str(o["lockstep"])) if k == "lockstep_speedup" \
            else RATIO_NAMES[k]
        lines.append(f"  {name}: {100 * v:.0f}%" if k in PERCENT else f"  {name}: {v:.2f}×")
    if "best" in result["ratios"]:
        lines.append(f"  best setting: {result['ratios']['best_settings']}")
    d = Setting(**r["default"])
    fusion = r["teacher_fusion"]
    head = (f"{o['teacher']} → {o['student']} KD (T = 4), batch {o['batch_size']}, {r['data']} "
            f"({r['num_train']} images), {r['device']} "
            f"({result['env']['device_name'] or cpu_name()}, {r['cpu_capability']}, "
            f"{r['cores']} cores)"
            f"{' compiled' if o['compile'] else ''}, default settings: {d.describe()}; "
            f"OMP_WAIT_POLICY={result['env'].get('omp_wait_policy') or 'unset (runtime default)'}"
            f"; teacher fusion folds {fusion['folded']} of {fusion['batchnorms']} BatchNorms; "
            f"{o['rounds']} rounds × {o['steps']} steps; other processes kept "
            f"{_busy(r.get('busy_cpus_before'))} busy at the start; load average "
            f"{r['load_before'][0]:.1f} → "
            f"{' → '.join(f'{x:.1f}' for x in r['load_rounds'])} (after each round)")
    peaks = (f"fp32 peak: measured {measured:.0f} GFLOP/s (the faster of the GEMM and the "
             f"3×3 conv)" if measured else "fp32 peak: not measured")
    peaks += (f"; nominal {nominal:.0f} GFLOP/s = {peak['nominal']['how']}" if nominal
              else f"; nominal {peak['nominal']['how']}")
    return f"{head}\n{table}\n{peaks}\nratios (medians):\n" + "\n".join(lines)
