"""Loggers: where a run's progress goes besides its record (``--log NAME``, config ``log``).

A logger plugin (``register_loggers``) is a factory ``factory(**options)`` returning an object
with ``start(record)`` (the record as training starts: resolved config, teacher provenance,
environment), ``epoch(run_id, row)`` (every number of one epoch: metrics, loss terms, lr) and
``end(record)`` (the final record). Loggers only watch: a logger that raises is warned about once
and switched off for the rest of the run, which goes on unchanged.
"""

from __future__ import annotations

import warnings
from typing import Any

#: loggers that live in plugin packages of their own: the package to install
EXTERNAL_LOGGERS = {"mlflow": "kdbench-mlflow (plugins/kdbench-mlflow in the kdbench sources)",
                    "wandb": "kdbench-wandb (plugins/kdbench-wandb in the kdbench sources)"}


class Loggers:
    """A run's loggers, each isolated: the first exception switches it off with one warning."""

    def __init__(self, items: list[dict[str, Any]], results_dir: str):
        from ..plugins import get

        self.active: list[tuple[str, Any]] = []
        for item in items:
            options = {k: v for k, v in item.items() if k != "name"}
            try:
                logger = get("logger", item["name"]).create(results_dir=results_dir, **options)
            except Exception as exc:  # noqa: BLE001 - a logger never stops a run
                self._warn(item["name"], "could not start", exc)
                continue
            self.active.append((item["name"], logger))

    @staticmethod
    def _warn(name: str, what: str, exc: BaseException) -> None:
        warnings.warn(f"kdbench: logger {name!r} {what} ({type(exc).__name__}: {exc}); it is "
                      f"off for the rest of this run", RuntimeWarning, stacklevel=3)

    def _call(self, method: str, *args: Any) -> None:
        for entry in list(self.active):
            name, logger = entry
            try:
                getattr(logger, method)(*args)
            except Exception as exc:  # noqa: BLE001
                self._warn(name, f"failed in {method}", exc)
                self.active.remove(entry)

    def start(self, record: dict[str, Any]) -> None:
        self._call("start", record)

    def epoch(self, run_id: str, row: dict[str, Any]) -> None:
        self._call("epoch", run_id, row)

    def end(self, record: dict[str, Any]) -> None:
        self._call("end", record)
