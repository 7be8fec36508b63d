"""Parameters and multiply-accumulates of registered or timm architectures, for ``kdbench models``.

Models are built on PyTorch's ``meta`` device, so nothing is allocated or computed: a thousand
timm models profile in minutes and a billion-parameter one costs no memory. MACs are counted by
``torch.utils.flop_counter`` (convolutions, matrix products, attention) for one image at the
dataset's input size, as FLOPs / 2; normalisation, activations and pooling are not counted, as
the field's tables do not count them.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import torch

from ..errors import ConfigError
from .base import count_parameters


@dataclass
class Profile:
    """One row of ``kdbench models``."""

    name: str
    family: str
    params: int | None
    macs: int | None
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def count_macs(model: torch.nn.Module, input_shape: tuple[int, int, int],
               device: str | torch.device = "meta") -> int:
    """Multiply-accumulates of one forward pass of one image of ``input_shape`` (C, H, W)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def profile(name: str, family: str, num_classes: int,
            input_shape: tuple[int, int, int]) -> Profile:
    """Parameters and MACs of the registered model ``name`` for a dataset's classes and input."""
    from . import create_meta_model

    c, h, w = input_shape
    try:
        model = create_meta_model(name, num_classes, c)
    except Exception as exc:  # noqa: BLE001 - a row that cannot be built says why, others go on
        return Profile(name, family, None, None, f"cannot build: {_first_line(exc)}")
    params = count_parameters(model)
    need = getattr(model, "min_input_size", 1)
    if min(h, w) < need:
        return Profile(name, family, params, None, f"needs at least {need}×{need}")
    try:
        macs = count_macs(model, input_shape)
    except Exception as exc:  # noqa: BLE001
        return Profile(name, family, params, None, f"forward failed: {_first_line(exc)}")
    return Profile(name, family, params, macs)


def registered_models() -> list[tuple[str, str]]:
    """(name, family) of every registered model except namespaces, grouped by family."""
    from ..plugins import get_registry, natural_key

    entries = [e for e in get_registry().entries("model") if not e.is_namespace]
    rows = [(e.name, str(e.metadata.get("family", ""))) for e in entries]
    return sorted(rows, key=lambda r: (r[1], natural_key(r[0])))


def named_models(names: Iterable[str]) -> list[tuple[str, str]]:
    """(name, family) of the given registered names (``timm/<name>`` included); an unknown name
    raises UnknownNameError with close matches."""
    from ..plugins import get

    rows = []
    for name in names:
        family = str(get("model", name).metadata.get("family", ""))
        rows.append((name, f"timm:{_timm_module(name[5:])}" if family == "timm" else family))
    return rows


def timm_models(pattern: str) -> list[tuple[str, str]]:
    """(``timm/<name>``, ``timm:<module>``) of timm models matching a shell-style pattern; a
    pattern without wildcards matches as a substring."""
    from .timm_adapter import timm_names

    if not any(ch in pattern for ch in "*?["):
        pattern = f"*{pattern}*"
    names = [n for n in timm_names() if fnmatch.fnmatchcase(n, pattern)]
    if not names:
        raise ConfigError(f"no timm model matches {pattern!r} (shell wildcards, e.g. "
                          f"'resnet*' or '*vit_tiny*')")
    return [(f"timm/{n}", f"timm:{_timm_module(n)}") for n in names]


def _timm_module(name: str) -> str:
    try:
        from timm.models._registry import _model_to_module

        return _model_to_module.get(name, "?")
    except ImportError:  # pragma: no cover - timm moved its private table
        return "?"


def profile_all(models: Iterable[tuple[str, str]], num_classes: int,
                input_shape: tuple[int, int, int], progress: bool = False) -> list[Profile]:
    import sys

    from tqdm import tqdm

    models = list(models)
    # a bar only in a terminal: piped, its carriage returns would pile up in the file
    it = tqdm(models, desc="profiling", unit="model", leave=False,
              disable=not progress or len(models) < 20 or not sys.stderr.isatty())
    return [profile(name, family, num_classes, input_shape) for name, family in it]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
