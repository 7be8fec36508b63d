"""The plugin system as users meet it: built-ins, installed distributions, a local folder."""

from __future__ import annotations

import importlib
import textwrap

import pytest
from plugin_packages import install

from conftest import run_cli
from kdbench import plugins
from kdbench.errors import PluginError, UnknownNameError


def write_plugin(folder, name, body):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text("import kdbench\n" + textwrap.dedent(body))
    return path


LOCAL_LOSS = """
from kdbench.losses.kd import KD

@kdbench.hookimpl
def register_losses(register):
    register("kd_local", KD, description="a local copy of KD",
             defaults={"w_ce": 0.5, "w_kd": 0.5, "T": 2.0}, taps=("logits",))
"""


def builtin_source(kind: str, name: str) -> str:
    """The built-in plugin module that registers ``name``, from its source."""
    source = plugins.get(kind, name).source
    assert source.startswith("builtin (") and source.endswith(")"), source
    return source[len("builtin ("):-1]


def test_builtins_are_plugins_with_their_module_as_source():
    reg = plugins.get_registry()
    for kind, name in [("model", "resnet20"), ("dataset", "digits"), ("loss", "kd"),
                       ("loss", "ce"), ("teacher_source", "full"),
                       ("teacher_source", "intermediate")]:
        entry = reg.get(kind, name)
        assert entry.source.startswith("builtin ("), entry.source
    module = builtin_source("loss", "kd")  # the built-in module whose hook registered it
    assert module in plugins.DEFAULT_PLUGINS
    assert hasattr(importlib.import_module(module), "register_losses")
    assert reg.failures == []


def test_local_folder_plugin_is_discovered_and_named(tmp_path, monkeypatch):
    path = write_plugin(tmp_path / "p", "mine", LOCAL_LOSS)
    monkeypatch.setenv("KDBENCH_PLUGINS_DIR", str(tmp_path / "p"))
    plugins.reset()
    entry = plugins.get("loss", "kd_local")
    assert entry.source == f"local ({path})"
    assert entry.description == "a local copy of KD"


def test_same_name_twice_is_an_error_naming_both_sources(tmp_path, monkeypatch):
    write_plugin(tmp_path / "p", "clash", """
        from kdbench.losses.kd import KD
        @kdbench.hookimpl
        def register_losses(register):
            register("kd", KD)
    """)
    monkeypatch.setenv("KDBENCH_PLUGINS_DIR", str(tmp_path / "p"))
    plugins.reset()
    with pytest.raises(PluginError) as err:
        plugins.get_registry()
    msg = str(err.value)
    assert "'kd' is registered twice" in msg
    plugins.reset()
    monkeypatch.delenv("KDBENCH_PLUGINS_DIR")
    assert f"builtin ({builtin_source('loss', 'kd')})" in msg and "clash.py" in msg
    assert "\n" not in msg


def test_broken_plugin_is_reported_and_the_rest_keep_working(tmp_path, monkeypatch):
    write_plugin(tmp_path / "p", "broken", "raise ImportError('needs libfoo')\n")
    write_plugin(tmp_path / "p", "good", LOCAL_LOSS)
    write_plugin(tmp_path / "p", "badreg", """
        @kdbench.hookimpl
        def register_models(register):
            raise RuntimeError("cannot build zoo")
    """)
    monkeypatch.setenv("KDBENCH_PLUGINS_DIR", str(tmp_path / "p"))
    plugins.reset()
    with pytest.warns(RuntimeWarning, match="needs libfoo"):
        reg = plugins.get_registry()
    failures = {f.plugin.rsplit("/", 1)[-1].split(" ")[0]: f.error for f in reg.failures}
    assert any("broken.py" in p for p in failures) and "ImportError: needs libfoo" in str(failures)
    assert "RuntimeError: cannot build zoo" in str(failures)
    assert "kd_local" in reg.names("loss") and "resnet20" in reg.names("model")


def test_unknown_name_lists_close_matches_and_choices():
    with pytest.raises(UnknownNameError) as err:
        plugins.get("loss", "kdd")
    msg = str(err.value)
    assert msg.startswith("unknown loss 'kdd'; did you mean kd")
    valid = msg.split("(valid: ")[1].rstrip(")").split(", ")
    assert {"ce", "kd"} <= set(valid) and valid == sorted(valid)
    with pytest.raises(UnknownNameError, match="did you mean resnet20"):
        plugins.get("model", "resnet21")


def test_namespace_entries_resolve_variants():
    reg = plugins.Registry()
    seen = []

    def validate(variant):
        if variant == "nope":
            raise UnknownNameError("model", f"ns/{variant}", ["ns/a"])

    reg.add("model", "ns/*", lambda variant, **kw: seen.append((variant, kw)), "test",
            validate=validate)
    reg.get("model", "ns/a").create(num_classes=3)
    assert seen == [("a", {"num_classes": 3})]
    with pytest.raises(UnknownNameError):
        reg.get("model", "ns/nope")
    with pytest.raises(UnknownNameError):
        reg.get("model", "other/a")


