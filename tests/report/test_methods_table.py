"""``kdbench table --layout methods`` on real records of tiny synthetic runs: the cells are
recomputed here by hand from the record files (statistics module, own formatting)."""

from __future__ import annotations

import json
import statistics

import pytest

from conftest import tiny_overrides
from kdbench.config import build_config
from kdbench.runner import run

pytestmark = pytest.mark.usefixtures("single_thread")

#: (loss, teacher arch, seed): a CE baseline, KD on two pairs (two seeds on one), DKD on one
RUNS = [("ce", "resnet8", 0), ("ce", "resnet8", 1), ("kd", "resnet8", 0), ("kd", "resnet8", 1),
        ("kd", "resnet14", 0), ("dkd", "resnet8", 0)]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    results = tmp_path_factory.mktemp("methods") / "results"
    for loss, teacher, seed in RUNS:
        cfg = build_config(tiny_overrides(results, **{"loss.name": loss, "teacher.arch": teacher,
                                                      "seed": seed, "recipe.epochs": 2}))
        assert run(cfg, progress=False)["status"] == "done"
    return results


def _records(store):
    return [json.loads(p.read_text()) for p in (store / "runs").glob("*.json")]


def _cell(values: list[float]) -> str:
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.2f} (1)"
    return f"{mean:.2f} ± {statistics.stdev(values):.2f} ({len(values)})"


def _table(cli_runner, store, *args):
    res = cli_runner("table", "--layout", "methods", "--results-dir", store, *args)
    assert res.exit_code == 0, res.output
    lines = [x for x in res.output.splitlines() if x.startswith("|")]
    split = [[c.strip() for c in x.strip().strip("|").split("|")] for x in lines]
    return res.output, split[0], {row[0]: dict(zip(split[0], row)) for row in split[2:]}


def test_one_row_per_method_with_family_year_and_last_and_best_per_pair(cli_runner, store):
    out, header, rows = _table(cli_runner, store)
    assert header == ["method", "family", "year",
                      "resnet14 → resnet8 last", "resnet14 → resnet8 best",
                      "resnet8 → resnet8 last", "resnet8 → resnet8 best"]
    assert list(rows) == ["ce", "kd", "dkd"]  # the baseline first, then by family and year
    assert [(rows[m]["family"], rows[m]["year"]) for m in rows] == [
        ("baseline", "-"), ("logit", "2015"), ("logit", "2022")]
    recs = _records(store)

    def values(loss, teacher, when):
        return [r["metrics"][f"top1_{when}"] for r in recs if r["config"]["loss"]["name"] == loss
                and (teacher is None or r["config"]["teacher"]["arch"] == teacher)]

    for when in ("last", "best"):
        # the CE student has no teacher: it is the baseline of every pair of its student
        for pair in ("resnet14 → resnet8", "resnet8 → resnet8"):
            assert rows["ce"][f"{pair} {when}"] == _cell(values("ce", None, when))
        assert rows["kd"][f"resnet8 → resnet8 {when}"] == _cell(values("kd", "resnet8", when))
        assert rows["kd"][f"resnet14 → resnet8 {when}"] == _cell(values("kd", "resnet14", when))
        assert rows["dkd"][f"resnet8 → resnet8 {when}"] == _cell(values("dkd", "resnet8", when))
        assert rows["dkd"][f"resnet14 → resnet8 {when}"] == ""  # never run
    assert "± " in rows["kd"]["resnet8 → resnet8 last"]  # two seeds: a std
    assert "3 methods, 2 pairs" in out and "top1 (%) at the last and at the best epoch" in out


def test_the_metric_is_named_with_or_without_its_suffix(cli_runner, store):
    _, _, plain = _table(cli_runner, store)
    _, _, best = _table(cli_runner, store, "--metric", "top1_best")
    _, _, bare = _table(cli_runner, store, "--metric", "top1")
    assert plain == best == bare
    res = cli_runner("table", "--layout", "methods", "--results-dir", store, "--metric", "top7")
    assert res.exit_code == 2 and "unknown metric 'top7'" in res.output and "top1" in res.output


def test_csv_is_the_long_form(cli_runner, store):
    res = cli_runner("table", "--layout", "methods", "--results-dir", store, "--format", "csv")
    lines = res.output.strip().splitlines()
    assert lines[0].split(",") == ["method", "loss", "dataset", "teacher_arch", "student",
                                   "mean", "std", "n", "when", "family", "year"]
    # ce on 2 pairs, kd on 2, dkd on 1; each at the last and the best epoch
    assert len(lines) - 1 == (2 + 2 + 1) * 2


def test_where_filters_first(cli_runner, store):
    _, header, rows = _table(cli_runner, store, "--where", "teacher_arch=resnet8")
    assert list(rows) == ["kd", "dkd"] and len(header) == 5  # no CE: its teacher_arch is "-"
    assert rows["kd"]["resnet8 → resnet8 last"].endswith("(2)")


def test_runs_of_one_method_are_not_a_methods_table(cli_runner, store):
    res = cli_runner("table", "--layout", "methods", "--results-dir", store, "--where", "loss=kd")
    assert res.exit_code == 2 and "distil with 1 (kd)" in res.output
    assert res.output.strip().count("\n") == 0
