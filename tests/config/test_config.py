"""Config layering, validation, resolution and the run id."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO
from kdbench.config import RunConfig, build_config, parse_assignments, resolve
from kdbench.errors import ConfigError


def test_layers_preset_then_spec_then_flags():
    c = build_config({"preset": "repdistiller"})
    assert (c.recipe.epochs, c.recipe.lr, c.recipe.milestones, c.recipe.batch_size) == \
        (240, 0.05, [150, 180, 210], 64)
    c = build_config({"recipe.epochs": 7, "recipe.lr": None},
                     spec={"preset": "checkpointkd", "recipe": {"epochs": 100, "lr": 0.2}})
    assert c.recipe.epochs == 7          # flag beats spec
    assert c.recipe.lr == 0.2            # None flag does not clobber the spec
    # the preset's step (every 60 of 200 epochs) follows the epochs asked for: 7 → every 2
    assert c.recipe.nesterov and c.recipe.schedule == "step" and c.recipe.step_size == 2
    assert c.teacher.recipe.epochs == 200 and c.teacher.checkpoint_epochs()[:2] == [20, 40]


def test_preset_loss_and_architecture_defaults():
    c = resolve(build_config({"preset": "checkpointkd", "loss.name": "kd",
                              "loss.weights.w_kd": 0.7}))
    assert c.loss.weights == {"w_ce": 0.5, "w_kd": 0.7} and c.loss.options["T"] == 5.0
    assert resolve(build_config({"preset": "repdistiller"})).loss.options["T"] == 4.0
    from kdbench.config.layering import _preset_layers
    layers = _preset_layers("repdistiller", "mobilenetv2", "kd")
    assert {"recipe": {"lr": 0.01}} in layers
    assert {"recipe": {"lr": 0.01}} not in _preset_layers("repdistiller", "resnet20", "kd")


def test_resolve_fills_defaults_and_drops_teacher_for_ce():
    c = resolve(build_config({"loss.name": "ce"}))
    assert c.teacher is None and c.loss.weights == {"w_ce": 1.0}
    kd = resolve(build_config({"loss.name": "kd"}))
    assert kd.loss.weights == {"w_ce": 0.1, "w_kd": 0.9} and kd.loss.options["T"] == 4.0
    # the config keeps the precision asked for; the machine resolves it when it computes
    assert kd.precision == "auto" and kd.resolved_precision in ("fp32", "bf16")


def test_run_id_is_canonical():
    a = resolve(build_config({"loss.name": "kd"}))
    b = resolve(build_config({"loss.name": "kd", "loss.weights.w_kd": 0.9, "device": "cpu",
                              "results_dir": "/elsewhere", "data.dir": "/data"}))
    assert a.run_id == b.run_id  # same experiment: default given explicitly, other paths/device
    c = resolve(build_config({"loss.name": "kd", "seed": 1}))
    assert c.run_id != a.run_id and len(a.run_id) == 16
    assert RunConfig.from_dict(a.to_dict()).run_id == a.run_id


def test_run_id_is_stable_across_processes():
    code = ("from kdbench.config import build_config, resolve;"
            "print(resolve(build_config({'loss.name': 'kd', 'seed': 3})).run_id)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin",
                                                    "KDBENCH_LOAD_PLUGINS": ""})
    assert out.stdout.strip() == resolve(build_config({"loss.name": "kd", "seed": 3})).run_id


@pytest.mark.parametrize("overrides, match", [
    ({"recipe.epochs": "ten"}, "recipe.epochs must be an integer, got 'ten'"),
    ({"recipe.epochs": 2.5}, "recipe.epochs must be an integer"),
    ({"recipe.nesterov": "maybe"}, "recipe.nesterov must be true or false"),
    ({"recipe.lrr": 0.1}, "unknown config field 'recipe.lrr'; did you mean recipe.lr"),
    ({"studnet": "resnet20"}, "unknown config field 'studnet'; did you mean student"),
])
def test_bad_values_are_one_line_errors(overrides, match):
    with pytest.raises(ConfigError, match=match) as err:
        build_config(overrides)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("overrides, match", [
    ({"loss.name": "kdd"}, "unknown loss 'kdd'; did you mean kd"),
    ({"student": "resnet21"}, "unknown model 'resnet21'"),
    ({"teacher.arch": "resnet57"}, "unknown model 'resnet57'"),
    ({"data.name": "digit"}, "unknown dataset 'digit'; did you mean digits"),
    ({"teacher.source": "ful"}, "unknown teacher source 'ful'; did you mean full"),
    ({"preset": "quik"}, "unknown preset 'quik'; did you mean quick"),
    ({"precision": "fp8"}, "unknown precision 'fp8'"),
    ({"recipe.schedule": "cosin"}, "unknown recipe.schedule 'cosin'; did you mean cosine"),
    ({"loss.weights.w_kld": 1}, "loss 'kd' has no weight 'w_kld' \\(valid: w_ce, w_kd\\)"),
    ({"recipe.epochs": 0}, "recipe.epochs must be >= 1"),
    ({"teacher.save_epochs": [5, 99]}, "teacher.save_epochs \\[99\\] outside 1..30"),
])
def test_resolve_rejects_bad_names_and_values(overrides, match):
    with pytest.raises(ConfigError, match=match):
        resolve(build_config(overrides))


def test_parse_assignments():
    assert parse_assignments(["T=4", "name=abc", "xs=[1, 2]", "flag=true"], "--opt") == \
        {"T": 4, "name": "abc", "xs": [1, 2], "flag": True}
    with pytest.raises(ConfigError, match="malformed --w 'w_kd'"):
        parse_assignments(["w_kd"], "--w")
    # YAML 1.1 reads 2:4 as the base-60 number 124; on a command line it is a pair of indices
    assert parse_assignments(["a=2:4", "b=0:2,1:3", "c=1:2:3", "d=12"], "--set") == \
        {"a": "2:4", "b": "0:2,1:3", "c": "1:2:3", "d": 12}


def test_checkpoint_epochs():
    c = build_config({"teacher.recipe.epochs": 25, "teacher.save_every": 0})
    assert c.teacher.checkpoint_epochs() == [2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 25]
    c = build_config({"teacher.recipe.epochs": 10, "teacher.save_every": 4})
    assert c.teacher.checkpoint_epochs() == [4, 8, 10]  # the last epoch is always saved
    c = build_config({"teacher.recipe.epochs": 10, "teacher.save_epochs": [7, 2]})
    assert c.teacher.checkpoint_epochs() == [2, 7, 10]
