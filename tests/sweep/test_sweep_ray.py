"""The ray executor of the first-party plugin package plugins/kdbench-ray, installed with pip like
any third-party plugin, against a real local Ray (private temp dir, loopback, started and
stopped by the sweep): a worker dies and its task is retried, and every record and the teacher
come back into the driver's store from the workers' private stores."""

from __future__ import annotations

import glob
import json
import os
import tempfile

import pytest
from plugin_packages import install
from sweep_helpers import probe_plugin, records, sweep_file

from conftest import run_cli

KILL_PROBE = """
    import os, signal
    from pathlib import Path
    import kdbench

    DIR = Path(os.environ["KDB_TEST_DIR"])

    @kdbench.hookimpl
    def kdbench_run_start(config, run_id):
        if not (DIR / "killed").exists():
            (DIR / "killed").write_text(run_id)
            os.kill(os.getppid(), signal.SIGKILL)  # the Ray worker running this task dies
            os._exit(3)
"""


@pytest.fixture(scope="module")
def ray_plugin(tmp_path_factory):
    """kdbench-ray installed from its folder with pip into a private site directory (offline:
    no dependencies fetched, no build isolation); Ray itself comes with `make install`."""
    import ray  # noqa: F401 - installed by `make install` (the plugin's dependency)

    target = install("kdbench-ray", tmp_path_factory.mktemp("site"))
    assert glob.glob(str(target / "kdbench_ray-*.dist-info" / "entry_points.txt"))
    return target


def test_ray_executor_retries_dead_workers_and_collects_records_on_the_driver(
        ray_plugin, tmp_path, results, monkeypatch):
    probe_plugin(tmp_path, monkeypatch, KILL_PROBE)
    f = sweep_file(tmp_path, grid={"seed": [0, 1]})
    ray_tmp = tempfile.mkdtemp(prefix="kdr-", dir="/tmp")  # short: Ray's socket paths
    env = {"PYTHONPATH": str(ray_plugin), "KDBENCH_LOAD_PLUGINS": "kdbench-ray",
           "HOME": str(tmp_path / "home"), "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_TMPDIR": ray_tmp}
    listed = run_cli("plugins", "--kind", "executor", env=env)
    assert "ray" in listed.stdout and "kdbench-ray" in listed.stdout, listed.stderr

    proc = run_cli("sweep", f, "--executor", "ray", "--cpus-per-run", "1", "--retries", "2",
                   "--results-dir", results, "--quiet", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 succeeded, 0 failed, 0 skipped (already done); teachers: 1 trained" in proc.stdout
    killed = (tmp_path / "killed").read_text()
    recs = records(results)
    assert killed in recs and sorted(r["status"] for r in recs.values()) == ["done", "done"]
    # each run wrote its record in a private store on its worker; the driver has them all
    assert all(r["config"]["results_dir"] != str(results) for r in recs.values())
    (teacher,) = (results / "teachers").iterdir()
    manifest = json.loads((teacher / "manifest.json").read_text())
    assert manifest["status"] == "done"
    assert all((teacher / c["file"]).is_file() for c in manifest["checkpoints"].values())
    assert not list(teacher.glob("state.pt"))
    assert os.listdir(ray_tmp) == []  # the private Ray and the jobs' folders are gone
    os.rmdir(ray_tmp)
