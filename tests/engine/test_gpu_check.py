"""scripts/gpu_check.py (``make gpu-check``): without CUDA it says so in one line (exit 2);
``--cpu`` runs every part that can run here and writes its one JSON file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

SCRIPT = REPO / "scripts" / "gpu_check.py"


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": "",
           "KDBENCH_DIST_TIMEOUT": "120"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=1200)


def test_without_cuda_one_line_exit_2(tmp_path):
    out = _run("--out", str(tmp_path / "g.json"), cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "gpu-check: no CUDA device here (torch.cuda.is_available() is False); run it on a GPU "
        "machine, or pass --cpu for the CPU-safe parts"]
    assert not (tmp_path / "g.json").exists()


@pytest.mark.slow
def test_cpu_parts_write_one_json(tmp_path):
    out = _run("--cpu", "--out", str(tmp_path / "g.json"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    figures = json.loads((tmp_path / "g.json").read_text())
    assert figures["device"] == "cpu" and figures["runs"]["fp32"]["ok"]
    assert figures["runs"]["fp32"]["top1_last"] is not None
    assert figures["bench"]["classic"]["images_per_s"] > 0
    assert figures["bench"]["engine"]["images_per_s"] > 0
    two = figures["ddp"]["two_ranks"]
    assert two["ok"] and two["env"]["world_size"] == 2 and two["env"]["backend"] == "gloo"
