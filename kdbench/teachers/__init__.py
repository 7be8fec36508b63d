"""Teacher sources and the trajectories (checkpoints along training) they draw from."""

from __future__ import annotations

from .base import Teacher, TeacherContext
from .trajectory import Trajectory, trajectory_key, trajectory_spec

__all__ = ["Teacher", "TeacherContext", "Trajectory", "trajectory_key", "trajectory_spec"]
