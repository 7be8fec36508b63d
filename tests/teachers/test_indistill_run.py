"""InDistill on the seams, through the real runner and CLI: the ``indistill`` warm-up (its
epoch -> layer schedule in the record, chaining, a kill inside it and the resume), the
re-created optimiser, ``pkt_indistill``, the ``retrieval`` evaluator, the ``auxiliary`` teacher
(trained once, reused, from its baseline or from scratch), Fashion-MNIST at 32x32, and the bad
input of each (one line, exit 2, nothing written)."""

from __future__ import annotations

import json
import math
import textwrap

import numpy as np
import pytest
import torch

from conftest import tiny_overrides
from kdbench import engine
from kdbench.config import DataConfig, Recipe, build_config
from kdbench.data import load_data
from kdbench.errors import ConfigError
from kdbench.losses import DistillContext, build
from kdbench.losses.ce import CE
from kdbench.models import create_model
from kdbench.runner import run
from kdbench.stages import Batch, StageContext
from kdbench.store import Store

pytestmark = pytest.mark.usefixtures("single_thread")

#: synthetic 32×32 images: 256 train (4 batches of 64), 128 test
DATA = {"data.name": "synthetic", "data.options": {"size": 32, "train_size": 256,
                                                   "test_size": 128}}


def cnn(results, **extra):
    """cnn32 -> cnn32_small on synthetic 32×32 data, the teacher trained one epoch."""
    return build_config(tiny_overrides(results, **{
        **DATA, "student": "cnn32_small", "teacher.arch": "cnn32", "teacher.recipe.epochs": 1,
        "teacher.save_every": 1, "loss.name": "pkt_indistill", **extra}))


def layers_of(curve):
    """(stage, the layer its MSE term names) of each record row."""
    out = []
    for row in curve:
        mse = [k for k in row if k.startswith("train_mse_layer")]
        out.append((row.get("stage"), int(mse[0][len("train_mse_layer"):]) if mse else None))
    return out


# ============================== the warm-up stage ==============================================


def test_curriculum_schedule_through_a_run_and_a_chained_warmup(results):
    record = run(cnn(results, **{
        "recipe.epochs": 12, "loss.name": "pkt",
        "warmup": [{"name": "indistill", "a": 1},
                   {"name": "indistill", "a": 0, "layers": [2], "within_budget": False}]}),
        progress=False)
    # a = 1, three layers: 2, 3, 4 epochs on layers 0, 1, 2, then pkt for 12 - 9 = 3 epochs
    assert layers_of(record["metrics"]["curve"]) == (
        [("indistill", 0)] * 2 + [("indistill", 1)] * 3 + [("indistill", 2)] * 4
        + [("main", None)] * 3)
    assert [(s["name"], s["epochs"], s["timeline"]) for s in record["stages"]] == [
        ("indistill#2", 1, False), ("indistill", 9, True), ("main", 3, True)]
    [extra] = record["metrics"]["stages"]  # a = 0, one layer: one epoch, outside the budget
    assert extra["name"] == "indistill#2" and list(extra["curve"][0]).count("train_mse_layer2")
    curve = record["metrics"]["curve"]
    assert "train_ce" not in curve[0] and "train_pkt" in curve[-1]  # no label loss in the warm-up
    assert record["config"]["warmup"][0]["a"] == 1


def test_the_stage_loss_is_the_mse_of_the_pruned_map_of_the_epoch_s_layer():
    from kdbench.plugins import get
    from kdbench.teachers.prune import PrunedTeacherView

    torch.manual_seed(0)
    student, teacher = create_model("resnet8", 10, 3), create_model("resnet8x4", 10, 3).eval()
    distiller = build("kd", DistillContext(student, teacher, 10, (3, 32, 32), 8, {}, {"T": 4.0}))
    stage = get("stage", "indistill").create(
        StageContext(student, teacher, distiller, Recipe(), 10, (3, 32, 32)), a=0)
    assert stage.epochs == 1 + 2 + 3 and stage.label_weight is None
    x = torch.randn(4, 3, 32, 32)
    batch = Batch(x, torch.zeros(4, dtype=torch.long), torch.arange(4))
    with torch.no_grad():
        t, s = teacher.features(x), student.features(x)
    pruned = PrunedTeacherView(teacher, [16, 32, 64]).from_features(x, t)
    view = stage.teacher_view(t, batch)
    for epoch, layer in [(0, 0), (1, 1), (2, 1), (3, 2), (5, 2), (9, 2)]:
        [(name, value)] = stage.loss(s, view, batch, epoch, "indistill").items()
        expected = np.mean((pruned[layer].numpy() - s.stages[layer].numpy()) ** 2)
        assert name == f"mse_layer{layer}"
        assert float(value) == pytest.approx(float(expected), rel=1e-5)


