"""The teacher's BatchNorm while it teaches (``teacher.bn``).

* ``eval`` (the default; RepDistiller, mdistiller, torchdistill): the teacher in eval mode, its
  BatchNorm normalising with the running statistics it learned.
* ``batch``: every BatchNorm normalises with the current batch's statistics and leaves its
  running statistics as they are (the teacher's weights and buffers do not change).
* ``checkpointkd``: what the official Checkpoint-KD code does (``student.py`` of
  LeapLabTHU/CheckpointKD). Its teachers are never put in eval mode except by ``validate``,
  which it calls after training epoch ``e`` (0-based) only when ``e > epochs − 11``; once
  called, the teachers stay in eval mode. So the teacher runs in train mode — batch statistics,
  running statistics updated with the default momentum, dropout active — for the 0-based
  epochs ``0 .. max(0, epochs − 10)`` and in eval mode, with the drifted running statistics,
  for the rest (the last 9 epochs when ``epochs ≥ 11``).

The teacher is frozen in every mode (no gradients); the modes change only its forward.
"""

from __future__ import annotations

from torch import nn

#: the valid ``teacher.bn`` values
MODES = ("eval", "batch", "checkpointkd")

_MOMENTUM = "_kdbench_bn_momentum"


def forward_mode(mode: str, epoch: int, epochs: int) -> str:
    """How the teacher runs in 0-based student ``epoch`` of ``epochs``: ``"eval"``,
    ``"batch"`` (batch statistics, running ones frozen) or ``"train"`` (train mode, running
    statistics updated)."""
    if mode == "eval":
        return "eval"
    if mode == "batch":
        return "batch"
    if mode == "checkpointkd":
        return "train" if epoch <= max(0, epochs - 10) else "eval"
    raise ValueError(f"unknown teacher.bn {mode!r} (valid: {', '.join(MODES)})")


def _norms(teacher: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in teacher.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def apply(teacher: nn.Module, how: str) -> None:
    """Put ``teacher`` in the forward mode :func:`forward_mode` names."""
    for m in _norms(teacher):  # the momentum the model was built with, kept once
        if not hasattr(m, _MOMENTUM):
            setattr(m, _MOMENTUM, m.momentum)
        m.momentum = getattr(m, _MOMENTUM)
    if how == "eval":
        teacher.eval()
    elif how == "train":
        teacher.train()
    elif how == "batch":
        teacher.eval()
        for m in _norms(teacher):
            # train-mode BatchNorm normalises with the batch's statistics; a momentum of 0
            # makes its update of the running statistics leave them unchanged
            m.train()
            m.momentum = 0.0
    else:
        raise ValueError(f"unknown teacher forward mode {how!r}")


def buffers(teacher: nn.Module) -> dict:
    """The teacher's BatchNorm buffers (what ``train`` mode changes), for a resume state."""
    return {k: v.detach().clone() for k, v in teacher.state_dict().items()
            if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
