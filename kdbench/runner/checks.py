"""Checks of a run against its models and data, made before any training (exit 2, nothing
written): input sizes, the features and sample indices a loss taps, the loss built once on fresh
models, and what the evaluators need."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from ..config import RunConfig
from ..errors import ConfigError


def check_input_size(model: Any, name: str, dataset: Any) -> None:
    h, w = dataset.image_size
    need = getattr(model, "min_input_size", 1)
    if min(h, w) < need:
        raise ConfigError(f"model {name!r} needs inputs of at least {need}×{need}, but dataset "
                          f"{dataset.name!r} has {h}×{w}")


def warn_small_input(model: Any, name: str, dataset: Any) -> None:
    """Warn up front when a model shrinks the data's images below 1×1 before its last stage
    (an ImageNet network on 8×8 digits): it runs, padded, but learns little."""
    import warnings

    h, w = dataset.image_size
    reduction = getattr(model, "reduction", None) or max(
        (s.reduction for s in getattr(model, "stage_info", None) or []), default=1)
    if min(h, w) >= reduction:
        return
    expected = getattr(model, "expected_input_size", None)
    made_for = f"; it was made for {expected}×{expected} inputs" if expected else ""
    warnings.warn(f"kdbench: model {name!r} reduces its input {reduction}× before its last "
                  f"stage, so the {h}×{w} images of dataset {dataset.name!r} leave less than "
                  f"1×1 there{made_for}; resize the data (at least {reduction}×{reduction}) or use "
                  f"a model for small images", RuntimeWarning, stacklevel=2)


def check_features(cfg: RunConfig, student: Any, teacher: Any) -> None:
    """A loss that taps features needs models that expose them (before any training)."""
    from ..losses import entry

    taps = entry(cfg.loss.name).feature_taps
    if not taps:
        return
    for role, name, model in (("student", cfg.student, student),
                              ("teacher", cfg.teacher.arch if cfg.teacher else None,
                               teacher.module if teacher is not None else None)):
        if model is not None and not getattr(model, "has_features", True):
            raise ConfigError(f"loss {cfg.loss.name!r} taps {', '.join(sorted(taps))} "
                              f"features, but the {role} {name!r} gives logits only; use a "
                              f"logit loss (e.g. kd)")
        if model is not None and "preact" in taps and not getattr(model, "has_preact", True):
            raise ConfigError(f"loss {cfg.loss.name!r} taps pre-activation features, but the "
                              f"{role} {name!r} has none (timm models expose post-activation "
                              f"stages only); use a zoo model or a loss tapping stages")


def check_index(cfg: RunConfig, dataset: Any) -> None:
    """A loss that taps sample indices (CRD's memory bank) needs a dataset that gives them."""
    from ..losses import entry

    if "index" in entry(cfg.loss.name).taps and not dataset.info.get("sample_index", True):
        raise ConfigError(f"loss {cfg.loss.name!r} needs sample indices (a memory bank over the "
                          f"training set), but dataset {cfg.data.name!r} cannot give them")


def check_loss(cfg: RunConfig, dataset: Any) -> None:
    """Build the loss, and the warm-up stages, once on fresh, untrained models of the run's
    architectures (on the CPU), so that a loss or a warm-up that does not fit them (FSP's unequal
    channels, a regressor that cannot map the shapes, a logits-only model, a dataset without
    sample indices, a layer the teacher cannot be pruned to, warm-ups that leave no epoch for
    the main stage) fails before any training, a teacher's included."""
    from ..losses import DistillContext, build
    from ..models import create_model

    check_index(cfg, dataset)
    check_optimizer(cfg.recipe, "recipe")
    if cfg.teacher is not None:
        check_optimizer(cfg.teacher.recipe, "teacher.recipe")
    student = create_model(cfg.student, dataset.num_classes, dataset.in_chans,
                           **cfg.student_options)
    teacher = (create_model(cfg.teacher.arch, dataset.num_classes, dataset.in_chans,
                            **cfg.teacher.model_options) if cfg.teacher is not None else None)
    check_features(cfg, student, SimpleNamespace(module=teacher) if teacher is not None else None)
    for name, model in ((cfg.student, student), (getattr(cfg.teacher, "arch", None), teacher)):
        if model is not None:
            check_input_size(model, name, dataset)
            warn_small_input(model, name, dataset)
    check_teacher_evaluators(cfg)
    distiller = build(cfg.loss.name, DistillContext(student, teacher, dataset.num_classes,
                                                    dataset.input_shape, len(dataset.train),
                                                    cfg.loss.weights, cfg.loss.options,
                                                    dataset.train.labels.cpu(),
                                                    epochs=cfg.recipe.epochs))
    check_terms(cfg, student, teacher, distiller, dataset)
    if cfg.warmup:
        from ..stages.base import StageContext, arrange, build_warmups, loss_stages, main_stage

        if teacher is not None:
            teacher.eval()  # as a frozen teacher is
        ctx = StageContext(student, teacher, distiller, cfg.recipe, dataset.num_classes,
                           dataset.input_shape)
        arrange(build_warmups(cfg.warmup, ctx), loss_stages(student, distiller, cfg.recipe),
                main_stage(student, distiller, cfg.recipe))


def check_teacher_evaluators(cfg: RunConfig) -> None:
    """An evaluator that compares with the teacher (``agreement``) needs a fixed teacher."""
    from ..plugins import get

    for item in cfg.eval.evaluators:
        if "teacher_test_logits" in get("evaluator", item["name"]).needs and (
                cfg.teacher is None or cfg.teacher.source == "peers"):
            why = "no teacher" if cfg.teacher is None else "an online cohort, no fixed teacher"
            raise ConfigError(f"evaluator {item['name']!r} compares the student with its "
                              f"teacher, but loss {cfg.loss.name!r} here has {why} (valid: a "
                              f"run with a fixed teacher, e.g. --loss kd --teacher full)")


def check_terms(cfg: RunConfig, student: Any, teacher: Any, distiller: Any,
                dataset: Any) -> None:
    """The terms the loss returns against its weights: every term ``t`` is weighted by
    ``w_t``, so a term without a weight would be a KeyError in the first training step (after
    a teacher was trained). One forward of the fresh models on four training images finds it
    now; a probe that cannot run (a loss needing extra views, a custom batch) is left to
    training, whose errors name themselves."""
    import torch

    from ..data import BatchLoader
    from ..engine.step import _forward, teacher_features
    from ..stages.base import Batch, main_stage

    stage = main_stage(student, distiller, cfg.recipe)
    if stage.views or stage.weights is None:
        return
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():  # the run's streams untouched
            loader = BatchLoader(dataset, "train", 4, train=False,
                                 device=dataset.train.images.device)
            x, y, index = (t.cpu() for t in next(iter(loader))[:3])
            student.eval()
            t_feats = None
            if teacher is not None and stage.teacher != "none":
                teacher.eval()
                t_feats = teacher_features(teacher, x, stage.teacher == "features")
            terms = stage.loss(_forward(student, x, stage.student), t_feats,
                               Batch(x, y, index, views=[]), 0, "main")
    except Exception:  # noqa: BLE001 - see the docstring
        return
    missing = [name for name in terms if f"w_{name}" not in stage.weights]
    if missing:
        weights = ", ".join(sorted(stage.weights)) or "none"
        raise ConfigError(f"loss {cfg.loss.name!r} returns term {missing[0]!r} but has no "
                          f"weight w_{missing[0]} (its weights: {weights}; terms returned: "
                          f"{', '.join(terms)}): register the loss with a default for "
                          f"w_{missing[0]}, or return terms named as its weights")


def check_optimizer(recipe: Any, where: str = "recipe") -> None:
    """Build the recipe's optimiser once over a stand-in parameter, so that an option it
    refuses (Adam's ``eps=-1``, a negative beta) is bad input before any training, not a
    ``failed`` record after a teacher has trained."""
    import torch

    from ..stages.optim import make_optimizer

    try:
        make_optimizer(recipe.optimizer, [torch.zeros(1, requires_grad=True)], lr=recipe.lr,
                       momentum=recipe.momentum, nesterov=recipe.nesterov,
                       weight_decay=recipe.weight_decay, options=recipe.optimizer_options)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}.optimizer {recipe.optimizer!r} refuses its options "
                          f"{recipe.optimizer_options}: {exc}") from None


def check_stages(cfg: RunConfig, trainee: Any) -> None:
    """The evaluators' needs against the student (an embedding evaluator needs a model that
    gives one)."""
    from ..plugins import get

    model = trainee.model
    for item in cfg.eval.evaluators:
        needs = get("evaluator", item["name"]).needs
        if any(n.endswith("_embedding") for n in needs) and (
                not getattr(model, "has_features", True)
                or getattr(model, "embedding_dim", None) in (None, 0)):
            raise ConfigError(f"evaluator {item['name']!r} needs the penultimate embedding, but "
                              f"the student {cfg.student!r} gives none (valid: a model with "
                              f"features(), e.g. the CIFAR zoo)")


def check_batch(recipe: Any, dataset: Any, where: str = "recipe") -> None:
    """A batch larger than the training split cannot be honoured (every epoch would be one
    smaller batch)."""
    if recipe.batch_size > len(dataset.train):
        raise ConfigError(f"{where}.batch_size {recipe.batch_size} is larger than the "
                          f"{len(dataset.train)} training images of {dataset.name!r} (valid: "
                          f"2..{len(dataset.train)})")
