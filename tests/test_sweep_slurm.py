"""The slurm executor, through submitit's local backend: a job array (teacher first, then the
runs) whose run is preempted mid-training, requeued, and resumes from its last epoch."""

from __future__ import annotations

from sweep_helpers import probe_plugin, records, sweep_file

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
