"""kdbench-wandb: the ``wandb`` logger (``kdbench run --log wandb``), a plugin package like any
other.

Each kdbench run is one Weights & Biases run named by the kdbench run id (also a tag), in the
project ``kdbench``: its config is the resolved config (nested, as kdbench keeps it), its
history every number of every epoch (``top1``, ``train_kd``, ``lr``; step = epoch), its summary
the record's final metrics (``top1_best``, ``top1_last``, ...) and ``status``, and its file
``record.json`` the final record. The W&B run exits 0 when the kdbench run is done, 1 when it
failed or was interrupted.

Offline by default (``mode=offline``): nothing leaves the machine, the run is a folder
``<results>/wandb/offline-run-<time>-<id>/`` that ``wandb sync`` uploads later. ``mode=online``
logs live (after ``wandb login``); ``dir=`` moves the ``wandb/`` folder elsewhere; ``project=``,
``entity=`` and ``group=`` are W&B's own. W&B's console capture is off (kdbench's progress bars
stay as they are); several runs of a lockstep group log side by side (``reinit="create_new"``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kdbench
from kdbench.errors import ConfigError
from kdbench.loggers.common import final_metrics, numbers, run_name

PACKAGE = "wandb"
MODES = ("offline", "online", "disabled")
RECORD = "record.json"


class WandbLogger:
    """``wandb``: a kdbench run as a W&B run (see the module docstring). Options: ``mode``
    (offline, online, disabled; default offline), ``dir`` (default: the results dir, so runs
    land in ``<results>/wandb/``), ``project`` (kdbench), ``entity``, ``group``."""

    def __init__(self, results_dir: str, mode: str = "offline", dir: str | None = None,
                 project: str = "kdbench", entity: str | None = None,
                 group: str | None = None):
        import wandb  # noqa: F401 - fail here, not at the first epoch

        if mode not in MODES:
            raise ConfigError(f"logger 'wandb' option mode must be one of {', '.join(MODES)}, "
                              f"got {mode!r}")
        self.mode, self.project, self.entity, self.group = mode, project, entity, group
        self.dir = Path(dir) if dir else Path(results_dir)
        self.run: Any = None

    def start(self, record: dict[str, Any]) -> None:
        """Start the W&B run with the resolved config."""
        import wandb

        cfg = record["config"]
        self.dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=self.project, entity=self.entity, group=self.group, mode=self.mode,
            dir=str(self.dir), name=run_name(record), job_type="kdbench", config=cfg,
            tags=[record["run_id"], cfg["loss"]["name"], cfg["student"], cfg["data"]["name"]],
            reinit="create_new",
            settings=wandb.Settings(silent=True, console="off"))

    def epoch(self, run_id: str, row: dict[str, Any]) -> None:
        """Every number of the row into the history at step = epoch."""
        self.run.log(numbers(row), step=int(row["epoch"]))

    def end(self, record: dict[str, Any]) -> None:
        """The record as a file, the final metrics in the summary; finish the W&B run."""
        if self.run is None:
            return
        path = Path(self.run.dir) / RECORD
        path.write_text(json.dumps(record, indent=2, default=str))
        self.run.save(str(path), base_path=self.run.dir, policy="now")
        self.run.summary.update({**final_metrics(record), "status": record["status"]})
        self.run.finish(exit_code=0 if record["status"] == "done" else 1)
        self.run = None


@kdbench.hookimpl
def register_loggers(register):
    register("wandb", WandbLogger, package=PACKAGE,
             defaults={"mode": "offline", "dir": None, "project": "kdbench", "entity": None,
                       "group": None},
             types={"dir": str | None, "entity": str | None, "group": str | None})
