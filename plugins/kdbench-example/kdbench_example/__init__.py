"""Example kdbench plugin: logit matching by mean squared error (Ba & Caruana, NIPS 2014).

Installed as its own distribution, it reaches kdbench through the ``kdbench`` entry point —
the same path every third-party plugin takes.
"""

from __future__ import annotations

import torch.nn.functional as F

import kdbench
from kdbench.losses import Distiller


class MSELogits(Distiller):
    """w_ce·CE + w_mse·mean((z_s − z_t)²): regress the teacher's logits directly."""

    def forward(self, student, teacher, target, index=None, epoch=0):
        return {"mse": F.mse_loss(student.logits, teacher.logits)}


@kdbench.hookimpl
def register_losses(register):
    register("mse_logits", MSELogits, description="logit regression (Ba & Caruana 2014)",
             paper="Ba & Caruana, Do Deep Nets Really Need to be Deep?, NIPS 2014",
             defaults={"w_ce": 1.0, "w_mse": 1.0}, taps=("logits",))
