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


def test_latex_is_booktabs_and_best_values_can_be_bold(store):
    df = load_records(store.root)
    latex = make_table(df, fmt="latex", bold="max")
    lines = latex.splitlines()
    assert lines[1] == r"% needs \usepackage{booktabs}" and lines[2].startswith(r"\begin{tabular}")
    assert [l for l in lines if l in (r"\toprule", r"\midrule", r"\bottomrule")] == [
        r"\toprule", r"\midrule", r"\bottomrule"] and r"\hline" not in latex
    # each column's best: ce/- 60.50 (resnet20) over 50.00; kd/full and kd/intermediate have
    # one value each, so nothing to compare
    assert r"\textbf{60.50 $\pm$ 0.71 (2)}" in latex and r"\textbf{50.00" not in latex
    assert latex.count(r"\textbf") == 1
    md = make_table(df, fmt="github", bold="min")
    assert "**50.00 (1)**" in md and "**60.50" not in md
    assert "**" not in make_table(df, fmt="github")  # a setting, off by default
    assert "**" not in make_table(df, fmt="csv", bold="max")


def _runs(tmp_path, name):
    s = Store(tmp_path / name)
    for i, v in enumerate([70.0, 72.0]):
        write(s, f"{name}{i}", "kd", "full", i, v)
    return s


def test_table_to_a_file_by_suffix_and_bad_outputs(store, cli_runner, tmp_path):
    for suffix, marker in ((".md", "| dataset"), (".tex", r"\toprule"), (".csv", "dataset,")):
        target = tmp_path / f"t{suffix}"
        out = cli_runner("table", "--results-dir", store.root, "-o", target, "--bold-best")
        assert out.exit_code == 0, out.output
        assert out.stdout == "" and marker in target.read_text()
    assert "**60.50 ± 0.71 (2)**" in (tmp_path / "t.md").read_text()
    from click.testing import CliRunner

    from kdbench.cli import cli

    for args, message in (
            (["-o", tmp_path / "nope" / "t.md"], "folder"),
            (["-o", tmp_path / "t.xlsx"], "unknown table suffix '.xlsx' (valid: .md, .tex"),
            (["-o", tmp_path / "u.tex", "--format", "csv"], "is latex by its suffix"),
            (["--bold-best", "--layout", "robustness"], "--bold-best applies to the pivot")):
        bad = CliRunner().invoke(cli, ["table", "--results-dir", str(store.root),
                                       *map(str, args)])
        assert bad.exit_code == 2, bad.output
        [line] = bad.stderr.strip().splitlines()
        assert line.startswith("Error: ") and message in line, line
    assert not (tmp_path / "nope").exists() and not (tmp_path / "t.xlsx").exists()
    assert not (tmp_path / "u.tex").exists()


def test_table_from_a_folder_of_studies_keeps_them_apart(tmp_path, cli_runner):
    _runs(tmp_path / "results", "study-a")
    _runs(tmp_path / "results" / "group", "study-b")
    out = cli_runner("table", "--results-dir", tmp_path / "results")
    assert out.exit_code == 0, out.output
    rows = {l.split("|")[1].strip(): l for l in out.stdout.splitlines()
            if l.startswith("| ") and not l.startswith("| study ")}
    assert set(rows) == {"study-a", "group/study-b"}
    assert all("71.00 ± 1.41 (2)" in r for r in rows.values())


def test_axis_labels_name_metrics_as_a_reader_does():
    from kdbench.report.records import metric_label

    assert metric_label("top1_last") == "top-1 accuracy, last epoch (%)"
    assert metric_label("top5_best") == "top-5 accuracy, best epoch (%)"
    assert metric_label("top1_last10_best", unit=False) == \
        "top-1 accuracy, best of the last 10 epochs"
    assert metric_label("map_cosine_last") == "mAP (cosine), last epoch (0-1)"
    assert metric_label("acc_many_last", unit=False) == "acc many, last epoch"


def test_a_sparse_curve_is_one_line_through_its_measured_points():
    """An evaluator run every 5 epochs leaves None between: the SVG line goes through the
    measured points (with a marker each) instead of leaving loose dots; NaN still breaks it."""
    import re

    from kdbench.report.svg import Series, chart

    xs = list(range(1, 16))
    ys = [None if x % 5 else float(x) for x in xs]
    svg = chart([Series("every 5", xs, ys)], title="t", xlabel="epoch", ylabel="y")
    [line] = re.findall(r'<polyline class="kd-line" points="([^"]+)"', svg)
    assert len(line.split()) == 3 and svg.count('class="kd-point"') == 3
    gap = chart([Series("gap", [1, 2, 3, 4], [1.0, 2.0, float("nan"), 4.0])], title="t",
                xlabel="x", ylabel="y")
    assert len(re.findall(r"kd-line", gap)) == 1  # 1-2 drawn; 4 alone is a point only
