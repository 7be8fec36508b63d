"""Built-in loggers: ``csv`` (a file per run, one row per epoch) and ``tensorboard`` (event files
with every number of every epoch and the hyperparameters for TensorBoard's HParams view).

Both write under ``<results>/logs/<run_id>/`` unless told otherwise. ``tensorboard`` needs the
``tensorboard`` package (the ``kdbench[tensorboard]`` extra): its registration names it, so
``--log tensorboard`` without it is a one-line error when the config is resolved, before any
training.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..hookspecs import hookimpl
from ..store import atomic_write_bytes, open_append
from .common import final_metrics, flatten, numbers, outcome, run_logs_dir

# ============================== csv ============================================================


class CsvLogger:
    """``csv``: ``<dir>/<run_id>/epochs.csv`` (``dir`` defaults to ``<results>/logs``), one row
    per epoch: ``epoch``, then every value of the epoch's row in first-seen order (metrics, loss
    terms ``train_*``, ``lr``, ``stage`` in a run of several stages).

    Stages may log different loss terms, so the columns are the union of every row's keys and a
    row leaves the others empty. A row whose keys the header has is appended; a row with a new
    key (a stage with another loss term) makes the file be rewritten whole, atomically, with the
    wider header. A resumed run reads the file back and replaces the rows of the epochs it
    trains again; a forced rerun starts it afresh (it trains from epoch 1).
    """

    def __init__(self, results_dir: str, dir: str | None = None):
        self.root = Path(dir) if dir else Path(results_dir) / "logs"
        self.path: Path | None = None
        self.rows: list[dict[str, Any]] = []
        self.columns: list[str] = []

    def start(self, record: dict[str, Any]) -> None:
        """Find the run's file; a resumed run's rows are read back."""
        self.path = self.root / record["run_id"] / "epochs.csv"
        self.rows = read_csv(self.path) if self.path.exists() else []
        self.columns = []  # the file is rewritten at the first epoch

    def epoch(self, run_id: str, row: dict[str, Any]) -> None:
        """Write the epoch's row (replacing a row of the same or a later epoch)."""
        assert self.path is not None, "start() comes first"
        epoch = int(row["epoch"])
        stale = any(int(r["epoch"]) >= epoch for r in self.rows)
        self.rows = [r for r in self.rows if int(r["epoch"]) < epoch] + [dict(row)]
        if self.columns and not stale and set(row) <= set(self.columns):
            with open_append(self.path) as f:
                f.write(write_csv([row], self.columns, header=False))
            return
        self.columns = csv_columns(self.rows)
        atomic_write_bytes(self.path, write_csv(self.rows, self.columns).encode())

    def end(self, record: dict[str, Any]) -> None:
        """Nothing left to write: every epoch is on disk when it ends."""


def csv_columns(rows: list[dict[str, Any]]) -> list[str]:
    """Every key of ``rows`` in first-seen order, ``epoch`` first."""
    columns = ["epoch"]
    for row in rows:
        columns += [k for k in row if k not in columns]
    return columns


def write_csv(rows: list[dict[str, Any]], columns: list[str], header: bool = True) -> str:
    """``rows`` as CSV text under ``columns``: lists and mappings as JSON, a value a row does
    not have left empty."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, restval="", lineterminator="\n")
    if header:
        writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v
                         for k, v in row.items()})
    return buf.getvalue()


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of an ``epochs.csv`` as text (the columns a row left empty dropped)."""
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


# ============================== tensorboard ====================================================

TENSORBOARD_PACKAGE = "tensorboard"


def _need_tensorboard() -> None:
    import importlib.util

    if importlib.util.find_spec(TENSORBOARD_PACKAGE) is None:
        raise ConfigError(f"logger 'tensorboard' needs the package {TENSORBOARD_PACKAGE!r}, "
                          f"which is not installed: pip install {TENSORBOARD_PACKAGE} (or "
                          f"pip install 'kdbench[tensorboard]')")


