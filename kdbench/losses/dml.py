"""``dml``: Zhang et al., "Deep Mutual Learning" (CVPR 2018): each peer's mimicry term.

A cohort trains together (``--teacher peers``): each member's loss is CE plus the KL to each
peer's prediction at temperature 1, the engine averaging over the peers.
"""

from __future__ import annotations

import torch

from .base import Distiller, register_loss
from .kd import kd

__all__ = ["DML", "dml"]


def dml(student_logits: torch.Tensor, peer_logits: torch.Tensor) -> torch.Tensor:
    """Zhang et al., "Deep Mutual Learning" (CVPR 2018), the mimicry term of one peer.

    ``KL(p_peer ‖ p_student)`` with ``p = softmax(logits)`` (temperature 1, no T² factor), summed
    over classes and averaged over the batch. A cohort member's loss is
    ``CE + 1/(K−1) · Σ_{l≠k} KL(p_l ‖ p_k)``; the average over peers is the engine's (one call per
    peer), the peers' probabilities are constants for the member being updated.
    """
    return kd(student_logits, peer_logits, T=1.0)


@register_loss(
    "dml", family="online", year=2018,
    repo="https://github.com/YingZhangDUT/Deep-Mutual-Learning",
    description="deep mutual learning: KL to each peer's prediction (use --teacher peers)",
    paper="Zhang et al., Deep Mutual Learning, CVPR 2018",
    defaults={"w_ce": 1.0, "w_dml": 1.0}, taps=("logits",))
class DML(Distiller):
    """Deep mutual learning's mimicry term KL(p_peer ‖ p_student) at temperature 1."""

    def forward(self, student, teacher, target, index=None, epoch=0):
        return {"dml": dml(student.logits, teacher.logits)}
