"""Running sweeps: failures recorded while the rest goes on, finished runs skipped, teachers once,
the local executor's parallel jobs and their environment, and a Ctrl-C'd sweep resumed."""

from __future__ import annotations

import os

from sweep_helpers import probe_plugin, records, sweep_file

from conftest import run_cli
from kdbench.store import Store
from kdbench.sweep.executors import usable_cpus


def test_failures_are_recorded_the_rest_goes_on_and_done_runs_are_skipped(
        tmp_path, results, cli_runner):
    f = sweep_file(tmp_path, runs=[
        {"seed": 0}, {"seed": 1},
        {"seed": 2, "recipe.lr": 1e30},  # diverges: NaN loss during training
        {"teacher.source": "intermediate", "teacher.epoch": 3},  # the teacher has 2 epochs
    ])
    result = cli_runner("sweep", f, "--executor", "inline", "--results-dir", results, "--quiet")
    assert result.exit_code == 1
    assert "2 succeeded, 2 failed, 0 skipped (already done); teachers: 1 trained" in result.output
    recs = records(results)
    by_seed = {(r["config"]["seed"], r["config"]["teacher"]["source"]): r for r in recs.values()}
    assert len(recs) == 4
    assert by_seed[(0, "full")]["status"] == by_seed[(1, "full")]["status"] == "done"
    assert by_seed[(2, "full")]["status"] == "failed"
    assert "non-finite loss" in by_seed[(2, "full")]["error"]
    # bad input found before training: the runner writes nothing, the sweep records the failure
    bad = by_seed[(0, "intermediate")]
    assert bad["status"] == "failed" and "teacher epoch 3 is not in" in bad["error"]
    assert len(list((results / "teachers").iterdir())) == 1  # one trajectory, trained once

    status = cli_runner("sweep", "status", f, "--results-dir", results)
    assert status.exit_code == 0
    assert "4 runs" in status.output and "2 done, 2 failed" in status.output

    finished = {rid: r["finished"] for rid, r in recs.items() if r["status"] == "done"}
    again = cli_runner("sweep", f, "--executor", "inline", "--results-dir", results, "--quiet")
    assert again.exit_code == 1
    assert "0 succeeded, 2 failed, 2 skipped (already done); teachers: 0 trained" in again.output
    assert {rid: r["finished"] for rid, r in records(results).items()
            if rid in finished} == finished  # done runs were not run again


ENV_PROBE = """
    import os
    from pathlib import Path
    import kdbench

    DIR = Path(os.environ["KDB_TEST_DIR"])

    @kdbench.hookimpl
    def kdbench_run_start(config, run_id):
        if config["seed"] == 1 and not (DIR / "crashed").exists():
            (DIR / "crashed").touch()
            os._exit(9)  # a crash mid-run: no record but "running"

    @kdbench.hookimpl
    def kdbench_run_end(record):
        record["extra"]["probe_env"] = {k: os.environ.get(k)
                                        for k in ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS")}
        record["extra"]["probe_pid"] = os.getpid()
"""