def test_a_kill_inside_the_warmup_resumes_inside_it(results, tmp_path, monkeypatch):
    from kdbench.teachers import indistill

    over = {"recipe.epochs": 14, "recipe.optimizer": "adam", "recipe.lr": 1e-3,
            "recipe.reset_optimizer": "epoch", "recipe.milestones": [13],
            "warmup": ["indistill"], "eval.evaluators": ["accuracy", "retrieval"]}
    reference = run(cnn(tmp_path / "ref", **over), progress=False)
    calls = {"n": 0}
    real = indistill.layer_mse

    def killed(*args):
        calls["n"] += 1
        if calls["n"] == 4 * 4 + 2:  # epoch 5 (layer 1), second batch
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(indistill, "layer_mse", killed)
    cfg = cnn(results, **over)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, progress=False)
    store = Store(results)
    assert store.load_record(reference["run_id"])["status"] == "interrupted"
    state = torch.load(store.state_path(reference["run_id"]), weights_only=True)
    assert [r["stage"] for r in state["trainees"][0]["history"]] == ["indistill"] * 4
    resumed = run(cfg, progress=False)
    assert resumed["metrics"] == reference["metrics"]
    # 4 epochs and 2 batches before the kill, then the resumed run's epochs 5..12
    assert calls["n"] == 4 * 4 + 2 + 4 * 8


@pytest.mark.parametrize(("mode", "steps"), [("never", 16), ("lr_change", 8), ("epoch", 4)])
def test_reset_optimizer_recreates_adam_each_epoch_or_lr_change(mode, steps):
    """4 epochs of 4 batches, lr ×0.1 from epoch 3: Adam's step count at the end is the steps
    since it was last created (16 kept; 8 since the lr change; 4 since the last epoch)."""
    data = load_data(DataConfig(name="synthetic"), torch.device("cpu"))
    recipe = Recipe(epochs=4, batch_size=64, lr=1e-3, optimizer="adam", milestones=[2],
                    weight_decay=0.0, reset_optimizer=mode)
    model = create_model("resnet8", 4, 3)
    trainee = engine.Trainee("s", model, CE(DistillContext(model, None, 4, (3, 8, 8), 256,
                                                           {"w_ce": 1.0}, {})), recipe)
    engine.fit([trainee], data, engine.FitOptions(batch_size=64, seed=0,
                                                  device=torch.device("cpu"), progress=False))
    state = trainee.optimizers["main"].state_dict()
    assert {int(s["step"]) for s in state["state"].values()} == {steps}
    assert [r["lr"] for r in trainee.history] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4])


# ============================== pkt_indistill and retrieval ====================================


def test_pkt_indistill_term_equals_numpy_and_has_no_label_loss_by_default(results):
    from kdbench.losses import resolve

    weights, options = resolve("pkt_indistill")
    assert weights == {"w_ce": 0.0, "w_pkt_indistill": 1.0} and options == {"eps": 1e-6}
    torch.manual_seed(1)
    s, t = torch.randn(6, 4), torch.randn(6, 5).abs()

    def probs(e):
        e = e.numpy().astype(np.float64)
        n = e / (np.linalg.norm(e, axis=1, keepdims=True) + 1e-6)
        cos = (n @ n.T + 1) / 2
        d = np.sqrt(np.maximum(((e[:, None, :] - e[None, :, :]) ** 2).sum(-1), 0) + 1e-6)
        return [k / k.sum(1, keepdims=True) for k in (cos, 1 / (1 + d))]

    expected = sum(np.mean((pt - ps) * (np.log(pt) - np.log(ps)))
                   for pt, ps in zip(probs(t), probs(s)))
    from kdbench.models import Features

    d = build("pkt_indistill", DistillContext(None, None, 10, (3, 8, 8), 6, weights, options))
    out = d(Features(torch.zeros(6, 10), s), Features(torch.zeros(6, 10), t), None)
    assert float(out["pkt_indistill"]) == pytest.approx(expected, rel=1e-4)
    record = run(cnn(results, **{"recipe.epochs": 1}), progress=False)
    row = record["metrics"]["curve"][0]
    assert row["train_loss"] == pytest.approx(row["train_pkt_indistill"])  # 0·CE + PKT


