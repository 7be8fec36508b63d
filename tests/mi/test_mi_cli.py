"""`kdbench mi`, `kdbench select` and `kdbench run --select` end to end on a tiny trajectory
(synthetic data, resnet8, 4 epochs saved every 2), plus their bad input."""

from __future__ import annotations

import json
import shutil
import textwrap

import pytest
import torch

from conftest import one_thread, tiny_overrides
from kdbench import plugins
from kdbench.config import build_config, resolve
from kdbench.data import load_dataset
from kdbench.mi.selection import minmax
from kdbench.store import Store
from kdbench.teachers import trajectory as traj

pytestmark = pytest.mark.usefixtures("single_thread")

FAST_RECON = ("--opt", "epochs=3", "--opt", "patience=2", "--opt", "hidden=32")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One tiny trained trajectory shared by this module's tests (results dir, key)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("KDBENCH_LOAD_PLUGINS", "")
    plugins.reset()
    results = tmp_path_factory.mktemp("mi") / "results"
    cfg = resolve(build_config(tiny_overrides(results)))
    with one_thread():
        t = traj.ensure(Store(results), traj.trajectory_spec(cfg),
                        cfg.teacher.checkpoint_epochs(), load_dataset("synthetic"),
                        torch.device("cpu"), progress=False)
    assert t.epochs == [2, 4]
    yield results, t.key
    plugins.reset()
    mp.undo()


def _json(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.output[result.output.index("{"):])


def test_mi_table_plot_and_cache(store, cli_runner):
    results, key = store
    args = ("mi", key, "--estimator", "kde", "--samples", "64", "--results-dir", results,
            "--quiet")
    out = cli_runner(*args)
    assert out.exit_code == 0, out.output
    assert "kde (upper bound) on embedding" in out.output
    lines = [line.split() for line in out.output.splitlines()]
    assert [row[0] for row in lines if row and row[0] in ("2", "4")] == ["2", "4"]
    cache = next((results / "teachers" / key / "mi").glob("kde-embedding-n64-*.json"))
    png = cache.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads(cache.read_text())
    assert sorted(doc["epochs"]) == ["2", "4"] and doc["unit"] == "nats"
    first = _json(cli_runner(*args, "--json"))
    # a second call reads the cache: it works even with the checkpoint files moved away
    ckpts = sorted((results / "teachers" / key).glob("epoch_*.pt"))
    for p in ckpts:
        p.rename(p.with_suffix(".bak"))
    try:
        again = _json(cli_runner(*args, "--json"))
    finally:
        for p in ckpts:
            p.with_suffix(".bak").rename(p)
    assert again["checkpoints"] == first["checkpoints"]
    assert [c["epoch"] for c in again["checkpoints"]] == [2, 4]


def test_select_recon_end_to_end(store, cli_runner):
    """Two repeats: the argmax is that of the min-max normalised sum of the (censored) series,
    the repeat spread is the pooled within-checkpoint sd — both recomputed here from the JSON —
    and the choice stands exactly when the gap beats the score's resolution."""
    import numpy as np

    results, key = store
    args = ("select", key, "--estimator", "recon", "--layer", "stage-2", "--samples", "64",
            "--repeats", "2", *FAST_RECON, "--results-dir", results, "--quiet")
    data = _json(cli_runner(*args, "--json"))
    rows, sel = data["checkpoints"], data["selection"]
    d = sel["decision"]
    scores = [a + b for a, b in zip(minmax(d["used"]["i_xt"]), minmax(d["used"]["i_ty"]))]
    expected = max(zip(scores, [-r["epoch"] for r in rows]))
    assert sel["argmax"] == -expected[1] and sel["scores"] == pytest.approx(scores)
    values = np.array([r["values"] for r in rows])  # checkpoint × repeat × (I(X;T), I(T;Y))
    # the residual of the two-way checkpoint × repeat-seed layout (the seed's shared effect
    # removed), on (C−1)(R−1) degrees of freedom
    resid = (values - values.mean(1, keepdims=True) - values.mean(0, keepdims=True)
             + values.mean((0, 1), keepdims=True))
    dof = (values.shape[0] - 1) * (values.shape[1] - 1)
    sd = np.sqrt((resid ** 2).sum((0, 1)) / dof)
    assert [d["noise_sd"]["i_xt"], d["noise_sd"]["i_ty"]] == pytest.approx(sd.tolist())
    assert d["stochastic"] and d["repeats"] == 2
    if sel["chosen"] is None:
        assert d["reason"]
    else:
        assert sel["chosen"] == sel["argmax"] and d["gap"] > d["score_resolution"]
    assert data["settings"]["epochs"] == 3 and data["request"]["layer"] == "stage-2"
    text = cli_runner(*args).output
    head = (f"chosen: epoch {sel['chosen']}" if sel["chosen"] is not None
            else "no choice: ")
    assert head in text and "decision rule:" in text and "residual sd" in text


