"""Kept students: a finished run keeps its last and best weights beside its record; ``kdbench
eval`` reproduces the record's ``_last`` metrics exactly; ``kdbench export`` writes models a user
can deploy; bad input is one line, exit 2, nothing written."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from kdbench.config import build_config, resolve, run_id

FAST = ["--dataset", "digits", "--student", "resnet8", "--loss", "ce", "--epochs", "2",
        "--set", "recipe.milestones=[]", "--device", "cpu", "--precision", "fp32", "--quiet"]


@pytest.fixture(scope="module")
def kept(tmp_path_factory):
    """One finished digits run (CE, 2 epochs) in its own store: (results dir, record)."""
    from click.testing import CliRunner

    from conftest import one_thread
    from kdbench import plugins
    from kdbench.cli import cli

    results = tmp_path_factory.mktemp("keep") / "results"
    plugins.reset()
    with one_thread():
        out = CliRunner().invoke(cli, ["run", *FAST, "--results-dir", str(results), "--json"],
                                 catch_exceptions=False, env={"KDBENCH_LOAD_PLUGINS": ""})
    plugins.reset()
    assert out.exit_code == 0, out.output
    record = json.loads(out.stdout)
    return results, record


def test_a_finished_run_keeps_its_last_and_best_weights_beside_its_record(kept):
    from safetensors.torch import load_file

    from kdbench.runner.keep import read_header

    results, record = kept
    rid, m = record["run_id"], record["metrics"]
    runs = results / "runs"
    assert record["weights"]["last"] == {
        "file": f"{rid}.last.safetensors", "epoch": 2,
        "sha256": record["weights"]["last"]["sha256"]}
    assert record["weights"]["best"]["epoch"] == m["best_epoch"]
    # (seeded: epoch 2 is the best by far, so its weights were kept across the stop)
    assert m["best_epoch"] < 3
    header = read_header(runs / f"{rid}.last.safetensors")
    assert header["arch"] == "resnet8" and header["num_classes"] == 10
    assert len(header["input_shape"]) == 3 and header["epoch"] == 2
    assert header["config"] == record["config"] and header["run_id"] == rid
    state = load_file(str(runs / f"{rid}.last.safetensors"))
    assert any(k.endswith("running_mean") for k in state)  # BatchNorm statistics kept too
    assert not list(runs.glob(".*pending*"))  # the pending best file was moved into place


def test_keep_is_not_part_of_the_run_id():
    base = {"data.name": "digits", "student": "resnet8", "loss.name": "ce"}
    kept = resolve(build_config(base))
    not_kept = resolve(build_config({**base, "keep": False}))
    assert kept.keep and not not_kept.keep and run_id(kept) == run_id(not_kept)


@pytest.mark.parametrize("which", ["last", "best"])
def test_eval_reproduces_the_records_metrics_exactly(kept, cli_runner, which):
    results, record = kept
    out = cli_runner("eval", record["run_id"][:8], "--which", which, "--results-dir", results,
                     "--json")
    assert out.exit_code == 0, out.output
    got = json.loads(out.stdout)["metrics"]
    m = record["metrics"]
    for metric in ("top1", "top5", "test_loss"):
        assert got[metric] == m[f"{metric}_{which}"], metric  # exactly, not approximately
    text = cli_runner("eval", record["run_id"], "--results-dir", results)
    assert f"top1 {m['top1_last']:.4g}" in text.stdout


def test_eval_of_a_file_and_with_another_evaluator(kept, cli_runner, tmp_path):
    results, record = kept
    copy = tmp_path / "student.safetensors"
    shutil.copy(results / "runs" / record["weights"]["last"]["file"], copy)
    out = cli_runner("eval", copy, "--eval", "memorisation", "--json")
    assert out.exit_code == 0, out.output
    metrics = json.loads(out.stdout)["metrics"]
    assert set(metrics) >= {"clean_fit", "noisy_count"} and "top1" not in metrics
    assert metrics["noisy_count"] == 0  # digits without a label-noise transform


def test_export_writes_models_that_give_the_students_logits(kept, cli_runner, tmp_path,
                                                           monkeypatch):
    from kdbench.runner.keep import load_kept

    results, record = kept
    rid = record["run_id"]
    model, meta = load_kept(results / "runs" / f"{rid}.last.safetensors")
    x = torch.rand(4, *meta["input_shape"])
    with torch.no_grad():
        want = model(x)
    for fmt, suffix in (("safetensors", "safetensors"), ("torchscript", "pt"),
                        ("onnx", "onnx")):
        target = tmp_path / f"student.{suffix}"
        out = cli_runner("export", rid, "--format", fmt, "-o", target, "--results-dir", results)
        assert out.exit_code == 0, out.output
        assert target.is_file() and out.stdout.strip() == str(target)
    again, _ = load_kept(tmp_path / "student.safetensors")
    with torch.no_grad():
        assert torch.equal(again(x), want)
        scripted = torch.jit.load(str(tmp_path / "student.pt"))
        assert torch.allclose(scripted(x), want, atol=1e-5)
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(tmp_path / "student.onnx"),
                                   providers=["CPUExecutionProvider"])
    [logits] = session.run(None, {"images": x.numpy()})
    assert torch.allclose(torch.from_numpy(logits), want, atol=1e-4)
    # the default name, in the working folder
    monkeypatch.chdir(tmp_path)
    out = cli_runner("export", rid, "--results-dir", results, "--which", "best")
    assert out.exit_code == 0 and out.stdout.strip() == f"{rid}.best.resnet8.safetensors"
    assert (tmp_path / f"{rid}.best.resnet8.safetensors").is_file()


def _fails(out, *words):
    assert out.exit_code == 2, out.output
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("Error: ") and all(w in line for w in words), line


def test_bad_input_is_one_line_exit_2_nothing_written(kept, tmp_path, monkeypatch):
    from click.testing import CliRunner
    from safetensors.torch import load_file, save_file

    from kdbench.cli import cli

    def invoke(*args):
        return CliRunner().invoke(cli, [str(a) for a in args])

    results, record = kept
    rid = record["run_id"]
    monkeypatch.chdir(tmp_path)
    # a run that kept nothing
    other = tmp_path / "nokeep"
    shutil.copytree(results, other)
    rec = json.loads((other / "runs" / f"{rid}.json").read_text())
    rec["weights"] = None
    (other / "runs" / f"{rid}.json").write_text(json.dumps(rec))
    for p in (other / "runs").glob("*.safetensors"):
        p.unlink()
    _fails(invoke("eval", rid, "--results-dir", other), rid, "no kept last weights",
           "keep: false")
    _fails(invoke("export", rid, "--results-dir", other), "no kept")
    _fails(invoke("eval", "feedface", "--results-dir", results), "'feedface'", "no run id")
    # a file whose tensors are another architecture's than its header says
    src = results / "runs" / f"{rid}.last.safetensors"
    from safetensors import safe_open

    with safe_open(str(src), framework="pt") as f:
        header = f.metadata()
    wrong = tmp_path / "wrong.safetensors"
    save_file(load_file(str(src)), str(wrong), metadata={**header, "arch": "resnet20"})
    _fails(invoke("eval", wrong), "another architecture", "'resnet20'")
    _fails(invoke("export", wrong, "--format", "onnx", "-o", tmp_path / "w.onnx"),
           "another architecture")
    # an evaluator that cannot be served: a kept student is evaluated alone, with no teacher
    _fails(invoke("eval", rid, "--results-dir", results, "--eval", "agreement"),
           "evaluator 'agreement' needs the teacher's outputs")
    _fails(invoke("eval", rid, "--results-dir", results, "--eval", "no_such_eval"),
           "no_such_eval")
    # a dataset the student was not trained for; a missing output folder
    _fails(invoke("eval", rid, "--results-dir", results, "--dataset", "synthetic"),
           "'synthetic' has 4 classes", "trained on 10")
    _fails(invoke("export", rid, "--results-dir", results, "-o", tmp_path / "nope" / "m.onnx",
                  "--format", "onnx"), "does not exist", "nope")
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob("*.pt"))
    assert not (tmp_path / "nope").exists()


def test_an_interrupted_run_keeps_its_best_weights_through_the_resume(tiny, local_plugin,
                                                                      results):
    """The best epoch's weights go to disk before the state that says the epoch is done, so a
    run stopped and resumed keeps the best weights of an epoch trained before the stop; they
    give back the record's _best metrics."""
    import textwrap

    import kdbench
    from kdbench.runner.keep import evaluate_kept, pending_best_path
    from kdbench.store import Store

    local_plugin(textwrap.dedent("""
        import kdbench
        @kdbench.hookimpl
        def kdbench_epoch_end(run_id, epoch):
            if epoch == 3 and not run_id.startswith("resnet8"):   # the student, not the teacher
                raise KeyboardInterrupt
    """), "stop.py")
    cfg = tiny(**{"loss.name": "ce", "recipe.epochs": 4, "recipe.lr": 0.2})
    with pytest.raises(KeyboardInterrupt):
        kdbench.run(cfg, progress=False)
    store = Store(results)
    rid = cfg.run_id
    assert pending_best_path(store, rid).is_file()  # the best so far, for the resume
    assert not list(store.runs.glob(f"{rid}.*.safetensors"))  # nothing final yet
    local_plugin("", "stop.py")  # the interruption removed: resume
    record = kdbench.run(cfg, progress=False)
    m = record["metrics"]
    assert record["weights"]["best"]["epoch"] == m["best_epoch"]
    # (seeded: epoch 2 is the best by far, so its weights were kept across the stop)
    assert m["best_epoch"] < 3
    assert not pending_best_path(store, rid).exists()
    got = evaluate_kept(rid, results_dir=str(results), which="best")["metrics"]
    assert got["top1"] == m["top1_best"] and got["test_loss"] == m["test_loss_best"]
    # keep: false keeps nothing and says so; the run id is the same
    assert kdbench.run(cfg, progress=False, force=True)["weights"]["last"]
    nokeep = tiny(**{"loss.name": "ce", "recipe.epochs": 4, "recipe.lr": 0.2, "keep": False})
    assert nokeep.run_id == rid
    record = kdbench.run(nokeep, progress=False, force=True)
    assert record["weights"] is None
