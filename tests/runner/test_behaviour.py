"""Behaviour as plugins: stages, evaluators, data transforms, optimisers and schedules through the
real runner and CLI, typed registration checks, and the bad input of each (one line, exit 2,
nothing written)."""

from __future__ import annotations

import json
import math
import textwrap

import pytest
import torch

from conftest import tiny_overrides
from kdbench import plugins
from kdbench.config import build_config, resolve
from kdbench.errors import ConfigError, PluginError, UnknownNameError
from kdbench.runner import run
from kdbench.store import Store

pytestmark = pytest.mark.usefixtures("single_thread")

PLUGIN = textwrap.dedent('''
    """Test plugins: a CE warm-up stage with its own optimiser, an evaluator every 2 epochs,
    one after the last epoch on embeddings, a transform with an int option, and a stage that
    a test kills."""
    import torch
    import torch.nn.functional as F
    import kdbench
    from kdbench.stages import stage_from_options

    KILL = {"stage": None, "epoch": None}


    def labels_only(ctx, **options):
        def loss(student, teacher, batch, epoch, stage, views=None):
            if KILL["stage"] == stage and KILL["epoch"] == epoch:
                KILL["stage"] = None
                raise KeyboardInterrupt
            return {"zero": student.logits.sum() * 0}
        return stage_from_options("labels_only", ctx, options, loss=loss,
                                  parameters=list(ctx.student.parameters()), default_epochs=1,
                                  student="logits", teacher="none")


    def frozen(ctx, **options):
        return stage_from_options("frozen", ctx, options, loss=lambda *a, **k: {},
                                  parameters=[], default_epochs=1)


    class Parity:
        needs = ("test_logits",)
        metrics = ("even_acc",)

        def __init__(self, ctx):
            pass

        def __call__(self, out):
            even = out.test_labels % 2 == 0
            hit = out.test_logits.argmax(1).eq(out.test_labels)
            return {"even_acc": 100.0 * float(hit[even].float().mean())}


    class EmbNorm:
        needs = ("test_embedding", "train_embedding")
        metrics = ("emb_norm", "train_emb_norm")

        def __init__(self, ctx, scale: float = 1.0):
            self.scale = scale

        def __call__(self, out):
            return {"emb_norm": self.scale * float(out.test_embedding.norm(dim=1).mean()),
                    "train_emb_norm": float(out.train_embedding.norm(dim=1).mean())}


    class FirstN:
        def __init__(self, n: int = 10):
            self.n = n

        def apply(self, split, *, num_classes, split_name):
            return split.subset(torch.arange(self.n)), {"n": self.n}


    @kdbench.hookimpl
    def register_stages(register):
        register("labels_only", labels_only, defaults={"note": "x"})
        register("frozen", frozen)


    @kdbench.hookimpl
    def register_evaluators(register):
        register("parity", Parity, needs=Parity.needs, metrics=Parity.metrics, every=2)
        register("emb_norm", EmbNorm, needs=EmbNorm.needs, metrics=EmbNorm.metrics, every=0,
                 lower_is_better=("emb_norm",), defaults={"scale": 1.0})


    @kdbench.hookimpl
    def register_data_transforms(register):
        register("first_n", FirstN, defaults={"n": 10})
''')


@pytest.fixture
def plugin(local_plugin):
    import sys

    local_plugin(PLUGIN, "behaviour.py")
    plugins.get_registry()
    return sys.modules["kdbench_local_plugins.behaviour"]


def tiny(results, **extra):
    return build_config(tiny_overrides(results, **extra))


# ============================== stages ==========================================================


