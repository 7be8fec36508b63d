"""The ``checkpoint`` and ``ensemble`` table layouts and the checkpoint-curve plot on fixed,
hand-written records (numbers chosen so every expected cell is worked out by hand)."""

from __future__ import annotations

import io
import itertools
import math

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
    # T_inter (epoch 100) − T_full by seed: 73 − 70, 73 − 72 = 3, 1: mean 2, SE 1, df 1, so
    # the interval is 2 ± t(0.975, 1) = 2 ± 12.7062 and p = 1 − (2/π)·atan(2) = 0.295;
    # T_inter* (epoch 120): 74 − 70, 76 − 72 = 4, 4, no spread: exact (p = 0), bold.
    # Holm over the two: 0 → 0, 0.295 → 0.295. resnet8 has one run a side: n/a.
    assert lines["resnet20"][:6] == ["synthetic", "resnet56", "resnet20", "kd", "200",
                                     "71.00 ± 1.41"]
    assert lines["resnet20"][6].startswith("73.00 ± 0.00 (+2.00 (−10.71 to +14.71) p=0.3, MDE ")
    assert lines["resnet20"][7:] == ["100", "75.00 ± 1.41 **(+4.00 (+4.00 to +4.00) p<0.001)**",
                                     "120", "72.50 / 65.00 / 68.00", "2/2/2"]
    assert lines["resnet8"] == ["synthetic", "resnet56", "resnet8", "kd", "200", "60.00",
                                "61.50 (n/a, note 1)", "80", "61.50 (n/a, note 1)", "80",
                                "72.50 / 60.00 / 60.00", "1/1/1"]
    assert "(1) a comparison needs at least 2 runs a side, got 1" in text
    assert "paired t by seed; Holm-adjusted over the table's 2 comparisons" in text
    csv = pd.read_csv(io.StringIO(get("table_layout", "checkpoint").create(df, fmt="csv",
                                                         metric="top1_last10_best")))
    r20 = csv[csv["student"] == "resnet20"].set_index("teacher")
    assert r20.loc["best", "epoch"] == 120 and r20.loc["best", "mean"] == pytest.approx(75.5)
    assert r20.loc["half", "diff"] == pytest.approx(2.0)
    assert r20.loc["half", "p"] == pytest.approx(1 - 2 / math.pi * math.atan(2.0), rel=1e-9)
    assert r20.loc["half", "p_holm"] == pytest.approx(r20.loc["half", "p"], rel=1e-9)
    assert r20.loc["half", "low"] == pytest.approx(2.0 - 12.706204736174698, rel=1e-9)


def test_checkpoint_layout_without_a_full_teacher_leaves_the_differences_out(results):
    write(results, source="intermediate", epochs=(100,), top1=73.0)
    text = get("table_layout", "checkpoint").create(load_records(results))
    row = [c.strip() for c in text.splitlines()[-1].split("|")[1:-1]]
    assert row[5:10] == ["", "73.00 (n/a, note 1)", "100", "73.00 (n/a, note 1)", "100"]
    assert "n/a notes: (1) no T_full runs to compare with" in text


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
    from statsmodels.stats.power import TTestPower  # the MDE, computed independently

    # paired differences 1, 2: sd √0.5, n 2 — the effect size at 80% power times the sd
    mde = TTestPower().solve_power(nobs=2, alpha=0.05, power=0.8) * math.sqrt(0.5)
    assert result.exit_code == 0, result.output
    rows = [[c.strip() for c in line.split("|")[1:-1]]
            for line in result.output.splitlines() if line.startswith("| synthetic")]
    assert rows == [
        ["synthetic", "resnet56", "resnet20", "kd", "2", "prob", "", "", "", "", "",
         "72.00", "75.00", "400", "1", ""],
        ["synthetic", "resnet56", "resnet20", "kd", "3", "logit", "60,140,200",
         "74.50 ± 0.71", "74.00", "200", "2", "73.00 ± 0.00", "76.00", "600", "2",
         f"+1.50 (−4.85 to +7.85) p=0.2, MDE {mde:.2f}"],
    ]
    # snapshot − independent by seed: 1, 2: mean 1.5, SE 0.5, df 1: 1.5 ± 12.7062·0.5 and
    # p = 1 − (2/π)·atan(3) = 0.205 (one comparison: no Holm)
    assert 1 - 2 / math.pi * math.atan(3.0) == pytest.approx(0.2048, abs=1e-4)


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
