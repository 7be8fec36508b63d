"""Teacher sources on tiny synthetic data: provenance, ensembles against a direct computation,
trajectory reuse and resume, the checkpoint curve, --teacher-weights and the bad-input paths.

Two teacher trajectories (resnet8, 4 epochs, checkpoints at 2 and 4, seeds 0 and 1) are trained
once per module and copied into each test's store; students train for one epoch.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import kdbench
from conftest import one_thread, tiny_overrides
from kdbench import plugins
from kdbench.config import build_config
from kdbench.errors import ConfigError, StoreError, UnknownNameError
from kdbench.models import create_model
from kdbench.runner import run
from kdbench.store import Store
from kdbench.teachers import manage
from kdbench.teachers import train as train_module
from kdbench.teachers import trajectory as traj

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A store holding the trained trajectories of seeds 0 and 1 (trained once per module)."""
    root = tmp_path_factory.mktemp("teachers") / "results"
    with pytest.MonkeyPatch.context() as mp, one_thread():
        mp.setenv("KDBENCH_LOAD_PLUGINS", "")
        plugins.reset()
        manage.train(build_config(tiny_overrides(root)), [0, 1], progress=False)
        plugins.reset()
    return root


@pytest.fixture
def store(template, results) -> Path:
    """This test's results dir, holding copies of the template trajectories."""
    shutil.copytree(template / "teachers", results / "teachers")
    return results


def one_epoch(results: Path, **extra):
    return build_config(tiny_overrides(results, **{"recipe.epochs": 1, **extra}))


def key_of(results: Path, seed: int = 0) -> str:
    cfg = kdbench.config.resolve(one_epoch(results, **{"teacher.seed": seed}))
    return traj.trajectory_key(traj.trajectory_spec(cfg))


def count_teacher_trainings(monkeypatch) -> list[str]:
    """Record every engine fit that trains a teacher (:func:`kdbench.teachers.train.train`)."""
    calls: list[str] = []
    real = train_module.fit

    def counting(trainees, data, options):
        if options.desc.startswith("teacher"):
            calls.append(options.desc)
        return real(trainees, data, options)

    monkeypatch.setattr(train_module, "fit", counting)
    return calls


# ---- direct computation of an ensemble's test accuracy -------------------------------------------

def held_out(results: Path):
    """The synthetic test split, normalised by hand (not through the loader)."""
    from kdbench.data import load_dataset

    data = load_dataset("synthetic")
    x = data.test.images.float() / 255.0
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    return (x - mean) / std, data.test.labels.numpy()


def member_logits(results: Path, members: list[tuple[str, int]]) -> np.ndarray:
    x, _ = held_out(results)
    out = []
    for key, epoch in members:
        model = create_model("resnet8", 4, 3)
        path = results / "teachers" / key / f"epoch_{epoch:04d}.pt"
        model.load_state_dict(torch.load(path, weights_only=True))
        model.eval()
        with torch.no_grad():
            out.append(model(x).numpy().astype(np.float64))
    return np.stack(out)


def top1(scores: np.ndarray, labels: np.ndarray) -> float:
    return 100.0 * float((scores.argmax(1) == labels).mean())


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# ---- each source ---------------------------------------------------------------------------------

def test_full_and_intermediate_load_the_checkpoints_they_name(store, monkeypatch):
    trainings = count_teacher_trainings(monkeypatch)
    key = key_of(store)
    full = run(one_epoch(store), progress=False)
    half = run(one_epoch(store, **{"teacher.source": "intermediate"}), progress=False)
    frac = run(one_epoch(store, **{"teacher.source": "intermediate",
                                   "teacher.options.epoch_frac": 1.0}), progress=False)
    manifest = json.loads((store / "teachers" / key / "manifest.json").read_text())
    assert trainings == []  # the stored trajectory is reused, never retrained
    assert (full["teacher"]["source"], full["teacher"]["epochs"]) == ("full", [4])
    assert (half["teacher"]["source"], half["teacher"]["epochs"]) == ("intermediate", [2])
    assert frac["teacher"]["epochs"] == [4]
    for rec, epoch in ((full, 4), (half, 2)):
        assert rec["teacher"]["trajectory"] == key
        assert rec["teacher"]["teacher_top1"] == manifest["curve"][epoch - 1]["top1"]
    assert half["config"]["teacher"]["options"] == {"epoch_frac": None}
    m = full["metrics"]
    assert m["top1_last10_best"] == max(r["top1"] for r in m["curve"][-10:])