@pytest.fixture(scope="module")
def example_install(tmp_path_factory):
    """plugins/kdbench-example installed for real (pip) into a throwaway target folder."""
    return install("kdbench-example", tmp_path_factory.mktemp("site"))


def test_entry_point_plugin_lists_and_trains(example_install, tmp_path):
    env = {"PYTHONPATH": str(example_install)}
    env["KDBENCH_LOAD_PLUGINS"] = "kdbench-example"
    listed = run_cli("plugins", "--kind", "loss", env=env)
    assert listed.returncode == 0, listed.stderr
    line = next(l for l in listed.stdout.splitlines() if "mse_logits" in l)
    assert "kdbench-example" in line and "logit regression" in line
    trained = run_cli("run", "--loss", "mse_logits", "--dataset", "synthetic", "--student",
                      "resnet8", "--teacher-arch", "resnet8", "--epochs", "1",
                      "--set", "teacher.recipe.epochs=2", "--quiet", "--json",
                      "--results-dir", tmp_path / "r", env=env)
    assert trained.returncode == 0, trained.stderr
    import json
    record = json.loads(trained.stdout)
    assert record["status"] == "done" and record["config"]["loss"]["name"] == "mse_logits"
    assert record["config"]["loss"]["weights"] == {"w_ce": 1.0, "w_mse": 1.0}
    assert "train_mse" in record["metrics"]["curve"][0]


def test_a_third_party_adds_a_stage_an_evaluator_and_a_data_transform(example_install,
                                                                      tmp_path):
    """The example package's warm-up stage, evaluator and data transform in one run, with no
    change to kdbench: the stage runs first within the budget, the evaluator's metrics get
    last/best/curve in the record, the transform's report is kept."""
    import json

    env = {"PYTHONPATH": str(example_install), "KDBENCH_LOAD_PLUGINS": "kdbench-example"}
    listed = run_cli("plugins", env=env).stdout
    for kind, name in (("stage", "logit_warmup"), ("evaluator", "calibration"),
                       ("data_transform", "train_fraction")):
        assert any(l.split()[:3] == [kind, name, "kdbench-example"] for l in listed.splitlines())
    trained = run_cli("run", "--loss", "kd", "--dataset", "synthetic", "--student", "resnet8",
                      "--teacher-arch", "resnet8", "--epochs", "3", "--set",
                      "teacher.recipe.epochs=2", "--warmup", "logit_warmup:epochs=1",
                      "--eval", "calibration:bins=10", "--data-transform",
                      "train_fraction:fraction=0.5", "--quiet", "--json",
                      "--results-dir", tmp_path / "r", env=env)
    assert trained.returncode == 0, trained.stderr
    record = json.loads(trained.stdout)
    assert record["status"] == "done"
    assert [(s["name"], s["epochs"]) for s in record["stages"]] == [("logit_warmup", 1),
                                                                      ("main", 2)]
    curve = record["metrics"]["curve"]
    assert [r["stage"] for r in curve] == ["logit_warmup", "main", "main"]
    assert "train_mse" in curve[0] and "train_ce" not in curve[0]  # no label loss in warm-up
    assert "train_kd" in curve[1] and "train_ce" in curve[1]
    m = record["metrics"]
    assert all(0 <= r["ece"] <= 100 and 0 <= r["confidence"] <= 100 for r in curve)
    assert m["ece_last"] == curve[-1]["ece"] and "confidence_best" in m
    [t] = record["data"]["transforms"]
    assert t["name"] == "train_fraction" and t["report"] == {"kept": 128, "of": 256}
    assert record["data"]["train_size"] == 128
    assert record["config"]["eval"]["evaluators"] == [{"name": "accuracy"},
                                                      {"name": "calibration", "bins": 10}]


def test_load_plugins_allow_list_excludes_other_distributions(example_install):
    env = {"PYTHONPATH": str(example_install), "KDBENCH_LOAD_PLUGINS": ""}
    listed = run_cli("plugins", "--kind", "loss", env=env)
    assert listed.returncode == 0 and "mse_logits" not in listed.stdout
    env["KDBENCH_LOAD_PLUGINS"] = "some-other-plugin"
    assert "mse_logits" not in run_cli("plugins", env=env).stdout


def test_plugins_command_lists_kind_name_source_description(cli_runner):
    out = cli_runner("plugins").output
    rows = [l.split() for l in out.splitlines()[2:]]
    assert ["loss", "kd", "builtin"] == rows[[r[1] for r in rows].index("kd")][:3]
    assert {r[0] for r in rows} >= {"model", "dataset", "loss", "teacher_source"}


def test_local_plugin_commands_and_cli_flag(tmp_path):
    write_plugin(tmp_path / "p", "cmd", """
        import click
        @kdbench.hookimpl
        def register_commands(cli):
            @cli.command()
            def hello():
                "Say hello."
                click.echo("hello from a plugin")
    """)
    out = run_cli("--plugins-dir", tmp_path / "p", "hello")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "hello from a plugin"
