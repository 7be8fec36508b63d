"""The built-in loggers through the real runner: ``csv`` files against the record's curve (stages
with different loss terms, a resumed run, a forced rerun), ``tensorboard`` event files read back
with TensorBoard's own reader (scalars per epoch, HParams session with the flattened config, the
final metrics), the background wrapper, and the bad input of each."""

from __future__ import annotations

import csv
import functools
import math
import sys
import textwrap

import pandas as pd
import pytest
from plugin_packages import INTERRUPT

from conftest import tiny_overrides
from kdbench import plugins
from kdbench.config import build_config
from kdbench.loggers.common import InBackground, flatten, numbers
from kdbench.runner import run

pytestmark = pytest.mark.usefixtures("single_thread")

STAGE_PLUGIN = textwrap.dedent('''
    """A warm-up stage whose only loss term is 'zero' (no label term), and a logger that
    interrupts the run (as Ctrl-C would) when it is told about epoch 2 the first time."""
    import kdbench
    from kdbench.stages import stage_from_options


    def zero_warmup(ctx, **options):
        def loss(student, teacher, batch, epoch, stage, views=None):
            return {"zero": (student.logits ** 2).mean() * 1e-3}
        return stage_from_options("zero_warmup", ctx, options, loss=loss,
                                  parameters=list(ctx.student.parameters()), default_epochs=1,
                                  student="logits", teacher="none")


    @kdbench.hookimpl
    def register_stages(register):
        register("zero_warmup", zero_warmup)
''') + INTERRUPT


@pytest.fixture
def stage_plugin(local_plugin):
    local_plugin(STAGE_PLUGIN, "stage_logger.py")
    plugins.get_registry()
    return sys.modules["kdbench_local_plugins.stage_logger"]


def config(results, **extra):
    return build_config(tiny_overrides(results, **extra))


def read_rows(path):
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        return header, [dict(zip(header, r)) for r in reader]


def assert_rows_match_curve(path, curve):
    """Each CSV row is its epoch of the curve: same numbers, the stage's name, and empty cells
    for the values that epoch does not have."""
    header, rows = read_rows(path)
    assert header[0] == "epoch"
    assert set(header) == set().union(*curve)
    assert len(rows) == len(curve)
    for row, epoch in zip(rows, curve):
        for key in header:
            if key not in epoch:
                assert row[key] == "", (key, row)
            elif isinstance(epoch[key], str):
                assert row[key] == epoch[key]
            else:
                assert float(row[key]) == epoch[key], (key, row[key], epoch[key])


# ============================== csv ============================================================


def test_csv_has_one_row_per_epoch_across_stages_with_different_terms(stage_plugin, results):
    record = run(config(results, **{"recipe.epochs": 3, "loss.name": "ce",
                                    "warmup": [{"name": "zero_warmup", "epochs": 1}],
                                    "log": ["csv"]}), progress=False)
    curve = record["metrics"]["curve"]
    # the premise: the warm-up and the main stage log different loss terms
    assert "train_zero" in curve[0] and "train_ce" not in curve[0]
    assert "train_ce" in curve[1] and "train_zero" not in curve[1]
    path = results / "logs" / record["run_id"] / "epochs.csv"
    assert_rows_match_curve(path, curve)
    assert [r["stage"] for r in read_rows(path)[1]] == ["zero_warmup", "main", "main"]


def test_csv_of_an_interrupted_run_resumed_and_of_a_forced_rerun(stage_plugin, results):
    overrides = {"recipe.epochs": 4, "loss.name": "ce", "log": ["csv", "interrupt"]}
    with pytest.raises(KeyboardInterrupt):
        run(config(results, **overrides), progress=False)
    [rid] = stage_plugin.KILLED
    path = results / "logs" / rid / "epochs.csv"
    assert [r["epoch"] for r in read_rows(path)[1]] == ["1", "2"]  # written before the kill
    record = run(config(results, **overrides), progress=False)  # resumes at epoch 3
    assert record["status"] == "done" and record["run_id"] == rid
    assert_rows_match_curve(path, record["metrics"]["curve"])
    again = run(config(results, **overrides), force=True, progress=False)
    assert_rows_match_curve(path, again["metrics"]["curve"])  # replaced, not appended


# ============================== tensorboard ====================================================


def test_tensorboard_scalars_hparams_and_final_metrics_read_back(results):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import api_pb2, metadata

    record = run(config(results, **{"loss.name": "kd", "recipe.epochs": 3,
                                    "log": ["tensorboard"]}), progress=False)
    folder = results / "logs" / record["run_id"] / "tb"
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    curve = record["metrics"]["curve"]
    per_epoch = {k for row in curve for k in row if k != "epoch"}
    assert per_epoch <= set(acc.Tags()["scalars"])
    for tag in per_epoch:
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [row["epoch"] for row in curve]
        # TensorBoard keeps scalars as float32
        assert [e.value for e in events] == pytest.approx([row[tag] for row in curve],
                                                          rel=1e-6)
    m = record["metrics"]
    for name in ("top1_last", "top1_best", "best_epoch"):
        [event] = acc.Scalars(name)
        assert event.step == 3 and event.value == pytest.approx(m[name], rel=1e-6)

    content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
    start = metadata.parse_session_start_info_plugin_data(
        content[metadata.SESSION_START_INFO_TAG])
    end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
    assert end.status == api_pb2.STATUS_SUCCESS
    assert metadata.EXPERIMENT_TAG not in content  # inferred across a sweep's runs
    # every leaf of the config, named by its path (pandas flattens it independently, but
    # drops empty mappings, which are kept as "{}")
    leaves = set(pd.json_normalize(record["config"], sep=".").columns)
    assert leaves <= set(start.hparams)
    for extra in set(start.hparams) - leaves:
        assert functools.reduce(dict.get, extra.split("."), record["config"]) == {}
        assert start.hparams[extra].string_value == "{}"
    hp = start.hparams
    assert hp["loss.name"].string_value == "kd"
    assert hp["loss.options.T"].number_value == 4.0
    assert hp["recipe.epochs"].number_value == 3
    assert hp["data.augment"].bool_value is True
    assert hp["teacher.epoch"].WhichOneof("kind") == "null_value"
    assert hp["recipe.milestones"].string_value == "[]"