@pytest.mark.parametrize("mode", ["logit", "prob"])
def test_snapshot_ensemble_accuracy_matches_a_direct_computation(store, mode):
    key = key_of(store)
    rec = run(one_epoch(store, **{"teacher.source": "snapshot",
                                  "teacher.options.members_count": 2,
                                  "teacher.options.ensemble_mode": mode}), progress=False)
    t = rec["teacher"]
    assert t["epochs"] == [2, 4] and t["ensemble_mode"] == mode
    assert t["trajectories"] == [key] and t["trained_epochs"] == 4
    # prob averaging distils at the loss's temperature (kd: T = 4), logit averaging needs none
    assert t["ensemble_temperature"] == (4.0 if mode == "prob" else 1.0)
    z = member_logits(store, [(key, 2), (key, 4)])
    _, labels = held_out(store)
    direct = z.mean(0) if mode == "logit" else softmax(z).mean(0)
    assert t["teacher_top1"] == pytest.approx(top1(direct, labels))
    assert [m["top1"] for m in t["members"]] == pytest.approx([top1(s, labels) for s in z])
    assert rec["config"]["teacher"]["options"] == {"members": None, "members_count": 2,
                                                   "ensemble_mode": mode}


def test_snapshot_explicit_members_and_independent_seeds(store, monkeypatch):
    trainings = count_teacher_trainings(monkeypatch)
    snap = run(one_epoch(store, **{"teacher.source": "snapshot",
                                   "teacher.options.members": [4, 2]}), progress=False)
    assert snap["teacher"]["epochs"] == [2, 4]
    assert snap["config"]["teacher"]["options"]["members_count"] == 2
    ind = run(one_epoch(store, **{"teacher.source": "independent",
                                  "teacher.options.members_count": 2}), progress=False)
    t = ind["teacher"]
    keys = [key_of(store, 0), key_of(store, 1)]
    assert trainings == []  # both seeds' trajectories exist: trained once, reused
    assert t["trajectories"] == keys and [m["seed"] for m in t["members"]] == [0, 1]
    assert t["epochs"] == [4, 4] and t["trained_epochs"] == 8
    z = member_logits(store, [(keys[0], 4), (keys[1], 4)])
    _, labels = held_out(store)
    assert t["teacher_top1"] == pytest.approx(top1(z.mean(0), labels))


def test_second_run_trains_no_teacher(results, monkeypatch):
    """A 2-epoch trajectory trained by the first run and reused by the second."""
    trainings = count_teacher_trainings(monkeypatch)
    small = {"teacher.recipe.epochs": 2, "teacher.save_every": 1}
    first = run(one_epoch(results, **small), progress=False)
    folder = results / "teachers" / first["teacher"]["trajectory"]
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.glob("[!.]*")}
    second = run(one_epoch(results, seed=1, **small), progress=False)
    assert len(trainings) == 1
    assert second["teacher"]["trajectory"] == first["teacher"]["trajectory"]
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("[!.]*")} == stamps


def test_interrupted_teacher_training_resumes_to_the_same_weights(template, results,
                                                                  monkeypatch):
    """Interrupt after epoch 2 (the moment a logger plugin is told about it), resume, and
    compare the final weights with the uninterrupted template trajectory."""
    from kdbench import plugins as plugin_module

    cfg = kdbench.config.resolve(one_epoch(results))
    spec = traj.trajectory_spec(cfg)
    real_notify = plugin_module.notify

    def interrupt(hook, **kwargs):
        if hook == "kdbench_epoch_end" and kwargs.get("epoch") == 2:
            raise KeyboardInterrupt
        return real_notify(hook, **kwargs)

    from kdbench.data import load_dataset

    data = load_dataset("synthetic")
    store = Store(results)
    monkeypatch.setattr(plugin_module, "notify", interrupt)
    with pytest.raises(KeyboardInterrupt):
        traj.ensure(store, spec, [2, 4], data, torch.device("cpu"), progress=False)
    monkeypatch.setattr(plugin_module, "notify", real_notify)
    folder = results / "teachers" / traj.trajectory_key(spec)
    partial = json.loads((folder / "manifest.json").read_text())
    assert partial["status"] == "training" and list(partial["checkpoints"]) == ["2"]
    assert (folder / "state.pt").exists()

    trainings = count_teacher_trainings(monkeypatch)
    resumed = traj.ensure(store, spec, [2, 4], data, torch.device("cpu"), progress=False)
    assert len(trainings) == 1 and resumed.done and resumed.trained_epochs == 4
    assert not (folder / "state.pt").exists()
    reference = traj.Trajectory(template / "teachers" / resumed.key)
    for epoch in (2, 4):
        a, b = resumed.state_dict(epoch), reference.state_dict(epoch)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), f"epoch {epoch} weights differ"
    assert [r["top1"] for r in resumed.manifest["curve"]] == \
        [r["top1"] for r in reference.manifest["curve"]]


