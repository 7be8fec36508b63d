"""Built-in teacher sources: the converged teacher and one intermediate checkpoint."""

from __future__ import annotations

from ..errors import ConfigError
from .base import Teacher, TeacherContext


def halfway(epochs: list[int], total: int) -> int:
    """The saved epoch closest to half of training (the earlier one on a tie)."""
    return min(epochs, key=lambda e: (abs(e - total / 2), e))


def full(ctx: TeacherContext) -> Teacher:
    """The last checkpoint of the teacher trajectory (the converged teacher)."""
    trajectory = ctx.trajectory()
    return ctx.checkpoint_teacher(trajectory, trajectory.epochs[-1], "full")


def intermediate(ctx: TeacherContext) -> Teacher:
    """One intermediate checkpoint: --teacher-epoch E, default the half-way checkpoint."""
    t = ctx.config.teacher
    assert t is not None
    planned = ctx.planned_epochs()
    epoch = t.epoch if t.epoch is not None else halfway(planned, t.recipe.epochs)
    if epoch not in planned:  # checked before any teacher training starts
        raise ConfigError(f"teacher epoch {epoch} is not in the trajectory (saved: "
                          f"{', '.join(map(str, planned))})")
    return ctx.checkpoint_teacher(ctx.trajectory(), epoch, "intermediate")
