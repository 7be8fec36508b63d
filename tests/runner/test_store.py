"""Records on disk: round trip, atomic writes, corrupt files named, nothing half-written."""

from __future__ import annotations

import json
import os

import pytest

from kdbench.errors import StoreError
from kdbench.store import SCHEMA_VERSION, Store, atomic_write_json


def record(run_id="abc", status="done", **extra):
    return {"schema": SCHEMA_VERSION, "run_id": run_id, "status": status,
            "config": {"seed": 0, "student": "resnet8", "loss": {"name": "kd"},
                       "data": {"name": "synthetic"}}, **extra}


def test_record_round_trip(tmp_path):
    store = Store(tmp_path)
    rec = record(metrics={"top1_last": 91.5, "curve": [{"epoch": 1, "top1": 50.0}]})
    path = store.write_record(rec)
    assert path == tmp_path / "runs" / "abc.json"
    assert store.load_record("abc") == rec
    assert store.load_record("missing") is None


def test_atomic_write_leaves_old_file_intact_when_serialisation_fails(tmp_path):
    target = tmp_path / "runs" / "x.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(TypeError):
        atomic_write_json(target, {"a": object()})  # not JSON-serialisable
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in target.parent.iterdir()] == ["x.json"]  # no temp file left


def test_atomic_write_uses_rename(tmp_path, monkeypatch):
    calls = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append((a, b)), real(a, b)))
    atomic_write_json(tmp_path / "y.json", {"b": 2})
    assert len(calls) == 1 and str(calls[0][1]).endswith("y.json")
    assert os.path.dirname(calls[0][0]) == str(tmp_path)  # same folder: rename is atomic


def test_corrupt_and_foreign_records_are_named(tmp_path):
    store = Store(tmp_path)
    store.write_record(record("good"))
    (tmp_path / "runs" / "bad.json").write_text('{"schema": 1, "run_id": "bad", "sta')
    (tmp_path / "runs" / "old.json").write_text(json.dumps(record("old") | {"schema": 99}))
    results = {p.stem: r for p, r in store.iter_records()}
    assert results["good"]["status"] == "done"
    assert isinstance(results["bad"], StoreError) and "bad.json" in str(results["bad"])
    assert "schema 99" in str(results["old"])
    with pytest.raises(StoreError, match="corrupt record"):
        store.load_record("bad")


def test_unwritable_results_dir_is_reported(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="is not writable"):
        Store(blocker / "results").check_writable()