@pytest.mark.parametrize("suffix", ["pt", "safetensors"])
def test_teacher_weights_from_a_local_file(store, tmp_path, suffix):
    key = key_of(store)
    source = store / "teachers" / key / "epoch_0004.pt"
    weights = tmp_path / f"teacher.{suffix}"
    if suffix == "pt":
        shutil.copy(source, weights)
    else:
        from safetensors.torch import save_file

        save_file(torch.load(source, weights_only=True), str(weights))
    rec = run(one_epoch(store, **{"teacher.weights": str(weights)}), progress=False)
    t = rec["teacher"]
    assert t["weights"] == str(weights.resolve()) and t["trajectory"] is None
    assert t["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    z = member_logits(store, [(key, 4)])
    _, labels = held_out(store)
    assert t["teacher_top1"] == pytest.approx(top1(z[0], labels))
    with pytest.raises(ConfigError, match=r"not used by teacher source 'snapshot'.*take it: full"):
        run(one_epoch(store, **{"teacher.source": "snapshot", "teacher.weights": str(weights)}),
            progress=False)


# ---- the checkpoint curve through the CLI -------------------------------------------------------

def test_teacher_epoch_all_runs_one_student_per_checkpoint(store, cli_runner, tmp_path):
    args = ["run", "--dataset", "synthetic", "--student", "resnet8", "--teacher-arch", "resnet8",
            "--teacher", "intermediate", "--teacher-epoch", "all", "--epochs", "1",
            "--batch-size", "64", "--precision", "fp32", "--device", "cpu", "--quiet",
            "--set", "recipe.milestones=[]", "--set", "teacher.recipe.epochs=4",
            "--set", "teacher.recipe.batch_size=64", "--set", "teacher.recipe.milestones=[]",
            "--save-every", "2", "--results-dir", store]
    result = cli_runner(*args)
    assert result.exit_code == 0, result.output
    records = [r for _, r in Store(store).iter_records()]
    assert sorted(r["teacher"]["epochs"][0] for r in records) == [2, 4]
    assert all(r["config"]["teacher"]["epoch"] == r["teacher"]["epochs"][0] for r in records)
    assert len(result.output.strip().splitlines()) == 2

    table = cli_runner("table", "--layout", "checkpoint", "--results-dir", store,
                       "--format", "csv")
    assert table.exit_code == 0, table.output
    rows = table.output.strip().splitlines()
    assert rows[0].startswith("dataset,teacher_arch,student,loss,trajectory,teacher_epochs,"
                              "teacher,epoch")
    assert [r.split(",")[6:8] for r in rows[1:]] == [["full", "4"], ["half", "2"],
                                                    ["best", "2"]]
    for suffix in ("png", "pdf"):
        out = tmp_path / f"curve.{suffix}"
        plot = cli_runner("plot", "checkpoint-curve", "--results-dir", store, "-o", out)
        assert plot.exit_code == 0, plot.output
        assert out.read_bytes()[:4] == (b"\x89PNG" if suffix == "png" else b"%PDF")


# ---- bad input ---------------------------------------------------------------------------------

def nothing_written(results: Path) -> bool:
    return not list((results / "runs").glob("*.json"))


def test_unsaved_epoch_and_missing_members_list_the_saved_ones(store):
    with pytest.raises(ConfigError, match=r"teacher epoch 3 .*saved: 2, 4"):
        run(one_epoch(store, **{"teacher.source": "intermediate", "teacher.epoch": 3}),
            progress=False)
    with pytest.raises(ConfigError, match=r"members 1, 3 are not saved .*saved: 2, 4"):
        run(one_epoch(store, **{"teacher.source": "snapshot",
                                "teacher.options.members": [1, 3, 4]}), progress=False)
    with pytest.raises(ConfigError, match=r"cannot pick 3 ensemble members from 2 saved"):
        run(one_epoch(store, **{"teacher.source": "snapshot"}), progress=False)
    assert nothing_written(store)


def test_unsaved_epoch_is_refused_before_any_teacher_training(results, monkeypatch):
    trainings = count_teacher_trainings(monkeypatch)
    with pytest.raises(ConfigError, match=r"teacher epoch 3 .*saved: 2, 4"):
        run(one_epoch(results, **{"teacher.source": "intermediate", "teacher.epoch": 3}),
            progress=False)
    assert trainings == [] and not list(results.glob("teachers/*/manifest.json"))


@pytest.mark.parametrize("extra, message", [
    ({"teacher.source": "independent", "teacher.options.members_count": 1},
     r"ensemble and needs at least 2 members, got members_count 1"),
    ({"teacher.source": "snapshot", "teacher.options.members_count": 3,
      "teacher.options.members": [2, 4]}, r"2 checkpoints but members_count is 3"),
    ({"teacher.source": "snapshot", "teacher.options.ensemble_mode": "median"},
     r"unknown ensemble mode 'median'.*valid: logit, prob"),
    ({"teacher.source": "independent", "teacher.options.members": [2, 4]},
     r"unknown option of teacher source 'independent' 'members'"),
    ({"teacher.source": "full", "teacher.epoch": 2},
     r"teacher.epoch \(2\) is not used by teacher source 'full'.*take it: intermediate"),
    ({"teacher.source": "intermediate", "teacher.epoch": 2,
      "teacher.options.epoch_frac": 0.5}, r"not both"),
    ({"teacher.source": "intermediate", "teacher.options.epoch_frac": 1.5}, r"in \(0, 1\]"),
])
def test_bad_teacher_settings_fail_before_training(results, extra, message):
    with pytest.raises(ConfigError, match=message):
        run(one_epoch(results, **extra), progress=False)
    assert not (results / "teachers").exists() or not any((results / "teachers").iterdir())


FEATURE_LOSS = '''
import kdbench
from kdbench.losses import Distiller


class Hint(Distiller):
    """toy feature loss for tests"""
    taps = frozenset({"stages"})

    def forward(self, student, teacher, target, index=None, epoch=0):
        return {}


@kdbench.hookimpl
def register_losses(register):
    register("toyhint", Hint, defaults={"w_ce": 1.0}, taps=("stages",))
'''


@pytest.mark.parametrize("source", ["snapshot", "independent"])
def test_feature_loss_with_an_ensemble_teacher_names_the_losses_that_work(
        results, local_plugin, source):
    local_plugin(FEATURE_LOSS, "toyhint.py")
    with pytest.raises(ConfigError, match=rf"source '{source}' gives logits only "
                                          r"\(losses that work: .*\bdkd, dml, kd\b"):
        run(one_epoch(results, **{"loss.name": "toyhint", "teacher.source": source}),
            progress=False)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_checkpoint_is_detected_and_named(store, damage):
    path = store / "teachers" / key_of(store) / "epoch_0002.pt"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate"
                     else data[:-8] + bytes(8))
    cfg = one_epoch(store, **{"teacher.source": "snapshot", "teacher.options.members_count": 2})
    with pytest.raises(StoreError, match=r"is damaged: epoch_0002\.pt does not match its "
                                         r"SHA-256 \(`kdbench teacher train`"):
        run(cfg, progress=False)
    assert nothing_written(store)
    assert manage.get(Store(store), key_of(store)).problems()  # `teacher list` says so
    # the obvious command repairs it: trained again, to the same weights (deterministic)
    with pytest.warns(RuntimeWarning, match="is damaged .* trained again"):
        [repaired] = manage.train(cfg, progress=False)
    assert path.read_bytes() == data and not repaired.problems()
    assert run(cfg, progress=False)["status"] == "done"


