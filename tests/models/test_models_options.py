"""An architecture's own options (--student-opt/--teacher-opt; student_options and
teacher.model_options), the timm suggestion for a bare timm name, and the up-front warning for
a model that shrinks the data's images below 1×1."""

from __future__ import annotations

import pytest

from kdbench.config import build_config, resolve
from kdbench.errors import ConfigError, UnknownNameError
from kdbench.models.options import check_model_options, option_names
from kdbench.store import Store
from kdbench.teachers import trajectory as traj


def test_ids_of_configs_without_options_are_the_ones_they_always_had():
    """Made on main before the options existed (8b30a31's rules): the new fields at their
    default are left out of the id."""
    cfgs = [{}, {"data.name": "digits", "student": "timm/test_resnet", "teacher.arch": "resnet8"},
            {"teacher.weights": "/x/resnet32x4_last.pth", "teacher.arch": "resnet32x4",
             "student": "resnet8x4", "data.name": "synthetic"}]
    assert [build_config(c).run_id for c in cfgs] == [
        "618eeca4f9ba8467", "90fb44984fa06049", "e9ee67b8afd2a353"]


def test_options_are_checked_and_enter_the_id_and_the_trajectory_key():
    base = {"data.name": "digits", "student": "timm/test_resnet", "teacher.arch": "wrn_16_1"}
    plain = build_config(base)
    opted = build_config({**base, "student_options.drop_path_rate": 0.1,
                          "teacher.model_options.drop_rate": 0.3})
    assert opted.run_id != plain.run_id
    assert opted.student_options == {"drop_path_rate": 0.1}
    spec = traj.trajectory_spec(opted)
    assert spec["model_options"] == {"drop_rate": 0.3}
    assert "model_options" not in traj.trajectory_spec(plain)
    assert "drop_path_rate" in option_names("timm/test_resnet")
    assert "out_indices" in option_names("timm/test_resnet")
    assert option_names("mobilenetv2") == ["expand", "width"]
    with pytest.raises(ConfigError, match=r"student \{'drop_path_rate': 'high'\} do not build "
                                          r"'timm/test_resnet': "):
        check_model_options("timm/test_resnet", {"drop_path_rate": "high"}, "student")


def test_an_unknown_option_lists_the_valid_ones(tmp_path, cli_runner):
    results = tmp_path / "results"
    out = cli_runner("run", "--dataset", "digits", "--student", "timm/test_resnet",
                     "--student-opt", "drop_pth_rate=0.1", "--teacher-arch", "resnet8",
                     "--results-dir", results, "--quiet")
    assert out.exit_code == 2
    [line] = out.output.strip().splitlines()
    assert "unknown student option of 'timm/test_resnet' 'drop_pth_rate'; did you mean " \
           "drop_path_rate" in line
    assert "(valid: " in line and "global_pool" in line and "out_indices" in line
    out = cli_runner("run", "--dataset", "digits", "--student", "resnet8", "--teacher-arch",
                     "wrn_16_1", "--teacher-opt", "dropout=0.1", "--results-dir", results,
                     "--quiet")
    assert out.exit_code == 2
    assert "unknown teacher option of 'wrn_16_1' 'dropout'" in out.output
    assert "(valid: drop_rate)" in out.output
    assert not results.exists() or not list(Store(results).iter_records())


def test_options_reach_the_model_and_the_record(tmp_path, cli_runner):
    results = tmp_path / "results"
    out = cli_runner("run", "--dataset", "digits", "--student", "timm/test_resnet",
                     "--student-opt", "out_indices=[2,3,4]", "--student-opt", "drop_rate=0.25",
                     "--teacher-arch", "resnet8", "--loss", "at", "--epochs", "1",
                     "--set", "teacher.recipe.epochs=1", "--precision", "fp32",
                     "--device", "cpu", "--results-dir", results, "--quiet")
    assert out.exit_code == 0, out.output
    [(_, record)] = list(Store(results).iter_records())
    assert record["config"]["student_options"] == {"out_indices": [2, 3, 4], "drop_rate": 0.25}
    from kdbench.models import create_model

    model = create_model("timm/test_resnet", 10, 1, **record["config"]["student_options"])
    assert model.out_indices == [2, 3, 4] and model.model.drop_rate == 0.25


def test_a_bare_timm_name_suggests_the_timm_model():
    with pytest.raises(UnknownNameError) as err:
        resolve(build_config({"student": "resnet18"}))
    assert "did you mean" in str(err.value) and "timm/resnet18" in str(err.value)
    assert str(err.value).endswith("timm has 'resnet18': use timm/resnet18")
    with pytest.raises(UnknownNameError) as err:  # a name timm does not know either: no hint
        resolve(build_config({"student": "resnet19x"}))
    assert "timm has" not in str(err.value)


def test_an_imagenet_model_on_8x8_images_is_warned_up_front(tmp_path):
    from kdbench.data import load_dataset
    from kdbench.models import create_model
    from kdbench.runner.checks import warn_small_input

    digits = load_dataset("digits")
    with pytest.warns(RuntimeWarning, match=r"model 'timm/resnet10t' reduces its input 32× "
                                            r"before its last stage, so the 8×8 images of "
                                            r"dataset 'digits' leave less than 1×1 there; it "
                                            r"was made for 176×176 inputs; resize the data "
                                            r"\(at least 32×32\)"):
        warn_small_input(create_model("timm/resnet10t", 10, 1), "timm/resnet10t", digits)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_small_input(create_model("resnet8", 10, 1), "resnet8", digits)  # 4× of 8×8: fine


def test_a_spec_file_may_give_the_student_as_name_and_options():
    cfg = build_config(spec={"student": {"name": "timm/test_resnet",
                                         "options": {"drop_rate": 0.1}}, "dataset": "digits"})
    assert (cfg.student, cfg.student_options) == ("timm/test_resnet", {"drop_rate": 0.1})
    assert cfg.run_id == build_config({"student": "timm/test_resnet", "data.name": "digits",
                                       "student_options.drop_rate": 0.1}).run_id
    with pytest.raises(ConfigError, match=r"student as a mapping takes name and options, got "
                                          r"\['arch'\]"):
        build_config(spec={"student": {"arch": "resnet8"}})


def test_students_that_differ_in_their_options_train_in_lockstep():
    from kdbench.runner.groups import lockstep_groups

    base = {"data.name": "digits", "student": "wrn_16_1", "teacher.arch": "resnet8"}
    configs = [resolve(build_config(base)),
               resolve(build_config({**base, "student_options.drop_rate": 0.3})),
               resolve(build_config({**base, "seed": 1}))]
    assert lockstep_groups(configs) == [[0, 1], [2]]
