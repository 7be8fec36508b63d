"""End to end: `kdbench run` then `kdbench table` on real digits data, reuse, resume, bad input."""

from __future__ import annotations

import json
import textwrap

import pytest

import kdbench
from kdbench import plugins
from kdbench.errors import TrainingError
from kdbench.store import Store

FAST = ["--dataset", "digits", "--student", "resnet8", "--teacher-arch", "resnet8",
        "--epochs", "2", "--set", "teacher.recipe.epochs=4", "--set", "teacher.save_every=2",
        "--set", "recipe.milestones=[]", "--device", "cpu", "--precision", "fp32", "--quiet"]


def records(results):
    return {p.stem: json.loads(p.read_text()) for p in (results / "runs").glob("*.json")}


def test_run_then_table_on_digits(cli_runner, results):
    for args in (["--loss", "ce"], ["--teacher", "full"], ["--teacher", "intermediate"]):
        out = cli_runner("run", *FAST, *args, "--results-dir", results)
        assert out.exit_code == 0, out.output
        assert " done: resnet8" in out.stdout
    recs = list(records(results).values())
    assert len(recs) == 3 and {r["status"] for r in recs} == {"done"}
    by_source = {(r["config"]["teacher"] or {}).get("source", "none"): r for r in recs}
    full, inter, ce = by_source["full"], by_source["intermediate"], by_source["none"]
    # one teacher trajectory, trained once, checkpoints at 2 and 4
    trajectories = list((results / "teachers").iterdir())
    assert len(trajectories) == 1
    assert full["teacher"]["trajectory"] == inter["teacher"]["trajectory"] == trajectories[0].name
    assert full["teacher"]["epochs"] == [4] and inter["teacher"]["epochs"] == [2]
    manifest = json.loads((trajectories[0] / "manifest.json").read_text())
    assert sorted(manifest["checkpoints"]) == ["2", "4"] and len(manifest["curve"]) == 4
    assert full["teacher"]["teacher_top1"] == manifest["curve"][3]["top1"]
    # the record carries everything the issue lists
    m = full["metrics"]
    assert len(m["curve"]) == 2 and m["top1_last"] == m["curve"][-1]["top1"]
    assert m["top1_best"] == max(r["top1"] for r in m["curve"]) and 0 <= m["top1_last"] <= 100
    loss = full["config"]["loss"]
    assert loss["name"] == "kd" and loss["weights"] == {"w_ce": 0.1, "w_kd": 0.9}
    assert loss["options"]["T"] == 4.0 and loss["options"]["standardize"] is False
    assert full["cost"]["wall_seconds"] > 0 and full["cost"]["images_per_s"] > 0
    assert full["env"]["torch"] and full["env"]["kdbench"] == kdbench.__version__
    assert full["env"]["device"] == "cpu" and "git" in full["env"]
    assert "train_kd" in m["curve"][0] and "train_kd" not in ce["metrics"]["curve"][0]
    assert ce["teacher"] is None and ce["config"]["teacher"] is None

    table = cli_runner("table", "--results-dir", results)
    assert table.exit_code == 0, table.output
    header = next(l for l in table.stdout.splitlines() if l.startswith("| dataset"))
    assert [c.strip() for c in header.strip("|").split("|")] == \
        ["dataset", "student", "ce/-", "kd/full", "kd/intermediate"]
    row = next(l for l in table.stdout.splitlines() if "resnet8" in l)
    assert f"{full['metrics']['top1_last']:.2f} (1)" in row


def test_finished_runs_and_teachers_are_reused(tiny, results):
    cfg = tiny(**{"loss.name": "kd"})
    first = kdbench.run(cfg, progress=False)
    manifest = next((results / "teachers").iterdir()) / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    again = kdbench.run(cfg, progress=False)
    assert again == first  # the stored record, not a rerun
    other_seed = kdbench.run(tiny(**{"loss.name": "kd", "seed": 1}), progress=False)
    assert manifest.stat().st_mtime_ns == stamp  # the teacher was not trained again
    assert other_seed["teacher"]["trajectory"] == first["teacher"]["trajectory"]
    forced = kdbench.run(cfg, force=True, progress=False)
    assert forced["created"] >= first["created"] and forced["status"] == "done"


def test_same_seed_same_result_other_seed_differs(tiny, tmp_path):
    a = kdbench.run(tiny(**{"loss.name": "ce", "results_dir": str(tmp_path / "a")}),
                    progress=False)
    b = kdbench.run(tiny(**{"loss.name": "ce", "results_dir": str(tmp_path / "b")}),
                    progress=False)
    c = kdbench.run(tiny(**{"loss.name": "ce", "seed": 1, "results_dir": str(tmp_path / "c")}),
                    progress=False)
    curve = lambda r: [(h["train_loss"], h["top1"]) for h in r["metrics"]["curve"]]  # noqa: E731
    assert curve(a) == curve(b)
    assert curve(a) != curve(c)


def hook_plugin(local_plugin, body):
    """A local plugin module ``p.py`` of ``body`` (indented source), loaded."""
    return local_plugin("import kdbench\n" + textwrap.dedent(body), "p.py")


