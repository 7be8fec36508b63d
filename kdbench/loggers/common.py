"""What every logger needs from a run: the flattened config, the numbers of an epoch row, the
final metrics, and where a run's logs go (``<results>/logs/<run_id>/``).

Logger plugins (the built-in ``csv`` and ``tensorboard``, the ``kdbench-mlflow`` and
``kdbench-wandb`` packages) share these so that a run's names are the same in every tracker:
``loss.options.T`` is a parameter everywhere, ``top1`` and ``train_kd`` are metrics everywhere.
"""

from __future__ import annotations

import copy
import json
import math
import queue
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: the final record's status → the outcome trackers know (finished, failed, killed)
OUTCOMES = {"done": "finished", "failed": "failed", "interrupted": "killed"}


def flatten(mapping: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """A nested mapping as one level of ``a.b.c`` keys; lists become JSON text, scalars stay.

    An empty mapping is kept as the value ``"{}"`` so that a field the config has (e.g.
    ``loss.options`` of a loss without options) does not vanish from a tracker's table.
    """
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name, sep))
        elif isinstance(value, Mapping):
            out[name] = "{}"
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(value, sort_keys=True, default=str)
        else:
            out[name] = value
    return out


def numbers(row: Mapping[str, Any], *, skip: tuple[str, ...] = ("epoch",)) -> dict[str, float]:
    """The real-number entries of an epoch row (metrics, loss terms ``train_*``, ``lr``), without
    ``skip`` (the epoch, which trackers take as the step) and without text such as ``stage``."""
    return {k: float(v) for k, v in row.items()
            if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool)}


def final_metrics(record: Mapping[str, Any]) -> dict[str, float]:
    """The record's scalar metrics (``top1_last``, ``top1_best``, ``best_epoch``, ...): what a
    tracker shows as the run's result. Curves and per-stage lists are left out; so are NaNs
    (a metric never measured), which some trackers refuse."""
    metrics = record.get("metrics") or {}
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def run_name(record: Mapping[str, Any]) -> str:
    """A tracker's name for a run, what a reader scans a list of runs for:
    ``student←teacher loss seed N`` (``student loss seed N`` without a teacher). Names repeat
    across seeds' settings; the run id, unique, goes in a tag."""
    cfg = record.get("config") or {}
    teacher = (record.get("teacher") or {}).get("arch") or (cfg.get("teacher") or {}).get("arch")
    student = cfg.get("student", "?") + (f"←{teacher}" if teacher else "")
    return f"{student} {(cfg.get('loss') or {}).get('name', '?')} seed {cfg.get('seed', '?')}"


def run_logs_dir(results_dir: str | Path, run_id: str) -> Path:
    """``<results>/logs/<run_id>``: the folder of a run's built-in logs."""
    return Path(results_dir) / "logs" / run_id


def outcome(record: Mapping[str, Any]) -> str:
    """``finished``, ``failed`` or ``killed`` (interrupted) for a final record."""
    return OUTCOMES.get(str(record.get("status")), "failed")


class InBackground:
    """A logger whose calls run in order on a worker thread, so that a slow tracker (a database
    to create, a server to reach) never holds up training; ``end`` waits for them all.

    The first exception in the worker is kept and raised by the next call (``end`` included),
    so the run's :class:`~kdbench.loggers.Loggers` warns once and switches the logger off, as
    it does for a logger that fails in the foreground. ``start`` and ``end`` get a copy of the
    record (the runner keeps filling it in), ``end`` gives up after ``timeout`` seconds (the run
    writes its record after its loggers end).
    """

    def __init__(self, logger: object, name: str, timeout: float = 300.0):
        self.logger, self.name, self.timeout = logger, name, timeout
        self.error: BaseException | None = None
        self.calls: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._work, name=f"kdbench-logger-{name}",
                                       daemon=True)
        self.thread.start()

    def _work(self) -> None:
        """The worker: the calls in order; after a failure, the rest are dropped."""
        while True:
            call = self.calls.get()
            if call is None:
                return
            method, args = call
            if self.error is None:
                try:
                    getattr(self.logger, method)(*args)
                except Exception as exc:  # noqa: BLE001 - handed to the caller's next call
                    self.error = exc

    def _check(self) -> None:
        """Raise the worker's first exception, if there was one."""
        if self.error is not None:
            raise self.error

    def start(self, record: dict) -> None:
        """Queue ``start`` with a copy of the record."""
        self._check()
        self.calls.put(("start", (copy.deepcopy(record),)))

    def epoch(self, run_id: str, row: dict) -> None:
        """Queue ``epoch`` with a copy of the row."""
        self._check()
        self.calls.put(("epoch", (run_id, dict(row))))

    def end(self, record: dict) -> None:
        """Queue ``end``, then wait for the worker to finish every call."""
        self._check()
        self.calls.put(("end", (copy.deepcopy(record),)))
        self.calls.put(None)
        self.thread.join(self.timeout)
        if self.thread.is_alive():
            raise TimeoutError(f"{self.name} did not finish within {self.timeout:g} s")
        self._check()
