"""Lockstep runs: one teacher forward and one data pass for several students, each record equal to
the record of the same run made alone."""

from __future__ import annotations

import json
import textwrap

import pytest

from conftest import tiny_overrides
from kdbench.config import build_config
from kdbench.runner import lockstep_groups, run, run_many
from kdbench.store import Store

#: a loss drawing from every global random generator, and one that fails in its second epoch,
#: and a hook that interrupts training after the first epoch when asked to
PLUGIN = textwrap.dedent('''
    import random

    import numpy as np
    import torch

    import kdbench
    from kdbench.losses.kd import kd
    from kdbench.losses.base import Distiller


    class NoisyKD(Distiller):
        """KD on logits jittered with noise from torch, numpy and random."""

        def forward(self, student, teacher, target, index=None, epoch=0):
            scale = self.options["noise"] * (1 + np.random.rand() + random.random())
            noisy = student.logits + scale * torch.randn_like(student.logits)
            return {"kd": kd(noisy, teacher.logits, 4.0)}


    class NaNLater(Distiller):
        needs_teacher = False

        def forward(self, student, teacher, target, index=None, epoch=0):
            bad = float("nan") if epoch >= 1 else 0.0
            return {"bad": student.logits.sum() * 0 + bad}


    @kdbench.hookimpl
    def register_losses(register):
        register("noisykd", NoisyKD, description="test", defaults={"w_ce": 0.5, "w_kd": 0.5,
                                                                    "noise": 0.5})
        register("nanlater", NaNLater, description="test", defaults={"w_ce": 1.0, "w_bad": 1.0})


    STOP = {"after": None, "runs": ()}


    @kdbench.hookimpl
    def kdbench_epoch_end(run_id, epoch, metrics):
        if STOP["after"] == epoch and run_id in STOP["runs"]:
            STOP["after"] = None
            raise KeyboardInterrupt
''')


@pytest.fixture
def toy(local_plugin):
    local_plugin(PLUGIN, "toy_lockstep.py")  # loads as kdbench_local_plugins.toy_lockstep


def configs(results, *variants, **common):
    # one thread: the suite shares two cores with other work, where two spinning threads crawl
    common = {"engine.threads": 1, **common}
    return [build_config(tiny_overrides(results, **{**common, **v})) for v in variants]


VARIANTS = [{"loss.name": "kd"},
            {"loss.name": "noisykd"},
            {"loss.name": "ce"},
            {"loss.name": "noisykd", "student": "resnet20", "loss.options.noise": 1.0},
            # feature losses: their own group (a feature forward of the teacher); CRD draws its
            # negatives from the global generator
            {"loss.name": "crd", "loss.options.nce_k": 64},
            {"loss.name": "at"}]


def test_lockstep_records_equal_solo_records(results, toy):
    cfgs = configs(results, *VARIANTS)
    solo = [run(c, progress=False) for c in cfgs]
    together = run_many(cfgs, force=True, progress=False)
    for alone, joint in zip(solo, together):
        assert joint["status"] == "done"
        assert joint["run_id"] == alone["run_id"]
        assert joint["metrics"] == alone["metrics"]  # every metric of every epoch, exactly
        assert joint["teacher"] == alone["teacher"]
    assert [r["extra"]["lockstep"]["size"] for r in together] == [4, 4, 4, 4, 2, 2]
    # the noise matters: the two noisy runs differ from plain KD (so the test could fail)
    assert together[1]["metrics"]["curve"] != together[0]["metrics"]["curve"]


def test_a_failing_run_does_not_stop_the_others(results, toy):
    cfgs = configs(results, {"loss.name": "kd"}, {"loss.name": "nanlater"},
                   {"loss.name": "noisykd"})
    records = run_many(cfgs, progress=False)
    assert [r["status"] for r in records] == ["done", "failed", "done"]
    assert "non-finite loss: term 'bad'" in records[1]["error"]
    assert "epoch 2, step 1" in records[1]["error"]
    solo = run(cfgs[2], force=True, progress=False)
    assert solo["metrics"] == records[2]["metrics"]


