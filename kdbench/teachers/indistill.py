"""InDistill on kdbench's seams: the layer-curriculum warm-up stage and the auxiliary teacher.

Sarridis, Koutlis, Kordopatis-Zilos, Kompatsiaris, Papadopoulos, "InDistill: Information
flow-preserving knowledge distillation for model compression", WACV 2025 (arXiv 2205.10003);
official code github.com/gsarridis/InDistill.

* :func:`indistill_stage` (``--warmup indistill``): the student's stages are distilled one at a
  time, shallow to deep, from a teacher view pruned to the student's widths
  (:class:`~kdbench.teachers.prune.PrunedTeacherView`), on InDistill's curriculum; then the run's
  own loss (``--loss pkt_indistill``, ``kd``, ``dkd``, ``crd``, …) takes the remaining epochs.
* :func:`auxiliary` (``--teacher auxiliary``): the teacher the student sees is an auxiliary
  network (``teacher.arch``, e.g. ``cnn32``) distilled from a larger one
  (``teacher.options.large_arch``), trained once and kept like a teacher trajectory.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import ConfigError, UnknownNameError
from ..hookspecs import hookimpl
from ..losses.pkt_indistill import curriculum_epochs, curriculum_layer, layer_mse
from ..models import Features
from ..stages.base import Batch, Stage, StageContext, stage_from_options
from . import options as opt
from . import trajectory as traj
from .base import Teacher, TeacherContext
from .prune import BATCHNORM_MODES, RESIDUAL_RULES, PrunedTeacherView

# ============================== the warm-up stage ==============================================

#: the stage's own options (the common ones are :data:`kdbench.stages.COMMON_OPTIONS`)
STAGE_DEFAULTS: dict[str, Any] = {"a": 2, "layers": None, "batchnorm": "running_stats",
                                  "residual": "stream_l1_sum"}
STAGE_TYPES: dict[str, Any] = {"a": int, "layers": list[int] | None}


def _choose_layers(ctx: StageContext, layers: list[int] | None) -> list[int]:
    """The student stages to distil (default: all), checked against both models."""
    n_s = len(ctx.student.stage_info)
    n_t = len(ctx.teacher.stage_info)
    if layers is None:
        layers = list(range(n_s))
    layers = [int(i) for i in layers]
    if not layers or sorted(set(layers)) != layers or layers[0] < 0 or layers[-1] >= n_s:
        raise ConfigError(f"stage 'indistill' layers {layers} are invalid (valid: increasing "
                          f"student stage indices in 0 to {n_s - 1})")
    if layers[-1] >= n_t:
        raise ConfigError(f"stage 'indistill' distils student stage {layers[-1]} but the teacher "
                          f"({type(ctx.teacher).__name__}) has only {n_t} stages (valid: layers "
                          f"in 0 to {n_t - 1})")
    return layers


def indistill_stage(ctx: StageContext, **options: Any) -> Stage:
    """InDistill's warm-up: per epoch one student stage, shallow to deep, regresses (MSE) the
    map of a teacher view pruned to the student's width; no label loss by default.

    Layer ``k`` of the ``L`` chosen ones (``layers``, student stage indices paired with the
    teacher's stages of the same index; default all) is trained for ``a + 1 + k`` epochs
    (:func:`~kdbench.losses.indistill.curriculum_epochs`; 3, 4, 5 for the reference's L = 3,
    a = 2). Per batch the loss is ``mean((P_k(T)(x) − S_k(x))²)`` over batch and features
    (:func:`~kdbench.losses.indistill.layer_mse`), with ``P_k(T)`` the teacher's stage ``k``
    structurally L1-pruned to the student's width and fed by the *unpruned* teacher's stage
    ``k − 1`` (:class:`~kdbench.teachers.prune.PrunedTeacherView`; ``batchnorm`` and
    ``residual`` are its options). The term is logged as ``mse_layer<k>``, so each epoch's
    record row names its layer. The stage's epochs are the curriculum's sum unless ``epochs``
    is given: fewer cut the curriculum short, more stay on the deepest layer.

    Official (``kd_from_aux_to_student.py`` lines 15–60, ``prune.py``): a = 2, conv1..conv3 of
    Cnn32_Small against the pruned auxiliary Cnn32, Adam at the run's lr (1e-3), no label loss,
    the warm-up's 12 epochs inside the run's 60 + 10 (``within_budget=true``, the default); the
    reference also builds a new Adam every epoch, which kdbench does when the recipe says
    ``reset_optimizer: epoch`` (the ``indistill`` preset does).

    Where kdbench differs: ``label_weight`` can add ``w·CE`` (default none, as the reference);
    the pruned layers' BatchNorm uses the teacher's running statistics by default
    (``batchnorm=batch_stats_gamma_only`` is the reference's, see
    :class:`~kdbench.teachers.prune.PrunedTeacherView`); the teacher view is computed from the
    teacher forward the engine makes anyway (every chosen layer's pruned map, every batch).
    """
    own = {k: options.get(k, v) for k, v in STAGE_DEFAULTS.items()}
    if ctx.teacher is None:
        raise ConfigError("stage 'indistill' needs a fixed teacher to prune (valid: a loss and "
                          "teacher source with a teacher network, not --teacher peers)")
    if own["batchnorm"] not in BATCHNORM_MODES:
        raise UnknownNameError("stage 'indistill' batchnorm", str(own["batchnorm"]),
                               BATCHNORM_MODES)
    if own["residual"] not in RESIDUAL_RULES:
        raise UnknownNameError("stage 'indistill' residual", str(own["residual"]),
                               RESIDUAL_RULES)
    a = own["a"]
    if isinstance(a, bool) or not isinstance(a, int) or a < 0:
        raise ConfigError(f"stage 'indistill' a must be an integer >= 0 (the paper uses 2), "
                          f"got {a!r}")
    layers = _choose_layers(ctx, own["layers"])
    widths = [ctx.student.stage_info[i].channels for i in layers]
    size = tuple(ctx.input_shape[1:])
    s_shapes = ctx.student.stage_shapes(size)
    t_shapes = ctx.teacher.stage_shapes(size)
    for i in layers:
        if s_shapes[i][1:] != t_shapes[i][1:]:
            raise ConfigError(f"stage 'indistill' layer {i}: the student's map is "
                              f"{'×'.join(map(str, s_shapes[i]))} but the teacher's is "
                              f"{'×'.join(map(str, t_shapes[i]))}; MSE needs equal spatial "
                              f"sizes (valid: a teacher whose stage {i} has the student's "
                              f"resolution)")
    view = PrunedTeacherView(ctx.teacher, widths, layers, batchnorm=own["batchnorm"],
                             residual=own["residual"])
    n = len(layers)
    schedule = curriculum_epochs(n, a)

    def teacher_view(feats: Features, batch: Batch) -> Features:
        # the pruned maps, in the order of ``layers``
        return Features(feats.logits, feats.embedding, view.from_features(batch.x, feats))

    def loss(student: Features, teacher: Features, batch: Batch, epoch: int, stage: str,
             views: Any = None) -> dict[str, Any]:
        k = curriculum_layer(epoch, n, a)
        k = n - 1 if k is None else k
        return {f"mse_layer{layers[k]}": layer_mse(teacher.stages[k], student.stages[layers[k]])}

    return stage_from_options("indistill", ctx, options, loss=loss,
                              parameters=list(ctx.student.parameters()),
                              default_epochs=sum(schedule), student="features",
                              teacher="features", teacher_view=teacher_view)


# ============================== the auxiliary teacher ==========================================

#: The auxiliary's distillation (``kd_from_teacher_to_aux.py``): PKT on the embedding, no label
#: loss, Adam lr 1e-3 for 50 epochs (one Adam for the phase), batch 128, no weight decay.
DISTILL_RECIPE: dict[str, Any] = {"epochs": 50, "lr": 1e-3, "optimizer": "adam",
                                  "schedule": "constant", "milestones": [], "weight_decay": 0.0,
                                  "reset_optimizer": "never"}
INITS = ("baseline", "scratch")
SOURCE_DEFAULTS: dict[str, Any] = {"large_arch": None, "init": "baseline",
                                   "loss": "pkt_indistill", "loss_weights": {},
                                   "loss_options": {}, "distill_recipe": {}}


def _check_auxiliary(config: Any) -> None:
    """The auxiliary source's options, completed (every value the auxiliary depends on is in the
    record and the run id) and checked before any training."""
    from ..config import Recipe
    from ..config.resolve import check_recipe  # the recipe checks every recipe gets
    from ..losses import resolve as resolve_loss
    from ..plugins import get
    from ..spec import coerce_options, from_dict

    t = config.teacher
    o = t.options
    if not o["large_arch"]:
        raise ConfigError("teacher source 'auxiliary' needs teacher.options.large_arch, the "
                          "large teacher the auxiliary (teacher.arch) is distilled from")
    get("model", o["large_arch"])
    if o["init"] not in INITS:
        raise UnknownNameError("teacher source 'auxiliary' init", str(o["init"]), INITS)
    loss = get("loss", o["loss"])
    if not loss.teacher_needed:
        raise ConfigError(f"teacher source 'auxiliary' distils with loss {o['loss']!r}, which "
                          f"uses no teacher (valid: a distillation loss, e.g. pkt_indistill)")
    o["loss_weights"], o["loss_options"] = resolve_loss(
        o["loss"], o["loss_weights"], o["loss_options"], student=t.arch,
        teacher=o["large_arch"])
    # over the teacher's recipe (its batch size), but not its optimiser's own options
    base = {**dataclasses.asdict(t.recipe), "optimizer_options": {}, "schedule_options": {},
            **DISTILL_RECIPE}
    recipe = coerce_options(o["distill_recipe"], base, "teacher.options.distill_recipe",
                            kind="field")
    r = from_dict(Recipe, recipe, "teacher.options.distill_recipe.")
    check_recipe(r, "teacher.options.distill_recipe")
    o["distill_recipe"] = dataclasses.asdict(r)


#: the source's settings (``teacher.options``), checked when the config is resolved
resolve_auxiliary = opt.settings(SOURCE_DEFAULTS, check=_check_auxiliary)


def _large_config(config: Any) -> Any:
    """The run's config with the large teacher in the teacher's place (its trajectory's spec)."""
    return dataclasses.replace(config, teacher=dataclasses.replace(
        config.teacher, arch=config.teacher.options["large_arch"], options={}))


def auxiliary_spec(config: Any) -> dict[str, Any]:
    """What determines the auxiliary's weights: the auxiliary's architecture, data and seed (as
    a trajectory), the distillation recipe, loss (weights, options), the large teacher's
    trajectory key and the baseline trajectory it starts from (None: from scratch)."""
    from ..config import drop_later_defaults

    o = config.teacher.options
    spec = traj.trajectory_spec(config)
    large = traj.trajectory_key(traj.trajectory_spec(_large_config(config)))
    init = traj.trajectory_key(spec) if o["init"] == "baseline" else None
    spec["recipe"] = drop_later_defaults(dict(o["distill_recipe"]), "teacher.recipe.",
                                         config=config)
    spec["distill"] = {"loss": o["loss"], "weights": o["loss_weights"],
                       "options": o["loss_options"], "teacher": large, "init": init}
    return spec


def auxiliary(ctx: TeacherContext) -> Teacher:
    """An auxiliary teacher: ``teacher.arch`` distilled from the converged large teacher
    (``teacher.options.large_arch``), trained once and reused; the student's teacher.

    InDistill's pipeline (``train_baselines.py``, ``kd_from_teacher_to_aux.py``): the large
    teacher (ResNet-18 there) and the auxiliary (Cnn32) are first trained on the labels with the
    same recipe (``teacher.recipe``: Adam 1e-3 for 50 epochs, then 1e-4 for 30, a new Adam per
    phase); then the auxiliary, *starting from its baseline*, is distilled with PKT on the
    embedding (the large teacher's 512-d pooled vector vs the auxiliary's 128-d fc1 output, no
    label loss) with Adam 1e-3 for 50 epochs, batch 128, no weight decay
    (``teacher.options.distill_recipe``, over ``teacher.recipe``).

    Stored like teacher trajectories, each under ``<results>/teachers/<key>/`` with a manifest
    and SHA-256-checked checkpoints: the large teacher's trajectory (key: its architecture,
    data, ``teacher.recipe``, seed, precision), the auxiliary's baseline (``init=baseline``,
    the default; the same key with the auxiliary's architecture) and the distilled auxiliary,
    whose key adds the distillation recipe, the loss with its weights and options, and the
    keys of the large teacher and of the baseline (``init=scratch``: none, a seeded random
    start). Each is trained once, by the first run that needs it, and reused by every run
    that names the same settings, whatever its student, loss or warm-ups. The student gets
    the auxiliary's last epoch; the record's teacher provenance names all three.

    Where kdbench differs: the large teacher is any zoo model (``large_arch``; the zoo has no
    CIFAR ResNet-18); ``init=scratch`` (a seeded random start) is offered besides the
    reference's baseline start; the distillation loss, its weights and recipe are options. As in
    the reference, with PKT alone the auxiliary's classifier gets no gradient, so its logits
    (what KD would distil) may be worse than its baseline's; ``loss_weights: {w_ce: 1}`` keeps
    it trained.
    """
    cfg = ctx.config
    t = cfg.teacher
    assert t is not None
    o = t.options
    spec = auxiliary_spec(cfg)
    large_ctx = dataclasses.replace(ctx, config=_large_config(cfg))
    aux = traj.find(ctx.store, spec)
    if aux is not None and aux.done:  # reused: the large teacher and baseline are not needed
        large_traj, base_traj = traj.find(ctx.store, large_ctx.spec()), (
            traj.find(ctx.store, ctx.spec()) if o["init"] == "baseline" else None)
    else:
        large_traj = large_ctx.trajectory()  # each trained once, or found
        base_traj = ctx.trajectory() if o["init"] == "baseline" else None
        large = large_ctx.checkpoint_teacher(large_traj, large_traj.epochs[-1], "full")
        init = None if base_traj is None else base_traj.state_dict(base_traj.epochs[-1], "cpu")
        aux = traj.ensure(ctx.store, spec, [o["distill_recipe"]["epochs"]], ctx.dataset,
                          ctx.device, progress=ctx.progress, teacher=large.module, init=init)
    teacher = ctx.checkpoint_teacher(aux, aux.epochs[-1], "auxiliary")
    teacher.provenance.update(
        trajectories=[aux.key, spec["distill"]["teacher"]]
        + ([spec["distill"]["init"]] if spec["distill"]["init"] else []),
        large={"arch": o["large_arch"], "trajectory": spec["distill"]["teacher"],
               **_last_accuracy(large_traj)},
        baseline=None if spec["distill"]["init"] is None else {
            "trajectory": spec["distill"]["init"], **_last_accuracy(base_traj)})
    return teacher


def _last_accuracy(trajectory: traj.Trajectory | None) -> dict[str, Any]:
    """The last saved epoch of a trajectory and its test accuracy (nothing if it was deleted
    after the auxiliary was made from it)."""
    if trajectory is None or not trajectory.epochs:
        return {}
    last = trajectory.epochs[-1]
    return {"epoch": last, **{f"teacher_{k}": v for k, v in trajectory.accuracy(last).items()}}


# ============================== registration ===================================================


def _seeds(config: Any) -> list[int]:
    """The CE trajectory a sweep can train ahead: the auxiliary's baseline (``init=baseline``);
    the large teacher and the distilled auxiliary are trained by the first run that needs
    them (a lock keeps concurrent runs from training one twice)."""
    return [config.teacher.seed] if config.teacher.options.get("init") == "baseline" else []


@hookimpl
def register_stages(register):
    register("indistill", indistill_stage,
             description="InDistill's layer curriculum: pruned-teacher maps by MSE, shallow to "
                         "deep, a+1, a+2, … epochs per layer; no label loss",
             paper="Sarridis et al., InDistill: Information flow-preserving knowledge "
                   "distillation for model compression, WACV 2025",
             defaults=STAGE_DEFAULTS, types=STAGE_TYPES)


@hookimpl
def register_teacher_sources(register):
    register("auxiliary", auxiliary, resolve=resolve_auxiliary, seeds=_seeds,
             description="an auxiliary teacher (teacher.arch) distilled from a large one "
                         "(teacher.options.large_arch), trained once and reused")
