"""Built-in teacher sources: the converged teacher, one intermediate checkpoint, and the snapshot
and independent ensembles of Checkpoint KD (Wang et al., NeurIPS 2022)."""

from __future__ import annotations

from ..errors import ConfigError
from .base import Teacher, TeacherContext


def nearest_saved(epochs: list[int], target: float) -> int:
    """The saved epoch closest to ``target`` (the earlier one on a tie)."""
    return min(epochs, key=lambda e: (abs(e - target), e))


def halfway(epochs: list[int], total: int) -> int:
    """The saved epoch closest to half of training: the paper's T_inter."""
    return nearest_saved(epochs, total / 2)


def full(ctx: TeacherContext) -> Teacher:
    """The last checkpoint of the teacher trajectory (converged teacher), or --teacher-weights."""
    if ctx.config.teacher is not None and ctx.config.teacher.weights is not None:
        return ctx.weights_teacher("full")
    trajectory = ctx.trajectory()
    return ctx.checkpoint_teacher(trajectory, trajectory.epochs[-1], "full")


def intermediate(ctx: TeacherContext) -> Teacher:
    """One intermediate checkpoint: --teacher-epoch E or --teacher-epoch-frac F (half-way)."""
    t = ctx.config.teacher
    assert t is not None
    if t.options.get("select"):  # --select ESTIMATOR: Checkpoint KD's Algorithm 1 (kdbench.mi)
        from ..mi.analysis import select_teacher_epoch

        epoch, selection = select_teacher_epoch(ctx)
        teacher = ctx.checkpoint_teacher(ctx.trajectory(), epoch, "intermediate")
        teacher.provenance["selection"] = selection
        return teacher
    planned = ctx.planned_epochs()
    frac = t.options.get("epoch_frac")
    epoch = t.epoch if t.epoch is not None else nearest_saved(planned, t.recipe.epochs * (
        frac if frac is not None else 0.5))
    if epoch not in planned:  # checked before any teacher training starts
        raise ConfigError(f"teacher epoch {epoch} is not in the trajectory (saved: "
                          f"{', '.join(map(str, planned))})")
    return ctx.checkpoint_teacher(ctx.trajectory(), epoch, "intermediate")


def snapshot(ctx: TeacherContext) -> Teacher:
    """Snapshot ensemble: checkpoints of one trajectory (--members, or --members-count K evenly
    spaced with the latest included)."""
    from .ensemble import evenly_spaced

    t = ctx.config.teacher
    assert t is not None
    planned = ctx.planned_epochs()
    members = t.options.get("members")
    if members is None:
        members = evenly_spaced(planned, t.options["members_count"])
    missing = [e for e in members if e not in planned]
    if missing:  # checked before any teacher training starts
        raise ConfigError(f"teacher members {', '.join(map(str, missing))} are not saved "
                          f"checkpoints (saved: {', '.join(map(str, planned))})")
    trajectory = ctx.trajectory()
    return ctx.ensemble_teacher([(trajectory, e) for e in members], "snapshot")


def independent(ctx: TeacherContext) -> Teacher:
    """Independent ensemble: the final checkpoints of K trajectories with seeds s..s+K-1, each
    trained once and reused."""
    trajectories = [ctx.trajectory(seed) for seed in independent_seeds(ctx.config)]
    return ctx.ensemble_teacher([(tr, tr.epochs[-1]) for tr in trajectories], "independent")


def independent_seeds(config) -> list[int]:
    """The trajectory seeds of an independent ensemble: s..s+K-1."""
    t = config.teacher
    return [t.seed + i for i in range(t.options["members_count"])]