class TensorBoardLogger:
    """``tensorboard``: event files in ``<results>/logs/<run_id>/tb/`` (or
    ``<logdir>/<run_id>/``), readable by ``tensorboard --logdir <results>/logs``.

    - every number of each epoch row (metrics, loss terms ``train_*``, ``lr``) as a scalar
      with its own name as the tag, step = epoch;
    - the run's hyperparameters for the HParams plugin: a session-start summary holding the
      flattened resolved config (``loss.options.T``, ``recipe.lr``, ...; lists as JSON text,
      None as an empty value), and at the end a session-end summary with the outcome;
    - the record's final metrics under their record names (``top1_best``, ``top1_last``,
      ``best_epoch``, ...) as scalars at the last epoch: the metric columns that let a sweep be
      compared in the HParams view.

    No experiment summary is written: TensorBoard takes the first one it finds as the whole
    sweep's list of hyperparameters (``_find_experiment_tag`` in tensorboard/plugins/hparams/
    backend_context.py), which would hide the options of every other loss of a sweep; without
    one it builds the list from all runs' session-start summaries and the metrics from their
    scalar tags. Written with TensorBoard's own event writer and protocol buffers
    (``tensorboard.summary.writer``, ``tensorboard.plugins.hparams``), no TensorFlow.
    """

    def __init__(self, results_dir: str, logdir: str | None = None):
        _need_tensorboard()
        self.results_dir = results_dir
        self.logdir = logdir
        self.writer: Any = None
        self.last_epoch = 0

    def folder(self, run_id: str) -> Path:
        """Where the run's event files go."""
        if self.logdir:
            return Path(self.logdir) / run_id
        return run_logs_dir(self.results_dir, run_id) / "tb"

    def start(self, record: dict[str, Any]) -> None:
        """Open the event file and write the session-start summary (the hyperparameters)."""
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        folder = self.folder(record["run_id"])
        folder.mkdir(parents=True, exist_ok=True)
        self.writer = EventFileWriter(str(folder))
        self._summary(0, [_session_start(flatten(record["config"]))])
        self.writer.flush()

    def epoch(self, run_id: str, row: dict[str, Any]) -> None:
        """Every number of the row as a scalar at step = epoch; flushed, to watch it live."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        self.last_epoch = int(row["epoch"])
        self._summary(self.last_epoch, [Summary.Value(tag=k, simple_value=v)
                                        for k, v in numbers(row).items()])
        self.writer.flush()

    def end(self, record: dict[str, Any]) -> None:
        """The final metrics, the session-end summary with the outcome; close the file."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        step = int((record.get("metrics") or {}).get("epochs") or self.last_epoch)
        final = final_metrics(record)
        if final:
            self._summary(step, [Summary.Value(tag=k, simple_value=v)
                                 for k, v in final.items()])
        self._summary(step, [_session_end(outcome(record))])
        self.writer.close()

    def _summary(self, step: int, values: list[Any]) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        self.writer.add_event(Event(wall_time=time.time(), step=step,
                                    summary=Summary(value=values)))


def _session_start(hparams: dict[str, Any]) -> Any:
    """The HParams plugin's session-start summary value for ``hparams`` (bool, number, text;
    None as the protobuf null value, which TensorBoard skips when it infers a column's type)."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    info = plugin_data_pb2.SessionStartInfo(start_time_secs=time.time())
    for name, value in hparams.items():
        slot = info.hparams[name]
        if value is None:
            slot.null_value = 0
        elif isinstance(value, bool):
            slot.bool_value = value
        elif isinstance(value, (int, float)):
            slot.number_value = float(value)
        else:
            slot.string_value = str(value)
    return _hparams_value("session_start_info", plugin_data_pb2.HParamsPluginData(
        session_start_info=info))


def _session_end(result: str) -> Any:
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

    status = {"finished": api_pb2.STATUS_SUCCESS}.get(result, api_pb2.STATUS_FAILURE)
    return _hparams_value("session_end_info", plugin_data_pb2.HParamsPluginData(
        session_end_info=plugin_data_pb2.SessionEndInfo(status=status,
                                                        end_time_secs=time.time())))


def _hparams_value(which: str, data: Any) -> Any:
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import metadata

    tag = {"session_start_info": metadata.SESSION_START_INFO_TAG,
           "session_end_info": metadata.SESSION_END_INFO_TAG}[which]
    return Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(data))


# ============================== registration ===================================================


@hookimpl
def register_loggers(register):
    register("csv", CsvLogger, defaults={"dir": None}, types={"dir": str | None})
    register("tensorboard", TensorBoardLogger, package=TENSORBOARD_PACKAGE,
             defaults={"logdir": None}, types={"logdir": str | None})
