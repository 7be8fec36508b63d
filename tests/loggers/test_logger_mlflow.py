"""plugins/kdbench-mlflow installed for real (pip, into a throwaway folder that goes on the
path, where kdbench finds its entry point), a tiny run with ``--log mlflow`` through the CLI, and
the MLflow run read back through MLflow's own client from the default local store: params,
tags, per-epoch metric history, final metrics, status and the record artifact."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from plugin_packages import INTERRUPT, install, load_only, run_logged

from kdbench import plugins

pytest.importorskip("mlflow")


@pytest.fixture(scope="module")
def mlflow_install(tmp_path_factory):
    return install("kdbench-mlflow", tmp_path_factory.mktemp("site"))


def test_a_run_logged_to_mlflow_reads_back_through_its_client(mlflow_install, tmp_path,
                                                               monkeypatch, cli_runner):
    from mlflow.tracking import MlflowClient

    load_only(monkeypatch, mlflow_install, "kdbench-mlflow")
    assert plugins.get("logger", "mlflow").source == "kdbench-mlflow"
    results = tmp_path / "r"
    record = run_logged(cli_runner, results, "mlflow")

    client = MlflowClient(tracking_uri=f"sqlite:///{results.resolve()}/mlruns/mlflow.db")
    exp = client.get_experiment_by_name("kdbench")
    [run] = client.search_runs([exp.experiment_id])
    teacher = record["teacher"]["arch"]
    assert run.info.run_name == f"resnet8←{teacher} kd seed 0" and run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["kdbench.run_id"] == record["run_id"] and tags["kdbench.status"] == "done"
    assert tags["teacher.trajectory"] == record["teacher"]["trajectory"]
    assert tags["env.torch"] == record["env"]["torch"]
    # params: every leaf of the config by its path (pandas flattens it independently)
    leaves = pd.json_normalize(record["config"], sep=".").iloc[0].to_dict()
    params = run.data.params
    assert set(leaves) <= set(params)
    assert params["loss.name"] == "kd" and float(params["loss.options.T"]) == 4.0
    assert int(params["recipe.epochs"]) == 3 and params["teacher.arch"] == "resnet8"
    assert json.loads(params["recipe.milestones"]) == leaves["recipe.milestones"]
    # per-epoch history, step = epoch, for every metric, loss term and the lr
    curve = record["metrics"]["curve"]
    for key in {k for row in curve for k in row if k != "epoch"}:
        history = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
        assert [(m.step, m.value) for m in history] == [(r["epoch"], r[key]) for r in curve]
    for key in ("top1_last", "top1_best", "top5_best", "best_epoch"):
        assert run.data.metrics[key] == record["metrics"][key]
    # the record as an artifact, in the local artifact folder under <results>/mlruns
    assert [f.path for f in client.list_artifacts(run.info.run_id)] == ["record.json"]
    path = client.download_artifacts(run.info.run_id, "record.json", str(tmp_path / "dl"))
    assert json.loads(open(path).read()) == record
    assert (results / "mlruns" / "artifacts").is_dir()


def test_an_interrupted_run_continues_its_killed_mlflow_run(mlflow_install, tmp_path,
                                                             monkeypatch, local_plugin):
    from mlflow.tracking import MlflowClient

    from conftest import tiny_overrides
    from kdbench.config import build_config
    from kdbench.runner import run

    load_only(monkeypatch, mlflow_install, "kdbench-mlflow")
    local_plugin(INTERRUPT, "interrupt.py")
    results = tmp_path / "r"
    cfg = tiny_overrides(results, **{"loss.name": "ce", "recipe.epochs": 4,
                                     "log": ["mlflow", "interrupt"]})
    with pytest.raises(KeyboardInterrupt):
        run(build_config(cfg), progress=False)
    client = MlflowClient(tracking_uri=f"sqlite:///{results.resolve()}/mlruns/mlflow.db")
    exp = client.get_experiment_by_name("kdbench")
    [killed] = client.search_runs([exp.experiment_id])
    assert killed.info.status == "KILLED" and killed.data.tags["kdbench.status"] == "interrupted"
    record = run(build_config(cfg), progress=False)  # resumes at epoch 3
    [again] = client.search_runs([exp.experiment_id])
    assert again.info.run_id == killed.info.run_id and again.info.status == "FINISHED"
    history = sorted(client.get_metric_history(again.info.run_id, "top1"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in history] == [(r["epoch"], r["top1"])
                                                   for r in record["metrics"]["curve"]]