def test_retrieval_evaluator_on_known_embeddings():
    from types import SimpleNamespace

    from kdbench.evaluators import Outputs
    from kdbench.evaluators.retrieval import Retrieval

    ctx = SimpleNamespace(dataset=SimpleNamespace(train=range(120)))
    db_y = torch.arange(120) % 3
    centres = torch.eye(3) * 10
    q_y = torch.tensor([0, 1, 2, 2])
    out = Outputs(epoch=1, last=True, batch_size=64, test_labels=q_y,
                  test_embedding=centres[q_y] + 0.1, train_labels=db_y,
                  train_embedding=centres[db_y] + 0.01 * torch.arange(120.)[:, None])
    m = Retrieval(ctx)(out)
    # separated clusters: every query ranks its 40 class-mates first
    assert m == {"map_cosine": 1.0, "map_euclidean": 1.0, "p100_cosine": 0.4,
                 "p100_euclidean": 0.4}
    only = Retrieval(ctx, distances=["euclidean"])(out)
    assert math.isnan(only["map_cosine"]) and only["map_euclidean"] == 1.0
    for kwargs, message in [({"distances": ["manhattan"]}, "distances ['manhattan']"),
                            ({"interpolation": "some"}, "interpolation 'some'"),
                            ({"chunk_size": 0}, "chunk_size 0")]:
        with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
            Retrieval(ctx, **kwargs)
    with pytest.raises(ConfigError, match="at least 100 images"):
        Retrieval(SimpleNamespace(dataset=SimpleNamespace(train=range(99))))


def test_retrieval_through_a_run_after_the_last_epoch_only(results):
    record = run(cnn(results, **{"recipe.epochs": 2, "loss.name": "ce",
                                 "eval.evaluators": ["accuracy",
                                                     {"name": "retrieval",
                                                      "interpolation": "first_batch_ranks"}]}),
                 progress=False)
    m = record["metrics"]
    assert ["map_cosine" in r for r in m["curve"]] == [False, True]
    for key in ("map_cosine", "map_euclidean", "p100_cosine", "p100_euclidean"):
        assert 0 < m[f"{key}_last"] <= 1 and m[f"{key}_best"] == m[f"{key}_last"]


# ============================== the auxiliary teacher ==========================================


def aux(results, **extra):
    return cnn(results, **{"teacher.source": "auxiliary", "teacher.options.large_arch": "resnet8",
                           "teacher.options.distill_recipe": {"epochs": 1},
                           "recipe.epochs": 2, **extra})


def folders(results):
    return sorted(p.name for p in (results / "teachers").iterdir())


def test_auxiliary_teacher_is_trained_once_and_reused(results):
    first = run(aux(results, **{"warmup": [{"name": "indistill", "epochs": 1}]}), progress=False)
    keys = folders(results)
    prov = first["teacher"]
    assert prov["source"] == "auxiliary" and prov["arch"] == "cnn32"
    assert set(keys) == set(prov["trajectories"]) and len(keys) == 3
    manifest = json.loads((results / "teachers" / prov["trajectory"] / "manifest.json")
                          .read_text())
    d = manifest["spec"]["distill"]
    assert d["loss"] == "pkt_indistill" and d["teacher"] == prov["large"]["trajectory"]
    assert d["init"] == prov["baseline"]["trajectory"] and manifest["status"] == "done"
    assert manifest["spec"]["recipe"]["optimizer"] == "adam"
    assert prov["large"]["trajectory"].startswith("resnet8-")
    before = {k: (results / "teachers" / k / "manifest.json").read_text() for k in keys}
    second = run(aux(results, **{"loss.name": "kd", "seed": 1}), progress=False)
    assert folders(results) == keys and second["teacher"]["trajectory"] == prov["trajectory"]
    assert {k: (results / "teachers" / k / "manifest.json").read_text() for k in keys} == before


