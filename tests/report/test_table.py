"""Tables from fixed, hand-written records: aggregation, pivot, filters, formats."""

from __future__ import annotations

import pytest

from kdbench.config import build_config
from kdbench.errors import ConfigError, KDBenchError, UnknownNameError
from kdbench.report.pivot import make_table
from kdbench.report.records import load_records
from kdbench.store import SCHEMA_VERSION, Store


def write(store, run_id, loss, teacher, seed, top1, student="resnet20", status="done", lr=None):
    cfg = build_config({"loss.name": loss, "teacher.source": teacher, "seed": seed,
                        "student": student, "recipe.lr": lr}).to_dict()
    if loss == "ce":
        cfg["teacher"] = None
    store.write_record({"schema": SCHEMA_VERSION, "run_id": run_id, "status": status,
                        "config": cfg, "metrics": {"top1_last": top1, "top1_best": top1 + 1},
                        "teacher": None if loss == "ce" else {"epochs": [30]}})


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path)
    for i, v in enumerate([70.0, 72.0, 74.0]):
        write(s, f"kdf{i}", "kd", "full", i, v)
    for i, v in enumerate([60.0, 61.0]):
        write(s, f"ce{i}", "ce", "full", i, v)
    write(s, "kdi0", "kd", "intermediate", 0, 75.5)
    write(s, "r8", "ce", "full", 0, 50.0, student="resnet8")
    write(s, "failed", "kd", "full", 9, 0.0, status="failed")
    return s


def test_pivot_mean_std_and_seed_counts(store):
    out = make_table(load_records(store.root), fmt="github")
    lines = out.splitlines()
    assert lines[0].startswith("top1_last (%) — mean ± std over seeds")
    assert "7 runs" in lines[0]  # the failed run is not counted
    header = [c.strip() for c in lines[2].strip("|").split("|")]
    assert header == ["dataset", "student", "ce/-", "kd/full", "kd/intermediate"]
    row20 = [c.strip() for c in next(l for l in lines if "resnet20" in l).strip("|").split("|")]
    # kd/full: 70, 72, 74 → mean 72, sample std 2; ce: 60, 61 → 60.5 ± 0.71
    assert row20[2:] == ["60.50 ± 0.71 (2)", "72.00 ± 2.00 (3)", "75.50 (1)"]
    row8 = [c.strip() for c in next(l for l in lines if "resnet8" in l).strip("|").split("|")]
    assert row8[2:] == ["50.00 (1)", "", ""]


def test_where_metric_rows_cols(store):
    df = load_records(store.root)
    out = make_table(df, rows=["loss"], cols=[], metric="top1_best", where=["student=resnet20",
                                                                           "teacher=full"])
    assert "top1_best" in out.splitlines()[0]
    body = {l.split("|")[1].strip(): l.split("|")[2].strip() for l in out.splitlines()[4:]}
    assert body == {"kd": "73.00 ± 2.00 (3)"}
    out = make_table(df, rows=["student"], cols=["seed"], where=["loss=ce"])
    assert "| resnet20  | 60.00 (1) | 61.00 (1) |" in out


def test_formats(store):
    df = load_records(store.root)
    csv = make_table(df, fmt="csv", where=["student=resnet20"])
    lines = csv.strip().splitlines()
    assert lines[0] == "dataset,student,loss,teacher,mean,std,n"
    assert "digits,resnet20,kd,full,72.0,2.0,3" in lines
    latex = make_table(df, fmt="latex")
    assert r"72.00 $\pm$ 2.00 (3)" in latex and r"\begin{tabular}" in latex
    assert r"kd/intermediate" in latex
    html = make_table(df, fmt="html")
    assert "<table>" in html and "72.00 ± 2.00 (3)" in html


def test_latex_cells_are_pdflatex_text():
    from kdbench.report.render import latex_escape

    # special characters escaped, the tables' Greek letters and symbols in math mode
    assert (latex_escape("Δ snap−ind: 5% of a_b ± 1 & ρ=10 — x×y")
            == r"$\Delta$ snap-ind: 5\% of a\_b $\pm$ 1 \& $\rho$=10 --- x$\times$y")


def test_cells_mixing_configurations_are_flagged(tmp_path):
    s = Store(tmp_path)
    write(s, "a", "kd", "full", 0, 70.0, lr=0.05)
    write(s, "b", "kd", "full", 1, 71.0, lr=0.01)
    with pytest.warns(RuntimeWarning, match="averages 2 different configurations"):
        make_table(load_records(s.root))


def test_bad_table_requests(store):
    df = load_records(store.root)
    with pytest.raises(ConfigError, match="malformed --where 'loss'"):
        make_table(df, where=["loss"])
    with pytest.raises(UnknownNameError, match="unknown column 'studnet'; did you mean student"):
        make_table(df, where=["studnet=resnet20"])
    with pytest.raises(UnknownNameError, match="unknown metric 'top1'; did you mean top1_last"):
        make_table(df, metric="top1")
    with pytest.raises(KDBenchError, match="no finished runs match"):
        make_table(df, where=["loss=dkd"])


def test_corrupt_record_is_skipped_with_a_warning(store):
    (store.runs / "zz.json").write_text("{")
    with pytest.warns(RuntimeWarning, match="zz.json"):
        df = load_records(store.root)
    assert len(df) == 8


def test_numbers_in_labels_sort_as_numbers(tmp_path):
    """Checkpoint epochs as columns read 10, 20, ..., 100 (not 10, 100, 20), and an ensemble's
    '30,70,100' sits after '30'."""
    from kdbench.report.pivot import natural_key

    s = Store(tmp_path)
    for i, epoch in enumerate([100, 20, 10, 9]):
        cfg = build_config({"loss.name": "kd", "teacher.source": "intermediate",
                            "teacher.epoch": epoch}).to_dict()
        s.write_record({"schema": SCHEMA_VERSION, "run_id": f"r{i}", "status": "done",
                        "config": cfg, "metrics": {"top1_last": 50.0 + i},
                        "teacher": {"epochs": [epoch]}})
    out = make_table(load_records(s.root), rows=["loss"], cols=["teacher_epoch"], fmt="github")
    header = [c.strip() for c in out.splitlines()[2].strip("|").split("|")]
    assert header == ["loss", "9", "10", "20", "100"]
    assert sorted(["30,70,100", "100", "30", "5e"], key=natural_key) == ["5e", "30", "30,70,100",
                                                                         "100"]


def test_a_fraction_metric_says_its_unit_and_warmups_have_a_column(tmp_path):
    """Retrieval's mAP is reported in [0, 1]: the caption says so (not %) and the cells keep
    four digits; the warm-up stages get a short column of their names."""
    s = Store(tmp_path)
    for i, (warmup, value) in enumerate([([], 0.35), ([], 0.36), (["indistill"], 0.375)]):
        cfg = build_config({"loss.name": "kd", "seed": i, "warmup": warmup}).to_dict()
        s.write_record({"schema": SCHEMA_VERSION, "run_id": f"r{i}", "status": "done",
                        "config": cfg, "metrics": {"map_cosine_last": value}})
    out = make_table(load_records(s.root), rows=["loss"], cols=["warmup"],
                     metric="map_cosine_last", fmt="github")
    assert out.startswith("map_cosine_last (0-1) — mean ± std")
    # 0.35, 0.36: mean 0.355, sample std 0.00707
    assert "| kd     | 0.3550 ± 0.0071 (2) | 0.3750 (1)  |" in out
    assert [c.strip() for c in out.splitlines()[2].strip("|").split("|")] == [
        "loss", "-", "indistill"]
