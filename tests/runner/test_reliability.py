"""A results store that survives crashes, concurrency, tampering and bad values: one test per
hole of the reliability issue, and a fault-injection test that kills runs, teacher trainings and
sweeps at seeded random points and checks every rerun ends where an uninterrupted run does."""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO, run_cli, tiny_overrides
from kdbench.config import build_config
from kdbench.runner import run
from kdbench.store import Store, sha256_file

pytestmark = pytest.mark.usefixtures("single_thread")

def tiny(results, **extra):
    return build_config(tiny_overrides(results, **{"recipe.epochs": 3, **extra}))


def interrupted(cfg, stop, after=1):
    """Run ``cfg`` until it is interrupted after epoch ``after`` (teacher trained first)."""
    # train the teacher uninterrupted first: the stopper counts the student's epochs only
    from kdbench.teachers import manage

    if cfg.teacher is not None:
        manage.train(cfg, progress=False)
    stop["after"] = after
    with pytest.raises(KeyboardInterrupt):
        run(cfg, progress=False)


class Planted:
    """An object whose unpickling would leave a marker file: code from the store."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


# ============================== 1. no code runs from the store ==================================


def test_a_planted_pickle_in_a_resume_file_never_runs(stopper, results, tmp_path):
    cfg = tiny(results)
    interrupted(cfg, stopper)
    store = Store(results)
    rid = cfg.run_id
    state = store.state_path(rid)
    marker = tmp_path / "marker"
    payload = pickle.dumps({"epoch": 1, "trainees": [Planted(marker)]})
    state.write_bytes(payload)
    # even with a checksum that matches (a planted file, not an accident), nothing runs
    Path(str(state) + ".sha256").write_text(json.dumps({"sha256": [sha256_file(state)]}))
    with pytest.warns(RuntimeWarning, match="not a trusted resume file .*plain tensors"):
        record = run(cfg, progress=False)
    assert not marker.exists()
    assert record["status"] == "done" and len(record["metrics"]["curve"]) == 3
    assert list(store.runs.glob(f"{rid}.state.pt.corrupt-*"))  # kept for inspection


def test_planted_teacher_weights_are_refused_in_one_line(results, tmp_path, cli_runner):
    marker = tmp_path / "marker"
    weights = tmp_path / "teacher.pt"
    weights.write_bytes(pickle.dumps({"conv1.weight": Planted(marker)}))
    result = cli_runner("run", "--dataset", "synthetic", "--student", "resnet8",
                        "--teacher-arch", "resnet8", "--teacher-weights", weights,
                        "--results-dir", results, "--quiet")
    assert result.exit_code == 2 and not marker.exists()
    assert "holds Python objects beyond tensors" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not list((results / "runs").glob("*.json"))


# ============================== 2. checkpoints before the state =================================


def test_a_teacher_killed_around_a_checkpoint_resumes_to_every_checkpoint(results, tmp_path,
                                                                          monkeypatch):
    from kdbench.engine import state
    from kdbench.teachers import manage

    cfg = tiny(tmp_path / "ref")
    [ref] = manage.train(cfg, progress=False)
    cfg = tiny(results)
    real = state.save_state
    calls = {"n": 0}

    def crash_after_checkpoint(*args, **kwargs):  # the checkpoint is written, the state not
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(state, "save_state", crash_after_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        manage.train(cfg, progress=False)
    monkeypatch.setattr(state, "save_state", real)
    [again] = manage.train(cfg, progress=False)
    assert again.done and not again.problems()
    assert {e: again.manifest["checkpoints"][e]["sha256"] for e in again.manifest["checkpoints"]} \
        == {e: ref.manifest["checkpoints"][e]["sha256"] for e in ref.manifest["checkpoints"]}


def test_a_deleted_checkpoint_makes_the_trajectory_damaged_not_done(results, cli_runner):
    from kdbench.teachers import manage

    cfg = tiny(results)
    [t] = manage.train(cfg, progress=False)
    (t.folder / "epoch_0004.pt").unlink()
    listed = cli_runner("teacher", "list", "--results-dir", results)
    assert "damaged: epoch_0004.pt is missing" in listed.output
    failed = cli_runner("run", "--spec", _spec(results, cfg), "--quiet")
    # a damaged store is exit 1 (the command was fine), and no record is written
    assert failed.exit_code == 1 and "kdbench teacher train" in failed.output
    assert not list((results / "runs").glob("*.json"))
    with pytest.warns(RuntimeWarning, match="is damaged"):
        manage.train(cfg, progress=False)
    assert manage.get(Store(results), t.key).done


def _spec(results, cfg) -> Path:
    path = Path(results).parent / "spec.json"
    path.write_text(json.dumps(cfg.to_dict()))
    return path


# ============================== 3. one process per run ==========================================


def test_two_processes_on_one_run_train_it_once(results, tmp_path):
    cfg = tiny(results, **{"recipe.epochs": 20, "loss.name": "ce",
                           "data.options.train_size": 1024})
    spec = _spec(results, cfg)
    env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "KDBENCH_LOAD_PLUGINS": ""}
    cmd = [sys.executable, "-m", "kdbench", "run", "--spec", str(spec), "--quiet", "--json"]
    first = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not Store(results).record_path(cfg.run_id).exists() and time.time() < deadline:
        time.sleep(0.05)  # the first process has the lock and is training
    second = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True,
                            timeout=300)
    out1, err1 = first.communicate(timeout=300)
    assert first.returncode == 0 and second.returncode == 0, (err1, second.stderr)
    assert "is being trained by pid" in second.stderr and "waiting" in second.stderr
    r1, r2 = json.loads(out1), json.loads(second.stdout)
    assert r1["created"] == r2["created"] and r1["metrics"] == r2["metrics"]
    assert len(r1["cost"]["attempts"]) == 1  # trained once


# ============================== 4. no orphans ===================================================


@pytest.mark.slow
def test_children_die_with_a_killed_sweep_driver(tmp_path):
    results = tmp_path / "results"
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(textwrap.dedent(f"""
        base: {json.dumps(tiny_overrides(results, **{"recipe.epochs": 40, "loss.name": "ce",
                                                      "data.options.train_size": 2048}))}
        grid: {{seed: [0]}}
    """))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
           "KDBENCH_LOAD_PLUGINS": ""}
    driver = subprocess.Popen([sys.executable, "-m", "kdbench", "sweep", str(sweep),
                               "--results-dir", str(results), "--quiet"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    child = _wait_for_child(driver.pid)
    deadline = time.time() + 120
    while not list((results / "runs").glob("*.json")) and time.time() < deadline:
        time.sleep(0.1)  # the run is training (its record says running)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    assert _gone(child, 30), "the run kept training after its driver was killed"
    [record] = [json.loads(p.read_text()) for p in (results / "runs").glob("*.json")]
    assert record["status"] == "interrupted"  # SIGTERM: a resumable record, not a stale one


def _wait_for_child(parent: int, timeout: float = 60) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                    return int(entry.name)
        time.sleep(0.1)
    raise AssertionError("the sweep started no run")


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.1)
    return False


# ============================== 5. damaged files ================================================


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_resume_file_is_set_aside_and_the_run_restarts(stopper, results, tmp_path,
                                                                 damage):
    reference = run(tiny(tmp_path / "ref"), progress=False)
    cfg = tiny(results)
    interrupted(cfg, stopper)
    state = Store(results).state_path(cfg.run_id)
    data = state.read_bytes()
    state.write_bytes(data[: len(data) // 2] if damage == "truncate"
                      else data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    with pytest.warns(RuntimeWarning, match="SHA-256 does not match"):
        record = run(cfg, progress=False)
    assert record["metrics"]["curve"] == reference["metrics"]["curve"]


def test_a_truncated_record_is_replaced_by_the_next_run(results, tmp_path, cli_runner):
    cfg = tiny(results, **{"loss.name": "ce"})
    record = run(cfg, progress=False)
    path = Store(results).record_path(record["run_id"])
    path.write_text(path.read_text()[:200])
    with pytest.warns(RuntimeWarning, match="is unreadable .* the run is made again"):
        again = run(cfg, progress=False)
    assert again["status"] == "done" and again["metrics"] == record["metrics"]
    path.write_text(path.read_text()[:200])
    forced = cli_runner("run", "--spec", _spec(results, cfg), "--force", "--quiet")
    assert forced.exit_code == 0, forced.output


# ============================== 6. permissions ==================================================


def test_files_follow_the_umask_and_unreadable_records_warn(results, monkeypatch):
    old = os.umask(0o022)
    try:
        record = run(tiny(results, **{"loss.name": "ce"}), progress=False)
    finally:
        os.umask(old)
    path = Store(results).record_path(record["run_id"])
    assert path.stat().st_mode & 0o777 == 0o644
    from kdbench.report.records import load_records

    real = os.open

    def denied(file, *a, **k):  # root reads whatever its mode: deny it as another user's
        if Path(file) == path:
            raise PermissionError(13, "Permission denied")
        return real(file, *a, **k)

    monkeypatch.setattr(os, "open", denied)
    with pytest.warns(RuntimeWarning, match=f"cannot read record '{path}': permission denied"):
        assert load_records(results).empty


# ============================== 7. bad values before any work ===================================


@pytest.mark.parametrize("args, message", [
    (["--lr", "inf"], "recipe.lr must be a finite number"),
    (["--opt", "T=inf"], "loss 'kd' option T must be a finite number"),
    (["--w", "w_kd=nan"], "loss 'kd' weight w_kd must be a finite number"),
    (["--w", "w_ce=inf"], "loss 'kd' weight w_ce must be a finite number"),
    (["--set", "recipe.gamma=nan"], "recipe.gamma must be a finite number"),
    (["--set", "recipe.momentum=-1"], "recipe.momentum must be >= 0, got -1"),
    (["--set", "recipe.weight_decay=-1"], "recipe.weight_decay must be >= 0"),
    (["--seed", "18446744073709551616"], "seed must be in 0..2^63-1"),
    (["--set", "data.options.num_classes=0"], "option num_classes must be an integer >= 2"),
    (["--w", "w_kd=-1"], "weight w_kd must be >= 0, got -1.0"),
    (["--batch-size", "300"], "recipe.batch_size 300 is larger than the 256 training images"),
    (["--set", "teacher=null"], "loss 'kd' needs a teacher but the config has none"),
])
def test_bad_values_are_refused_before_any_work(args, message, results, cli_runner):
    result = cli_runner("run", "--dataset", "synthetic", "--student", "resnet8",
                        "--teacher-arch", "resnet8", "--epochs", "1", "--results-dir", results,
                        "--quiet", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not list(results.glob("**/*.json")) and not list(results.glob("teachers/*"))


def test_teacher_flags_with_a_loss_that_has_no_teacher_are_said_to_be_ignored(results,
                                                                              cli_runner):
    result = cli_runner("run", "--dataset", "synthetic", "--student", "resnet8", "--loss", "ce",
                        "--teacher-arch", "resnet8", "--teacher-epoch", "3", "--epochs", "1",
                        "--results-dir", results, "--quiet", "--json")
    assert result.exit_code == 0
    assert ("loss 'ce' uses no teacher, so --teacher-arch, --teacher-epoch are ignored"
            in result.output)
    assert not (results / "teachers").exists() or not list((results / "teachers").iterdir())


def test_set_null_means_none(results):
    cfg = build_config(tiny_overrides(results, **{"teacher.source": "intermediate"}),
                       explicit={"teacher.epoch": None})
    assert cfg.teacher.epoch is None
    assert build_config({}, explicit={"teacher": None}).teacher is None


# ============================== 8. a sweep file may use the CLI's names =========================


def test_sweep_files_accept_the_command_lines_names(results, tmp_path):
    from kdbench.sweep import expand

    base = {"data": {"name": "synthetic"}, "teacher": {"arch": "resnet8"}, "student": "resnet8"}
    canonical = expand({"base": base, "grid": {"loss.name": ["kd", "ce"]}}, results_dir=results)
    aliased = expand({"base": {"dataset": "synthetic", "teacher_arch": "resnet8",
                               "student": "resnet8"}, "grid": {"loss": ["kd", "ce"]}},
                     results_dir=results)
    assert [r.run_id for r in aliased.runs] == [r.run_id for r in canonical.runs]


# ============================== 10. the truth about cost, and exit codes ========================


def test_a_resumed_record_accounts_for_every_attempt(stopper, results, tmp_path):
    reference = run(tiny(tmp_path / "ref"), progress=False)
    cfg = tiny(results)
    interrupted(cfg, stopper)
    first = Store(results).load_record(cfg.run_id)
    record = run(cfg, progress=False)
    attempts = record["cost"]["attempts"]
    assert [a["status"] for a in attempts] == ["interrupted", "done"]
    assert record["created"] == first["created"] == attempts[0]["started"]
    assert record["cost"]["train_images"] == reference["cost"]["train_images"]
    assert record["cost"]["wall_seconds"] == pytest.approx(sum(a["wall_seconds"]
                                                               for a in attempts))
    # a finished run leaves no resume file behind, nor its checksum
    assert not list(Store(results).runs.glob(f"{cfg.run_id}.state*"))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_cli_run_exits_130_and_resumes(results, sig):
    cfg = tiny(results, **{"recipe.epochs": 40, "loss.name": "ce",
                           "data.options.train_size": 2048})
    spec = _spec(results, cfg)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
           "KDBENCH_LOAD_PLUGINS": ""}
    proc = subprocess.Popen([sys.executable, "-m", "kdbench", "run", "--spec", str(spec),
                             "--quiet"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    state = Store(results).state_path(cfg.run_id)
    deadline = time.time() + 120
    while not state.exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Interrupted." in err and "Aborted" not in err
    assert Store(results).load_record(cfg.run_id)["status"] == "interrupted"


# ============================== 11. presets follow the epochs asked for =========================


def test_preset_milestones_scale_with_the_epochs_asked_for():
    cfg = build_config({"preset": "quick", "recipe.epochs": 40, "teacher.recipe.epochs": 60})
    assert cfg.recipe.milestones == [24, 32, 37]  # 18/24/28 of 30
    assert cfg.teacher.recipe.milestones == [36, 48, 56]
    explicit = build_config({"preset": "quick", "recipe.epochs": 40, "recipe.milestones": [5]})
    assert explicit.recipe.milestones == [5]
    step = build_config({"preset": "checkpointkd", "recipe.epochs": 20})
    assert step.recipe.step_size == 6  # every 60 of 200
    from kdbench.config import resolve

    with pytest.warns(RuntimeWarning, match="drops its lr for the last time at epoch 5 of 40"):
        resolve(explicit)


# ============================== fault injection =================================================


@pytest.mark.slow
@pytest.mark.parametrize("what", ["run", "teacher", "sweep"])
def test_kills_at_random_points_end_where_an_uninterrupted_run_ends(tmp_path, what):
    """kill -9 at three seeded random moments, then run again to the end: the records' metrics
    and the teacher checkpoints' hashes equal those of a run never interrupted."""
    over = {"recipe.epochs": 4, "teacher.recipe.epochs": 4, "data.options.train_size": 768}
    results, reference = tmp_path / "results", tmp_path / "reference"
    cfg = tiny(results, **over)
    spec = _spec(results, cfg)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(json.dumps({"base": cfg.to_dict()}))
    argv = {"run": ["run", "--spec", spec], "teacher": ["teacher", "train", "--spec", spec],
            "sweep": ["sweep", sweep]}[what]
    env = {"OMP_NUM_THREADS": "1", "KDBENCH_LOAD_PLUGINS": ""}
    # the same command never interrupted (results depend on the thread count it chooses)
    done = run_cli(*argv, "--results-dir", reference, "--quiet", env=env)
    assert done.returncode == 0, done.stderr
    rng = random.Random(7)
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-m", "kdbench", *map(str, argv),
                                 "--results-dir", str(results), "--quiet"],
                                env={**os.environ, "PYTHONPATH": str(REPO), **env},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, 4.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finished = run_cli(*argv, "--results-dir", results, "--quiet", env=env)
    assert finished.returncode == 0, finished.stderr
    assert _checkpoint_hashes(results) == _checkpoint_hashes(reference) != {}
    if what != "teacher":
        [ref] = [json.loads(p.read_text()) for p in (reference / "runs").glob("*.json")]
        record = Store(results).load_record(ref["run_id"])
        assert record["status"] == "done" and record["metrics"] == ref["metrics"]


def _checkpoint_hashes(results: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted((results / "teachers").glob("*/epoch_*.pt"))}


def test_torch_load_is_always_weights_only():
    """No ``torch.load`` in kdbench may unpickle code (a grep of the source, so a new one
    cannot slip in)."""
    offenders = []
    for path in (REPO / "kdbench").rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if "torch.load(" in line and "weights_only=True" not in line:
                offenders.append(f"{path.relative_to(REPO)}:{n}")
    assert not offenders, offenders
    assert torch.load  # the grep would pass vacuously if torch.load were renamed
