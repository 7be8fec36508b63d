"""Optimisers and learning-rate schedules: built-in plugins, and the recipe's use of them.

A recipe names its optimiser (``sgd`` by default, ``adam``, ``adamw``) and its schedule
(``multistep``, ``step``, ``cosine``, ``constant``, ``linear``); ``warmup_epochs`` adds a linear
warm-up in front of any schedule. Plugins add more through ``register_optimizers`` and
``register_schedules``; their extra options live in ``recipe.optimizer_options`` and
``recipe.schedule_options``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from ..hookspecs import hookimpl

Schedule = Callable[[int], float]


# ============================== optimisers =====================================================


def sgd(params: Iterable[Any], *, lr: float, momentum: float = 0.9, nesterov: bool = False,
        weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """SGD with momentum (Nesterov only where momentum > 0, as torch requires)."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum,
                           nesterov=nesterov and momentum > 0, weight_decay=weight_decay)


def adam(params: Iterable[Any], *, lr: float, weight_decay: float = 0.0,
         betas: list[float] | tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
         momentum: float | None = None, nesterov: bool = False) -> torch.optim.Optimizer:
    """Adam (L2 weight decay added to the gradient, as torch's Adam does); ``momentum`` and
    ``nesterov`` are SGD's and are not used."""
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)


def adamw(params: Iterable[Any], *, lr: float, weight_decay: float = 0.01,
          betas: list[float] | tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
          momentum: float | None = None, nesterov: bool = False) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay); ``momentum`` and ``nesterov`` are SGD's and not used."""
    return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), eps=eps,
                             weight_decay=weight_decay)


def make_optimizer(name: str, params: Iterable[Any], *, lr: float, momentum: float,
                   nesterov: bool, weight_decay: float,
                   options: dict[str, Any] | None = None) -> torch.optim.Optimizer:
    """The registered optimiser ``name`` over ``params`` with the recipe's settings."""
    from ..plugins import get

    return get("optimizer", name).create(params, lr=lr, momentum=momentum, nesterov=nesterov,
                                         weight_decay=weight_decay, **(options or {}))


# ============================== schedules ======================================================


def constant(epochs: int, **_: Any) -> Schedule:
    """The base lr throughout."""
    return lambda epoch: 1.0


def multistep(epochs: int, *, milestones: list[int], gamma: float, **_: Any) -> Schedule:
    """×gamma at each milestone epoch (lr of epoch e: gamma^#{m ≤ e})."""
    return lambda epoch: gamma ** sum(epoch >= m for m in milestones)


def step(epochs: int, *, step_size: int, gamma: float, **_: Any) -> Schedule:
    """×gamma every ``step_size`` epochs."""
    return lambda epoch: gamma ** (epoch // step_size)


def cosine(epochs: int, **_: Any) -> Schedule:
    """Half a cosine from the base lr to 0 over the epochs (evaluated at each epoch's start)."""
    return lambda epoch: 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def linear(epochs: int, **_: Any) -> Schedule:
    """Linear decay from the base lr to 0 over the epochs."""
    return lambda epoch: 1.0 - epoch / epochs


def with_warmup(schedule: Schedule, warmup_epochs: int) -> Schedule:
    """Linear warm-up over the first ``warmup_epochs`` epochs: epoch e < W gets (e + 1)/W of the
    schedule's factor (the usual per-epoch warm-up), then the schedule."""
    if warmup_epochs <= 0:
        return schedule
    return lambda epoch: schedule(epoch) * min(1.0, (epoch + 1) / warmup_epochs)


def make_schedule(recipe: Any, epochs: int | None = None) -> Schedule:
    """The recipe's lr factor per epoch (0-based): its registered schedule, then warm-up."""
    from ..plugins import get

    fn = get("schedule", recipe.schedule).create(
        recipe.epochs if epochs is None else epochs, milestones=list(recipe.milestones),
        step_size=recipe.step_size, gamma=recipe.gamma, **recipe.schedule_options)
    return with_warmup(fn, recipe.warmup_epochs)


# ============================== registration ===================================================


@hookimpl
def register_optimizers(register):
    register("sgd", sgd, description="SGD with momentum, optional Nesterov (the CIFAR recipes)")
    register("adam", adam, description="Adam (Kingma & Ba, ICLR 2015)",
             defaults={"betas": [0.9, 0.999], "eps": 1e-8}, types={"betas": list[float]})
    register("adamw", adamw, description="AdamW, decoupled weight decay (Loshchilov & Hutter, "
             "ICLR 2019)", defaults={"betas": [0.9, 0.999], "eps": 1e-8},
             types={"betas": list[float]})


@hookimpl
def register_schedules(register):
    register("multistep", multistep, description="×gamma at each of recipe.milestones")
    register("step", step, description="×gamma every recipe.step_size epochs")
    register("cosine", cosine, description="cosine decay to 0 over the epochs")
    register("constant", constant, description="the base lr throughout")
    register("linear", linear, description="linear decay to 0 over the epochs")
