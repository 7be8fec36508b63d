"""A shared results store that cannot be turned against its users (issue #29): one test per
hole, each reproducing the audit's case."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import tiny_overrides
from kdbench.config import build_config
from kdbench.errors import StoreError
from kdbench.runner import run
from kdbench.store import Store, atomic_write_json, save_resume

pytestmark = pytest.mark.usefixtures("single_thread")


def tiny(results, **extra):
    return build_config(tiny_overrides(results, **{"recipe.epochs": 1, "loss.name": "ce",
                                                   **extra}))


# ============================== 1. never write through a symbolic link ==========================


def test_a_symlinked_run_lock_is_refused_and_its_target_untouched(results, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    cfg = tiny(results)
    locks = results / ".locks"
    locks.mkdir(parents=True)
    (locks / f"{cfg.run_id}.lock").symlink_to(victim)
    with pytest.raises(StoreError, match="symbolic link"):
        run(cfg, progress=False)
    assert victim.read_text() == "precious\n"


def test_a_hard_linked_lock_is_refused_and_a_lock_is_never_truncated(results, tmp_path):
    store = Store(results)
    (results / ".locks").mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious and long enough to be cut short by a truncate\n")
    os.link(victim, results / ".locks" / "a.lock")
    with pytest.raises(StoreError, match="hard link"), store.run_lock("a"):
        pass
    assert victim.read_text().startswith("precious")
    with store.run_lock("b"):
        pass
    assert (results / ".locks" / "b.lock").read_text().strip() == f"pid {os.getpid()}"


def test_a_symlinked_teacher_lock_is_refused(results, tmp_path, tiny):
    from kdbench.teachers import trajectory

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    folder = results / "teachers" / "k"
    folder.mkdir(parents=True)
    (folder / ".lock").symlink_to(victim)
    with pytest.raises(StoreError, match="symbolic link"), trajectory.locked(folder):
        pass
    assert victim.read_text() == "precious\n"


@pytest.mark.parametrize("write", ["record", "state", "manifest"])
def test_store_writes_refuse_a_symbolic_link(results, tmp_path, write):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    store = Store(results)
    store.runs.mkdir(parents=True)
    target = {"record": store.record_path("0" * 16), "state": store.state_path("0" * 16),
              "manifest": results / "teachers" / "k" / "manifest.json"}[write]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(victim)
    with pytest.raises(StoreError, match="symbolic link"):
        if write == "state":
            save_resume({"epoch": 0}, target)
        else:
            atomic_write_json(target, {"x": 1})
    assert target.is_symlink() and victim.read_text() == "precious\n"


def test_a_symlinked_csv_log_is_not_appended_to(results, tmp_path):
    from kdbench.loggers.builtin import CsvLogger

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    logger = CsvLogger(results_dir=results)
    logger.start({"run_id": "r"})
    logger.epoch("r", {"epoch": 1, "top1": 1.0})
    logger.path.unlink()
    logger.path.symlink_to(victim)
    with pytest.raises(StoreError, match="symbolic link"):
        logger.epoch("r", {"epoch": 2, "top1": 2.0})
    assert victim.read_text() == "precious\n"


def test_a_manifest_naming_a_file_outside_its_folder_is_refused(results, tiny, cli_runner):
    from kdbench.teachers import manage
    from kdbench.teachers.trajectory import MANIFEST, Trajectory

    cfg = tiny(**{"recipe.epochs": 1})
    [t] = manage.train(cfg, progress=False)
    manifest = json.loads((t.folder / MANIFEST).read_text())
    outside = results / "runs" / "x.json"
    outside.parent.mkdir(parents=True, exist_ok=True)
    outside.write_bytes((t.folder / "epoch_0004.pt").read_bytes())
    manifest["checkpoints"]["4"]["file"] = "../../runs/x.json"
    (t.folder / MANIFEST).write_text(json.dumps(manifest))
    t = Trajectory(t.folder)
    assert any("outside the trajectory's folder" in p for p in t.problems())
    with pytest.raises(StoreError, match="outside its folder"):
        t.state_dict(4)


def test_teacher_rm_of_a_symlinked_folder_removes_the_link_only(results, tmp_path, tiny,
                                                                cli_runner):
    from kdbench.teachers import manage

    [t] = manage.train(tiny(**{"recipe.epochs": 1}), progress=False)
    elsewhere = tmp_path / "elsewhere"
    os.replace(t.folder, elsewhere)
    t.folder.symlink_to(elsewhere, target_is_directory=True)
    before = sorted(p.name for p in elsewhere.iterdir())
    result = cli_runner("teacher", "rm", t.key, "--results-dir", results)
    assert result.exit_code == 0, result.output
    assert "symbolic link" in result.output and "removed the link" in result.output
    assert not os.path.lexists(t.folder)
    assert sorted(p.name for p in elsewhere.iterdir()) == before


# ============================== 2. resume state bound to its run ================================

def _interrupt(cfg, stop, after=1):
    stop["after"] = after
    with pytest.raises(KeyboardInterrupt):
        run(cfg, progress=False)


def _edit_state(path, edit):
    from kdbench.store import load_resume

    state = load_resume(path)
    edit(state)
    save_resume(state, path)  # with a valid checksum, as a forger would write it


@pytest.mark.parametrize("damage", ["other run", "no trainees", "epoch 99", "other shapes"])
def test_a_resume_state_that_is_not_the_runs_own_is_set_aside(stopper, results, tmp_path,
                                                               damage):
    cfg = tiny(results, **{"recipe.epochs": 3})
    reference = run(tiny(tmp_path / "ref", **{"recipe.epochs": 3}), progress=False)
    state = Store(results).state_path(cfg.run_id)
    if damage == "other run":  # another run's state, checksum and all, under this run's name
        other = tiny(results, **{"recipe.epochs": 3, "seed": 1})
        _interrupt(other, stopper)
        os.replace(Store(results).state_path(other.run_id), state)
        os.replace(f"{Store(results).state_path(other.run_id)}.sha256", f"{state}.sha256")
        Store(results).record_path(other.run_id).unlink()
        why = "saved by another run"
    else:
        _interrupt(cfg, stopper)
        edit, why = {
            "no trainees": (lambda s: s.update(trainees=[]), "holds 0 trainee"),
            "epoch 99": (lambda s: s.update(epoch=99), "epoch 99 is not in 0..3"),
            "other shapes": (lambda s: s["trainees"][0]["model"].update(
                {k: v[:1] for k, v in s["trainees"][0]["model"].items() if v.ndim}),
                "has another shape"),
        }[damage]
        _edit_state(state, edit)
    with pytest.warns(RuntimeWarning, match=f"not a trusted resume file .*{why}"):
        record = run(cfg, progress=False)
    assert record["metrics"]["curve"] == reference["metrics"]["curve"]
    assert list(Store(results).runs.glob(f"{cfg.run_id}.state.pt.corrupt-*"))


def test_a_teacher_state_of_another_trajectory_is_set_aside(stopper, results, tmp_path, tiny):
    from kdbench.teachers import manage

    cfg = tiny(**{"recipe.epochs": 1})
    [reference] = manage.train(build_config(tiny_overrides(tmp_path / "ref",
                                                           **{"recipe.epochs": 1})),
                               progress=False)
    stopper["after"] = 2
    with pytest.raises(KeyboardInterrupt):
        manage.train(cfg, progress=False)
    [folder] = (results / "teachers").iterdir()
    _edit_state(folder / "state.pt", lambda s: s.update(bind={"key": "resnet8-other",
                                                                "spec_sha256": "0" * 64}))
    with pytest.warns(RuntimeWarning, match="saved by another run"):
        [t] = manage.train(cfg, progress=False)
    assert t.manifest["curve"] == reference.manifest["curve"]
    assert t.manifest["checkpoints"] == reference.manifest["checkpoints"]


# ============================== 3. records checked against the run they are looked up for =======


def _record_of(results, **extra):
    cfg = tiny(results, **extra)
    return cfg, run(cfg, progress=False)


@pytest.mark.parametrize("how", ["copied", "relabelled"])
def test_a_record_of_another_run_is_not_returned_as_this_one(results, how):
    other_cfg, other = _record_of(results, seed=1)
    cfg = tiny(results)
    path = Store(results).record_path(cfg.run_id)
    planted = dict(other, run_id=cfg.run_id) if how == "relabelled" else other
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(planted))
    why = "filed under" if how == "copied" else "config does not hash to that id"
    with pytest.warns(RuntimeWarning, match=why):
        record = run(cfg, progress=False)
    assert record["run_id"] == cfg.run_id and record["config"]["seed"] == 0
    assert list(Store(results).runs.glob(f"{cfg.run_id}.json.corrupt-*"))


def test_a_record_of_a_newer_schema_is_left_alone(results, cli_runner):
    cfg, record = _record_of(results)
    path = Store(results).record_path(cfg.run_id)
    path.write_text(json.dumps(dict(record, schema=3)))
    with pytest.raises(StoreError, match="made by a newer kdbench"):
        run(cfg, progress=False)
    assert json.loads(path.read_text())["schema"] == 3
    assert not list(Store(results).runs.glob("*.corrupt-*"))


# ============================== 4. no traceback from a damaged store ============================


def _spec(results, cfg):
    spec = results.parent / "spec.json"
    spec.write_text(json.dumps(cfg.to_dict()))
    return spec


@pytest.mark.parametrize("damage", ["folder", "dangling link", "looping link", "config {}",
                                    "string metrics"])
def test_a_damaged_record_is_set_aside_by_run_and_skipped_by_table(results, cli_runner,
                                                                   damage):
    _record_of(results, seed=1)  # a good one beside it
    cfg, record = _record_of(results)
    path = Store(results).record_path(cfg.run_id)
    path.unlink()
    if damage == "folder":
        path.mkdir()
    elif damage == "dangling link":
        path.symlink_to(results / "nowhere.json")
    elif damage == "looping link":
        path.symlink_to(path)
    else:
        path.write_text(json.dumps(dict(record, config={}) if damage == "config {}"
                                   else dict(record, metrics="97.5")))
    table = cli_runner("table", "--results-dir", results)
    assert table.exit_code == 0 and "Traceback" not in table.output, table.output
    assert str(path) in table.output  # skipped, and named
    again = cli_runner("run", "--spec", _spec(results, cfg), "--quiet", "--force")
    assert again.exit_code == 0, again.output
    assert Store(results).load_record(cfg.run_id)["status"] == "done"


def test_a_pipe_named_like_a_record_does_not_hang_a_reader(results, cli_runner):
    cfg, _ = _record_of(results)
    os.mkfifo(Store(results).runs / ("f" * 16 + ".json"))
    table = cli_runner("table", "--results-dir", results)  # hangs on the old code
    assert table.exit_code == 0 and "not a regular file" in table.output


# ============================== 5. bounded sizes and honest values ==============================


@pytest.mark.parametrize("args, message", [
    (["--set", "recipe.optimizer=adam", "--set", "recipe.optimizer_options.eps=-1"],
     "recipe.optimizer 'adam' refuses its options"),
    (["--threads", "1000000"], "engine.threads 1000000 is more than 4 per core"),
    (["--epochs", "1000000"], "recipe.epochs 1000000 is beyond any sane run"),
    (["--batch-size", "100000000"], "recipe.batch_size 100000000 is beyond any sane batch"),
    (["--set", "recipe.momentum=1"], "recipe.momentum must be < 1"),
    (["--w", "w_ce=0", "--w", "w_kd=0"], "every weight of loss 'kd' is 0"),
    (["--results-dir", ""], "results_dir is empty"),
    (["--loss", ""], "an empty name ('')"),
    (["--student", " "], "an empty name (' ')"),
    (["--set", "recipe.milestones=[-1]"], "recipe.milestones must be epochs >= 0, got [-1]"),
])
def test_out_of_bounds_values_are_refused_in_one_line(args, message, results, cli_runner,
                                                      monkeypatch):
    monkeypatch.chdir(results.parent)
    result = cli_runner("run", "--dataset", "synthetic", "--student", "resnet8",
                        "--teacher-arch", "resnet8", "--epochs", "1", "--results-dir", results,
                        "--quiet", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not list(results.parent.glob("**/*.json")) and not list(results.glob("teachers/*"))


def test_a_read_only_teachers_folder_is_found_before_any_work(results, monkeypatch):
    import tempfile

    real = tempfile.mkstemp

    def read_only(*a, dir=None, **k):  # root writes anywhere: refuse as a read-only folder
        if dir is not None and Path(dir).name == "teachers":
            raise PermissionError(13, "Permission denied")
        return real(*a, dir=dir, **k)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(StoreError, match="teachers'.*Permission denied"):
        Store(results).check_writable()


# ============================== 7. signals, and the sweep's settle =============================


def test_a_closed_terminal_sighup_leaves_an_interrupted_record_and_exits_129(results):
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO

    cfg = tiny(results, **{"recipe.epochs": 40, "data.options.train_size": 2048})
    spec = _spec(results, cfg)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
           "KDBENCH_LOAD_PLUGINS": ""}

    def default_signals():
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)

    proc = subprocess.Popen([sys.executable, "-m", "kdbench", "run", "--spec", str(spec),
                             "--quiet"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=default_signals)
    state = Store(results).state_path(cfg.run_id)
    deadline = time.time() + 120
    while not state.exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 129, err
    assert Store(results).load_record(cfg.run_id)["status"] == "interrupted"


def test_settle_writes_no_failed_record_while_the_run_is_still_held(results):
    from kdbench.sweep import expand
    from kdbench.sweep.driver import settle
    from kdbench.sweep.executors import Outcome

    cfg = tiny(results)
    plan = expand({"base": {k: v for k, v in cfg.to_dict().items() if k != "results_dir"}},
                  results_dir=results)
    [planned] = plan.runs
    store = Store(results)
    running = {"schema": 2, "run_id": planned.run_id, "status": "running",
               "config": planned.config.to_dict(), "metrics": {}}
    store.write_record(running)
    with store.run_lock(planned.run_id):  # an orphaned child still training it
        result = settle(store, planned, Outcome(1, "exit status 1"))
    assert result.status == "failed" and "still being trained" in result.error
    assert store.load_record(planned.run_id)["status"] == "running"
    assert settle(store, planned, Outcome(1, "exit status 1")).status == "failed"
    assert store.load_record(planned.run_id)["status"] == "failed"


# ============================== 6. a way out: repairs that can be checked =======================


def test_teacher_train_takes_threads_and_the_record_keeps_the_checkpoint_sha(results, tiny,
                                                                           cli_runner,
                                                                           monkeypatch):
    from kdbench import device
    from kdbench.teachers.trajectory import Trajectory

    asked = []
    real = device.set_threads
    monkeypatch.setattr(device, "set_threads", lambda n: (asked.append(n), real(n))[1])
    out = cli_runner("teacher", "train", "--dataset", "synthetic", "--teacher-arch", "resnet8",
                     "--epochs", "2", "--set", "teacher.save_every=2", "--threads", "1",
                     "--results-dir", results, "--quiet")
    assert out.exit_code == 0, out.output
    assert asked == [1]
    cfg = tiny(**{"teacher.recipe.epochs": 2, "loss.name": "kd", "recipe.epochs": 1})
    record = run(cfg, progress=False)
    t = record["teacher"]
    manifest = Trajectory(results / "teachers" / t["trajectory"]).manifest
    assert t["checkpoint_sha256"] == manifest["checkpoints"][str(t["epochs"][0])]["sha256"]


def test_a_teacher_trained_again_to_other_weights_is_detected_in_a_done_record(results, tiny,
                                                                               cli_runner):
    """A record keeps the SHA-256 of the teacher checkpoint it was distilled from: a repair (or a
    retraining elsewhere) that gave other weights is named when the record would be reused, and
    the record is kept or made again only as the user says; a repair that gives the same
    weights changes nothing."""
    from kdbench.errors import ConfigError
    from kdbench.runner import run as run_
    from kdbench.store import sha256_file
    from kdbench.teachers import manage
    from kdbench.teachers.trajectory import MANIFEST

    cfg = tiny(**{"loss.name": "kd", "recipe.epochs": 1, "teacher.recipe.epochs": 2})
    first = run_(cfg, progress=False)
    t = first["teacher"]
    folder = results / "teachers" / t["trajectory"]
    ckpt = folder / f"epoch_{t['epochs'][0]:04d}.pt"
    # a deterministic repair (the file lost, trained again): the same weights, reused silently
    ckpt.unlink()
    with pytest.warns(RuntimeWarning, match="is damaged"):
        manage.train(cfg, progress=False)
    assert sha256_file(ckpt) == t["checkpoint_sha256"]
    with pytest.warns(RuntimeWarning, match=rf"run {cfg.run_id} reused: its record was made"):
        assert run_(cfg, progress=False)["finished"] == first["finished"]
    # a repair that gave other weights (another machine, other threads): the teacher changed
    import torch

    state = torch.load(ckpt, weights_only=True)
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}
    torch.save(state, ckpt)
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["checkpoints"][str(t["epochs"][0])]["sha256"] = sha256_file(ckpt)
    (folder / MANIFEST).write_text(json.dumps(manifest))
    new_sha = sha256_file(ckpt)
    with pytest.raises(ConfigError, match=rf"made from other teacher weights \(teacher "
                                          rf"{t['trajectory']}/epoch {t['epochs'][0]} sha256 "
                                          rf"{t['checkpoint_sha256'][:12]} → {new_sha[:12]}"):
        run_(cfg, progress=False)
    spec = results / "spec.yaml"
    spec.write_text(json.dumps(cfg.to_dict()))
    asked = cli_runner("run", "--spec", spec, "--quiet")
    assert asked.exit_code == 2 and "made from other teacher weights" in asked.output
    assert len(asked.output.strip().splitlines()) == 1
    planned = cli_runner("run", "--spec", spec, "--dry-run")
    assert "trained again since" in planned.output, planned.output
    from kdbench import load_records

    with pytest.warns(RuntimeWarning, match=rf"1 finished record\(s\) were distilled from "
                                            rf"teacher weights .* run {cfg.run_id}: teacher "):
        load_records(results)  # what `kdbench table` and the report read
    with pytest.warns(RuntimeWarning, match="reused although its record was made from other "
                                            "teacher weights"):
        kept = run_(cfg, progress=False, changed="reuse")
    assert kept["finished"] == first["finished"]
    with pytest.warns(RuntimeWarning, match="made from other teacher weights .* made again"):
        again = run_(cfg, progress=False, changed="rerun")
    assert again["teacher"]["checkpoint_sha256"] == new_sha  # made again, from the new weights


@pytest.mark.parametrize("damage", ["list checkpoints", "string spec", "truncated"])
def test_a_damaged_manifest_is_named_and_can_be_rebuilt_or_removed(results, cli_runner,
                                                                   damage):
    from kdbench.teachers.trajectory import MANIFEST

    base = ["--dataset", "synthetic", "--teacher-arch", "resnet8", "--epochs", "2",
            "--results-dir", results, "--quiet"]
    assert cli_runner("teacher", "train", *base).exit_code == 0
    [folder] = (results / "teachers").iterdir()
    text = (folder / MANIFEST).read_text()
    manifest = json.loads(text)
    if damage == "list checkpoints":
        manifest["checkpoints"] = [1, 2]
    elif damage == "string spec":
        manifest["spec"] = "x"
    (folder / MANIFEST).write_text(text[:100] if damage == "truncated" else json.dumps(manifest))
    listed = cli_runner("teacher", "list", "--results-dir", results)
    assert listed.exit_code == 0 and "manifest" in listed.output, listed.output  # listed as damaged
    ran = cli_runner("run", "--dataset", "synthetic", "--student", "resnet8", "--teacher-arch",
                     "resnet8", "--epochs", "1", "--set", "teacher.recipe.epochs=2",
                     "--results-dir", results, "--quiet")
    assert ran.exit_code == 1 and "manifest" in ran.output, ran.output  # a damaged store
    assert len(ran.output.strip().splitlines()) == 1
    if damage == "truncated":
        removed = cli_runner("teacher", "rm", folder.name, "--force", "--results-dir", results)
        assert removed.exit_code == 0, removed.output
        assert not folder.exists()
    else:
        again = cli_runner("teacher", "train", *base)
        assert again.exit_code == 0, again.output
        assert "is damaged" in again.output and "trained again" in again.output
        assert json.loads((folder / MANIFEST).read_text())["checkpoints"] \
            == json.loads(text)["checkpoints"]


def test_crash_leftovers_are_cleaned_when_the_store_is_next_written(results):
    cfg, record = _record_of(results)
    store = Store(results)
    state = store.state_path(cfg.run_id)
    save_resume({"epoch": 1}, state)  # a crash between the done record and the state's removal
    with store.run_lock(cfg.run_id):  # a forced rerun holding the run keeps its state
        store.check_writable()
    assert state.exists()
    store.check_writable()
    assert not state.exists() and not Path(f"{state}.sha256").exists()
    assert store.load_record(cfg.run_id)["status"] == "done"


def test_a_temporary_file_is_a_leftover_when_older_than_every_live_lock_holder(results):
    from kdbench.teachers.trajectory import locked

    store = Store(results)
    store.check_writable()
    folder = store.teachers / "somekey"
    tmps = {name: base / f".{name}.json.x.tmp" for name, base in [
        ("before", store.runs), ("after", store.runs), ("teacher-before", folder),
        ("teacher-after", folder)]}
    with locked(folder), store.run_lock("another-run"):  # two live writers
        since = min((folder / ".lock").stat().st_mtime,
                    (results / ".locks" / "another-run.lock").stat().st_mtime)
        assert store.live_since() == since
        for name, tmp in tmps.items():
            tmp.write_text("being written" if "after" in name else "a crash's leftover")
            at = since + 5 if "after" in name else since - 5  # seconds, not minutes, apart
            os.utime(tmp, (at, at))
        removed = store.clean_leftovers()
        assert sorted(removed) == sorted([tmps["before"], tmps["teacher-before"]])
        assert tmps["after"].exists() and tmps["teacher-after"].exists()
    assert store.live_since() is None  # both released: nothing can be writing any more
    store.check_writable()
    assert not tmps["after"].exists() and not tmps["teacher-after"].exists()


def test_reproduce_refuses_zero_jobs_in_one_line(cli_runner, tmp_path):
    out = cli_runner("reproduce", "checkpoint-kd-cifar10", "--jobs", "0", "--root", tmp_path)
    assert out.exit_code == 2 and "--jobs" in out.output and "0" in out.output
