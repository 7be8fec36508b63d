"""Sweep files and their expansion: grid × runs, ids, de-duplication, inheritance, teachers, errors.

Nothing here trains: expansion resolves configs against the registries only.
"""

from __future__ import annotations

import json
import sys

import pytest
import yaml

from conftest import run_cli, tiny_overrides
from kdbench.config import build_config, resolve
from kdbench.errors import ConfigError, KDBenchError, UnknownNameError
from kdbench.sweep import expand, load_sweep, make_executor
from kdbench.sweep.executors import LocalExecutor, usable_cpus
from kdbench.sweep.plan import count_points, shipped
from kdbench.sweep.slurm import parse_minutes
from kdbench.teachers.trajectory import trajectory_key, trajectory_spec

BASE = {
    "data": {"name": "synthetic"}, "student": "resnet8",
    "teacher": {"arch": "resnet8", "recipe": {"epochs": 4, "batch_size": 64, "milestones": []},
                "save_every": 2},
    "recipe": {"epochs": 2, "batch_size": 64, "milestones": []},
    "precision": "fp32", "device": "cpu",
}


def write(path, data):
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def ids(plan):
    return [r.run_id for r in plan.runs]


def test_grid_times_runs_gives_the_ids_of_the_single_runs(tmp_path, results):
    f = write(tmp_path / "s.yaml", {
        "base": BASE,
        "runs": [{"student": "resnet8"}, {"student": "resnet20", "recipe.lr": 0.1}],
        "grid": {"loss.name": ["kd", "ce"], "seed": [0, 1]}})
    plan = expand(load_sweep(f), results_dir=results)
    assert len(plan.runs) == 8 and plan.duplicates == 0
    assert plan.axes == ["student", "recipe.lr", "loss.name", "seed"]
    # each id is the id `kdbench run` gives the same settings, computed without the sweep code
    expected = []
    for entry in ({"student": "resnet8"}, {"student": "resnet20", "recipe.lr": 0.1}):
        for loss in ("kd", "ce"):
            for seed in (0, 1):
                cfg = build_config(tiny_overrides(results, **entry, **{"loss.name": loss,
                                                                       "seed": seed}))
                expected.append(resolve(cfg).run_id)
    assert ids(plan) == expected
    run = plan.runs[5]
    assert run.label == {"student": "resnet20", "recipe.lr": 0.1, "loss.name": "kd", "seed": 1}
    assert run.config.recipe.lr == 0.1 and run.config.student == "resnet20"


def test_ids_do_not_depend_on_order_or_spelling(tmp_path, results):
    a = write(tmp_path / "a.yaml", {
        "base": BASE, "grid": {"loss.name": ["kd", "ce"], "seed": [0, 1, 2]},
        "runs": [{"teacher.arch": "resnet8"}, {"teacher.arch": "resnet20"}]})
    nested_base = json.loads(json.dumps(BASE))
    b = write(tmp_path / "b.yaml", {
        "grid": {"seed": [2, 0, 1], "loss": [{"name": "ce"}, {"name": "kd"}]},
        "runs": [{"teacher": {"arch": "resnet20"}}, {"teacher": {"arch": "resnet8"}}],
        "base": dict(reversed(list(nested_base.items())))})
    pa = expand(load_sweep(a), results_dir=results)
    pb = expand(load_sweep(b), results_dir=results)
    assert sorted(ids(pa)) == sorted(ids(pb))
    # ce needs no teacher: its runs with either teacher arch are one run
    assert len(pa.runs) == 9 and pa.duplicates == 3


def test_ids_are_stable_across_processes(tmp_path, results):
    f = write(tmp_path / "s.yaml", {"base": BASE, "grid": {"seed": [0, 1], "loss.name": ["kd"]}})
    here = ids(expand(load_sweep(f), results_dir=results))
    proc = run_cli("sweep", f, "--dry-run", "--results-dir", results,
                   env={"PYTHONHASHSEED": "12345"})
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if line[:16] in here]
    assert [row[0] for row in rows] == here
    assert all("pending" in row for row in rows)
    assert "resnet8-synthetic-s0-" in proc.stdout  # the teacher they need
    # paths are not part of a run's identity
    assert ids(expand(load_sweep(f), results_dir=tmp_path / "elsewhere", data_dir="/x")) == here


def test_set_wins_over_grid_and_collapses_an_axis(tmp_path, results):
    f = write(tmp_path / "s.yaml", {"base": BASE, "grid": {"seed": [0, 1, 2]},
                                    "runs": [{"recipe.epochs": 5}]})
    plan = expand(load_sweep(f), results_dir=results, sets={"seed": 1, "recipe.epochs": 1})
    assert len(plan.runs) == 1 and plan.duplicates == 2
    assert plan.runs[0].config.seed == 1 and plan.runs[0].config.recipe.epochs == 1


