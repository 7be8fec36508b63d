"""The plugin contract: every pluggy hook kdbench calls, grouped by phase.

Registration hooks receive a ``register`` callable and return nothing; a plugin calls
``register(name, factory, description=..., **metadata)`` once per thing it provides. kdbench
calls each plugin's implementation separately, so it knows which plugin registered what and can
name both sources when two claim the same name. All implementations are called (no firstresult).

Lifecycle hooks are notify-all: every implementation is called, return values are ignored, and
they must never change the training result (loggers, extra per-run columns, dashboards).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    import click

hookspec = pluggy.HookspecMarker("kdbench")
hookimpl = pluggy.HookimplMarker("kdbench")

Register = Callable[..., None]


# -- registration: called once per process, when a registry is first needed ---------------------

@hookspec
def register_models(register: Register) -> None:
    """Register architectures: ``register(name, factory, description=, family=)``.

    ``factory(num_classes, in_chans, **kwargs) -> kdbench.models.KDModel``. A name ending in
    ``/*`` registers a namespace: ``timm/resnet18`` resolves to the ``timm/*`` factory called
    with ``variant="resnet18"``.
    """


@hookspec
def register_datasets(register: Register) -> None:
    """Register datasets: ``register(name, factory, description=)``.

    ``factory(data_dir, **options) -> kdbench.data.Dataset`` (train and test splits).
    """


@hookspec
def register_losses(register: Register) -> None:
    """Register KD losses: ``register(name, factory, description=, paper=, defaults=, taps=)``.

    ``factory(ctx: kdbench.losses.DistillContext) -> kdbench.losses.Distiller``. ``defaults``
    holds every weight (``w_*``) and option with its default; they appear in ``kdbench losses``
    and in each record. Optional: ``combo`` (weights used when the loss is added to another, as
    in ``crd+kd``) and ``finalize(weights, options, student=, teacher=)`` (defaults that depend
    on the architecture names, filled in when the config is resolved).
    """


@hookspec
def register_teacher_sources(register: Register) -> None:
    """Register teacher sources: ``register(name, factory, description=, features=, resolve=)``.

    ``factory(ctx: kdbench.teachers.TeacherContext) -> kdbench.teachers.Teacher``.
    ``features=False`` says the teacher gives logits only (feature losses are refused before
    training). ``resolve(config)`` checks and completes the source's settings (``teacher.options``
    defaults, ``teacher.epoch``/``teacher.weights``) during config resolution; see
    :func:`kdbench.teachers.options.settings`. ``seeds(config) -> [int]`` names the
    trajectory seeds the source draws from when it is more than ``teacher.seed`` (an independent
    ensemble), so they can be trained ahead (``kdbench teacher train``).
    """


@hookspec
def register_mi_estimators(register: Register) -> None:
    """Register mutual-information estimators: ``register(name, factory, description=, unit=,
    bound=, defaults=, paper=)``.

    ``factory(**settings)`` returns an estimator (usually a :class:`kdbench.mi.base.Estimator`
    subclass) with ``estimate(t, x, y, *, seed, device) -> kdbench.mi.base.Estimate``: features
    T (N, ...) of N probe samples, inputs X (N, ...), labels Y (N,) → I(X;T) and I(T;Y) in nats,
    or a dependence score (``unit="score"``), and the settings used. ``min_samples`` and
    ``stochastic`` (repeats make sense) are read if present; a diverged training raises
    :class:`kdbench.mi.base.EstimatorDiverged`.
    """


@hookspec
def register_executors(register: Register) -> None:
    """Register sweep executors: ``register(name, factory, description=)``."""


# -- behaviour: how a run trains, what it measures, what is done to its data ---------------------

@hookspec
def register_stages(register: Register) -> None:
    """Register training stages placed before the main one (``--warmup NAME``):
    ``register(name, factory, description=, paper=, defaults=, types=)``.

    ``factory(ctx: kdbench.stages.StageContext, **options) -> kdbench.stages.Stage`` (or a list of
    them). ``defaults`` holds every option with its default; the common ones (``epochs``,
    ``optimizer``, ``lr``, ``schedule``, ``label_weight``, ``within_budget``) are read by
    :func:`kdbench.stages.stage_from_options`. Each stage names the parameters it trains, its
    optimiser and lr schedule, its epochs, the loss it optimises (called with the epoch within
    the stage and the stage's name) and the teacher view it sees.
    """


@hookspec
def register_optimizers(register: Register) -> None:
    """Register optimisers: ``register(name, factory, defaults=, types=)``;
    ``factory(params, lr=, **options) -> torch.optim.Optimizer``."""


@hookspec
def register_schedules(register: Register) -> None:
    """Register lr schedules: ``register(name, factory, defaults=, types=)``;
    ``factory(epochs, **options)`` returns ``epoch -> factor`` of the base lr (epoch 0-based)."""


@hookspec
def register_evaluators(register: Register) -> None:
    """Register evaluators: ``register(name, factory, needs=, metrics=, every=, lower_is_better=,
    defaults=)``.

    ``needs`` ⊆ {test_logits, test_embedding, train_logits, train_embedding} (train = the
    un-augmented training split); ``every`` = 1 evaluates each epoch, N every N epochs, 0 only
    after the last epoch (expensive evaluators). ``factory(ctx: kdbench.evaluators.EvalContext,
    **options)`` returns a callable ``(outputs: kdbench.evaluators.Outputs) -> {metric: float}``
    whose keys are the declared ``metrics``. Records keep ``<metric>_last``, ``<metric>_best``
    and the curve of every metric.
    """


@hookspec
def register_data_transforms(register: Register) -> None:
    """Register data transforms: ``register(name, factory, splits=, needs_labels=, defaults=,
    types=)``.

    ``factory(**options)`` returns an object with ``apply(split: kdbench.data.Split, *,
    num_classes: int, split_name: str) -> (Split, report: dict)``; it is applied after the
    dataset plugin to the ``splits`` it declares (the training split by default), in the order
    of ``data.transforms``, and its report (what it really did) goes into the record.
    """


@hookspec
def register_augmentations(register: Register) -> None:
    """Register batch augmentations: ``register(name, factory, defaults=, types=)``;
    ``factory(dataset, **options)`` returns ``augment(images: uint8 (N, C, H, W), generator) ->
    images``, run on whole device-resident batches (``data.augmentation``, and the extra views a
    loss asks for)."""


@hookspec
def register_table_layouts(register: Register) -> None:
    """Register table layouts of ``kdbench table --layout NAME``: ``register(name, factory,
    description=)``; ``factory(df, **options) -> str`` with the options of ``kdbench table``
    (rows, cols, metric, where, fmt, digits)."""


@hookspec
def register_loggers(register: Register) -> None:
    """Register loggers (``--log NAME``): ``register(name, factory, package=, defaults=,
    types=)``; ``factory(results_dir=, **options)`` returns an object with ``start(record)``,
    ``epoch(run_id, row)`` and ``end(record)`` (see :mod:`kdbench.loggers`). A logger watches
    and never changes a run; one that raises is switched off with a warning."""


@hookspec
def register_report_figures(register: Register) -> None:
    """Register figures of ``kdbench report``: ``register(name, factory, description=)``;
    ``factory(study) -> list[Figure]`` draws what one study of a results store holds (an empty
    list where it has nothing to draw); see :mod:`kdbench.report`."""


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add Click commands to the ``kdbench`` group (``cli.command()`` / ``cli.add_command``)."""


# -- lifecycle: notify-all, return values ignored -------------------------------------------------

@hookspec
def kdbench_run_start(config: dict[str, Any], run_id: str, record: dict[str, Any]) -> None:
    """Called when a run starts training, with its resolved config as a dict and its record as
    it stands then (teacher provenance, environment, stages)."""


@hookspec
def kdbench_epoch_end(run_id: str, epoch: int, metrics: dict[str, float]) -> None:
    """Called after every epoch of a run (and of teacher training: run_id = its key) with every
    number of its row: the evaluators' metrics, the loss terms (``train_*``), the lr."""


@hookspec
def kdbench_run_end(record: dict[str, Any]) -> None:
    """Called with the final record of a run (status done or failed), before it is written.

    Implementations may add keys under ``record["extra"]``; nothing else may be changed.
    """