def test_cli_bad_input_exits_2_with_one_line(store, cli_runner):
    result = cli_runner("run", "--dataset", "synthetic", "--teacher", "independent",
                        "--members-count", "1", "--results-dir", store)
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "Error: teacher source 'independent' is an ensemble and needs at least 2 members, got "
        "members_count 1"]
    result = cli_runner("run", "--dataset", "synthetic", "--teacher-epoch", "all",
                        "--results-dir", store)
    assert result.exit_code == 2 and "--teacher-epoch all needs --teacher intermediate" in \
        result.output


# ---- trajectory management ---------------------------------------------------------------------

def test_teacher_train_reuses_and_trains_only_what_is_missing(store, cli_runner, monkeypatch):
    trainings = count_teacher_trainings(monkeypatch)
    args = ["teacher", "train", "--dataset", "synthetic", "--teacher-arch", "resnet8",
            "--epochs", "4",
            "--save-every", "2", "--precision", "fp32", "--device", "cpu", "--quiet",
            "--set", "teacher.recipe.batch_size=64", "--set", "teacher.recipe.milestones=[]",
            "--results-dir", store]
    result = cli_runner(*args, "--teacher", "independent", "--members-count", "2")
    assert result.exit_code == 0, result.output
    assert trainings == []
    lines = result.output.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [key_of(store, 0), key_of(store, 1)]
    assert "4/4 epochs, 2 checkpoints" in lines[0]
    # a different save schedule cannot change a trained trajectory: said, not silently ignored
    again = cli_runner(*args[:-2], "--save-every", "1", "--results-dir", store)
    assert again.exit_code == 0 and trainings == []
    assert "keeps its checkpoints at epochs [2, 4]; the requested [1, 2, 3, 4]" in again.output