@pytest.mark.parametrize("args, message", [
    (("--layer", "stage-9"), "unknown layer 'stage-9'; did you mean"),
    (("--estimator", "recon", "--samples", "5"), "needs at least 20 samples"),
    (("--samples", "100000"), "exceeds the 256 training images"),
    (("--estimator", "recno"), "unknown MI estimator 'recno'; did you mean recon"),
    (("--estimator", "kde", "--opt", "bandwidth=2"), "has no setting 'bandwidth'"),
])
def test_bad_input(store, cli_runner, args, message):
    results, key = store
    out = cli_runner("mi", key, *args, "--results-dir", results, "--quiet")
    assert out.exit_code == 2
    assert message in out.output and "Traceback" not in out.output


def test_unknown_trajectory_and_single_checkpoint(store, cli_runner, tmp_path):
    results, key = store
    out = cli_runner("select", key[:-3], "--results-dir", results, "--quiet")
    assert out.exit_code == 2 and f"did you mean {key}" in out.output
    single = tmp_path / "single"
    shutil.copytree(results / "teachers" / key, single)
    manifest = json.loads((single / "manifest.json").read_text())
    del manifest["checkpoints"]["2"]  # as if it had been trained with save_epochs [4]
    (single / "manifest.json").write_text(json.dumps(manifest))
    out = cli_runner("select", single, "--estimator", "kde", "--samples", "32", "--quiet")
    assert out.exit_code == 2
    assert "needs estimates at two or more checkpoints, got 1" in out.output


FLAKY = textwrap.dedent('''
    import kdbench
    from kdbench.mi.base import Estimator, EstimatorDiverged

    class Flaky(Estimator):
        """Diverges for the seeds in `bad`; otherwise I(X;T) = 10·seed, I(T;Y) = 1."""
        name = "flaky"
        stochastic = True
        defaults = {"bad": "1"}

        def _estimate(self, t, x, y, *, seed, device):
            if str(seed) in self.settings["bad"].split(","):
                raise EstimatorDiverged(f"flaky critic diverged at seed {seed}")
            return 10.0 * seed, 1.0, {}

    @kdbench.hookimpl
    def register_mi_estimators(register):
        register("flaky", Flaky)
''')