def test_auxiliary_starts_from_its_baseline_or_from_scratch(results):
    from kdbench.teachers.trajectory import Trajectory

    tiny_lr = {"epochs": 1, "lr": 1e-12}
    a = run(aux(results, **{"teacher.options.distill_recipe": tiny_lr}), progress=False)
    b = run(aux(results, **{"teacher.options.distill_recipe": tiny_lr,
                            "teacher.options.init": "scratch"}), progress=False)
    assert b["teacher"]["baseline"] is None and b["teacher"]["trajectory"] != \
        a["teacher"]["trajectory"]

    def conv1(key):
        t = Trajectory(results / "teachers" / key)
        return t.state_dict(t.epochs[-1])["conv1.weight"]

    base = conv1(a["teacher"]["baseline"]["trajectory"])
    # an lr of 1e-12 leaves the weights where they started: the baseline's, or a fresh init
    assert torch.allclose(conv1(a["teacher"]["trajectory"]), base, atol=1e-8)
    assert not torch.allclose(conv1(b["teacher"]["trajectory"]), base, atol=1e-3)


# ============================== data ===========================================================


def test_fashion_mnist_padded_or_resized_to_32(tmp_path):
    import gzip

    from kdbench.data.datasets import fashion_mnist, fit_size

    img = torch.arange(28 * 28, dtype=torch.int64).remainder(251).to(torch.uint8).view(1, 1, 28,
                                                                                         28)
    padded = fit_size(img, 32, "pad")
    assert padded.shape[-2:] == (32, 32) and torch.equal(padded[..., 2:30, 2:30], img)
    assert int(padded[..., :2, :].sum()) == 0 and int(padded[..., :, 30:].sum()) == 0
    flat = torch.full((1, 1, 28, 28), 77, dtype=torch.uint8)
    assert torch.equal(fit_size(flat, 32, "resize"), torch.full((1, 1, 32, 32), 77,
                                                                dtype=torch.uint8))
    for name, (n, shape) in {"train": (3, (28, 28)), "t10k": (2, (28, 28))}.items():
        images = np.full((n, *shape), 9, np.uint8)
        header = bytes([0, 0, 8, 3]) + b"".join(v.to_bytes(4, "big") for v in (n, *shape))
        (tmp_path / f"{name}-images-idx3-ubyte.gz").write_bytes(gzip.compress(header
                                                                              + images.tobytes()))
        labels = np.arange(n, dtype=np.uint8)
        (tmp_path / f"{name}-labels-idx1-ubyte").write_bytes(
            bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + labels.tobytes())
    ds = fashion_mnist(str(tmp_path), size=32)
    assert ds.image_size == (32, 32) and ds.info == {"size": {"from": 28, "to": 32,
                                                              "fit": "pad"}}
    assert fashion_mnist(str(tmp_path)).image_size == (28, 28)
    from kdbench.errors import DataError

    with pytest.raises(DataError, match="cannot pad 28×28 images to 20×20"):
        fashion_mnist(str(tmp_path), size=20)


# ============================== bad input ======================================================

NO_EMBEDDING = textwrap.dedent('''
    import kdbench
    from kdbench.models.resnet import CifarResNet


    def logitnet(num_classes, in_chans=3):
        model = CifarResNet(8, (16, 16, 32, 64), num_classes, in_chans)
        model.has_features = False
        return model


    @kdbench.hookimpl
    def register_models(register):
        register("logitnet", logitnet)
''')


