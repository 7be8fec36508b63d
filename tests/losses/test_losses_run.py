"""Losses through ``kdbench run`` and ``kdbench losses``: records (init stages, composite weights,
connector counts), bad input refused before any training, a NaN loss failing the run."""

from __future__ import annotations

import json
import textwrap

import pytest

from conftest import tiny_overrides
from kdbench.config import build_config
from kdbench.runner import run
from kdbench.store import Store

pytestmark = pytest.mark.usefixtures("single_thread")

PLUGIN = textwrap.dedent('''
    """Test-only plugins: a wider resnet8, a logits-only model, a dataset without sample
    indices and a loss that turns NaN at its second call."""
    import torch
    import kdbench
    from kdbench.data.builtin import synthetic
    from kdbench.losses import Distiller
    from kdbench.models.resnet import CifarResNet


    def wide8(num_classes, in_chans=3):
        return CifarResNet(8, (16, 32, 64, 128), num_classes, in_chans)


    def logitnet(num_classes, in_chans=3):
        model = CifarResNet(8, (16, 16, 32, 64), num_classes, in_chans)
        model.has_features = False
        return model


    def noindex(data_dir=None, **options):
        ds = synthetic(data_dir, **options)
        ds.info["sample_index"] = False
        return ds


    class Boom(Distiller):
        needs_teacher = False
        calls = 0

        def forward(self, student, teacher, target, index=None, epoch=0):
            # training steps only: the check of the loss's terms before training probes it once
            # without gradients
            Boom.calls += torch.is_grad_enabled()
            value = torch.tensor(float("nan")) if Boom.calls == 2 else student.logits.sum() * 0
            return {"boom": value}


    @kdbench.hookimpl
    def register_models(register):
        register("wide8", wide8)
        register("logitnet", logitnet)


    @kdbench.hookimpl
    def register_datasets(register):
        register("noindex", noindex)


    @kdbench.hookimpl
    def register_losses(register):
        register("boom", Boom, defaults={"w_ce": 1.0, "w_boom": 1.0}, taps=("logits",))
''')


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One results store per module, so the tiny teacher trajectory is trained once."""
    return tmp_path_factory.mktemp("losses") / "results"


@pytest.fixture
def plugin_dir(local_plugin):
    return local_plugin(PLUGIN, "testing_losses.py")


def tiny(results, **extra):
    return build_config(tiny_overrides(results, **{"recipe.epochs": 1, **extra}))


# ============================== records =========================================================


def test_init_stage_epochs_are_recorded(shared):
    record = run(tiny(shared, **{"loss.name": "ab", "loss.options.init_epochs": 2}),
                 progress=False)
    assert record["status"] == "done"
    [init] = record["metrics"]["stages"]
    assert init["name"] == "ab:init" and init["epochs"] == 2
    assert [r["epoch"] for r in init["curve"]] == [1, 2]
    assert all(r["train_ab"] > 0 for r in init["curve"])
    assert record["config"]["loss"]["options"]["init_epochs"] == 2
    assert record["metrics"]["epochs"] == 1 and record["cost"]["extra_images"] > 0
    assert [(s["name"], s["epochs"], s["timeline"]) for s in record["stages"]] == [
        ("ab:init", 2, False), ("main", 1, True)]


def test_composite_record_has_every_weight_and_connectors(shared):
    record = run(tiny(shared, **{"loss.name": "crd+kd", "loss.options.nce_k": 32}),
                 progress=False)
    loss = record["config"]["loss"]
    assert loss["weights"] == {"w_ce": 1.0, "w_crd": 0.8, "w_kd": 1.0}
    assert loss["options"]["nce_t"] == 0.07 and loss["options"]["negatives"] == "class"
    assert record["cost"]["connector_params"] == 2 * (64 * 128 + 128)  # two 128-d embeddings
    row = record["metrics"]["curve"][0]
    assert {"train_crd", "train_kd", "train_ce"} <= set(row)


# ============================== bad input: refused before any training ========================


def _nothing_trained(results):
    store = Store(results)
    return not list(store.runs.glob("*.json")) and not list(store.teachers.glob("*/manifest.json"))


def test_fsp_with_unequal_channels_fails_before_training(cli_runner, plugin_dir, results):
    res = cli_runner("run", "--dataset", "synthetic", "--student", "resnet8", "--teacher-arch",
                     "wide8", "--loss", "fsp", "--results-dir", results, "--quiet")
    assert res.exit_code == 2
    assert "fsp" in res.output and "equal channels" in res.output
    assert _nothing_trained(results)


def test_crd_needs_sample_indices(cli_runner, plugin_dir, results):
    res = cli_runner("run", "--dataset", "noindex", "--student", "resnet8", "--teacher-arch",
                     "resnet8", "--loss", "crd+kd", "--results-dir", results, "--quiet")
    assert res.exit_code == 2 and "sample indices" in res.output
    assert "'noindex'" in res.output and _nothing_trained(results)


def test_feature_loss_with_a_logits_only_teacher(cli_runner, plugin_dir, results):
    res = cli_runner("run", "--dataset", "synthetic", "--student", "resnet8", "--teacher-arch",
                     "logitnet", "--loss", "at+kd", "--results-dir", results, "--quiet")
    assert res.exit_code == 2 and "logits only" in res.output and "logitnet" in res.output
    assert _nothing_trained(results)


def test_composite_feature_loss_with_an_ensemble_teacher(cli_runner, results):
    res = cli_runner("run", "--dataset", "synthetic", "--teacher", "snapshot", "--loss",
                     "crd+kd", "--results-dir", results, "--quiet")
    assert res.exit_code == 2 and "'crd+kd' taps embedding features" in res.output
    assert _nothing_trained(results)


def test_unknown_loss_part_lists_close_matches(cli_runner, results):
    res = cli_runner("run", "--loss", "crd+kdd", "--results-dir", results)
    assert res.exit_code == 2 and "did you mean kd" in res.output


def test_nan_loss_fails_the_run_naming_term_epoch_and_step(cli_runner, plugin_dir, shared):
    args = ["run", "--dataset", "synthetic", "--student", "resnet8", "--loss", "boom",
            "--epochs", "1", "--batch-size", "64", "--precision", "fp32", "--device", "cpu",
            "--results-dir", shared, "--quiet", "--set", "recipe.milestones=[]"]
    res = cli_runner(*args)
    assert res.exit_code == 1
    assert "term 'boom'" in res.output and "epoch 1, step 2" in res.output
    records = [json.loads(p.read_text()) for p in Store(shared).runs.glob("*.json")]
    failed = [r for r in records if r["config"]["loss"]["name"] == "boom"]
    assert len(failed) == 1 and failed[0]["status"] == "failed"
    assert "term 'boom'" in failed[0]["error"] and "step 2" in failed[0]["error"]


# ============================== kdbench losses ==================================================


def test_losses_command_lists_papers_taps_and_weights(cli_runner):
    res = cli_runner("losses")
    assert res.exit_code == 0
    lines = {line.split()[0]: line for line in res.output.splitlines()[2:] if line.strip()}
    assert {"kd", "dkd", "fitnet", "at", "sp", "cc", "vid", "rkd", "pkt", "ab", "ft", "fsp",
            "nst", "crd", "dml", "ce"} <= set(lines)
    assert "w_crd=0.8" in lines["crd"] and "embedding, index" in lines["crd"]
    assert "Tian et al." in lines["crd"] and "w_at=1000.0" in lines["at"]
    detail = cli_runner("losses", "crd+kd").output
    assert "w_ce=1.0, w_crd=0.8, w_kd=1.0" in detail
    rows = json.loads(cli_runner("losses", "--json", "dkd").output)
    assert rows[0]["options"]["beta"] == 8.0 and rows[0]["weights"] == {"w_ce": 1.0,
                                                                        "w_dkd": 1.0}
