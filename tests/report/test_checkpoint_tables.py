"""The ``checkpoint`` and ``ensemble`` table layouts and the checkpoint-curve plot on fixed,
hand-written records (numbers chosen so every expected cell is worked out by hand)."""

from __future__ import annotations

import io
import itertools

import pandas as pd
import pytest

from kdbench.config import build_config
from kdbench.errors import ConfigError, KDBenchError
from kdbench.plugins import get
from kdbench.report.records import load_records
from kdbench.store import SCHEMA_VERSION, Store

_ids = itertools.count()


def write(results, *, teacher_arch="resnet56", student="resnet20", source="full", epochs=(200,),
          top1=70.0, seed=0, teacher_top1=72.5, trained=200, mode=None, total=200,
          status="done"):
    cfg = build_config({"data.name": "synthetic", "student": student, "teacher.arch": teacher_arch,
                        "teacher.source": source, "teacher.recipe.epochs": total, "seed": seed,
                        "teacher.epoch": epochs[0] if source == "intermediate" else None})
    prov = {"source": source, "arch": teacher_arch, "trajectory": f"{teacher_arch}-x",
            "epochs": list(epochs), "trained_epochs": trained, "teacher_top1": teacher_top1}
    if mode:
        prov["ensemble_mode"] = mode
    metrics = {"top1_last": top1, "top1_best": top1 + 1, "top1_last10_best": top1 + 0.5,
               "top5_last": 99.0, "top5_best": 99.0}
    Store(results).write_record({
        "schema": SCHEMA_VERSION, "run_id": f"r{next(_ids):04d}", "status": status,
        "config": cfg.to_dict(), "metrics": metrics if status == "done" else {},
        "teacher": prov, "cost": {}, "extra": {}})


@pytest.fixture
def checkpoint_records(results):
    for seed, acc in enumerate((70.0, 72.0)):
        write(results, seed=seed, top1=acc)  # T_full: 71.00 ± 1.41
    for epoch, accs, t_acc in ((100, (73.0, 73.0), 65.0), (120, (74.0, 76.0), 68.0),
                               (60, (72.0,), 55.0)):
        for seed, acc in enumerate(accs):
            write(results, source="intermediate", epochs=(epoch,), top1=acc, seed=seed,
                  teacher_top1=t_acc)
    # a second pair without a checkpoint at half-way: the nearest saved one (80) stands in
    write(results, student="resnet8", top1=60.0, teacher_top1=72.5)
    write(results, student="resnet8", source="intermediate", epochs=(80,), top1=61.5,
          teacher_top1=60.0)
    # ignored: a failed run and an ensemble teacher
    write(results, source="intermediate", epochs=(140,), status="failed")
    write(results, source="snapshot", epochs=(100, 200), top1=99.0, mode="logit")
    return results


def test_checkpoint_layout(checkpoint_records):
    df = load_records(checkpoint_records)
    text = get("table_layout", "checkpoint").create(df, metric="top1_last")
    lines = {line.split("|")[3].strip(): [c.strip() for c in line.split("|")[1:-1]]
             for line in text.splitlines() if line.startswith("| synthetic")}
    assert lines["resnet20"] == ["synthetic", "resnet56", "resnet20", "kd", "200",
                                 "71.00 ± 1.41", "73.00 ± 0.00 (+2.00)", "100",
                                 "75.00 ± 1.41 (+4.00)", "120",
                                 "72.50 / 65.00 / 68.00", "2/2/2"]
    assert lines["resnet8"] == ["synthetic", "resnet56", "resnet8", "kd", "200", "60.00",
                                "61.50 (+1.50)", "80", "61.50 (+1.50)", "80",
                                "72.50 / 60.00 / 60.00", "1/1/1"]
    csv = pd.read_csv(io.StringIO(get("table_layout", "checkpoint").create(df, fmt="csv",
                                                         metric="top1_last10_best")))
    r20 = csv[csv["student"] == "resnet20"].set_index("teacher")
    assert r20.loc["best", "epoch"] == 120 and r20.loc["best", "mean"] == pytest.approx(75.5)
    assert r20.loc["half", "diff_to_full"] == pytest.approx(2.0)


def test_checkpoint_layout_without_a_full_teacher_leaves_the_differences_out(results):
    write(results, source="intermediate", epochs=(100,), top1=73.0)
    text = get("table_layout", "checkpoint").create(load_records(results))
    row = [c.strip() for c in text.splitlines()[-1].split("|")[1:-1]]
    assert row[5:10] == ["", "73.00", "100", "73.00", "100"]


def test_ensemble_layout(results, cli_runner):
    for seed, (s_acc, i_acc) in enumerate(((74.0, 73.0), (75.0, 73.0))):
        write(results, source="snapshot", epochs=(60, 140, 200), top1=s_acc, seed=seed,
              teacher_top1=74.0, trained=200, mode="logit")
        write(results, source="independent", epochs=(200, 200, 200), top1=i_acc, seed=seed,
              teacher_top1=76.0, trained=600, mode="logit")
    write(results, source="independent", epochs=(200, 200), top1=72.0, teacher_top1=75.0,
          trained=400, mode="prob")
    write(results, source="full", top1=71.0)  # not an ensemble: left out
    result = cli_runner("table", "--layout", "ensemble", "--results-dir", results)
    assert result.exit_code == 0, result.output
    rows = [[c.strip() for c in line.split("|")[1:-1]]
            for line in result.output.splitlines() if line.startswith("| synthetic")]
    assert rows == [
        ["synthetic", "resnet56", "resnet20", "kd", "2", "prob", "", "", "", "", "",
         "72.00", "75.00", "400", "1", ""],
        ["synthetic", "resnet56", "resnet20", "kd", "3", "logit", "60,140,200",
         "74.50 ± 0.71", "74.00", "200", "2", "73.00 ± 0.00", "76.00", "600", "2", "+1.50"],
    ]


def test_layouts_refuse_records_of_other_sources(results):
    write(results, source="full")
    with pytest.raises(KDBenchError, match="no finished runs with teacher source snapshot or "
                                           "independent"):
        get("table_layout", "ensemble").create(load_records(results))


def test_checkpoint_curve_plot(checkpoint_records, tmp_path):
    from kdbench.report.checkpoint import checkpoint_curve

    path, panels = checkpoint_curve(load_records(checkpoint_records), tmp_path / "c.pdf")
    assert panels == 2 and path.read_bytes()[:4] == b"%PDF"
    with pytest.raises(ConfigError, match=r"must end in \.png or \.pdf"):
        checkpoint_curve(load_records(checkpoint_records), tmp_path / "c.svgz")