def test_interrupted_lockstep_resumes_to_the_same_records(results, tmp_path, toy):
    import sys

    variants = [{"loss.name": "kd"}, {"loss.name": "noisykd"}]
    reference = [run(c, progress=False) for c in configs(results, *variants,
                                                          **{"recipe.epochs": 3})]
    other = tmp_path / "other"
    cfgs = configs(other, *variants, **{"recipe.epochs": 3})
    sys.modules["kdbench_local_plugins.toy_lockstep"].STOP.update(
        after=1, runs={r["run_id"] for r in reference})  # students only, not the teacher
    with pytest.raises(KeyboardInterrupt):
        run_many(cfgs, progress=False)
    store = Store(other)
    for ref in reference:
        assert store.load_record(ref["run_id"])["status"] == "interrupted"
        assert store.state_path(ref["run_id"]).exists()
    resumed = run_many(cfgs, progress=False)
    for ref, res in zip(reference, resumed):
        assert res["status"] == "done"
        assert res["metrics"] == ref["metrics"]
        assert not store.state_path(ref["run_id"]).exists()


def test_grouping(results):
    cfgs = configs(results, {"loss.name": "kd"}, {"loss.name": "kd", "student": "resnet20"},
                   {"loss.name": "ce"}, {"loss.name": "kd", "seed": 1},
                   {"loss.name": "kd", "recipe.lr": 0.1}, {"loss.name": "ce", "seed": 2},
                   {"loss.name": "kd", "teacher.arch": "resnet20"})
    from kdbench.config import resolve

    groups = lockstep_groups([resolve(c) for c in cfgs])
    # same teacher/data/seed/recipe together; a teacher-less CE run rides along; a CE run alone
    # in its seed makes its own group
    assert groups == [[0, 1, 2], [3], [4], [5], [6]]


def test_cli_several_losses_and_students_make_one_run_each(results, cli_runner):
    args = ["run", "--dataset", "synthetic", "--student", "resnet8", "--teacher-arch", "resnet8",
            "--loss", "kd,ce", "--student", "resnet20", "--epochs", "1", "--batch-size", "64",
            "--precision", "fp32", "--device", "cpu", "--quiet", "--threads", "1",
            "--set", "recipe.milestones=[]", "--set", "teacher.recipe.epochs=2",
            "--set", "teacher.recipe.batch_size=64", "--set", "teacher.recipe.milestones=[]",
            "--results-dir", results, "--json"]
    result = cli_runner(*args)
    assert result.exit_code == 0, result.output
    records = json.loads(result.output)
    assert [(r["config"]["student"], r["config"]["loss"]["name"]) for r in records] == [
        ("resnet8", "kd"), ("resnet8", "ce"), ("resnet20", "kd"), ("resnet20", "ce")]
    assert all(r["status"] == "done" and r["extra"]["lockstep"]["size"] == 4 for r in records)
    assert all(r["config"]["engine"]["threads"] == 1 and r["env"]["threads"] == 1
               for r in records)
    # the engine settings are not part of a run's identity
    again = cli_runner(*args[:-1], "--no-lockstep", "--threads", "2")
    assert again.exit_code == 0 and again.output.count(" done: ") == 4


def test_several_specs_in_one_run_command_train_in_lockstep(results, tmp_path, cli_runner):
    """What an executor sends for a lockstep group: one spec file per run."""
    import yaml

    files = []
    for k, loss in enumerate(["kd", "ce"]):
        cfg = build_config(tiny_overrides(results, **{"loss.name": loss, "recipe.epochs": 1,
                                                      "engine.threads": 1}))
        files += ["--spec", tmp_path / f"spec{k}.yaml"]
        files[-1].write_text(yaml.safe_dump(cfg.to_dict()))
    result = cli_runner("run", *files, "--quiet", "--json")
    assert result.exit_code == 0, result.output
    records = json.loads(result.output)
    assert [r["config"]["loss"]["name"] for r in records] == ["kd", "ce"]
    assert all(r["extra"]["lockstep"]["size"] == 2 for r in records)
