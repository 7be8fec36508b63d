"""``kdbench run --dry-run`` and ``resolve_config`` (issue #28, item 4): the fully resolved
config before any training, and every error of an invalid one at once."""

from __future__ import annotations

import json

import pytest

import kdbench
from kdbench.config import build_config
from kdbench.errors import ConfigError

TINY = ["--dataset", "synthetic", "--student", "resnet8", "--teacher-arch", "resnet8",
        "--epochs", "1", "--set", "teacher.recipe.epochs=2", "--quiet"]


def test_dry_run_prints_the_resolved_config_and_trains_nothing(results, cli_runner):
    out = cli_runner("run", *TINY, "--results-dir", results, "--dry-run", "--json")
    assert out.exit_code == 0, out.output
    shown = json.loads(out.output)
    cfg = build_config({"data.name": "synthetic", "student": "resnet8", "teacher.arch": "resnet8",
                        "recipe.epochs": 1, "teacher.recipe.epochs": 2,
                        "results_dir": str(results)})
    resolved = kdbench.resolve_config(cfg)
    assert shown["config"]["loss"] == resolved.to_dict()["loss"]  # every weight and option
    assert shown["config"]["loss"]["weights"] and shown["config"]["loss"]["options"]
    assert shown["config"]["recipe"] == resolved.to_dict()["recipe"]  # milestones and all
    assert shown["run_id"] == resolved.run_id
    assert shown["config"]["eval"]["evaluators"] == [{"name": "accuracy"}]
    assert shown["teacher"]["source"] == "full" and shown["teacher"]["trained"] == "not yet"
    assert shown["record"] is None and len(shown["run_id"]) == 16
    assert not results.exists()  # nothing written, not even a folder
    text = cli_runner("run", *TINY, "--results-dir", results, "--dry-run")
    assert f"run {shown['run_id']}" in text.output and "no record yet" in text.output


def test_dry_run_says_whether_a_record_exists_and_by_which_code(results, cli_runner):
    assert cli_runner("run", *TINY, "--loss", "ce", "--results-dir", results).exit_code == 0
    out = cli_runner("run", *TINY, "--loss", "ce", "--results-dir", results, "--dry-run")
    assert out.exit_code == 0, out.output
    assert "done record, made" in out.output and "same code as now" in out.output


def test_dry_run_reports_every_error_and_writes_nothing(results, cli_runner):
    no_student = TINY[:2] + TINY[4:]
    out = cli_runner("run", *no_student, "--results-dir", results, "--dry-run", "--student",
                     "resnet_nope", "--lr", "-1", "--set", "recipe.momentum=-1",
                     "--precision", "fp64", "--eval", "nope")
    assert out.exit_code == 2, out.output
    line = out.output.strip()
    assert len(line.splitlines()) == 1 and line.startswith("Error: 5 problems: (1) ")
    for part in ("unknown model 'resnet_nope'", "recipe.lr must be > 0",
                 "recipe.momentum must be >= 0", "unknown precision 'fp64'",
                 "unknown evaluator 'nope'"):
        assert part in line
    assert not results.exists()


def test_resolve_config_raises_every_error_resolve_the_first():
    from kdbench.config import resolve

    cfg = build_config({"student": "nope", "recipe.epochs": 0, "device": "tpu"})
    with pytest.raises(ConfigError) as many:
        kdbench.resolve_config(cfg)
    assert len(many.value.errors) == 3
    with pytest.raises(ConfigError, match="unknown model 'nope'") as first:
        resolve(cfg)
    assert str(first.value) == str(many.value.errors[0])