def test_interrupted_run_resumes_to_the_uninterrupted_result(tiny, tmp_path, monkeypatch,
                                                             local_plugin):
    straight = kdbench.run(tiny(**{"loss.name": "kd", "recipe.epochs": 3,
                                   "results_dir": str(tmp_path / "a")}), progress=False)
    hook_plugin(local_plugin, """
        @kdbench.hookimpl
        def kdbench_epoch_end(run_id, epoch):
            if epoch == 2 and not run_id.startswith("resnet8"):   # the student, not the teacher
                raise KeyboardInterrupt
    """)
    cfg = tiny(**{"loss.name": "kd", "recipe.epochs": 3, "results_dir": str(tmp_path / "b")})
    with pytest.raises(KeyboardInterrupt):
        kdbench.run(cfg, progress=False)
    store = Store(tmp_path / "b")
    assert store.load_record(cfg.run_id)["status"] == "interrupted"
    assert store.state_path(cfg.run_id).exists()
    monkeypatch.delenv("KDBENCH_PLUGINS_DIR")
    plugins.reset()
    resumed = kdbench.run(cfg, progress=False)
    assert resumed["status"] == "done" and not store.state_path(cfg.run_id).exists()
    strip = lambda r: [{k: v for k, v in h.items()} for h in r["metrics"]["curve"]]  # noqa: E731
    assert strip(resumed) == strip(straight)


def test_nan_loss_fails_the_run_with_term_epoch_and_step(tiny, local_plugin, results):
    hook_plugin(local_plugin, """
        import torch
        from kdbench.losses import Distiller
        class Bad(Distiller):
            def forward(self, student, teacher, target, index=None, epoch=0):
                return {"boom": student.logits.sum() * float("nan")}
        @kdbench.hookimpl
        def register_losses(register):
            register("nanloss", Bad, defaults={"w_ce": 1.0, "w_boom": 1.0}, taps=("logits",))
    """)
    cfg = tiny(**{"loss.name": "nanloss"})
    with pytest.raises(TrainingError, match=r"term 'boom' = nan in student at epoch 1, step 1"):
        kdbench.run(cfg, progress=False)
    rec = Store(results).load_record(cfg.run_id)
    assert rec["status"] == "failed" and "'boom'" in rec["error"]


def test_failed_force_rerun_keeps_the_done_record(tiny, local_plugin, results):
    cfg = tiny(**{"loss.name": "ce"})
    done = kdbench.run(cfg, progress=False)
    hook_plugin(local_plugin, """
        @kdbench.hookimpl
        def kdbench_epoch_end(run_id, epoch):
            raise KeyboardInterrupt
    """)
    with pytest.raises(KeyboardInterrupt):
        kdbench.run(cfg, force=True, progress=False)
    assert Store(results).load_record(cfg.run_id) == done


@pytest.mark.parametrize("args, message", [
    (["--student", "resnet21"], "unknown model 'resnet21'; did you mean resnet20"),
    (["--loss", "kdd"], "unknown loss 'kdd'; did you mean kd"),
    (["--dataset", "cifar10"], "dataset 'cifar10' needs --data-dir"),
    (["--dataset", "cifar10", "--data-dir", "/no/such/dir"], "data dir '/no/such/dir'"),
    (["--teacher", "intermediate", "--teacher-epoch", "3"],
     "teacher epoch 3 is not in the trajectory (saved: 2, 4)"),
    (["--teacher", "sideways"], "unknown teacher source 'sideways'"),
    (["--w", "w_kd"], "malformed --w 'w_kd': expected KEY=VALUE"),
    (["--set", "recipe.epochs=x"], "recipe.epochs must be an integer, got 'x'"),
])
def test_bad_input_one_line_exit_2_nothing_written(cli_runner, results, args, message):
    out = cli_runner("run", *FAST, *args, "--results-dir", results)
    assert out.exit_code == 2, out.output
    assert out.stderr.strip() == f"Error: {out.stderr.strip()[7:]}" and message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not (results / "runs").exists() or not list((results / "runs").iterdir())
    assert not (results / "teachers").exists() or not list((results / "teachers").iterdir())


def test_unwritable_results_dir(cli_runner, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = cli_runner("run", *FAST, "--results-dir", blocker / "r")
    assert out.exit_code == 2 and "is not writable" in out.stderr
    assert blocker.read_text() == "x"


def test_bad_table_requests_exit_2(cli_runner, results, tiny):
    out = cli_runner("table", "--results-dir", results)
    assert out.exit_code == 2 and "no run records in" in out.stderr
    kdbench.run(tiny(**{"loss.name": "ce"}), progress=False)
    out = cli_runner("table", "--results-dir", results, "--where", "loss")
    assert out.exit_code == 2 and "malformed --where 'loss'" in out.stderr
    out = cli_runner("table", "--results-dir", results, "--where", "lost=ce")
    assert out.exit_code == 2 and "did you mean loss" in out.stderr


def test_spec_file_runs_and_reproduces_the_id(cli_runner, tiny, tmp_path, results):
    import yaml
    cfg = tiny(**{"loss.name": "ce"})
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(cfg.to_dict()))
    out = cli_runner("run", "--spec", spec, "--quiet", "--json")
    assert out.exit_code == 0, out.output
    rec = json.loads(out.stdout)
    assert rec["run_id"] == kdbench.config.resolve(cfg).run_id
    # a record is a valid spec too
    again = cli_runner("run", "--spec", results / "runs" / f"{rec['run_id']}.json", "--json")
    assert json.loads(again.stdout)["created"] == rec["created"]