def test_warmups_chain_in_order_within_the_budget_with_their_own_optimiser(plugin, results):
    record = run(tiny(results, **{
        "recipe.epochs": 4, "loss.name": "kd",
        "warmup": [{"name": "labels_only", "optimizer": "adam", "lr": 1e-3, "label_weight": 1.0},
                   {"name": "labels_only", "epochs": 1, "within_budget": False}]}),
        progress=False)
    assert [(s["name"], s["epochs"], s["timeline"], s["optimizer"]) for s in record["stages"]] \
        == [("labels_only#2", 1, False, "sgd"), ("labels_only", 1, True, "adam"),
            ("main", 3, True, "sgd")]
    curve = record["metrics"]["curve"]
    assert [r["stage"] for r in curve] == ["labels_only", "main", "main", "main"]
    assert curve[0]["lr"] == 1e-3 and curve[1]["lr"] == 0.05
    assert "train_ce" in curve[0] and "train_kd" not in curve[0] and "train_kd" in curve[1]
    [extra] = record["metrics"]["stages"]
    assert extra["name"] == "labels_only#2" and len(extra["curve"]) == 1
    assert "train_ce" not in extra["curve"][0]  # label_weight None: no label term
    assert record["config"]["warmup"][0] == {
        "name": "labels_only", "note": "x", "epochs": None, "within_budget": True,
        "optimizer": "adam", "lr": 1e-3, "schedule": "constant", "label_weight": 1.0}


def test_main_schedule_counts_the_runs_epochs_after_a_warmup(plugin, results):
    record = run(tiny(results, **{"recipe.epochs": 4, "recipe.milestones": [2], "loss.name": "ce",
                                  "warmup": [{"name": "labels_only", "epochs": 1}]}),
                 progress=False)
    assert [r["lr"] for r in record["metrics"]["curve"]] == pytest.approx([0.05, 0.05, 0.005,
                                                                            0.005])


@pytest.mark.parametrize("where", ["extra", "budget"])
def test_a_kill_inside_a_stage_resumes_inside_that_stage(plugin, results, tmp_path, where):
    over = {"recipe.epochs": 3, "loss.name": "kd",
            "warmup": [{"name": "labels_only", "epochs": 2,
                        "within_budget": where == "budget"}]}
    reference = run(tiny(tmp_path / "ref", **over), progress=False)
    plugin.KILL.update(stage="labels_only", epoch=1)  # the stage's second epoch
    cfg = tiny(results, **over)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, progress=False)
    store = Store(results)
    assert store.load_record(reference["run_id"])["status"] == "interrupted"
    state = torch.load(store.state_path(reference["run_id"]), weights_only=True)
    rows = (state["trainees"][0]["stage_history"].get("labels_only", []) if where == "extra"
            else state["trainees"][0]["history"])
    assert len(rows) == 1  # one epoch of the stage done, saved
    resumed = run(cfg, progress=False)
    assert resumed["metrics"] == reference["metrics"]