def test_teacher_list_show_rm(store, cli_runner):
    key = key_of(store)
    broken = store / "teachers" / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{")
    listed = cli_runner("teacher", "list", "--results-dir", store, "--json")
    warning, _, listing = listed.output.partition("\n")
    assert "skipping corrupt manifest" in warning and "broken" in warning
    rows = {r["key"]: r for r in json.loads(listing)}
    assert set(rows) == {key_of(store, 0), key_of(store, 1)}
    assert (rows[key]["epochs"], rows[key]["saved"], rows[key]["runs"]) == ("4/4", 2, 0)
    manifest = json.loads((store / "teachers" / key / "manifest.json").read_text())
    assert rows[key]["last_top1"] == manifest["curve"][-1]["top1"]
    shown = cli_runner("teacher", "show", key, "--results-dir", store)
    assert shown.exit_code == 0 and "epoch_0002.pt" in shown.output and "epoch_0004.pt" in \
        shown.output
    missing = cli_runner("teacher", "show", key[:-1], "--results-dir", store)
    assert missing.exit_code == 2 and f"did you mean {key}" in missing.output

    run(one_epoch(store), progress=False)  # a run now references the seed-0 trajectory
    refused = cli_runner("teacher", "rm", key, "--results-dir", store)
    assert refused.exit_code == 2 and "referenced by 1 run record" in refused.output
    assert (store / "teachers" / key).is_dir()
    free = key_of(store, 1)
    with traj.locked(store / "teachers" / free):  # as while another process trains it
        with pytest.raises(StoreError, match="being trained by another process"):
            manage.remove(Store(store), free)
    assert cli_runner("teacher", "rm", free, "--results-dir", store).exit_code == 0
    assert not (store / "teachers" / free).exists()
    forced = cli_runner("teacher", "rm", key, "--results-dir", store, "--force")
    assert forced.exit_code == 0 and not (store / "teachers" / key).exists()
    with pytest.raises(UnknownNameError):
        manage.get(Store(store), key)


def test_checkpointkd_preset_is_the_papers_protocol():
    from kdbench.stages.optim import make_schedule

    cfg = kdbench.config.resolve(build_config({"preset": "checkpointkd", "loss.name": "kd"}))
    for recipe in (cfg.recipe, cfg.teacher.recipe):
        assert (recipe.epochs, recipe.batch_size, recipe.lr, recipe.momentum, recipe.nesterov,
                recipe.weight_decay) == (200, 128, 0.1, 0.9, True, 5e-4)
        factor = make_schedule(recipe)
        assert [factor(e) for e in (0, 59, 60, 119, 120, 180)] == pytest.approx(
            [1, 1, 0.1, 0.1, 0.01, 0.001])
    assert cfg.teacher.checkpoint_epochs() == list(range(20, 201, 20))
    assert cfg.loss.weights == {"w_ce": 0.5, "w_kd": 0.5} and cfg.loss.options["T"] == 5.0
