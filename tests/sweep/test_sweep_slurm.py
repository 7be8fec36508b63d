"""The slurm executor, through submitit's local backend: a job array (teacher first, then the
runs) whose run is preempted mid-training, requeued, and resumes from its last epoch."""

from __future__ import annotations

import os

import pytest
from sweep_helpers import probe_plugin, records, sweep_file

from kdbench import plugins
from kdbench.runner import run

PREEMPT_PROBE = """
    import os, re, signal
    from pathlib import Path
    import kdbench

    DIR = Path(os.environ["KDB_TEST_DIR"])

    @kdbench.hookimpl
    def kdbench_epoch_end(run_id, epoch, metrics):
        if not re.fullmatch("[0-9a-f]{16}", run_id):
            return  # a teacher trajectory's epoch
        with open(DIR / "epochs", "a") as fh:
            fh.write(f"{os.getpid()} {epoch}\\n")
        if epoch == 1 and not (DIR / "preempted").exists():
            (DIR / "preempted").touch()
            os.kill(os.getpid(), signal.SIGUSR2)  # what Slurm sends a job it will preempt
"""


def test_slurm_job_array_is_checkpointed_requeued_and_resumed(tmp_path, results, cli_runner,
                                                              monkeypatch):
    probe_plugin(tmp_path, monkeypatch, PREEMPT_PROBE)
    f = sweep_file(tmp_path, runs=[{"recipe.epochs": 3}])
    result = cli_runner("sweep", f, "--executor", "slurm", "-X", "cluster=local",
                        "--time", "30", "--cpus-per-run", "1", "--results-dir", results,
                        "--quiet")
    assert result.exit_code == 0, result.output
    assert "1 succeeded, 0 failed, 0 skipped (already done); teachers: 1 trained" in result.output
    (record,) = records(results).values()
    assert record["status"] == "done" and len(record["metrics"]["curve"]) == 3
    assert record["env"]["threads"] == 1
    lines = [line.split() for line in (tmp_path / "epochs").read_text().splitlines()]
    # epoch 1 in the first task, then requeued: a new process resumes at epoch 2, none repeated
    assert [int(epoch) for _, epoch in lines] == [1, 2, 3]
    assert lines[0][0] != lines[1][0] == lines[2][0]
    assert not (results / "runs" / f"{record['run_id']}.state.pt").exists()
    assert any((results / "sweeps" / "slurm").iterdir())  # submitit's job folders
    # resuming changed nothing: the same run made in one go has the same curve
    monkeypatch.delenv("KDBENCH_PLUGINS_DIR")
    plugins.reset()
    alone = run(dict(record["config"], results_dir=str(tmp_path / "alone")), progress=False)
    assert alone["run_id"] == record["run_id"]
    assert alone["metrics"]["curve"] == record["metrics"]["curve"]


def test_slurm_options_become_the_array_jobs_sbatch_lines(tmp_path, monkeypatch):
    from submitit.slurm.slurm import _make_sbatch_string

    from kdbench.sweep import make_executor

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text("#!/bin/sh\nexit 1\n")  # a login node, as far as we know
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    ex = make_executor("slurm", partition="gpu", time="1:30:00", gpus_per_run=1,
                       cpus_per_run=4, mem_gb=16, array_parallelism=8, account="abc",
                       qos="high", setup=["module load cuda"])
    text = _make_sbatch_string(command="python -m kdbench", folder=tmp_path, map_count=20,
                               **ex.slurm_parameters())
    for line in ("--partition=gpu", "--time=90", "--gpus-per-node=1", "--cpus-per-task=4",
                 "--mem=16384M", "--account=abc", "--qos=high", "--array=0-19%8",
                 "--signal=USR2@90", "--ntasks-per-node=1"):
        assert f"#SBATCH {line}\n" in text
    assert "\nmodule load cuda\n" in text


def test_slurm_without_sbatch_says_where_to_run(monkeypatch, tmp_path):
    from kdbench.errors import ConfigError
    from kdbench.sweep import make_executor

    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="sbatch, which is not on this machine's PATH.*"
                                          "-X cluster=local"):
        make_executor("slurm")