def test_parts_and_extends_merge_as_documented(tmp_path, results):
    parent = write(tmp_path / "parent.yaml", {
        "description": "parent", "base": BASE, "grid": {"seed": [0, 1], "loss.name": ["kd"]},
        "parts": [{"name": "a", "runs": [{"student": "resnet8"}]},
                  {"name": "b", "runs": [{"student": "resnet20"}],
                   "grid": {"loss.name": ["ce"]}}]})
    assert count_points(load_sweep(parent)) == 4
    child = write(tmp_path / "child.yaml", {
        "extends": "parent.yaml", "description": "quick",
        "base": {"recipe": {"epochs": 1}}, "grid": {"seed": None}})
    sweep = load_sweep(child)
    assert sweep["name"] == "child" and sweep["description"] == "quick"
    plan = expand(sweep, results_dir=results)
    assert [(r.part, r.config.student, r.config.loss.name, r.config.recipe.epochs)
            for r in plan.runs] == [("a", "resnet8", "kd", 1), ("b", "resnet20", "ce", 1)]
    assert plan.runs[1].config.teacher is None  # ce needs none


def test_teachers_are_planned_once_with_every_epoch_their_runs_need(tmp_path, results):
    f = write(tmp_path / "s.yaml", {
        "base": BASE, "grid": {"seed": [0, 1]},
        "runs": [{"teacher.source": "full"},
                 {"teacher.source": "intermediate", "teacher.save_epochs": [1, 3]},
                 {"loss.name": "ce"},
                 {"teacher.source": "independent", "teacher.options.members_count": 2},
                 {"loss.name": "dml", "teacher.source": "peers"}]})
    plan = expand(load_sweep(f), results_dir=results)
    cfg = plan.runs[0].config
    keys = [trajectory_key(trajectory_spec(cfg, seed)) for seed in (0, 1)]
    assert list(plan.teachers) == keys  # seed 1: the independent ensemble's second member
    assert plan.teachers[keys[0]].save_epochs == [1, 2, 3, 4]
    assert [len(r.teachers) for r in plan.runs] == [1, 1, 1, 1, 0, 0, 2, 2, 0, 0]


@pytest.mark.parametrize("content, message", [
    ({"base": BASE, "gird": {}}, "unknown key in sweep file"),
    ({"base": BASE, "grid": {"seed": 3}}, "grid axis 'seed' must be a non-empty list"),
    ({"base": BASE, "runs": {"seed": 1}}, "runs must be a non-empty list"),
    ({"base": BASE, "grid": {"loss.name": ["kd", "kdd"]}}, "run loss.name=kdd: unknown loss"),
    ({"base": BASE, "grid": {"recipe.epochz": [1]}}, "unknown config field 'recipe.epochz'"),
    ({"base": BASE, "extends": "s.yaml"}, "extends itself"),
])
def test_bad_sweep_files_are_one_line_errors(tmp_path, results, content, message):
    f = write(tmp_path / "s.yaml", content)
    with pytest.raises(KDBenchError, match=message.replace("(", r"\(")) as info:
        expand(load_sweep(f), results_dir=results)
    assert "\n" not in str(info.value)


def test_unknown_sweep_name_lists_the_shipped_ones():
    with pytest.raises(UnknownNameError, match="unknown sweep 'repdistiler"):
        load_sweep("repdistiler-cifar100")
    with pytest.raises(ConfigError, match="does not exist"):
        load_sweep("nope/missing.yaml")


def test_executor_errors_say_what_to_do(monkeypatch):
    with pytest.raises(UnknownNameError, match="pip install kdbench-ray"):
        make_executor("ray")
    with pytest.raises(ConfigError, match="option 'partition' does not apply to executor "
                                          "'local' .*jobs, gpus"):
        make_executor("local", partition="gpu")
    monkeypatch.setitem(sys.modules, "submitit", None)  # as if the extra were not installed
    with pytest.raises(ConfigError, match=r"pip install 'kdbench\[slurm\]'"):
        make_executor("slurm")


def test_local_executor_divides_threads_and_gpu_slots():
    ex = LocalExecutor(gpus="0,1", runs_per_gpu=2)
    assert ex.slots == ["0", "0", "1", "1"] and ex.parallel == 4
    assert ex.threads == max(1, usable_cpus() // 4)
    ex = LocalExecutor(gpus="1", jobs=5)
    assert ex.slots == ["1"] and ex.parallel == 1
    assert LocalExecutor(jobs=2).threads == max(1, usable_cpus() // 2)
    with pytest.raises(ConfigError, match="--gpus 'a'"):
        LocalExecutor(gpus="0,a")


@pytest.mark.parametrize("text, minutes", [(90, 90), ("90", 90), ("1:30:00", 90),
                                           ("45:30", 46), ("2-00:00:00", 2880), ("1-2", 1560),
                                           ("1-02:30", 1590)])
def test_slurm_time_formats(text, minutes):
    assert parse_minutes(text) == minutes


def test_slurm_time_rejects_nonsense():
    with pytest.raises(ConfigError, match="not a Slurm time"):
        parse_minutes("soon")


def test_list_shows_every_shipped_sweep(cli_runner):
    result = cli_runner("sweep", "--list")
    assert result.exit_code == 0
    names = list(shipped())
    assert names and all(name in result.output for name in names)


@pytest.mark.parametrize("name", sorted(shipped()))
def test_shipped_sweeps_expand_against_the_registry(name, results):
    sweep = load_sweep(name)
    plan = expand(sweep, results_dir=results)
    assert len(plan.runs) + plan.duplicates == count_points(sweep)
    assert plan.description
    if name.endswith("-quick"):  # CPU-sized: embedded data, the quick preset
        assert {r.config.data.name for r in plan.runs} <= {"digits", "cifar10"}
        assert {r.config.preset for r in plan.runs} == {"quick"}
        assert name[: -len("-quick")] in shipped()
