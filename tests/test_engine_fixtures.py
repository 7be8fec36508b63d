"""Records for a fixed seed are what they were before the stage/evaluator refactor: every
built-in loss (init stages, composites, ensembles and the online cohort included) is rerun with
the current code and compared, metric by metric and epoch by epoch, with records made on the
commit before it (``fixtures/engine_records.json``, made by ``fixtures/make_engine_fixtures.py``
on one thread)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent / "fixtures"
sys.path.insert(0, str(HERE))
from make_engine_fixtures import BASE, CASES  # noqa: E402

FIXTURE = json.loads((HERE / "engine_records.json").read_text())
pytestmark = [pytest.mark.usefixtures("single_thread"), pytest.mark.slow]


def _rows_equal(old: list[dict], new: list[dict], what: str) -> None:
    assert len(new) == len(old), f"{what}: {len(new)} epochs, expected {len(old)}"
    for o, n in zip(old, new):
        for key, value in o.items():
            assert key in n, f"{what} epoch {o.get('epoch')}: {key} missing"
            assert n[key] == value, f"{what} epoch {o.get('epoch')}: {key} {n[key]!r} != {value!r}"


def _contains(new, old, what: str) -> None:
    """``new`` holds everything ``old`` held (records may say more now, never less)."""
    if isinstance(old, dict):
        for key, value in old.items():
            assert key in new, f"{what}.{key} missing"
            _contains(new[key], value, f"{what}.{key}")
    elif isinstance(old, list):
        assert len(new) == len(old), f"{what}: {len(new)} items, expected {len(old)}"
        for i, (n, o) in enumerate(zip(new, old)):
            _contains(n, o, f"{what}[{i}]")
    else:
        assert new == old, f"{what}: {new!r} != {old!r}"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("fixtures") / "results"


@pytest.mark.parametrize("case", list(CASES))
def test_record_equals_the_one_made_before_the_refactor(case, store):
    from kdbench.config import build_config
    from kdbench.runner import run

    assert FIXTURE["threads"] == 1 and torch.get_num_threads() == 1
    old = FIXTURE["cases"][case]
    record = run(build_config({**BASE, **CASES[case], "results_dir": str(store)}),
                 progress=False)
    m = record["metrics"]
    assert record["status"] == old["status"] == "done"
    _rows_equal(old["curve"], m["curve"], f"{case} curve")
    for key, value in old["summary"].items():
        _contains(m[key], value, f"{case}: {key}")
    if "init" in old:  # the loss's own stage, now the first of metrics["stages"]
        [stage] = m["stages"]
        assert stage["epochs"] == old["init"]["epochs"] and stage["lr"] == old["init"]["lr"]
        _rows_equal(old["init"]["curve"], stage["curve"], f"{case} init stage")
    else:
        assert "stages" not in m
    if old.get("teacher_top1") is not None:
        assert record["teacher"]["teacher_top1"] == old["teacher_top1"]


def test_run_ids_of_configs_made_before_are_unchanged():
    """Configs that do not use the fields added since keep their ids (``run_ids``: computed with
    the commit the fixtures were made on), so existing stores are reused, not rerun."""
    from kdbench.config import build_config, resolve, run_id

    ids = FIXTURE["run_ids"]
    for case, over in CASES.items():
        cfg = resolve(build_config({**BASE, **over, "results_dir": "r"}))
        assert run_id(cfg) == ids[case], case
    for preset in ("quick", "repdistiller", "checkpointkd"):
        cfg = resolve(build_config({"preset": preset, "loss.name": "kd"}))
        assert run_id(cfg) == ids[f"preset-{preset}"], preset
