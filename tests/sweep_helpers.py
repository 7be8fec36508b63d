"""Shared pieces of the sweep tests: a tiny sweep base, sweep files, records, probe plugins."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import yaml

from kdbench import plugins

#: A run that trains in about a second: synthetic data, resnet8 teacher and student.
BASE: dict[str, Any] = {
    "data": {"name": "synthetic", "options": {"train_size": 128, "test_size": 64}},
    "student": "resnet8",
    "teacher": {"arch": "resnet8", "recipe": {"epochs": 2, "batch_size": 32, "milestones": []},
                "save_every": 1},
    "recipe": {"epochs": 1, "batch_size": 32, "milestones": []},
    "precision": "fp32", "device": "cpu",
}


def sweep_file(folder: Path, name: str = "sweep.yaml", **content: Any) -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump({"base": BASE, **content}, sort_keys=False))
    return path


def records(results: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in (results / "runs").glob("*.json")}


def probe_plugin(folder: Path, monkeypatch, source: str) -> Path:
    """A local plugin every kdbench process of the test loads (child processes inherit it);
    ``KDB_TEST_DIR`` tells it where to leave its notes."""
    plugins_dir = folder / "plugins"
    plugins_dir.mkdir()
    (plugins_dir / "probe.py").write_text(textwrap.dedent(source))
    monkeypatch.setenv("KDBENCH_PLUGINS_DIR", str(plugins_dir))
    monkeypatch.setenv("KDB_TEST_DIR", str(folder))
    plugins.reset()
    return plugins_dir