def test_diverged_repeats_are_reported_not_averaged(store, cli_runner, local_plugin):
    """Repeats with seeds 0, 1, 2; seed 1 diverges: the mean is (0 + 20) / 2 = 10, the table
    says 2/3 and the cache keeps the error. All repeats diverging leaves no estimate, and
    selection refuses with the reason."""
    results, key = store
    local_plugin(FLAKY, "flaky.py")
    out = cli_runner("mi", key, "--estimator", "flaky", "--repeats", "3", "--samples", "16",
                     "--results-dir", results, "--quiet", "--json")
    data = _json(out)
    for row in data["checkpoints"]:
        assert row["i_xt"] == pytest.approx(10.0) and row["values"] == [[0.0, 1.0], [20.0, 1.0]]
        assert row["diverged"] == ["seed 1: flaky critic diverged at seed 1"]
    assert "1 of 3 repeats diverged" in out.output
    text = cli_runner("mi", key, "--estimator", "flaky", "--repeats", "3", "--samples", "16",
                      "--results-dir", results, "--quiet").output
    assert "2/3" in text
    out = cli_runner("select", key, "--estimator", "flaky", "--opt", "bad=0,1", "--repeats",
                     "2", "--samples", "16", "--results-dir", results, "--quiet")
    assert out.exit_code == 2
    assert "got 0" in out.output and "flaky critic diverged at seed 0" in out.output


def test_run_with_select_records_the_choice(store, cli_runner):
    results, key = store
    base = ("run", "--dataset", "synthetic", "--student", "resnet8", "--teacher-arch", "resnet8",
            "--epochs", "1", "--batch-size", "64", "--precision", "fp32", "--device", "cpu",
            "--set", "teacher.recipe.epochs=4", "--set", "teacher.recipe.batch_size=64",
            "--set", "teacher.recipe.milestones=[]", "--set", "teacher.save_every=2",
            "--set", "recipe.milestones=[]", "--results-dir", results, "--quiet")
    out = cli_runner(*base, "--teacher", "intermediate", "--select", "cka",
                     "--set", "teacher.options.select_options.samples=256", "--json")
    record = _json(out)
    sel = record["teacher"]["selection"]
    assert record["teacher"]["trajectory"] == key  # the fixture's trajectory, reused
    assert record["teacher"]["epochs"] == [sel["chosen"]] and sel["epochs"] == [2, 4]
    assert sel["estimator"] == "cka" and sel["samples"] == 256 and len(sel["scores"]) == 2
    # the record keeps the decision rule's figures and inputs
    assert sel["decision"]["can_choose"] and sel["decision"]["gap"] > 0
    assert len(sel["decision"]["values"]) == 2 and sel["argmax"] == sel["chosen"]
    options = record["config"]["teacher"]["options"]
    assert options["select"] == "cka" and options["select_options"]["samples"] == 256
    assert options["select_options"]["layer"] == "embedding"  # defaults completed and recorded
    runs_before = sorted(p.name for p in (results / "runs").glob("*.json"))
    for args, message in [
        (("--teacher", "full", "--select", "cka"), "option of teacher source 'full'"),
        (("--teacher", "intermediate", "--select", "ckb"), "unknown MI estimator 'ckb'"),
        (("--teacher", "intermediate", "--select", "cka", "--teacher-epoch", "2"),
         "--select and --teacher-epoch/--teacher-epoch-frac"),
        (("--teacher", "intermediate", "--select", "cka", "--set",
          "teacher.options.select_options.layers=2"), "unknown selection option 'layers'"),
        (("--teacher", "intermediate", "--select", "recon", "--set",
          "teacher.options.select_options.repeats=1"),
         "select_options.repeats must be >= 2, got 1"),
        (("--teacher", "intermediate", "--select", "kde", "--set",
          "teacher.options.select_options.settings.project=umap"),
         "project='umap' is not one of none, pca, random"),
        (("--teacher", "intermediate", "--select", "kde", "--set",
          "teacher.options.select_options.layer=stage-7"), "unknown layer 'stage-7'"),
    ]:
        bad = cli_runner(*base, *args)
        assert bad.exit_code == 2 and message in bad.output, bad.output
    assert sorted(p.name for p in (results / "runs").glob("*.json")) == runs_before


CONSTANT = textwrap.dedent('''
    import kdbench
    from kdbench.mi.base import Estimator

    class Constant(Estimator):
        """I(X;T) = 10·seed, I(T;Y) = 1 at every checkpoint: the means never differ."""
        name = "constant"
        stochastic = True

        def _estimate(self, t, x, y, *, seed, device):
            return 10.0 * seed, 1.0, {}

    @kdbench.hookimpl
    def register_mi_estimators(register):
        register("constant", Constant)
''')


