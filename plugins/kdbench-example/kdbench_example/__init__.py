"""Example kdbench plugin: one of each kind a third party is most likely to add.

- a loss: logit matching by mean squared error (Ba & Caruana, NIPS 2014);
- a warm-up stage: the same logit regression on its own, before any KD loss;
- an evaluator: mean confidence and expected calibration error on the test split;
- a data transform: a seeded random fraction of the training split.

Installed as its own distribution, it reaches kdbench through the ``kdbench`` entry point —
the same path every third-party plugin takes, and the one kdbench's own built-ins use.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import kdbench
from kdbench.errors import ConfigError
from kdbench.losses import Distiller
from kdbench.stages import stage_from_options


class MSELogits(Distiller):
    """w_ce·CE + w_mse·mean((z_s − z_t)²): regress the teacher's logits directly."""

    def forward(self, student, teacher, target, index=None, epoch=0):
        return {"mse": F.mse_loss(student.logits, teacher.logits)}


def logit_warmup(ctx, **options):
    """A warm-up stage: the student regresses the teacher's logits (MSE), no label loss."""
    def loss(student, teacher, batch, epoch, stage, views=None):
        return {"mse": F.mse_loss(student.logits, teacher.logits)}

    return stage_from_options("logit_warmup", ctx, options, loss=loss,
                              parameters=list(ctx.student.parameters()), default_epochs=2,
                              student="logits", teacher="logits")


class Calibration:
    """Mean top-1 confidence (%) and expected calibration error (%, 15 equal-width bins)."""

    needs = ("test_logits",)
    metrics = ("confidence", "ece")

    def __init__(self, ctx, bins: int = 15):
        self.bins = bins

    def __call__(self, out):
        probs = out.test_logits.softmax(dim=1)
        conf, pred = probs.max(dim=1)
        correct = pred.eq(out.test_labels).float()
        edges = torch.linspace(0, 1, self.bins + 1, device=conf.device)
        ece = torch.zeros((), device=conf.device)
        for lo, hi in zip(edges[:-1], edges[1:]):
            inside = (conf > lo) & (conf <= hi)
            if inside.any():
                ece += inside.float().mean() * (conf[inside].mean() - correct[inside].mean()).abs()
        return {"confidence": 100.0 * float(conf.mean()), "ece": 100.0 * float(ece)}


class TrainFraction:
    """A seeded random fraction of the training split (a smaller-data condition)."""

    def __init__(self, fraction: float = 0.5, seed: int = 0):
        if not 0 < fraction <= 1:
            raise ConfigError(f"data transform 'train_fraction' fraction must be in (0, 1], "
                              f"got {fraction}")
        self.fraction, self.seed = fraction, seed

    def apply(self, split, *, num_classes, split_name):
        n = len(split)
        keep = max(1, round(self.fraction * n))
        index = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))[:keep]
        return split.subset(index.sort().values), {"kept": keep, "of": n}


@kdbench.hookimpl
def register_losses(register):
    register("mse_logits", MSELogits, description="logit regression (Ba & Caruana 2014)",
             paper="Ba & Caruana, Do Deep Nets Really Need to be Deep?, NIPS 2014",
             defaults={"w_ce": 1.0, "w_mse": 1.0}, taps=("logits",))


@kdbench.hookimpl
def register_stages(register):
    register("logit_warmup", logit_warmup, description="MSE to the teacher's logits, no labels")


@kdbench.hookimpl
def register_evaluators(register):
    register("calibration", Calibration, needs=Calibration.needs, metrics=Calibration.metrics,
             lower_is_better=("ece",), defaults={"bins": 15})


@kdbench.hookimpl
def register_data_transforms(register):
    register("train_fraction", TrainFraction, defaults={"fraction": 0.5, "seed": 0})
