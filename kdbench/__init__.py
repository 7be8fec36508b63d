"""kdbench: a plugin-based, reproducible benchmark suite for knowledge distillation.

Python API::

    import kdbench
    model = kdbench.create_model("resnet20", num_classes=100)
    record = kdbench.run(kdbench.build_config({"loss.name": "kd", "teacher.source": "full"}))
    df = kdbench.load_records("results")

Plugin authors need only ``import kdbench`` and decorate hook functions with
``@kdbench.hookimpl`` (see :mod:`kdbench.hookspecs`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import compat
from .hookspecs import hookimpl
from .version import __version__

compat.install()

#: modules of the top level that moved in 0.3 (old path -> new home; see :mod:`kdbench.compat`)
MOVED: dict[str, str | tuple[str, ...]] = {
    "table": ("kdbench.report.records", "kdbench.report.render", "kdbench.report.pivot"),
    "layouts": "kdbench.report.layouts",
    "methods": "kdbench.report.methods",
    "robustness": "kdbench.report.robustness",
    "plotting": "kdbench.report.figures",
    "reproduce": "kdbench.report.reproduce",
    "presets": "kdbench.config.presets",
    "record": "kdbench.runner.record",
    "checks": "kdbench.runner.checks",
    "optim": "kdbench.stages.optim",
}

__all__ = ["__version__", "hookimpl", "create_model", "run", "load_records", "build_config",
           "resolve_config",
           "RunConfig"]

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from .config import RunConfig
    from .models import KDModel


def create_model(name: str, num_classes: int, in_chans: int = 3, **kwargs: Any) -> KDModel:
    """Build a registered architecture (``resnet20``, ``timm/resnet18``, ...)."""
    from .models import create_model as _create

    return _create(name, num_classes, in_chans, **kwargs)


def run(config: RunConfig | dict[str, Any], *, force: bool = False,
        progress: bool = True, changed: str = "ask") -> dict[str, Any]:
    """Run one configuration (a RunConfig or its dict form) and return the result record
    (``changed``: what is done with a finished record made by other code, see
    :func:`kdbench.runner.run`)."""
    from .runner import run as _run

    return _run(config, force=force, progress=progress, changed=changed)


def resolve_config(config: RunConfig | dict[str, Any]) -> RunConfig:
    """The fully resolved config, as a run would use and record it; every error found is
    reported (one ConfigError listing them), nothing is trained or written."""
    from .config import RunConfig as _RunConfig
    from .config import resolve_config as _resolve

    return _resolve(_RunConfig.from_dict(config) if isinstance(config, dict) else config)


def load_records(results_dir: str = "results") -> pd.DataFrame:
    """Every run record under ``<results_dir>/runs`` as one pandas DataFrame row."""
    from .report.records import load_records as _load

    return _load(results_dir)


def build_config(overrides: dict[str, Any] | None = None,
                 spec: dict[str, Any] | None = None) -> RunConfig:
    """A RunConfig: preset defaults, then ``spec`` (nested), then dotted ``overrides``."""
    from .config import build_config as _build

    return _build(overrides, spec)


def __getattr__(name: str) -> Any:
    if name == "RunConfig":
        from .config import RunConfig

        return RunConfig
    raise AttributeError(name)
