"""The adapt stage: a teacher given as weights is fitted to the task before any student sees it.

A published teacher often has another task's classifier: ImageNet's 1000 classes for a 10-class
dataset, CIFAR-100's for CIFAR-10. Its backbone loads, its head stays fresh (random), and used
as it is it would teach at chance. ``teacher.adapt`` says what happens first:

- ``linear`` (``auto``'s choice when the head does not fit): a linear probe, the classifier
  trained on the frozen backbone, which stays in eval mode (BatchNorm statistics kept);
- ``finetune``: every parameter trained;
- ``none``: used as loaded (``auto`` when the head fits).

The stage trains with its own recipe (``teacher.adapt_recipe``: epochs, optimiser, lr,
schedule) and is kept in the trajectory store like a trained teacher: its key hashes the
weights file's SHA-256, the mode, the recipe, the data and the seed, so it is trained once and
reused. Then :func:`check_not_chance` refuses a teacher whose test top-1 is within
:data:`CHANCE_MARGIN` points of chance unless ``teacher.allow_weak`` is set.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from ..config.resolve import ADAPT_MODES
from ..errors import ConfigError, UnknownNameError

#: a teacher whose test top-1 is less than this many points above chance is refused
CHANCE_MARGIN = 5.0


def check_mode(mode: str) -> None:
    if mode not in ADAPT_MODES:
        raise UnknownNameError("teacher.adapt mode", str(mode), ADAPT_MODES)


def chosen_mode(mode: str, fresh_head: list[str]) -> str:
    """The adaptation a teacher gets: ``auto`` is a linear probe when the head is fresh."""
    check_mode(mode)
    if mode == "auto":
        return "linear" if fresh_head else "none"
    return mode


def adapt_spec(base: dict[str, Any], recipe: Any, sha256: str, mode: str) -> dict[str, Any]:
    """The trajectory spec of an adapted teacher (what determines its weights): the teacher's
    own spec (``base``: architecture, data, seed, precision) with the adaptation's recipe, the
    mode and the weights file's SHA-256."""
    return {**base, "recipe": dataclasses.asdict(recipe),
            "adapt": {"mode": mode, "weights_sha256": sha256}}


def probe_parameters(model: nn.Module) -> list[nn.Parameter]:
    """A linear probe's parameters: the classifier's; every other parameter is frozen."""
    from ..models.weights import classifier_keys

    head = set(classifier_keys(model))
    params = []
    for name, p in model.named_parameters():
        p.requires_grad_(name in head)
        if name in head:
            params.append(p)
    if not params:
        raise ConfigError(f"cannot find the classifier of {type(model).__name__} for a linear "
                          f"probe; use teacher.adapt=finetune")
    return params


def check_not_chance(top1: float, num_classes: int, *, arch: str, weights: str,
                     mode: str, allow_weak: bool) -> None:
    """Refuse a teacher within :data:`CHANCE_MARGIN` points of chance (unless allowed)."""
    chance = 100.0 / num_classes
    if allow_weak or top1 >= chance + CHANCE_MARGIN:
        return
    how = ("it was used as loaded (teacher.adapt=none): adapt it with teacher.adapt=linear or "
           "finetune" if mode == "none" else
           f"after its {mode} adaptation: give it more epochs (teacher.adapt_recipe.epochs) or "
           f"try teacher.adapt=finetune")
    raise ConfigError(f"teacher {arch} from {weights!r} scores {top1:.1f}% top-1 on the test "
                      f"set, within {CHANCE_MARGIN:g} points of chance ({chance:.1f}% for "
                      f"{num_classes} classes); {how}, or set teacher.allow_weak=true to use it "
                      f"anyway")
