"""How a teacher is trained: the model of a trajectory spec, its loss, recipe and evaluation.

A trajectory's model (``spec["arch"]``, seeded by ``spec["seed"]``) trains on the labels (CE)
with ``spec["recipe"]``, unless ``spec["distill"]`` names a loss (``{"loss", "weights",
"options", ...}``): then it is distilled with that loss from a frozen ``teacher``, as an
auxiliary teacher is. Where it is kept (checkpoints, manifest, lock, resume file) is
:mod:`kdbench.teachers.trajectory`, which calls :func:`train`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..config import Recipe, canonical_json
from ..data.augment import DEFAULT, make_augment
from ..device import seed_everything
from ..engine import FitOptions, Trainee, fit
from ..errors import ConfigError
from ..evaluators import EvalContext, build_suite
from ..losses import DistillContext, build
from ..losses.ce import CE
from ..models import create_model
from ..stages.base import main_stage
from .adapt import probe_parameters


def train(key: str, spec: dict[str, Any], dataset: Any, device: torch.device, *,
          save_epochs: set[int], state_path: Path, keep: Callable[[int, Trainee], None],
          progress: bool = True, teacher: torch.nn.Module | None = None,
          init: dict[str, Any] | None = None, evaluate: str = "epochs") -> Trainee:
    """Train (or resume from ``state_path``) the model of trajectory ``key``; returns its
    trainee, trained to the end.

    After each epoch ``keep(epoch, trainee)`` puts what the trajectory keeps on disk, before the
    resume state says the epoch is done. ``init`` is a state dict to start from instead of the
    seeded random initialisation (the spec says which, so it is part of the key);
    ``evaluate="checkpoints"`` tests the model at ``save_epochs`` only (the running training
    accuracy is in every epoch's row either way).
    """
    from ..plugins import notify

    recipe = Recipe(**spec["recipe"])
    seed_everything(spec["seed"])
    model = create_model(spec["arch"], dataset.num_classes, dataset.in_chans,
                         **spec.get("model_options", {}))
    if init is not None:
        model.load_state_dict(init)
    model = model.to(device)
    adapt = (spec.get("adapt") or {}).get("mode")
    distill = spec.get("distill")
    if distill is None:
        distiller = CE(DistillContext(model, None, dataset.num_classes, dataset.input_shape,
                                      len(dataset.train), {"w_ce": 1.0}, {}))
    else:
        if teacher is None:
            raise ConfigError(f"trajectory {key!r} is distilled ({distill['loss']}) and "
                              f"needs its teacher module")
        distiller = build(distill["loss"], DistillContext(
            model, teacher, dataset.num_classes, dataset.input_shape, len(dataset.train),
            distill["weights"], distill["options"], dataset.train.labels)).to(device)
    stages = []
    if adapt == "linear":  # kdbench.teachers.adapt: the classifier on the frozen backbone
        stages = [dataclasses.replace(main_stage(model, distiller, recipe), name="linear_probe",
                                      parameters=probe_parameters(model), train_student=False)]
    trainee = Trainee("teacher", model, distiller, recipe, stages=stages)

    def on_epoch_end(epoch: int, trainees: list[Trainee]) -> None:
        notify("kdbench_epoch_end", run_id=key, epoch=epoch,
               metrics={k: v for k, v in trainee.history[-1].items()
                        if isinstance(v, (int, float))})

    suite = build_suite([{"name": "accuracy"}], EvalContext(dataset), epochs=recipe.epochs,
                        precision=spec["precision"],
                        only_at=save_epochs if evaluate == "checkpoints" else None)
    augment = spec["augment"] and make_augment(dataset, spec.get("augmentation", DEFAULT),
                                               spec.get("augmentation_options"))
    fit([trainee], dataset, FitOptions(
        batch_size=recipe.batch_size, seed=spec["seed"], device=device, evaluators=suite,
        precision=spec["precision"], augment=augment,
        teacher=teacher if distill is not None else None, state_path=state_path,
        state_bind={"key": key, "spec_sha256": hashlib.sha256(
            canonical_json(spec).encode()).hexdigest()},
        before_save=lambda epoch, trainees: keep(epoch, trainee), on_epoch_end=on_epoch_end,
        progress=progress, desc=f"teacher {spec['arch']} s{spec['seed']}"))
    return trainee
