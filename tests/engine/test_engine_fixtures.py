"""Records for a fixed seed are what they were before the engine refactors: every built-in loss
(init stages, composites, ensembles and the online cohort included) is rerun with the current
code and compared, metric by metric and epoch by epoch, with records made on a commit before
them (``fixtures/engine_records.<CPU capability>.json``, made by
``fixtures/make_engine_fixtures.py`` on one thread). fp32 numbers are reproducible per CPU kind,
not across kinds, so the test compares with the fixture of this machine's kind and fails (it
never skips) on a kind that has none."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent / "fixtures"
sys.path.insert(0, str(HERE))
from make_engine_fixtures import BASE, CASES  # noqa: E402

FIXTURES = {f["cpu_capability"]: f for f in (json.loads(p.read_text())
                                             for p in sorted(HERE.glob("engine_records.*.json")))}
CAPABILITY = torch.backends.cpu.get_cpu_capability()
#: the run ids kdbench 0.1 gave (computed on the commit the first fixture was made on)
RUN_IDS = next(f["run_ids"] for f in FIXTURES.values() if "run_ids" in f)
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

    assert CAPABILITY in FIXTURES, (
        f"no engine fixture for this CPU kind ({CAPABILITY}; have {', '.join(FIXTURES)}): make "
        f"one with fixtures/make_engine_fixtures.py on a commit before the change under test")
    fixture = FIXTURES[CAPABILITY]
    assert fixture["threads"] == 1 and torch.get_num_threads() == 1
    old = fixture["cases"][case]
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
    elif "stages" not in old["summary"]:  # (fixtures made later hold the stages in the summary)
        assert "stages" not in m
    if old.get("teacher_top1") is not None:
        assert record["teacher"]["teacher_top1"] == old["teacher_top1"]


def test_ids_kdbench_0_1_gave_are_the_legacy_ids_and_their_records_are_adopted(tmp_path,
                                                                             monkeypatch):
    """kdbench 0.1 hashed the preset's name and the resolved precision (``run_ids``: computed
    with the commit the fixtures were made on). Those ids are :func:`legacy_run_id`, and a
    record stored under one is adopted by the run, not trained again."""
    from kdbench.config import build_config, legacy_run_id, resolve, run_id, schema

    # the preset ids were computed on a CPU where that commit resolved precision auto to bf16
    monkeypatch.setattr(schema, "resolve_precision",
                        lambda precision, device: "bf16" if precision == "auto" else precision)
    from kdbench.runner import run
    from kdbench.store import Store

    ids = RUN_IDS
    for case, over in CASES.items():
        cfg = resolve(build_config({**BASE, **over, "results_dir": "r"}))
        assert legacy_run_id(cfg) == ids[case], case
    for preset in ("quick", "repdistiller", "checkpointkd"):
        cfg = resolve(build_config({"preset": preset, "loss.name": "kd"}))
        assert legacy_run_id(cfg) == ids[f"preset-{preset}"], preset
    # a done record under the old id: the run finds it, moves it to the new id, trains nothing
    cfg = resolve(build_config({**BASE, **CASES["ce"], "results_dir": str(tmp_path)}))
    store = Store(tmp_path)
    old = legacy_run_id(cfg)
    store.write_record({"schema": 1, "run_id": old, "status": "done", "config": cfg.to_dict(),
                        "metrics": {"top1_last": 12.5}})
    record = run(cfg, progress=False)
    assert record["metrics"] == {"top1_last": 12.5} and record["legacy_run_id"] == old
    assert record["run_id"] == run_id(cfg) != old
    assert not store.record_path(old).exists() and store.record_path(run_id(cfg)).exists()


def test_one_experiment_one_id():
    """The id hashes what determines the result: not the preset's name when the values are
    the same, not the machine's resolution of ``precision: auto``."""
    from kdbench.config import build_config, resolve, run_id
    from kdbench.config.presets import PRESETS

    quick = resolve(build_config({"preset": "quick", "loss.name": "kd"}))
    spelled = resolve(build_config({"preset": "repdistiller", "loss.name": "kd",
                                    "recipe": PRESETS["quick"]["recipe"],
                                    "teacher": PRESETS["quick"]["teacher"]}))
    assert spelled.recipe == quick.recipe and run_id(spelled) == run_id(quick)
    auto = resolve(build_config({"precision": "auto"}))
    assert auto.precision == "auto" and auto.resolved_precision in ("fp32", "bf16")
    assert run_id(auto) != run_id(resolve(build_config({"precision": "fp32"})))
