"""kdbench-mlflow: the ``mlflow`` logger (``kdbench run --log mlflow``), a plugin package like
any other.

Each kdbench run is one MLflow run (named by the kdbench run id, tag ``kdbench.run_id``) in the
experiment ``kdbench``: its params are the flattened resolved config (``loss.options.T``,
``recipe.lr``, ...), its metrics every number of every epoch (``top1``, ``train_kd``, ``lr``;
step = epoch) and at the end the record's final metrics under their record names
(``top1_best``, ``top1_last``, ...), its tags the teacher's provenance (``teacher.*``) and the
environment (``env.*``), and its artifact ``record.json`` the final record. The MLflow run ends
FINISHED, FAILED or KILLED (interrupted) as the kdbench run did; an interrupted run that resumes
continues its KILLED MLflow run.

The default tracking store is local, under ``<results>/mlruns``: an SQLite database
(``mlflow.db``) and an artifact folder. MLflow 3 refuses its plain file store
(``./mlruns`` folders) unless ``MLFLOW_ALLOW_FILE_STORE`` is set, and recommends SQLite for local
use; creating the database takes a few seconds once per store. ``tracking_uri=`` points
anywhere else (a server, another database); ``experiment=`` names the experiment.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import kdbench
from kdbench.errors import ConfigError
from kdbench.loggers.common import (
    InBackground,
    final_metrics,
    flatten,
    numbers,
    outcome,
    run_name,
)

PACKAGE = "mlflow"
#: MLflow's own batch limits (mlflow.utils.validation): params per call, metrics per call
PARAMS_PER_BATCH = 100
METRICS_PER_BATCH = 1000
STATUS = {"finished": "FINISHED", "failed": "FAILED", "killed": "KILLED"}


def _param_limit() -> int:
    """The longest param value the installed MLflow stores (500 before MLflow 2.?, now 6000)."""
    try:
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH
    except ImportError:  # pragma: no cover - older layouts
        return 500
    return int(MAX_PARAM_VAL_LENGTH)


def local_store(results_dir: str | Path) -> tuple[str, str]:
    """The default tracking URI and artifact location: ``<results>/mlruns/mlflow.db`` and
    ``<results>/mlruns/artifacts``."""
    root = Path(results_dir).resolve() / "mlruns"
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri()


class MlflowLogger:
    """``mlflow``: a kdbench run as an MLflow run (see the module docstring). Options:
    ``tracking_uri`` (default: the local store under ``<results>/mlruns``) and ``experiment``
    (default ``kdbench``). Uses ``MlflowClient`` only, never MLflow's process-wide active run,
    so the runs of a lockstep group log side by side. The client (and the local database) is
    made in ``start``."""

    def __init__(self, results_dir: str, tracking_uri: str | None = None,
                 experiment: str = "kdbench"):
        if not experiment:
            raise ConfigError("logger 'mlflow' option experiment must be a non-empty name")
        self.results_dir = results_dir
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment
        self.client: Any = None
        self.artifacts: str | None = None
        self.run_id: str | None = None  # the MLflow run's id

    def _connect(self) -> None:
        """The client (its first use creates the local database)."""
        from mlflow.tracking import MlflowClient

        if self.tracking_uri is None:
            self.tracking_uri, self.artifacts = local_store(self.results_dir)
        self.client = MlflowClient(tracking_uri=self.tracking_uri)

    def _experiment(self) -> str:
        """The experiment's id, created if it does not exist (by this or another process)."""
        exp = self.client.get_experiment_by_name(self.experiment_name)
        if exp is not None:
            return exp.experiment_id
        try:
            return self.client.create_experiment(self.experiment_name,
                                                 artifact_location=self.artifacts)
        except Exception:  # another process created it first
            exp = self.client.get_experiment_by_name(self.experiment_name)
            if exp is None:
                raise
            return exp.experiment_id

    def start(self, record: dict[str, Any]) -> None:
        """Create the MLflow run with its tags and params, or continue the KILLED run of an
        interrupted attempt."""
        from mlflow.entities import Param

        self._connect()
        rid = record["run_id"]
        exp_id = self._experiment()
        killed = self.client.search_runs(
            [exp_id], filter_string=f"tags.`kdbench.run_id` = '{rid}'",
            order_by=["attributes.start_time DESC"], max_results=1)
        if killed and killed[0].info.status == "KILLED":  # an interrupted run resumes
            self.run_id = killed[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            return
        cfg = record["config"]
        tags = {"kdbench.run_id": rid, "kdbench.status": "running",
                "kdbench.loss": cfg["loss"]["name"], "kdbench.student": cfg["student"],
                "kdbench.dataset": cfg["data"]["name"]}
        tags.update({f"teacher.{k}": v for k, v in flatten(record.get("teacher") or {}).items()})
        tags.update({f"env.{k}": v for k, v in flatten(record.get("env") or {}).items()})
        run = self.client.create_run(exp_id, run_name=run_name(record),
                                     tags={k: str(v) for k, v in tags.items()})
        self.run_id = run.info.run_id
        limit = _param_limit()
        params = [Param(k, str(v)[:limit]) for k, v in flatten(cfg).items()]
        for i in range(0, len(params), PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=params[i:i + PARAMS_PER_BATCH])

    def epoch(self, run_id: str, row: dict[str, Any]) -> None:
        """Every number of the row as a metric at step = epoch."""
        self._metrics(numbers(row), int(row["epoch"]))

    def end(self, record: dict[str, Any]) -> None:
        """The final metrics, the record as an artifact, the status; end the MLflow run."""
        if self.run_id is None:
            return
        metrics = record.get("metrics") or {}
        self._metrics(final_metrics(record), int(metrics.get("epochs") or 0))
        self.client.log_text(self.run_id, json.dumps(record, indent=2, default=str),
                             "record.json")
        self.client.set_tag(self.run_id, "kdbench.status", record["status"])
        self.client.set_terminated(self.run_id, status=STATUS[outcome(record)])

    def _metrics(self, values: dict[str, float], step: int) -> None:
        """Log ``values`` at ``step`` in batches of MLflow's size."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step) for k, v in values.items()]
        for i in range(0, len(batch), METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=batch[i:i + METRICS_PER_BATCH])


def mlflow_logger(results_dir: str, tracking_uri: str | None = None,
                  experiment: str = "kdbench", background: bool = True) -> Any:
    """The ``mlflow`` logger; with ``background`` (the default) its calls run on a worker
    thread, so creating the local database (seconds, once per store) or reaching a server
    never holds up training."""
    logger = MlflowLogger(results_dir, tracking_uri, experiment)
    return InBackground(logger, "mlflow") if background else logger


@kdbench.hookimpl
def register_loggers(register):
    register("mlflow", mlflow_logger, package=PACKAGE,
             defaults={"tracking_uri": None, "experiment": "kdbench", "background": True},
             types={"tracking_uri": str | None})
