"""InDistill's loss plugin: ``pkt_indistill``, the two-kernel, symmetric PKT on the embedding.

Sarridis, Koutlis, Kordopatis-Zilos, Kompatsiaris, Papadopoulos, "InDistill: Information
flow-preserving knowledge distillation for model compression", WACV 2025 (arXiv 2205.10003);
official code github.com/gsarridis/InDistill (``methods/pkt.py``, ``kd_from_aux_to_student.py``).
The layer curriculum that runs before it is the ``indistill`` warm-up stage
(:mod:`kdbench.teachers.indistill`).
"""

from __future__ import annotations

from ..hookspecs import hookimpl
from .base import DistillContext, Distiller, option
from .indistill import indistill_pkt


class PKTInDistill(Distiller):
    """InDistill's final-representation loss: ``w_ce·CE + w_pkt_indistill·PKT₂(e_s, e_t)``.

    ``PKT₂`` is :func:`kdbench.losses.indistill.indistill_pkt` on the penultimate embeddings
    (cosine kernel rescaled to [0, 1] and ``1/(1 + d)``, each row-normalised, Jeffreys
    divergence, summed over the kernels); student and teacher embeddings may differ in width
    (the reference distils Cnn32's 128-d into Cnn32_Small's 64-d, and ResNet-18's 512-d into
    Cnn32's 128-d).

    Official defaults: weight 1 and *no label loss* — ``kd_from_aux_to_student.py`` lines 43–60
    and ``kd_from_teacher_to_aux.py`` lines 31–36 back-propagate the PKT term alone — so
    ``w_ce`` defaults to 0 here (kdbench still logs the CE it does not train on; set
    ``--weight w_ce=1`` for PKT next to the label loss). Where kdbench differs: none in the
    term; ``eps`` (1e-6) is an option.
    """

    taps = frozenset({"logits", "embedding"})

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        # ε > 0 keeps the distance's square root differentiable on the kernel's diagonal
        self.eps = float(option(self.options, "eps", "pkt_indistill", positive=True))

    def forward(self, student, teacher, target, index=None, epoch=0):
        return {"pkt_indistill": indistill_pkt(student.embedding, teacher.embedding, self.eps)}


@hookimpl
def register_losses(register):
    register("pkt_indistill", PKTInDistill,
             description="InDistill's PKT: cosine and 1/(1+d) kernels, Jeffreys divergence, "
                         "on the embedding; no label loss",
             paper="Sarridis et al., InDistill: Information flow-preserving knowledge "
                   "distillation for model compression, WACV 2025 (PKT: Passalis & Tefas, "
                   "ECCV 2018)",
             year=2025, repo="https://github.com/gsarridis/InDistill", family="relation",
             defaults={"w_ce": 0.0, "w_pkt_indistill": 1.0, "eps": 1e-6},
             taps=("logits", "embedding"))