def test_tensorboard_logdir_option_puts_runs_side_by_side(results, tmp_path):
    pytest.importorskip("tensorboard")
    logdir = tmp_path / "tb"
    record = run(config(results, **{"loss.name": "ce", "recipe.epochs": 1,
                                    "log": [{"name": "tensorboard", "logdir": str(logdir)}]}),
                 progress=False)
    assert list((logdir / record["run_id"]).glob("events.out.tfevents.*"))
    assert not (results / "logs").exists()


# ============================== bad input and helpers ==========================================


@pytest.mark.parametrize("name", ["mlflow", "wandb"])
def test_a_logger_from_a_package_not_installed_names_the_package(name, tmp_path, cli_runner):
    """The tracker loggers live in packages of their own (plugins/kdbench-mlflow, -wandb)."""
    result = cli_runner("run", "--dataset", "synthetic", "--loss", "ce", "--epochs", "1",
                        "--log", name, "--results-dir", tmp_path / "r")
    assert result.exit_code == 2
    assert result.output.strip() == (f"Error: logger '{name}' is not installed: pip install "
                                     f"kdbench-{name} (plugins/kdbench-{name} in the kdbench "
                                     f"sources)")
    assert not (tmp_path / "r").exists()


def test_logger_whose_package_is_missing_fails_before_training(results, cli_runner,
                                                               monkeypatch, local_plugin):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else real(name, *a))
    base = ["run", "--dataset", "synthetic", "--loss", "ce", "--epochs", "1", "--results-dir",
            results, "--quiet"]
    result = cli_runner(*base, "--log", "csv,tensorboard")
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "Error: logger 'tensorboard' needs the package 'tensorboard', which is not installed: "
        "pip install tensorboard"]
    assert not (results / "runs").exists() or not list((results / "runs").glob("*.json"))
    # any logger's registration can name the package it needs
    local_plugin(textwrap.dedent('''
        import kdbench

        @kdbench.hookimpl
        def register_loggers(register):
            register("needy", lambda results_dir: None, package="kdbench-no-such-package")
    '''), "needy.py")
    result = cli_runner(*base, "--log", "needy")
    assert result.exit_code == 2 and "needs the package 'kdbench-no-such-package'" in \
        result.output
    result = cli_runner(*base, "--log", "csv:colour=red")
    assert result.exit_code == 2 and "logger 'csv' has no option 'colour'" in result.output
    assert not (results / "logs").exists()


def test_flatten_and_numbers():
    nested = {"a": {"b": 1, "c": {"d": None}}, "e": [1, 2], "f": {}, "g": True, "h": "x"}
    assert flatten(nested) == {"a.b": 1, "a.c.d": None, "e": "[1, 2]", "f": "{}", "g": True,
                               "h": "x"}
    row = {"epoch": 3, "lr": 0.1, "top1": 50, "stage": "main", "flag": True, "nan": math.nan}
    got = numbers(row)
    assert set(got) == {"lr", "top1", "nan"} and got["top1"] == 50.0 and math.isnan(got["nan"])


def test_in_background_keeps_order_and_hands_on_the_first_error():
    seen = []

    class Slow:
        def start(self, record):
            seen.append(("start", record["n"]))

        def epoch(self, run_id, row):
            if row["epoch"] == 2:
                raise OSError("disk full")
            seen.append(("epoch", row["epoch"]))

        def end(self, record):
            seen.append("end")

    logger = InBackground(Slow(), "slow")
    record = {"n": 1}
    logger.start(record)
    record["n"] = 2  # the runner keeps filling the record in: start saw a copy
    logger.epoch("r", {"epoch": 1})
    logger.epoch("r", {"epoch": 2})
    with pytest.raises(OSError, match="disk full"):
        logger.end(record)
    assert seen == [("start", 1), ("epoch", 1)]  # nothing after the failure


def test_trackers_name_a_run_student_teacher_loss_seed():
    from kdbench.loggers.common import run_name

    with_teacher = {"config": {"student": "resnet8", "teacher": {"arch": "resnet56"},
                               "loss": {"name": "kd"}, "seed": 2},
                    "teacher": {"arch": "resnet32x4"}}  # the teacher the run really had
    assert run_name(with_teacher) == "resnet8←resnet32x4 kd seed 2"
    alone = {"config": {"student": "resnet8", "teacher": None, "loss": {"name": "ce"},
                        "seed": 0}, "teacher": None}
    assert run_name(alone) == "resnet8 ce seed 0"
