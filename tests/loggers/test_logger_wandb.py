"""plugins/kdbench-wandb installed for real (pip, into a throwaway folder that goes on the path),
a tiny run with ``--log wandb`` through the CLI in W&B's default-here offline mode (no network),
and the offline run folder read back: the run's transaction log (``run-<id>.wandb``, a LevelDB
log of W&B's own protocol buffers) for the config, the per-epoch history and the summary, and
``files/record.json``."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from plugin_packages import install, load_only, run_logged

from kdbench import plugins

pytest.importorskip("wandb")

BLOCK = 32768  # LevelDB log blocks; each record chunk has a 7-byte header
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_transaction_log(path: Path) -> list:
    """The records of a W&B ``.wandb`` file: a 7-byte file header (":W&B", magic 0xBEE1,
    version), then LevelDB log chunks (crc32, length, type) that never straddle a 32 KiB block,
    each record a ``wandb_internal_pb2.Record``."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic) == (b":W&B", 0xBEE1)
    records, parts, pos = [], [], 7
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # a block's zero trailer
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            pos += left
            continue
        parts.append(data[pos + 7:pos + 7 + length])
        pos += 7 + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(parts))
            records.append(record)
            parts = []
    return records


def _key(item) -> str:
    return item.key or ".".join(item.nested_key)


@pytest.fixture(scope="module")
def wandb_install(tmp_path_factory):
    return install("kdbench-wandb", tmp_path_factory.mktemp("site"))


def test_a_run_logged_to_wandb_offline_reads_back_from_its_folder(wandb_install, tmp_path,
                                                                  monkeypatch, cli_runner):
    for var in ("WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    load_only(monkeypatch, wandb_install, "kdbench-wandb")
    assert plugins.get("logger", "wandb").source == "kdbench-wandb"
    results = tmp_path / "r"
    record = run_logged(cli_runner, results, "wandb")

    [folder] = (results / "wandb").glob("offline-run-*")
    assert json.loads((folder / "files" / "record.json").read_text()) == record
    [log] = folder.glob("run-*.wandb")
    records = read_transaction_log(log)
    [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.display_name == f"resnet8←{record['teacher']['arch']} kd seed 0"
    assert run.project == "kdbench"
    assert record["run_id"] in run.tags
    config = {_key(u): json.loads(u.value_json) for u in run.config.update}
    for key, value in record["config"].items():
        assert config[key] == value, key
    # history: one row per epoch, step = epoch, every number of the epoch's row
    history = [{_key(i): json.loads(i.value_json) for i in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    curve = record["metrics"]["curve"]
    assert [h["_step"] for h in history] == [r["epoch"] for r in curve]
    for h, row in zip(history, curve):
        for key, value in row.items():
            if key != "epoch":
                assert h[key] == value, key
    summary = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            summary.update({_key(u): json.loads(u.value_json) for u in r.summary.update})
    for key in ("top1_last", "top1_best", "best_epoch"):
        assert summary[key] == record["metrics"][key]
    assert summary["status"] == "done"
    [exit_record] = [r.exit for r in records if r.WhichOneof("record_type") == "exit"]
    assert exit_record.exit_code == 0
