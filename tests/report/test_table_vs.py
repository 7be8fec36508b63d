"""``kdbench table --vs``: every cell against a reference column of its row, with the statistics
layer's difference, interval, p-value, Holm adjustment and MDE — checked against hand-worked
t distributions with 2 degrees of freedom, where the two-sided p-value has the closed form
``p = 1 − t/√(t² + 2)`` and the 97.5% quantile is ``4.302653``."""

from __future__ import annotations

import io
import math

import pandas as pd
import pytest
from test_table import write

from kdbench.errors import UnknownNameError
from kdbench.report.pivot import make_table
from kdbench.report.records import load_records
from kdbench.store import Store

T975_DF2 = 4.302652729911275


def p_df2(t: float) -> float:
    return 1 - abs(t) / math.sqrt(t * t + 2)


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path)
    for seed, (ce, kd, inter) in enumerate([(60.0, 70.0, 71.0), (61.0, 72.0, 73.0),
                                             (65.0, 74.0, 75.0)]):
        write(s, f"ce{seed}", "ce", "full", seed, ce)
        write(s, f"kd{seed}", "kd", "full", seed, kd)
        write(s, f"ki{seed}", "kd", "intermediate", seed, inter)
    # resnet8: one CE run only — its comparisons cannot be made
    write(s, "r8ce", "ce", "full", 0, 50.0, student="resnet8")
    write(s, "r8kd0", "kd", "full", 0, 55.0, student="resnet8")
    write(s, "r8kd1", "kd", "full", 1, 56.0, student="resnet8")
    return s


def test_paired_differences_by_hand_with_holm(store):
    df = load_records(store.root)
    csv = pd.read_csv(io.StringIO(make_table(df, fmt="csv", vs="ce", where=["student=resnet20"])))
    kd = csv[(csv.loss == "kd") & (csv.teacher == "full")].iloc[0]
    # seed-wise differences 10, 11, 9: mean 10, sd 1, SE 1/√3, t = 10√3, df 2
    se = 1 / math.sqrt(3)
    assert kd["diff"] == pytest.approx(10.0) and kd["test"] == "paired"
    assert (kd["low"], kd["high"]) == pytest.approx((10 - T975_DF2 * se, 10 + T975_DF2 * se))
    assert kd["p"] == pytest.approx(p_df2(10 * math.sqrt(3)), rel=1e-9)
    # the intermediate column: differences 11, 12, 10 — the same SE, t = 11√3, a smaller p;
    # Holm over the two comparisons: the smaller p doubled (0.0055), the larger one raised to
    # it (step-down adjusted p-values never fall below an earlier one)
    inter = csv[(csv.loss == "kd") & (csv.teacher == "intermediate")].iloc[0]
    assert inter["p"] == pytest.approx(p_df2(11 * math.sqrt(3)), rel=1e-9)
    assert inter["p_holm"] == pytest.approx(2 * inter["p"], rel=1e-9)
    assert kd["p_holm"] == pytest.approx(2 * inter["p"], rel=1e-9) and 2 * inter["p"] > kd["p"]
    assert pd.isna(csv[csv.loss == "ce"].iloc[0]["diff"])  # the reference is not compared


def test_markdown_and_latex_cells_bold_what_is_detected(store):
    df = load_records(store.root)
    md = make_table(df, vs="ce", where=["student=resnet20"])
    assert "**[+10.00 (+7.52 to +12.48) p=0.0055]**" in md
    assert "paired t by seed; Holm-adjusted over the table's 2 comparisons" in md
    tex = make_table(df, vs="ce", where=["student=resnet20"], fmt="latex")
    assert r"\textbf{[+10.00 (+7.52 to +12.48) p=0.0055]}" in tex


def test_comparisons_the_data_cannot_make_are_na_with_a_reason(store):
    df = load_records(store.root)
    md = make_table(df, vs="ce", cols=["loss"])
    row = next(line for line in md.splitlines() if "| resnet8 " in line)
    assert "[n/a, note 2]" in row
    assert "(2) a comparison needs at least 2 runs a side, got 2 and 1" in md
    # resnet20's kd cell pools the full and the intermediate teacher: two runs per seed
    assert ("(1) cell (digits/resnet20, kd) holds two runs with seed 0 (different "
            "configurations)") in md
    # a paired comparison insisted on, with seeds that do not match: n/a, never unpaired
    s = Store(store.root)
    write(s, "r8ce5", "ce", "full", 5, 51.0, student="resnet8")
    md = make_table(load_records(s.root), vs="ce", cols=["loss"], pairing="paired")
    assert "a paired comparison needs the same seeds on both sides, got seeds 0,1 and seeds 0,5" \
        in md
    # with auto pairing the same cells fall back to Welch, and the caption says so
    md = make_table(load_records(s.root), vs="ce", cols=["loss"])
    assert "differences with 95% CI (per comparison) and p (Welch's t)" in md
    row = next(line for line in md.splitlines() if "| resnet8 " in line)
    # Welch with two runs a side, sd 0.71 each: SE = √(0.25 + 0.25), df = 2, t = 5/SE = 7.07:
    # p = 1 − 7.07/√52 = 0.019, interval 5 ± 4.3027·0.7071
    assert "55.50 ± 0.71 (2) **[+5.00 (+1.96 to +8.04) p=0.019]**" in row
    assert p_df2(5 / math.sqrt(0.5)) == pytest.approx(0.0194, abs=5e-5)


def test_welch_by_hand(tmp_path):
    s = Store(tmp_path)
    for seed, v in [(0, 70.0), (1, 72.0), (2, 74.0)]:
        write(s, f"kd{seed}", "kd", "full", seed, v)
    for seed, v in [(5, 60.0), (6, 62.0), (7, 64.0)]:
        write(s, f"ce{seed}", "ce", "full", seed, v)
    csv = pd.read_csv(io.StringIO(make_table(load_records(s.root), cols=["loss"], vs="ce",
                                             fmt="csv")))
    kd = csv[csv.loss == "kd"].iloc[0]
    # equal variances 4 and n 3: SE = √(4/3 + 4/3), Welch df = 4
    assert kd["test"] == "welch" and kd["diff"] == pytest.approx(10.0)
    from scipy import stats

    assert kd["p"] == pytest.approx(2 * stats.t.sf(10 / math.sqrt(8 / 3), 4), rel=1e-9)


def test_bad_vs(store, cli_runner):
    df = load_records(store.root)
    valid = r"\(valid: ce/-, kd/full, kd/intermediate\)"
    with pytest.raises(UnknownNameError, match=r"unknown --vs column 'cd' " + valid):
        make_table(df, vs="cd")
    out = cli_runner("table", "--results-dir", store.root, "--vs", "kd")
    assert out.exit_code == 2 and "matches several columns (kd/full, kd/intermediate)" in out.output
    out = cli_runner("table", "--results-dir", store.root, "--layout", "checkpoint", "--vs", "ce")
    assert out.exit_code == 2 and "--vs applies to the pivot layout" in out.output
    out = cli_runner("table", "--results-dir", store.root, "--cols", "", "--vs", "ce")
    assert out.exit_code == 2 and "give --cols" in out.output
