"""Speed-only model preparation: NHWC weights and ``torch.compile`` for the duration of a
block, undone on exit (:func:`prepared`)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn


@contextlib.contextmanager
def prepared(models: list[nn.Module | None], *, channels_last: bool = False,
             compile: bool = False) -> Iterator[None]:
    """Models set up for fast training for the duration of the block: NHWC weights and, with
    ``compile``, ``forward`` and ``features`` compiled by ``torch.compile``.

    Only speed changes. State dicts taken inside the block hold ordinary contiguous tensors
    (checkpoints stay portable, e.g. to safetensors), and on exit the models get back their
    layout and methods.
    """
    def contiguous_state(module, state, prefix, local_metadata):
        for k, v in state.items():
            if isinstance(v, torch.Tensor) and v.dim() == 4 and not v.is_contiguous():
                state[k] = v.contiguous()

    undo: list[Callable[[], None]] = []
    for model in models:
        if model is None:
            continue
        if channels_last:
            model.to(memory_format=torch.channels_last)
            undo.append(functools.partial(model.to, memory_format=torch.contiguous_format))
            undo.append(model._register_state_dict_hook(contiguous_state).remove)
        if compile:
            for name in ("forward", "features"):
                fn = getattr(model, name, None)
                if fn is None:
                    continue
                before = model.__dict__.get(name, _MISSING)
                undo.append(functools.partial(_restore_attr, model, name, before))
                # shapes are fixed within a run (the last batch and eval compile once more)
                setattr(model, name, torch.compile(fn, dynamic=False))
    try:
        yield
    finally:
        for fn in reversed(undo):
            fn()


def _restore_attr(obj: Any, name: str, before: Any) -> None:
    if before is _MISSING:
        delattr(obj, name)
    else:
        setattr(obj, name, before)


_MISSING = object()