def test_local_executor_runs_two_jobs_each_with_its_gpu_slot_and_share_of_threads(
        tmp_path, results, cli_runner, monkeypatch):
    import kdbench.device

    monkeypatch.setattr(kdbench.device, "cuda_device_count", lambda: 2)  # GPU slots on a CPU
    probe_plugin(tmp_path, monkeypatch, ENV_PROBE)
    f = sweep_file(tmp_path, grid={"seed": [0, 1]}, runs=[{"loss.name": "ce"}])
    result = cli_runner("sweep", f, "--jobs", "2", "--gpus", "0,1", "--retries", "1",
                        "--results-dir", results, "--quiet")
    assert result.exit_code == 0, result.output
    assert "2 succeeded, 0 failed, 0 skipped" in result.output
    recs = list(records(results).values())
    threads = str(max(1, usable_cpus() // 2))
    assert sorted(r["extra"]["probe_env"]["CUDA_VISIBLE_DEVICES"] for r in recs) == ["0", "1"]
    assert [r["extra"]["probe_env"]["OMP_NUM_THREADS"] for r in recs] == [threads, threads]
    assert [r["env"]["threads"] for r in recs] == [int(threads)] * 2
    assert os.getpid() not in {r["extra"]["probe_pid"] for r in recs}  # a subprocess each
    logs = sorted(p.name for p in (results / "sweeps" / "logs").iterdir())
    assert logs == sorted(f"{r['run_id']}.log" for r in recs)
    # the crashed run was retried (and only it)
    retried = [r["config"]["seed"] for r in recs
               if "# attempt 2:" in (results / "sweeps" / "logs" / f"{r['run_id']}.log")
               .read_text()]
    assert retried == [1] and (tmp_path / "crashed").exists()


CTRL_C_PROBE = """
    import os, signal, time
    from pathlib import Path
    import kdbench

    DIR = Path(os.environ["KDB_TEST_DIR"])

    @kdbench.hookimpl
    def kdbench_run_start(config, run_id):
        with open(DIR / "starts", "a") as fh:
            fh.write(run_id + "\\n")
        if len((DIR / "starts").read_text().split()) == 2 and not (DIR / "fired").exists():
            (DIR / "fired").touch()
            os.kill(os.getppid(), signal.SIGINT)  # Ctrl-C reaches the sweep (our parent)
            time.sleep(120)  # ... which interrupts this run in turn
"""


def test_a_ctrl_c_sweep_leaves_whole_records_and_resumes_only_the_missing_runs(
        tmp_path, results, monkeypatch):
    probe_plugin(tmp_path, monkeypatch, CTRL_C_PROBE)
    f = sweep_file(tmp_path, grid={"seed": [0, 1]})
    first = run_cli("sweep", f, "--results-dir", results, "--quiet")
    assert first.returncode == 130, first.stdout + first.stderr
    assert "1 succeeded, 0 failed, 0 skipped" in first.stdout
    recs = records(results)
    assert sorted(r["status"] for r in recs.values()) == ["done", "interrupted"]
    assert not [p for p in (results / "runs").iterdir() if p.name.endswith(".tmp")]
    done = next(r for r in recs.values() if r["status"] == "done")

    second = run_cli("sweep", f, "--results-dir", results, "--quiet")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "1 succeeded, 0 failed, 1 skipped (already done); teachers: 0 trained" in second.stdout
    starts = (tmp_path / "starts").read_text().split()
    interrupted = next(rid for rid, r in recs.items() if r["status"] == "interrupted")
    assert starts == [done["run_id"], interrupted, interrupted]
    assert Store(results).load_record(done["run_id"])["finished"] == done["finished"]
    assert all(r["status"] == "done" for r in records(results).values())


def test_lockstep_trains_runs_sharing_a_teacher_as_one_job_with_solo_results(
        tmp_path, results, cli_runner):
    f = sweep_file(tmp_path, grid={"loss.name": ["kd", "ce", "at"]})
    together = cli_runner("sweep", f, "--executor", "inline", "--lockstep",
                          "--results-dir", results, "--quiet")
    assert together.exit_code == 0, together.output
    assert "3 succeeded, 0 failed" in together.output
    logs = sorted(p.name for p in (results / "sweeps" / "logs").iterdir())
    # kd and ce share the teacher's logit forward; at taps its features: a job of its own
    kinds = sorted(name.split("-")[0] if "-" in name else "run" for name in logs)
    assert kinds == ["lockstep", "run", "teacher"]
    alone = tmp_path / "alone"
    solo = cli_runner("sweep", f, "--executor", "inline", "--results-dir", alone, "--quiet")
    assert solo.exit_code == 0, solo.output
    a, b = records(results), records(alone)
    assert sorted(a) == sorted(b)
    for rid in a:
        assert a[rid]["metrics"]["curve"] == b[rid]["metrics"]["curve"]
