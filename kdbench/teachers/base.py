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

    def trajectory(self, seed: int | None = None, *, repair: bool = False) -> traj.Trajectory:
        assert self.config.teacher is not None
        return traj.ensure(self.store, self.spec(seed), self.config.teacher.checkpoint_epochs(),
                           self.dataset, self.device, progress=self.progress, repair=repair,
                           evaluate=self.config.teacher.evaluate)

    def load(self, trajectory: traj.Trajectory, epoch: int) -> nn.Module:
        """The teacher architecture with the weights of ``epoch``, on the device."""
        from ..models import create_model

        model = create_model(trajectory.spec["arch"], self.dataset.num_classes,
                             self.dataset.in_chans, **trajectory.spec.get("model_options", {}))
        model.load_state_dict(trajectory.state_dict(epoch, "cpu"))
        return model.to(self.device)

    def checkpoint_teacher(self, trajectory: traj.Trajectory, epoch: int, source: str) -> Teacher:
        trajectory.check_epoch(epoch)
        return Teacher(self.load(trajectory, epoch), {
            "source": source, "arch": trajectory.spec["arch"], "trajectory": trajectory.key,
            "trajectories": [trajectory.key], "epochs": [epoch],
            "trained_epochs": trajectory.trained_epochs,
            # the weights distilled from: a later repair that differs shows against it
            "checkpoint_sha256": trajectory.manifest["checkpoints"][str(epoch)]["sha256"],
            **{f"teacher_{k}": v for k, v in trajectory.accuracy(epoch).items()}})

    def evaluate(self, module: nn.Module) -> dict[str, float]:
        """Test-set top-1/top-5 (%) of a teacher module, as the engine measures students."""
        from ..evaluators import test_accuracy

        return test_accuracy(module, self.dataset, self.config.resolved_precision)

    def weights_teacher(self, source: str) -> Teacher:
        """The teacher architecture with ``teacher.weights`` (a local weights file, any format
        :mod:`kdbench.models.weights` reads), adapted to the task first when its classifier
        does not fit (:mod:`.adapt`), and refused when it scores near chance."""
        from pathlib import Path

        from ..models import create_model, load_weights
        from .adapt import adapt_spec, check_not_chance, chosen_mode

        t = self.config.teacher
        assert t is not None and t.weights is not None
        model = create_model(t.arch, self.dataset.num_classes, self.dataset.in_chans,
                             **t.model_options)
        loaded = load_weights(model, t.weights, arch=t.arch, keep_fresh_head=True, warn=False)
        mode = chosen_mode(t.adapt, loaded.fresh_head)
        provenance: dict[str, Any] = {
            "source": source, "arch": t.arch, "trajectory": None, "trajectories": [],
            "epochs": [], "trained_epochs": 0, "weights": str(Path(t.weights).resolve()),
            **loaded.provenance()}
        if mode != "none":
            spec = adapt_spec(self.spec(), t.adapt_recipe, loaded.sha256, mode)
            before = self.evaluate(model.to(self.device))
            trajectory = traj.ensure(self.store, spec, [t.adapt_recipe.epochs], self.dataset,
                                     self.device, progress=self.progress,
                                     init={k: v.cpu() for k, v in model.state_dict().items()},
                                     evaluate="checkpoints")
            model = self.load(trajectory, t.adapt_recipe.epochs)
            provenance.update(trajectory=trajectory.key, trajectories=[trajectory.key],
                              epochs=[t.adapt_recipe.epochs],
                              trained_epochs=trajectory.trained_epochs,
                              adapt={"mode": mode, "epochs": t.adapt_recipe.epochs,
                                     "top1_before": before["top1"]})
        model = model.to(self.device)
        accuracy = self.evaluate(model)
        check_not_chance(accuracy["top1"], self.dataset.num_classes, arch=t.arch,
                         weights=t.weights, mode=mode, allow_weak=t.allow_weak)
        return Teacher(model, {**provenance,
                               **{f"teacher_{k}": v for k, v in accuracy.items()}})

    def ensemble_teacher(self, members: list[tuple[traj.Trajectory, int]], source: str
                         ) -> Teacher:
        """An equal-weight ensemble of trajectory checkpoints, with its own and each member's
        test accuracy (``teacher.options.ensemble_mode``: logit or prob averaging)."""
        from .ensemble import EnsembleTeacher

        t = self.config.teacher
        assert t is not None
        mode = t.options.get("ensemble_mode", "logit")
        temperature = float(self.config.loss.options.get("T", 1.0)) if mode == "prob" else 1.0
        for trajectory, epoch in members:
            trajectory.check_epoch(epoch)
        module = EnsembleTeacher([self.load(tr, e) for tr, e in members], mode, temperature,
                                 batched=self.config.engine.ensemble_vmap)
        # the ensemble's accuracy is its own prediction: softmax at T = 1 for probabilities
        module.temperature = 1.0
        accuracy = self.evaluate(module)
        module.temperature = temperature
        keys = list(dict.fromkeys(tr.key for tr, _ in members))
        trained = {tr.key: tr.trained_epochs for tr, _ in members}
        return Teacher(module, {
            "source": source, "arch": members[0][0].spec["arch"], "trajectory": keys[0],
            "trajectories": keys, "epochs": [e for _, e in members],
            "trained_epochs": sum(trained.values()), "ensemble_mode": mode,
            "ensemble_temperature": temperature,
            "members": [{"trajectory": tr.key, "seed": tr.spec["seed"], "epoch": e,
                         "checkpoint_sha256": tr.manifest["checkpoints"][str(e)]["sha256"],
                         **tr.accuracy(e)} for tr, e in members],
            **{f"teacher_{k}": v for k, v in accuracy.items()}})