def test_bad_input_is_one_line_exit_2_nothing_written(results, cli_runner, local_plugin):
    local_plugin(NO_EMBEDDING, "no_embedding.py")
    base = ["run", "--dataset", "synthetic", "--set", "data.options.size=32", "--epochs", "20",
            "--results-dir", results, "--quiet"]
    cnn_pair = ["--student", "cnn32_small", "--teacher-arch", "cnn32", "--loss", "kd"]
    cases = [
        (["--student", "mobilenetv2", "--teacher-arch", "resnet8", "--loss", "kd",
          "--warmup", "indistill"],
         "distils student stage 3 but the teacher (CifarResNet) has only 3 stages (valid: "
         "layers in 0 to 2)"),
        (["--student", "cnn32", "--teacher-arch", "cnn32_small", "--loss", "kd",
          "--warmup", "indistill"],
         "student width 16 at teacher layer 0 is not prunable from the teacher's 8 (valid: 1 "
         "to 8)"),
        ([*cnn_pair, "--warmup", "indistill:a=-1"],
         "stage 'indistill' a must be an integer >= 0 (the paper uses 2), got -1"),
        ([*cnn_pair, "--warmup", "indistill:layers=0 3"],
         "stage 'indistill' layers [0, 3] are invalid (valid: increasing student stage "
         "indices in 0 to 2)"),
        ([*cnn_pair, "--warmup", "indistill:batchnorm=frozen"],
         "unknown stage 'indistill' batchnorm 'frozen'"),
        (["--student", "resnet8", "--teacher-arch", "cnn32", "--loss", "kd",
          "--warmup", "indistill"], "stage 'indistill' layer 0: the student's map is 16×32×32 "
                                    "but the teacher's is 16×15×15"),
        ([*cnn_pair, "--warmup", "indistill:a=10"], "the warm-up stages take 36 of the run's "
                                                    "20 epochs"),
        (["--student", "logitnet", "--loss", "ce", "--eval", "retrieval"],
         "evaluator 'retrieval' needs the penultimate embedding, but the student 'logitnet' "
         "gives none"),
        ([*cnn_pair, "--teacher", "auxiliary"],
         "teacher source 'auxiliary' needs teacher.options.large_arch"),
        ([*cnn_pair, "--teacher", "auxiliary", "--set", "teacher.options.large_arch=resnet8",
          "--set", "teacher.options.init=warm"], "unknown teacher source 'auxiliary' init "
                                                 "'warm'"),
        ([*cnn_pair, "--set", "recipe.reset_optimizer=sometimes"],
         "unknown recipe.reset_optimizer 'sometimes'"),
        (["--student", "cnn32_small", "--teacher-arch", "cnn32", "--loss", "pkt_indistill",
          "--opt", "eps=0"],
         "loss 'pkt_indistill' option eps must be > 0, got 0"),
    ]
    for args, message in cases:
        result = cli_runner(*base, *args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert not results.exists() or not any(results.rglob("*.json"))


def test_indistill_table_layout_puts_each_loss_alone_next_to_its_warmup_run():
    import pandas as pd

    from kdbench.report.indistill import indistill_table

    warm = json.dumps([{"name": "indistill", "a": 2}])
    rows = []
    for seed, (alone, warmed) in enumerate([(50.0, 54.0), (52.0, 58.0)]):
        for value, warmup in ((alone, "[]"), (warmed, warm)):
            rows.append({"status": "done", "dataset": "cifar10", "student": "cnn32_small",
                         "teacher_arch": "cnn32", "loss": "kd", "config.loss.weights.w_ce": 0.1,
                         "config.warmup": warmup, "top1_last": value,
                         "map_cosine_last": value / 200, "map_euclidean_last": value / 400,
                         "seed": seed})
    import io
    import math

    out = indistill_table(pd.DataFrame(rows), fmt="csv")
    cells = pd.read_csv(io.StringIO(out), dtype=str).iloc[0].to_dict()
    # alone: 50, 52 -> 51 ± 1.41; warmed: 54, 58 -> 56 ± 2.83; Δ by seed 4, 6: +5, SE 1, df 1,
    # so 5 ± t(0.975, 1) = 5 ± 12.706 and p = 1 − (2/π)·atan(5) = 0.126; mAP cos = top-1 / 2
    # (%) and mAP euc = top-1 / 4: the same t, the same p — Holm over the three gives 3p = 0.38
    assert 1 - 2 / math.pi * math.atan(5.0) == pytest.approx(0.1257, abs=1e-4)
    assert cells["top-1 (%) alone"] == "51.00 ± 1.41"
    assert cells["top-1 (%) Δ"].startswith("+5.00 (−7.71 to +17.71) p=0.38, MDE ")
    assert cells["top-1 (%) +InDistill"] == "56.00 ± 2.83"
    assert cells["mAP cos (%) Δ"].startswith("+2.50 (−3.85 to +8.85) p=0.38")
    assert cells["mAP euc (%) alone"] == "12.75 ± 0.35"
    assert cells["seeds"] == "2/2"
