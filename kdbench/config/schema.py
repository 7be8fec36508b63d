"""The run configuration's typed dataclasses: every field of a run and its default.

:class:`RunConfig` is the whole; its sections are the recipe, the data, the teacher, the loss,
the evaluators and the engine settings. Building one from presets, files and flags is
:mod:`.layering`; checking and completing it is :mod:`.resolve`; its id is :mod:`.identity`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..spec import from_dict
from .identity import run_id
from .resolve import resolve


def resolve_precision(precision: str, device: str) -> str:
    """:func:`kdbench.device.resolve_precision`, imported when first needed: it loads torch,
    which ``kdbench --help`` and the commands that train nothing do without."""
    from ..device import resolve_precision as resolve

    return resolve(precision, device)


@dataclass
class Recipe:
    """Optimisation recipe: shared shape for teacher training and distillation.

    ``momentum`` and ``nesterov`` are SGD's; another optimiser's own settings (Adam's betas)
    go in ``optimizer_options``. ``warmup_epochs`` puts a linear lr warm-up in front of any
    schedule.

    ``reset_optimizer`` says when the optimiser is re-created (its state, e.g. Adam's moment
    estimates, thrown away): ``"never"`` (the default: one optimiser per stage, its state kept
    across lr changes, as RepDistiller and most KD code do), ``"lr_change"`` (a fresh optimiser
    at every epoch whose lr differs from the previous epoch's: the reference baselines of
    InDistill, which build a new Adam per lr phase) or ``"epoch"`` (a fresh optimiser every
    epoch: InDistill's ``kd_from_aux_to_student.py``, line 22).
    """

    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "multistep"  # a registered schedule: multistep | step | cosine | constant ...
    milestones: list[int] = field(default_factory=list)  # multistep: epochs where lr ×= gamma
    step_size: int = 0  # step: lr ×= gamma every step_size epochs
    gamma: float = 0.1
    optimizer: str = "sgd"  # a registered optimiser: sgd | adam | adamw ...
    optimizer_options: dict[str, Any] = field(default_factory=dict)
    schedule_options: dict[str, Any] = field(default_factory=dict)
    warmup_epochs: int = 0
    reset_optimizer: str = "never"  # never | lr_change | epoch


@dataclass
class DataConfig:
    name: str = "digits"
    dir: str | None = None  # where the files are: not part of the run's identity
    augment: bool = True
    options: dict[str, Any] = field(default_factory=dict)  # the dataset factory's keyword args
    #: data transforms applied in order after loading: [{name: subset, per_class: 500}, ...]
    transforms: list[dict[str, Any] | str] = field(default_factory=list)
    augmentation: str = "crop_flip"  # the batch augmentation (a registered name)
    augmentation_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TeacherConfig:
    source: str = "full"
    arch: str = "resnet56"
    seed: int = 0  # teachers are shared across student seeds, as in RepDistiller
    recipe: Recipe = field(default_factory=Recipe)
    save_every: int = 0  # 0: every max(1, epochs // 10) epochs; the last epoch is always saved
    save_epochs: list[int] = field(default_factory=list)  # explicit list, overrides save_every
    epoch: int | None = None  # checkpoint for `intermediate` (None: half-way)
    weights: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # source-specific settings
    #: the data the teacher trains on (None: the student's) — e.g. clean labels for the teacher
    data: DataConfig | None = None
    #: when a trajectory is tested: every epoch, or only at its saved checkpoints (cheaper;
    #: the running training accuracy is kept every epoch either way). Not part of any id.
    evaluate: str = "epochs"
    #: the teacher's BatchNorm while it teaches (:data:`kdbench.engine.teacher_bn.MODES`):
    #: "eval" (running statistics, RepDistiller's and mdistiller's), "batch" (each batch's own
    #: statistics, running ones left as they are) or "checkpointkd" (the official Checkpoint-KD
    #: code: train mode, running statistics updated, until the last 9 student epochs)
    bn: str = "eval"
    #: a teacher from ``weights`` whose classifier does not fit the task is adapted before any
    #: student sees it (kdbench.teachers.adapt): ``auto`` (a linear probe when the head does
    #: not fit, nothing otherwise), ``linear``, ``finetune`` or ``none``, with its own recipe
    adapt: str = "auto"
    adapt_recipe: Recipe = field(default_factory=lambda: Recipe(
        epochs=10, lr=0.05, schedule="cosine", weight_decay=0.0))
    #: a teacher from weights whose test top-1 is within a few points of chance stops the run
    #: unless this is set
    allow_weak: bool = False
    #: the teacher architecture's own options (timm's drop_path_rate, ...)
    model_options: dict[str, Any] = field(default_factory=dict)

    def checkpoint_epochs(self) -> list[int]:
        epochs = self.recipe.epochs
        if self.save_epochs:
            chosen = set(self.save_epochs)
        else:
            every = self.save_every or max(1, epochs // 10)
            chosen = set(range(every, epochs + 1, every))
        return sorted(chosen | {epochs})


@dataclass
class LossConfig:
    name: str = "kd"
    weights: dict[str, float] = field(default_factory=dict)  # w_ce and w_<term>
    options: dict[str, Any] = field(default_factory=dict)  # e.g. T


@dataclass
class EngineConfig:
    """How the engine runs a config: speed only, so not part of the run's identity."""

    channels_last: bool | None = None  # NHWC convolutions; None: the engine's default per device
    compile: bool = False  # torch.compile the student and teacher models
    threads: int = 0  # torch threads; 0: every core the process may use
    ensemble_vmap: bool = False  # ensemble teachers of one architecture: one vmapped forward
    fuse_teacher: bool = False  # fold the frozen teacher's BatchNorm into its convolutions
    #: DataLoader workers decoding a streamed dataset (0: one per core, at most 8)
    workers: int = 0
    pin_memory: bool | None = None  # page-locked batches, copied non-blocking; None: on CUDA
    cudnn_benchmark: bool = False  # let cuDNN pick the fastest kernels (not bitwise repeatable)
    sync_bn: bool = False  # a distributed run's BatchNorm statistics over all ranks (CUDA)


def _default_evaluators() -> list[dict[str, Any]]:
    return [{"name": "accuracy"}]


@dataclass
class EvalConfig:
    """What is measured: evaluator plugins (``--eval NAME``), and the metric that picks the
    best epoch."""

    evaluators: list[dict[str, Any] | str] = field(default_factory=_default_evaluators)
    best_metric: str = "top1"


@dataclass
class RunConfig:
    """Everything that defines one run. ``run_id`` hashes all of it but the paths and device."""

    preset: str = "quick"
    data: DataConfig = field(default_factory=DataConfig)
    student: str = "resnet20"
    student_weights: str | None = None
    #: the student architecture's own options (timm's drop_path_rate, out_indices, ...)
    student_options: dict[str, Any] = field(default_factory=dict)
    teacher: TeacherConfig | None = field(default_factory=TeacherConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    recipe: Recipe = field(default_factory=Recipe)
    #: warm-up stages before the loss's own (``--warmup NAME[:k=v]``): [{name: ..., ...}]
    warmup: list[dict[str, Any] | str] = field(default_factory=list)
    eval: EvalConfig = field(default_factory=EvalConfig)
    #: loggers (``--log NAME``): where progress goes besides the record; not part of the id
    log: list[dict[str, Any] | str] = field(default_factory=list)
    seed: int = 0
    precision: str = "auto"
    device: str = "auto"
    results_dir: str = "results"
    #: keep the student's last and best weights beside the record (``--no-keep``: don't);
    #: where a run's files go, not what it is, so not part of the id
    keep: bool = True
    engine: EngineConfig = field(default_factory=EngineConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        return from_dict(cls, data, "")

    @property
    def resolved_precision(self) -> str:
        """The precision the run computes in here: ``auto`` resolved for this machine's device
        (the config, and so the run id, keep what was asked for)."""
        return resolve_precision(self.precision, self.device)

    @property
    def teacher_data(self) -> DataConfig:
        """The data the teacher trains on: its own (``teacher.data``), else the student's."""
        return self.teacher.data if self.teacher is not None and self.teacher.data is not None \
            else self.data

    @property
    def run_id(self) -> str:
        """The id of this run: the hash of the resolved config (defaults filled in)."""
        return run_id(resolve(self))
