"""Online distillation: the ``peers`` teacher source and the engine's cohort step (deep mutual
learning), checked against the DML paper's update order and through ``kdbench run``."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from kdbench import device, engine
from kdbench.config import Recipe
from kdbench.data import BatchLoader, load_dataset
from kdbench.losses import DistillContext, Distiller
from kdbench.losses.dml import dml
from kdbench.models import create_model
from kdbench.store import Store

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("single_thread")


class Spy(Distiller):
    """DML's term, remembering every peer output it was given."""

    def __init__(self, ctx):
        super().__init__(ctx)
        self.seen: list[torch.Tensor] = []

    def forward(self, student, teacher, target, index=None, epoch=0):
        self.seen.append(teacher.logits.detach().clone())
        return {"dml": dml(student.logits, teacher.logits)}


def cohort(data, k):
    out = []
    for i in range(k):
        device.seed_everything(10 + i)
        model = create_model("resnet8", data.num_classes, data.in_chans)
        ctx = DistillContext(model, None, data.num_classes, data.input_shape, len(data.train),
                             {"w_ce": 1.0, "w_dml": 1.0}, {})
        recipe = Recipe(epochs=1, batch_size=32, lr=0.1)
        out.append(engine.Trainee(f"m{i}", model, Spy(ctx), recipe))
    return out


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic", None, train_size=32, test_size=16)


def first_batch(data):
    return next(iter(BatchLoader(data, "train", 32, train=True, augment=False, seed=0)))


def train_mode_logits(model, x):
    with torch.no_grad(), engine.frozen_norm_stats(model):
        model.train()
        return model(x)


def one_step(members, data, update):
    engine.fit(members, data, engine.FitOptions(batch_size=32, seed=0, device=CPU, online=True,
                                                update=update, progress=False, augment=False))


@pytest.mark.parametrize("update", ["alternate", "simultaneous"])
def test_each_member_learns_from_the_others_in_the_papers_order(data, update):
    members = cohort(data, 2)
    x, _, _ = first_batch(data)
    start = [train_mode_logits(copy.deepcopy(m.model), x) for m in members]
    one_step(members, data, update)
    m0, m1 = members
    assert torch.allclose(m0.distiller.seen[0], start[1], atol=1e-5)  # m1 not yet updated
    after0 = train_mode_logits(m0.model, x)
    assert not torch.allclose(after0, start[0], atol=1e-4)  # m0 did move
    # the DML paper's Algorithm 1: m1 is distilled from m0's prediction *after* m0's update
    want = after0 if update == "alternate" else start[0]
    assert torch.allclose(m1.distiller.seen[0], want, atol=1e-5)


def test_recomputing_a_prediction_leaves_running_statistics_alone(data):
    stats = {}
    for update in ("alternate", "simultaneous"):
        members = cohort(data, 2)
        one_step(members, data, update)
        stats[update] = {k: v.clone() for k, v in members[0].model.state_dict().items()
                         if "running" in k or "num_batches" in k}
    assert all(torch.equal(stats["alternate"][k], stats["simultaneous"][k]) for k in stats[
        "alternate"])


def test_three_members_average_the_term_over_their_peers(data):
    members = cohort(data, 3)
    one_step(members, data, "alternate")
    assert [len(m.distiller.seen) for m in members] == [2, 2, 2]  # one call per peer per step
    assert all(len(m.history) == 1 and "train_dml" in m.history[0] for m in members)


# ============================== through kdbench run ============================================


def args(results, *extra):
    return ["run", "--dataset", "synthetic", "--student", "resnet8", "--teacher", "peers",
            "--teacher-arch", "resnet8", "--epochs", "1", "--precision", "fp32", "--device",
            "cpu", "--results-dir", results, "--quiet", "--set", "recipe.milestones=[]", *extra]


def test_dml_run_records_every_peer(cli_runner, results):
    res = cli_runner(*args(results, "--loss", "dml", "--peers", "3"))
    assert res.exit_code == 0, res.output
    assert "← resnet8 (peers, cohort of 3, top-1" in res.output
    (record,) = [json.loads(p.read_text()) for p in Store(results).runs.glob("*.json")]
    assert record["status"] == "done"
    assert record["config"]["teacher"]["options"] == {"peers": 3, "update": "alternate"}
    cohort_ = record["metrics"]["cohort"]
    assert [c["name"] for c in cohort_] == ["student", "peer1", "peer2"]
    assert all(0 <= c["top1_last"] <= 100 and len(c["curve"]) == 1 for c in cohort_)
    assert cohort_[0]["top1_last"] == record["metrics"]["top1_last"]
    t = record["teacher"]
    assert t["source"] == "peers" and t["peers"] == 3
    assert t["peer_top1"] == [c["top1_last"] for c in cohort_[1:]]
    assert not list(Store(results).teachers.glob("*/manifest.json"))  # no teacher was trained


@pytest.mark.parametrize("extra, message", [
    (["--loss", "dml", "--peers", "1"], "--peers must be an integer >= 2"),
    (["--loss", "at", "--peers", "3"], "only logit losses average over the cohort"),
    (["--loss", "fsp"], "needs a fixed teacher"),
    (["--loss", "dml", "--set", "teacher.options.update=sometimes"],
     "unknown cohort update 'sometimes'"),
])
def test_bad_cohorts_fail_before_training(cli_runner, results, extra, message):
    res = cli_runner(*args(results, *extra))
    assert res.exit_code == 2 and message in res.output
    assert not list(Store(results).runs.glob("*.json"))


def test_feature_loss_with_two_peers_runs(cli_runner, results):
    res = cli_runner(*args(results, "--loss", "at+dml"))
    assert res.exit_code == 0, res.output
    (record,) = [json.loads(p.read_text()) for p in Store(results).runs.glob("*.json")]
    assert {"train_at", "train_dml"} <= set(record["metrics"]["curve"][0])
