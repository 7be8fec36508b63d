"""Tables and the code that made their runs: the ``code`` column (shown with ``--cols code``,
filtered with ``--where code=...``) and the warning when one cell mixes code versions."""

from __future__ import annotations

import warnings

import pytest

from kdbench.config import build_config
from kdbench.report.pivot import make_table
from kdbench.report.records import load_records, record_row
from kdbench.store import SCHEMA_VERSION, Store

COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER = "fedcba9876543210fedcba9876543210fedcba98"


def code(kdbench="0.3.0.dev0", git=COMMIT, plugins=None, torch="2.5.1"):
    return {"kdbench": kdbench, "git": git, "plugins": plugins or {}, "torch": torch,
            "torchvision": "0.20.1", "timm": None}


def write(store, run_id, seed, top1, *, code=None, env=None, loss="kd"):
    cfg = build_config({"loss.name": loss, "teacher.source": "full", "seed": seed}).to_dict()
    record = {"schema": SCHEMA_VERSION, "run_id": run_id, "status": "done", "config": cfg,
              "metrics": {"top1_last": top1, "top1_best": top1 + 1}, "teacher": {"epochs": [30]}}
    if code is not None:
        record["code"] = code
    if env is not None:
        record["env"] = env
    store.write_record(record)
    return record


def row(record_extra):
    cfg = build_config({"loss.name": "kd", "teacher.source": "full"}).to_dict()
    return record_row({"run_id": "r", "status": "done", "config": cfg, **record_extra})


def test_code_column_from_the_records_code():
    assert row({"code": code()})["code"] == "kdbench 0.3.0.dev0 @ 0123456"
    assert row({"code": code(git=COMMIT + "+dirty")})["code"] == \
        "kdbench 0.3.0.dev0 @ 0123456+dirty"
    # plugins sorted by name, as name==version; a plugin without a known version as ==?
    with_plugins = code(git=None, plugins={"zeta-kd": "1.0", "kdbench-example": "0.1.0",
                                           "local:mine.py": None})
    assert row({"code": with_plugins})["code"] == (
        "kdbench 0.3.0.dev0, kdbench-example==0.1.0, local:mine.py==?, zeta-kd==1.0")


def test_code_column_from_env_for_older_records_and_dash_when_unknown():
    env = {"kdbench": "0.2.0", "git": OTHER + "+dirty", "torch": "2.4.0", "python": "3.11"}
    assert row({"env": env})["code"] == "kdbench 0.2.0 @ fedcba9+dirty"
    assert row({"env": {"kdbench": "0.2.0", "git": None}})["code"] == "kdbench 0.2.0"
    assert row({"env": {"python": "3.11"}})["code"] == "-"
    assert row({})["code"] == "-"
    # code wins over env when a record has both
    assert row({"code": code(kdbench="0.3.0"), "env": env})["code"] == "kdbench 0.3.0 @ 0123456"


@pytest.fixture
def mixed_store(tmp_path):
    s = Store(tmp_path)
    write(s, "new0", 0, 70.0, code=code())
    write(s, "new1", 1, 72.0, code=code(plugins={"kdbench-example": "0.1.0"}))
    write(s, "old0", 2, 60.0, env={"kdbench": "0.2.0", "git": OTHER})
    return s


def test_cols_code_and_where_code_through_the_cli(cli_runner, mixed_store):
    res = cli_runner("table", "--results-dir", mixed_store.root, "--cols", "code")
    assert res.exit_code == 0, res.output
    header = [c.strip() for c in res.stdout.splitlines()[2].strip("|").split("|")]
    assert header == ["dataset", "student", "kdbench 0.2.0 @ fedcba9",
                      "kdbench 0.3.0.dev0 @ 0123456",
                      "kdbench 0.3.0.dev0 @ 0123456, kdbench-example==0.1.0"]
    assert "warning" not in res.stderr  # each column holds one code

    res = cli_runner("table", "--results-dir", mixed_store.root, "--cols", "", "--where",
                     "code=kdbench 0.3.0.dev0 @ 0123456, kdbench-example==0.1.0")
    assert res.exit_code == 0, res.output
    assert "72.00 (1)" in res.stdout and "1 runs" in res.stdout.splitlines()[0]
    res = cli_runner("table", "--results-dir", mixed_store.root, "--cols", "",
                     "--where", "code=kdbench 0.2.0 @ fedcba9")
    assert "60.00 (1)" in res.stdout and "1 runs" in res.stdout.splitlines()[0]


def test_a_cell_mixing_code_versions_warns(cli_runner, mixed_store):
    with pytest.warns(RuntimeWarning, match=r"mixes runs made by 3 different code versions "
                      r"\(kdbench 0\.2\.0; kdbench 0\.3\.0\.dev0, torch 2\.5\.1; kdbench "
                      r"0\.3\.0\.dev0, torch 2\.5\.1, kdbench-example==0\.1\.0\)"):
        make_table(load_records(mixed_store.root), cols=["loss"])
    res = cli_runner("table", "--results-dir", mixed_store.root)
    assert res.exit_code == 0, res.output
    assert "kdbench: warning: cell (dataset=digits, student=resnet20, loss=kd, " \
           "teacher=full) mixes runs made by 3 different code versions" in res.stderr
    assert "--cols code" in res.stderr


def test_torch_versions_differing_warn(tmp_path):
    s = Store(tmp_path)
    write(s, "a", 0, 70.0, code=code())
    write(s, "b", 1, 71.0, code=code(torch="2.6.0"))
    with pytest.warns(RuntimeWarning, match="2 different code versions"):
        make_table(load_records(s.root))


def test_only_the_git_commit_differing_does_not_warn(tmp_path):
    s = Store(tmp_path)
    write(s, "a", 0, 70.0, code=code())
    write(s, "b", 1, 72.0, code=code(git=OTHER + "+dirty"))
    df = load_records(s.root)
    assert sorted(df["code"]) == ["kdbench 0.3.0.dev0 @ 0123456",
                                  "kdbench 0.3.0.dev0 @ fedcba9+dirty"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = make_table(df)
    assert "71.00 ± 1.41 (2)" in out
    # the csv output keeps its columns
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        csv = make_table(df, fmt="csv")
    assert csv.splitlines()[0] == "dataset,student,loss,teacher,mean,std,n"


def test_hidden_columns_are_not_offered(tmp_path, cli_runner):
    s = Store(tmp_path)
    write(s, "a", 0, 70.0, code=code())
    res = cli_runner("table", "--results-dir", s.root, "--where", "nope=1")
    assert res.exit_code != 0
    assert "code" in res.output and "cell_code" not in res.output