def test_stage_bad_input_is_one_line_exit_2_nothing_written(plugin, results, cli_runner):
    base = ["run", "--dataset", "synthetic", "--student", "resnet8", "--teacher-arch", "resnet8",
            "--epochs", "2", "--results-dir", results, "--quiet"]
    cases = [
        (["--warmup", "labels_onyl"], "unknown stage 'labels_onyl'; did you mean labels_only"),
        (["--warmup", "labels_only:epochs=x"], "stage 'labels_only' option epochs must be an "
                                               "integer, got 'x'"),
        (["--warmup", "labels_only:colour=red"], "stage 'labels_only' has no option 'colour'"),
        (["--warmup", "labels_only:epochs=2"], "take 2 of the run's 2 epochs"),
        (["--warmup", "frozen"], "stage 'frozen' trains no parameters"),
        (["--warmup", "labels_only:optimizer=adamm"], "unknown optimizer 'adamm'"),
        (["--set", "recipe.optimizer=lbfgs"], "unknown recipe.optimizer 'lbfgs'"),
    ]
    for args, message in cases:
        result = cli_runner(*base, *args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert not list((results / "runs").glob("*.json"))


# ============================== evaluators ======================================================


def test_evaluators_run_when_due_and_every_metric_gets_last_best_and_curve(plugin, results):
    record = run(tiny(results, **{"recipe.epochs": 3, "loss.name": "ce",
                                  "eval.evaluators": ["accuracy", "parity",
                                                      {"name": "emb_norm", "scale": 2.0}]}),
                 progress=False)
    curve, m = record["metrics"]["curve"], record["metrics"]
    assert ["even_acc" in r for r in curve] == [False, True, True]  # every 2, and the last
    assert ["emb_norm" in r for r in curve] == [False, False, True]  # only after the last
    assert m["even_acc_last"] == curve[2]["even_acc"]
    assert m["emb_norm_last"] == m["emb_norm_best"] == curve[2]["emb_norm"]
    assert curve[2]["emb_norm"] == pytest.approx(2 * curve[2]["train_emb_norm"], rel=0.5)
    best = max(curve, key=lambda r: (r["top1"], -r["epoch"]))
    assert m["best_epoch"] == best["epoch"] and m["top1_best"] == best["top1"]


def test_best_metric_lower_is_better_picks_the_minimum(plugin, results):
    cfg = tiny(results, **{"recipe.epochs": 3, "loss.name": "ce", "eval.best_metric": "test_loss"})
    m = run(cfg, progress=False)["metrics"]
    losses = [r["test_loss"] for r in m["curve"]]
    assert m["best_epoch"] == 1 + losses.index(min(losses))
    assert m["test_loss_best"] == min(losses) and m["test_loss_last10_best"] == min(losses)
    assert m["top1_best"] == m["curve"][m["best_epoch"] - 1]["top1"]


def test_evaluator_bad_input(plugin, results, cli_runner):
    base = ["run", "--dataset", "synthetic", "--student", "resnet8", "--loss", "ce",
            "--epochs", "1", "--results-dir", results, "--quiet"]
    cases = [(["--eval", "retrievl"], "unknown evaluator 'retrievl'"),
             (["--eval", "emb_norm:scale=big"], "evaluator 'emb_norm' option scale must be a "
                                                "number, got 'big'"),
             (["--best-metric", "ece"], "unknown eval.best_metric 'ece'"),
             (["--eval", "parity:every=-1"], "every must be >= 0")]
    for args, message in cases:
        result = cli_runner(*base, *args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)
    assert not list((results / "runs").glob("*.json"))


def test_table_takes_any_metric_and_names_the_ones_records_have(plugin, results, cli_runner):
    run(tiny(results, **{"loss.name": "ce", "eval.evaluators": ["accuracy", "parity"]}),
        progress=False)
    ok = cli_runner("table", "--results-dir", results, "--metric", "even_acc_last")
    assert ok.exit_code == 0 and "even_acc_last" in ok.output
    bad = cli_runner("table", "--results-dir", results, "--metric", "map_cosine_last")
    assert bad.exit_code == 2 and "unknown metric 'map_cosine_last'" in bad.output
    assert "even_acc_last" in bad.output  # the valid choices come from the records
    assert cli_runner("table", "--results-dir", results, "--layout", "pivto").exit_code == 2


# ============================== data transforms and the teacher's data ==========================


def test_subset_transform_report_and_record(results):
    from kdbench.data import load_dataset

    d = load_dataset("synthetic", None, [{"name": "subset", "per_class": 20, "seed": 1}])
    assert len(d.train) == 80 and d.train.class_counts(4) == [20, 20, 20, 20]
    [t] = d.info["transforms"]
    assert t["report"]["class_counts"] == [20] * 4 and t["split"] == "train"
    full = load_dataset("synthetic")
    assert torch.equal(d.test.images, full.test.images)  # the test split is untouched
    again = load_dataset("synthetic", None, [{"name": "subset", "per_class": 20, "seed": 1}])
    other = load_dataset("synthetic", None, [{"name": "subset", "per_class": 20, "seed": 2}])
    assert torch.equal(again.train.images, d.train.images)
    assert not torch.equal(other.train.images, d.train.images)


def test_teacher_data_is_its_own_and_keys_its_trajectory(plugin, results):
    from kdbench.teachers.trajectory import trajectory_spec

    student_only = tiny(results, **{"data.transforms": [{"name": "first_n", "n": 64}],
                                    "teacher.data.transforms": []})
    both = tiny(results, **{"data.transforms": [{"name": "first_n", "n": 64}]})
    r1 = resolve(student_only)
    assert r1.teacher.data.name == "synthetic" and r1.teacher.data.transforms == []
    assert "transforms" not in trajectory_spec(r1)  # the teacher's data: untransformed
    assert trajectory_spec(resolve(both))["transforms"] == [{"name": "first_n", "n": 64}]
    record = run(student_only, progress=False)
    assert record["data"]["train_size"] == 64
    traj = Store(results).teachers / record["teacher"]["trajectory"]
    manifest = json.loads((traj / "manifest.json").read_text())
    assert "transforms" not in manifest["spec"]
    assert run(both, progress=False)["teacher"]["trajectory"] != record["teacher"]["trajectory"]
    from kdbench.report.records import load_records

    rows = load_records(results).set_index("run_id")["teacher_data"]
    # the teacher saw all the data, the student 64 images: not "same"; nor "clean" (no noise)
    assert rows[record["run_id"]] == "other" and set(rows) == {"other", "same"}


def test_transform_bad_input(plugin, results, cli_runner):
    base = ["run", "--dataset", "synthetic", "--loss", "ce", "--epochs", "1", "--results-dir",
            results, "--quiet"]
    for args, message in [(["--data-transform", "first_n:n=ten"], "must be an integer"),
                          (["--data-transform", "subsett"], "unknown data transform 'subsett'"),
                          (["--data-transform", "subset:per_class=0"], "per_class must be >= 1")]:
        result = cli_runner(*base, *args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)
    assert not list((results / "runs").glob("*.json"))


# ============================== optimisers and schedules ========================================


def test_optimiser_and_schedule_registries(results):
    from kdbench.config import Recipe
    from kdbench.stages.optim import make_optimizer, make_schedule

    p = [torch.nn.Parameter(torch.zeros(2))]
    adam = make_optimizer("adam", p, lr=1e-3, momentum=0.9, nesterov=False, weight_decay=0,
                          options={"betas": [0.5, 0.9], "eps": 1e-6})
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["betas"] == (0.5, 0.9)
    cos = make_schedule(Recipe(epochs=4, schedule="cosine", warmup_epochs=2))
    # warm-up (e+1)/2 times the half cosine from 1 to 0, evaluated at each epoch's start
    expected = [0.5 * 1.0, 1.0 * 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.5 * (1 + math.cos(
        3 * math.pi / 4))]
    assert [cos(e) for e in range(4)] == pytest.approx(expected)
    cfg = resolve(tiny(results, **{"recipe.optimizer": "adam",
                                   "recipe.optimizer_options": {"betas": "0.8,0.99"}}))
    assert cfg.recipe.optimizer_options == {"betas": [0.8, 0.99], "eps": 1e-8}
    with pytest.raises(ConfigError, match="optimizer 'sgd' has no option 'betas'"):
        resolve(tiny(results, **{"recipe.optimizer_options": {"betas": [0.9, 0.9]}}))


# ============================== typed registrations =============================================


@pytest.mark.parametrize("source, message", [
    ('register("x", Kd, defaults={"w_ce": 1.0}, tapz=("logits",))',
     "unknown registration field 'tapz'"),
    ('register("x", Kd, defaults=[1, 2])', "registration field 'defaults' must be dict"),
    ('register("x", Kd, taps=("logits", "stages"))', "registers taps=['logits', 'stages'] but "
                                                     "its class declares ['logits']"),
    ('register("x", Kd, taps=("pixels",))', "taps 'pixels', which no model gives"),
    ('register("x", Kd, defaults={"w_ce": "high"})', "weight w_ce must be a number"),
])
def test_a_registration_that_disagrees_fails_at_registration(local_plugin, source, message):
    local_plugin(textwrap.dedent(f'''
        import kdbench
        from kdbench.losses.kd import KD as Kd

        @kdbench.hookimpl
        def register_losses(register):
            {source}
    '''))
    with pytest.raises(PluginError, match=message.replace("[", r"\[").replace("]", r"\]")):
        plugins.get_registry()


def test_an_evaluator_whose_class_disagrees_fails_at_registration(local_plugin):
    local_plugin(textwrap.dedent('''
        import kdbench

        class E:
            needs = ("test_logits",)
            metrics = ("a",)

        @kdbench.hookimpl
        def register_evaluators(register):
            register("e", E, needs=("test_logits",), metrics=("a", "b"))
    '''))
    with pytest.raises(PluginError, match="registers metrics=.*class declares"):
        plugins.get_registry()


def test_an_evaluator_unit_for_a_metric_it_lacks_fails_at_registration(local_plugin):
    local_plugin(textwrap.dedent('''
        import kdbench

        @kdbench.hookimpl
        def register_evaluators(register):
            register("e", object, needs=("test_logits",), metrics=("a",), units={"b": "0-1"})
    '''))
    with pytest.raises(PluginError, match="gives a unit to 'b', not one of its metrics"):
        plugins.get_registry()


def test_plugins_lists_every_kind(cli_runner):
    out = cli_runner("plugins").output
    kinds = {line.split()[0] for line in out.splitlines()[2:] if line.strip()}
    assert kinds >= {"model", "dataset", "loss", "teacher_source", "mi_estimator", "executor",
                     "optimizer", "schedule", "evaluator", "data_transform", "augmentation",
                     "table_layout"}
    with pytest.raises(UnknownNameError):
        plugins.get("evaluator", "nope")


# ============================== loggers =========================================================


def test_a_failing_logger_warns_once_and_the_run_goes_on(local_plugin, results):
    local_plugin(textwrap.dedent('''
        import kdbench

        SEEN = []

        class Flaky:
            def __init__(self, results_dir, fail_at=2):
                self.fail_at = fail_at

            def start(self, record):
                SEEN.append(("start", record["run_id"]))

            def epoch(self, run_id, row):
                if row["epoch"] == self.fail_at:
                    raise OSError("disk full")
                SEEN.append(("epoch", row["epoch"]))

            def end(self, record):
                SEEN.append(("end", record["status"]))

        @kdbench.hookimpl
        def register_loggers(register):
            register("flaky", Flaky, defaults={"fail_at": 2})
    '''), "flaky.py")
    import sys

    with pytest.warns(RuntimeWarning, match="logger 'flaky' failed in epoch .*disk full") as w:
        record = run(tiny(results, **{"recipe.epochs": 3, "loss.name": "ce",
                                      "log": [{"name": "flaky", "fail_at": 2}]}),
                     progress=False)
    assert record["status"] == "done" and len([x for x in w if "flaky" in str(x.message)]) == 1
    seen = sys.modules["kdbench_local_plugins.flaky"].SEEN
    assert seen == [("start", record["run_id"]), ("epoch", 1)]  # off after it failed
    plain = run(tiny(results, **{"recipe.epochs": 3, "loss.name": "ce"}), progress=False)
    assert plain["run_id"] == record["run_id"]  # loggers are not part of a run's identity


def test_logger_bad_input(results, cli_runner):
    base = ["run", "--dataset", "synthetic", "--loss", "ce", "--epochs", "1", "--results-dir",
            results, "--quiet"]
    for args, message in [(["--log", "mlflow"], "logger 'mlflow' is not installed: pip install "
                                                "kdbench-mlflow"),
                          (["--log", "tensorbord"], "unknown logger 'tensorbord'")]:
        result = cli_runner(*base, *args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)
    assert not list((results / "runs").glob("*.json"))


def test_a_teacher_tested_at_its_checkpoints_only_has_the_same_weights(results, tmp_path):
    """``teacher.evaluate: checkpoints`` skips the test pass between checkpoints (the running
    training accuracy stays every epoch); the weights and the trajectory key do not change."""
    from kdbench.teachers import manage

    every = tiny(tmp_path / "every", **{"teacher.recipe.epochs": 4, "teacher.save_every": 2})
    sparse = tiny(results, **{"teacher.recipe.epochs": 4, "teacher.save_every": 2,
                              "teacher.evaluate": "checkpoints"})
    [a], [b] = manage.train(every, progress=False), manage.train(sparse, progress=False)
    assert a.key == b.key and run_id_of(every) == run_id_of(sparse)
    assert ["top1" in r for r in b.manifest["curve"]] == [False, True, False, True]
    assert all("train_top1" in r for r in b.manifest["curve"])
    assert {e: c["sha256"] for e, c in a.manifest["checkpoints"].items()} == \
        {e: c["sha256"] for e, c in b.manifest["checkpoints"].items()}
    assert b.accuracy(2) == a.accuracy(2)


def run_id_of(cfg):
    return resolve(cfg).run_id


def test_progress_is_one_plain_line_per_epoch_in_a_log_file(results):
    """Under nohup or in a sweep's log (not a terminal), progress is a line per epoch with no
    carriage returns; the real engine writes them."""
    import contextlib
    import io

    from kdbench.progress import Progress

    buf = io.StringIO()
    bar = Progress(3, "teacher resnet8", stream=buf)
    for i in range(3):
        bar.update(f"top1={i}")
    bar.close()
    lines = buf.getvalue().splitlines()
    assert len(lines) == 3 and "\r" not in buf.getvalue()
    assert lines[0].startswith("teacher resnet8: 1/3 epochs, top1=0, ")
    assert lines[0].endswith(" left") and lines[-1].endswith(" s/epoch")  # no "0 s left"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        record = run(tiny(results, **{"loss.name": "ce"}), progress=True)
    out = err.getvalue()
    assert "\r" not in out
    logged = [line for line in out.splitlines() if line.startswith("ce resnet8:")]
    assert [line.split(",")[0] for line in logged] == ["ce resnet8: 1/2 epochs",
                                                       "ce resnet8: 2/2 epochs"]
    last = record["metrics"]["curve"][-1]
    assert f"student top1={last['top1']:.1f} loss={last['train_loss']:.4g} " \
           f"lr={last['lr']:.3g}" in logged[-1]
    # the opening line: run id, where the record goes, the settings a reader checks first
    [opening] = [line for line in out.splitlines() if line.startswith("kdbench run ")]
    assert out.splitlines().index(opening) < out.splitlines().index(logged[0])
    rid = record["run_id"]
    assert opening.startswith(f"kdbench run {rid}: resnet8 ce on synthetic seed 0: 2 epochs, "
                              f"batch 64, lr 0.05 (multistep), sgd, fp32 on cpu; record → ")
    assert opening.endswith(f"{results / 'runs' / rid}.json (student weights kept beside it)")


def test_progress_in_a_terminal_leaves_one_line_per_epoch_above_the_bar():
    import io

    from kdbench.progress import Progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    tty = Terminal()
    bar = Progress(3, "kd resnet8", stream=tty)
    for i in range(3):
        bar.update(f"student top1={i}")
    bar.close()
    kept = [line for line in tty.getvalue().replace("\r", "\n").splitlines()
            if line.startswith("kd resnet8: ") and "epochs," in line]
    assert [line.split(",")[0] for line in kept] == [f"kd resnet8: {i}/3 epochs"
                                                     for i in (1, 2, 3)]
