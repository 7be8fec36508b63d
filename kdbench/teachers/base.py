"""The teacher-source contract: a source turns a run's config into a frozen :class:`Teacher`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..config import RunConfig
from ..data import Dataset
from ..store import Store
from . import trajectory as traj


@dataclass
class Teacher:
    """A frozen teacher module (eval mode, no gradients) and where it came from."""

    module: nn.Module
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.module.eval()
        for p in self.module.parameters():
            p.requires_grad_(False)


@dataclass
class TeacherContext:
    """What a teacher source gets: the resolved config, the data, the device and the store."""

    config: RunConfig
    dataset: Dataset
    device: torch.device
    store: Store
    progress: bool = True

    def spec(self, seed: int | None = None) -> dict[str, Any]:
        return traj.trajectory_spec(self.config, seed)

    def planned_epochs(self, seed: int | None = None) -> list[int]:
        """Saved epochs of the trajectory: the existing manifest's, else the configured ones."""
        existing = traj.find(self.store, self.spec(seed))
        if existing is not None:
            return existing.manifest["save_epochs"]
        assert self.config.teacher is not None
        return self.config.teacher.checkpoint_epochs()

    def trajectory(self, seed: int | None = None) -> traj.Trajectory:
        assert self.config.teacher is not None
        return traj.ensure(self.store, self.spec(seed), self.config.teacher.checkpoint_epochs(),
                           self.dataset, self.device, progress=self.progress)

    def load(self, trajectory: traj.Trajectory, epoch: int) -> nn.Module:
        """The teacher architecture with the weights of ``epoch``, on the device."""
        from ..models import create_model

        model = create_model(trajectory.spec["arch"], self.dataset.num_classes,
                             self.dataset.in_chans)
        model.load_state_dict(trajectory.state_dict(epoch, "cpu"))
        return model.to(self.device)

    def checkpoint_teacher(self, trajectory: traj.Trajectory, epoch: int, source: str) -> Teacher:
        trajectory.check_epoch(epoch)
        return Teacher(self.load(trajectory, epoch), {
            "source": source, "arch": trajectory.spec["arch"], "trajectory": trajectory.key,
            "epochs": [epoch], "trained_epochs": trajectory.trained_epochs,
            **{f"teacher_{k}": v for k, v in trajectory.accuracy(epoch).items()}})
