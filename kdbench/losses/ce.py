"""``ce``: cross-entropy only, the vanilla student (no teacher): every comparison's baseline."""

from __future__ import annotations

from .base import Distiller, register_loss

__all__ = ["CE"]


@register_loss(
    "ce", family="baseline", description="cross-entropy only: the vanilla student (no teacher)",
    paper="-", defaults={"w_ce": 1.0}, taps=("logits",))
class CE(Distiller):
    """Cross-entropy only: the vanilla student baseline (no teacher)."""

    needs_teacher = False

    def forward(self, student, teacher, target, index=None, epoch=0):
        return {}
