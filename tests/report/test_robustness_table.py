"""KD beyond compression's table and plot (:mod:`kdbench.report.robustness`) from hand-written
records: cells, gains over CE, teacher rows, severity labels and order, the CLI."""

from __future__ import annotations

import io
import warnings

import pandas as pd
import pytest

from kdbench.config import build_config, resolve
from kdbench.errors import UnknownNameError
from kdbench.report.records import load_records
from kdbench.report.robustness import robustness_table, severity
from kdbench.store import SCHEMA_VERSION, Store

pytestmark = pytest.mark.usefixtures("single_thread")


def noise(kind="symmetric", rate=0.2, seed=0):
    return {"name": "label_noise", "kind": kind, "rate": rate, "seed": seed}


def imbalance(kind="exponential", ratio=10.0, seed=0):
    return {"name": "imbalance", "kind": kind, "ratio": ratio, "seed": seed}


# ============================== table and plot ==================================================


def write(store, loss, transforms, seed, top1, *, teacher_data=None, teacher="full",
          teacher_top1=None, trajectory=None, metrics=None):
    over = {"loss.name": loss, "seed": seed, "data.transforms": transforms,
            "teacher.source": teacher}
    if teacher_data is not None:
        over["teacher.data.transforms"] = teacher_data
    cfg = resolve(build_config(over))
    prov = {"epochs": [30]}
    if teacher_top1 is not None:
        prov.update(teacher_top1=teacher_top1, trajectory=trajectory)
    store.write_record({"schema": SCHEMA_VERSION, "run_id": cfg.run_id, "status": "done",
                        "config": cfg.to_dict(), "metrics": {"top1_last": top1, **(metrics or {})},
                        "teacher": None if cfg.teacher is None else prov})


NOISY = [noise("symmetric", 0.4)]
LT = [imbalance("exponential", 100.0)]


@pytest.fixture
def study(tmp_path):
    s = Store(tmp_path)
    for seed, (ce0, ce_n, ce_lt) in enumerate([(90.0, 60.0, 50.0), (92.0, 64.0, 52.0)]):
        write(s, "ce", [], seed, ce0)
        write(s, "ce", NOISY, seed, ce_n)
        write(s, "ce", LT, seed, ce_lt)
    for seed, (kd0, kd_n, kd_lt) in enumerate([(91.0, 70.0, 55.0), (93.0, 68.0, 57.0),
                                               (95.0, 72.0, 56.0)]):
        write(s, "kd", [], seed, kd0)
        write(s, "kd", NOISY, seed, kd_n)
        write(s, "kd", LT, seed, kd_lt)
    write(s, "kd", NOISY, 0, 75.0, teacher_data=[])
    write(s, "dml", NOISY, 0, 66.0, teacher="peers")
    return s


