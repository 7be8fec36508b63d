"""Records know their code (issue #28, item 2): the code identity in every record, and a done
record made by other code is never returned as if it were this code's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import REPO, tiny_overrides
from kdbench import plugins
from kdbench.config import build_config
from kdbench.errors import ConfigError
from kdbench.runner import run

pytestmark = pytest.mark.usefixtures("single_thread")


def fake_distribution(site: Path, version: str) -> None:
    """``kdbench-example`` as if pip had installed it at ``version``: its module and a
    dist-info folder with its entry point (what importlib.metadata reads)."""
    site.mkdir(exist_ok=True)
    if not (site / "kdbench_example").exists():
        shutil.copytree(REPO / "plugins" / "kdbench-example" / "kdbench_example",
                        site / "kdbench_example")
    for old in site.glob("kdbench_example-*.dist-info"):
        shutil.rmtree(old)
    info = site / f"kdbench_example-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: kdbench-example\n"
                                   f"Version: {version}\n")
    (info / "entry_points.txt").write_text("[kdbench]\nexample = kdbench_example\n")


@pytest.fixture
def example(tmp_path, monkeypatch):
    site = tmp_path / "site"
    fake_distribution(site, "0.1.0")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("KDBENCH_LOAD_PLUGINS", "kdbench-example")
    plugins.reset()

    def bump(version: str) -> None:
        fake_distribution(site, version)
        plugins.reset()
    return bump


def config(results):
    return build_config(tiny_overrides(results, **{"recipe.epochs": 1,
                                                   "loss.name": "mse_logits"}))


def test_a_record_holds_its_code_identity(example, results):
    import torch

    record = run(config(results), progress=False)
    code = record["code"]
    assert code["kdbench"] and code["torch"] == torch.__version__
    assert code["plugins"] == {"kdbench-example": "0.1.0"}  # built-ins are kdbench's own
    assert {"git", "torchvision", "timm"} <= set(code)


def test_a_plugin_version_change_is_announced_and_never_reused_silently(example, results,
                                                                       cli_runner):
    cfg = config(results)
    first = run(cfg, progress=False)
    with pytest.warns(RuntimeWarning, match=f"run {cfg.run_id} reused: its record was made"):
        assert run(cfg, progress=False) == first  # same code: reused, and said so
    example("0.2.0")
    # by default: an error naming the change and the two choices, nothing trained
    with pytest.raises(ConfigError, match=r"made by other code \(plugin kdbench-example 0\.1\.0 "
                                          r"→ 0\.2\.0.*choose --reuse .* --rerun-changed"):
        run(cfg, progress=False)
    spec = results / "spec.json"
    spec.write_text(json.dumps(cfg.to_dict()))
    asked = cli_runner("run", "--spec", spec, "--quiet")
    assert asked.exit_code == 2 and "made by other code" in asked.output
    assert len(asked.output.strip().splitlines()) == 1
    with pytest.warns(RuntimeWarning, match="reused although its record was made by other "
                                            "code .*kdbench-example 0.1.0 → 0.2.0"):
        assert run(cfg, progress=False, changed="reuse") == first
    with pytest.warns(RuntimeWarning, match="made by other code .* it is made again"):
        again = run(cfg, progress=False, changed="rerun")
    assert again["created"] != first["created"] or again["cost"] != first["cost"]
    assert again["code"]["plugins"] == {"kdbench-example": "0.2.0"}
    assert again["metrics"]["curve"] == first["metrics"]["curve"]  # same config, same numbers


def test_a_sweep_asks_too(example, results, tmp_path):
    from kdbench.sweep import expand, make_executor, run_sweep

    cfg = config(results)
    run(cfg, progress=False)
    example("0.2.0")
    plan = expand({"base": {k: v for k, v in cfg.to_dict().items() if k != "results_dir"}},
                  results_dir=results)
    with pytest.raises(ConfigError, match="1 of the sweep's 1 runs have finished records made "
                                          "by other code"):
        run_sweep(plan, make_executor("inline"), progress=False)
    said = []
    summary = run_sweep(plan, make_executor("inline"), progress=False, changed="reuse",
                        warn=said.append)
    assert summary.skipped == 1 and "they are reused" in said[0]