def test_no_choice_select_prints_run_fails(store, cli_runner, local_plugin):
    """Estimates that cannot tell the checkpoints apart: `kdbench select` prints the scores and
    "no choice" (exit 0); a run with --select stops with a one-line error (exit 2) before any
    student is trained, and writes no record."""
    results, key = store
    local_plugin(CONSTANT, "constant.py")
    out = cli_runner("select", key, "--estimator", "constant", "--repeats", "2", "--samples",
                     "16", "--results-dir", results, "--quiet")
    assert out.exit_code == 0, out.output
    assert "no choice: I(X;T) varies by 0 across checkpoints" in out.output
    assert "← argmax (no choice)" in out.output and "--teacher-epoch" in out.output
    base = ("run", "--dataset", "synthetic", "--student", "resnet8", "--teacher-arch", "resnet8",
            "--epochs", "1", "--batch-size", "64", "--precision", "fp32", "--device", "cpu",
            "--set", "teacher.recipe.epochs=4", "--set", "teacher.recipe.batch_size=64",
            "--set", "teacher.recipe.milestones=[]", "--set", "teacher.save_every=2",
            "--set", "recipe.milestones=[]", "--results-dir", results, "--quiet")
    runs = results / "runs"
    before = sorted(p.name for p in runs.glob("*")) if runs.is_dir() else []
    bad = cli_runner(*base, "--teacher", "intermediate", "--select", "constant",
                     "--set", "teacher.options.select_options.samples=16")
    assert bad.exit_code == 2, bad.output
    message = [line for line in bad.output.splitlines() if "cannot choose" in line]
    assert len(message) == 1
    assert f"--select constant: Algorithm 1 cannot choose a checkpoint of {key}" in message[0]
    assert "varies by 0" in message[0] and "explicit --teacher-epoch" in message[0]
    assert "Traceback" not in bad.output
    after = sorted(p.name for p in runs.glob("*")) if runs.is_dir() else []
    assert after == before  # no record, no student state


def test_layer_names_follow_the_model():
    from kdbench.mi.features import layer_names
    from kdbench.models import create_model

    assert layer_names(create_model("resnet8", 4)) == ["embedding", "stage-1", "stage-2",
                                                      "stage-3", "logits"]


def test_probe_is_seeded_and_from_the_training_split():
    from kdbench.mi.features import probe_set

    data = load_dataset("synthetic")
    a, b = (probe_set(data, 50, 3, torch.device("cpu")) for _ in range(2))
    assert torch.equal(a.indices, b.indices) and torch.equal(a.x, b.x)
    assert torch.equal(a.y, data.train.labels[a.indices])
    assert not torch.equal(a.indices, probe_set(data, 50, 4, torch.device("cpu")).indices)


def test_resamples_measure_a_deterministic_estimators_noise(store, cli_runner):
    """kde is deterministic: --resamples half-samples of the probe set (the same halves at
    every checkpoint) are its noise; with none it makes no choice; a negative count is an
    error before anything is estimated."""
    results, key = store
    base = ("select", key, "--estimator", "kde", "--samples", "64", "--results-dir", results,
            "--quiet")
    data = _json(cli_runner(*base, "--resamples", "4", "--json"))
    d = data["selection"]["decision"]
    assert not d["stochastic"] and d["blocks"] == 4
    assert [len(r) for r in d["resamples"]] == [4, 4]
    none = _json(cli_runner(*base, "--resamples", "0", "--json", "--force"))
    assert none["selection"]["chosen"] is None
    assert "resamples of its probe set; give resamples >= 2" in \
        none["selection"]["decision"]["reason"]
    bad = cli_runner(*base, "--resamples", "-1")
    assert bad.exit_code == 2 and "--resamples must be at least 0, got -1" in bad.output