def cells(table: str) -> dict[tuple[str, str], dict[str, str]]:
    lines = [line for line in table.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    out = {}
    for line in lines[2:]:
        row = dict(zip(header, (c.strip() for c in line.strip("|").split("|"))))
        out[(row["method"], row["teacher data"])] = row
    return out


def test_robustness_table_cells_gains_and_rows(study):
    text = robustness_table(load_records(study.root))
    header = [c.strip() for c in next(line for line in text.splitlines()
                                      if line.startswith("|")).strip("|").split("|")]
    assert header[5:] == ["clean", "symmetric 0.4", "exponential ρ=100"]
    rows = cells(text)
    assert list(rows) == [("ce", "-"), ("dml", "same"), ("kd", "clean"), ("kd", "same")]
    # ce: 90, 92 → 91 ± 1.41; 60, 64 → 62 ± 2.83; 50, 52 → 51 ± 1.41 (no gain on itself)
    assert rows[("ce", "-")]["clean"] == "91.00 ± 1.41 (2)"
    assert rows[("ce", "-")]["symmetric 0.4"] == "62.00 ± 2.83 (2)"
    # kd: 91, 93, 95 → 93 ± 2, gain +2; 70, 68, 72 → 70 ± 2, +8; 55, 57, 56 → 56 ± 1, +5 —
    # CE has seeds 0, 1 and KD 0, 1, 2: Welch's test (checked against scipy's below)
    assert rows[("kd", "same")]["clean"].startswith("93.00 ± 2.00 (3) [+2.00 (")
    assert rows[("kd", "same")]["symmetric 0.4"].startswith("70.00 ± 2.00 (3) [+8.00 (")
    assert rows[("kd", "same")]["exponential ρ=100"].startswith("56.00 ± 1.00 (3) [+5.00 (")
    # one run: no test, a footnote says why
    assert rows[("kd", "clean")]["symmetric 0.4"] == "75.00 (1) [n/a, note 1]"
    assert rows[("kd", "clean")]["clean"] == ""
    assert rows[("dml", "same")]["symmetric 0.4"] == "66.00 (1) [n/a, note 1]"
    assert "(1) a comparison needs at least 2 runs a side, got 1 and 2" in text
    assert "Welch's t; Holm-adjusted over the table's 3 comparisons" in text
    from scipy import stats

    frame = pd.read_csv(io.StringIO(robustness_table(load_records(study.root), fmt="csv")))
    kd = frame[(frame["loss"] == "kd") & (frame["teacher_data"] == "same")].set_index("severity")
    raw = [stats.ttest_ind(a, b, equal_var=False).pvalue for a, b in (
        ([91, 93, 95], [90, 92]), ([70, 68, 72], [60, 64]), ([55, 57, 56], [50, 52]))]
    assert [kd.loc[v, "gain_p"] for v in ("clean", "symmetric 0.4", "exponential ρ=100")] == \
        pytest.approx(raw, rel=1e-9)
    order = sorted(raw)  # Holm by hand: 3·p(1), max(that, 2·p(2)), max(that, p(3))
    holm = [3 * order[0], max(3 * order[0], 2 * order[1])]
    holm.append(max(holm[-1], order[2]))
    expected = [min(1.0, holm[order.index(p)]) for p in raw]
    assert [kd.loc[v, "gain_p_holm"] for v in ("clean", "symmetric 0.4",
                                               "exponential ρ=100")] == pytest.approx(expected)
    latex = robustness_table(load_records(study.root), fmt="latex").splitlines()
    assert latex[0].startswith("% ")  # the caption, a comment
    # lines: caption, booktabs note, \begin, \toprule, header, \midrule, then ce, dml, kd/clean,
    # kd/same
    assert r"exponential $\rho$=100" in latex[4] and r"93.00 $\pm$ 2.00 (3) [+2.00 (" in latex[9]
    assert all(line.isascii() for line in latex[1:])  # pdfLaTeX takes it without packages
    csv = robustness_table(load_records(study.root), fmt="csv")
    assert "gain" in csv.splitlines()[0] and "symmetric 0.4" in csv


def test_teacher_rows_give_each_distinct_teachers_top1_per_severity(tmp_path):
    s = Store(tmp_path)
    for seed in (0, 1):
        write(s, "ce", [], seed, 50.0, metrics={"acc_many_last": 1.0})
        write(s, "ce", NOISY, seed, 40.0, metrics={"acc_many_last": 1.0})
        # both seeds distil from the same teacher of each severity: it counts once
        write(s, "kd", [], seed, 55.0, teacher_top1=64.0, trajectory="t-clean",
              metrics={"acc_many_last": 1.0})
        write(s, "at", NOISY, seed, 41.0, teacher_top1=47.0, trajectory="t-noisy",
              metrics={"acc_many_last": 1.0})
    # KD at the same severity from another teacher trained on the same noisy data: teachers 47
    # and 61 → mean 54, std |61 − 47|/√2 = 9.90
    write(s, "kd", NOISY, 0, 42.0, teacher_top1=61.0, trajectory="t-noisy-2",
          metrics={"acc_many_last": 1.0})
    write(s, "kd", NOISY, 1, 43.0, teacher_top1=64.0, trajectory="t-clean", teacher_data=[],
          metrics={"acc_many_last": 1.0})
    # an online cohort's peer trains with the student: not a teacher row
    write(s, "dml", NOISY, 0, 44.0, teacher="peers", teacher_top1=30.0,
          metrics={"acc_many_last": 1.0})
    text = robustness_table(load_records(s.root))
    rows = cells(text)
    assert list(rows)[-2:] == [("teacher", "clean"), ("teacher", "same")]
    assert rows[("teacher", "same")]["clean"] == "64.00 (1)"
    assert rows[("teacher", "same")]["symmetric 0.4"] == "54.00 ± 9.90 (2)"
    assert rows[("teacher", "clean")]["symmetric 0.4"] == "64.00 (1)"
    assert rows[("teacher", "clean")]["clean"] == ""
    assert "11 runs" in text and "teacher rows" in text  # the teachers are not runs
    # a teacher has no per-group accuracy: no teacher rows for another metric
    other = cells(robustness_table(load_records(s.root), metric="acc_many_last"))
    assert not any(method == "teacher" for method, _ in other)


def test_the_ce_row_is_there_without_ce_runs(study):
    with pytest.warns(RuntimeWarning, match="no CE-only runs"):
        text = robustness_table(load_records(study.root), where=["loss=kd"])
    rows = cells(text)
    assert list(rows)[0] == ("ce", "-") and rows[("ce", "-")]["clean"] == ""
    assert rows[("kd", "same")]["clean"] == "93.00 ± 2.00 (3) [n/a, note 1]"  # no CE: no gain
    assert "(1) no CE runs at clean" in text


def test_severity_labels_and_order():
    labels = [severity(t) for t in (
        [imbalance("step", 10)], [noise("pairflip", 0.2)], [], [imbalance("exponential", 50)],
        [noise("symmetric", 0.6)], [noise("symmetric", 0.2)], [noise("symmetric", 0.0)],
        [imbalance("exponential", 10)], [imbalance("exponential", 1.0)],
        [{"name": "subset", "per_class": 5}, noise("symmetric", 0.2)])]
    ordered = [label for _, label in sorted(labels, key=lambda kl: kl[0])]
    assert ordered == ["clean", "clean", "clean", "symmetric 0.2", "symmetric 0.2",
                       "symmetric 0.6", "pairflip 0.2", "exponential ρ=10", "exponential ρ=50",
                       "step ρ=10"]


def test_table_and_plot_through_the_cli(study, cli_runner, tmp_path):
    out = cli_runner("table", "--layout", "robustness", "--results-dir", study.root)
    assert out.exit_code == 0 and "[+8.00 (" in out.output
    png = tmp_path / "fig" / "robustness.png"
    out = cli_runner("plot", "robustness", "--results-dir", study.root, "--out", png)
    assert out.exit_code == 0 and "2 panel(s)" in out.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = cli_runner("plot", "robustness", "--results-dir", study.root, "--out",
                     tmp_path / "x.jpg")
    assert bad.exit_code == 2 and "must end in .png or .pdf" in bad.output


def test_table_bad_requests(study):
    with pytest.raises(UnknownNameError, match="unknown metric 'acc'"):
        robustness_table(load_records(study.root), metric="acc")
    with pytest.raises(UnknownNameError, match="table format"):
        robustness_table(load_records(study.root), fmt="docx")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        robustness_table(load_records(study.root), fmt="plain")
