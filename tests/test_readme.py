"""The README's examples work as written: its demo loop stops at the first failed run (as
``make demo`` does), its loss example gets its options from ``--opt``, and it names no
machine-specific path."""

from __future__ import annotations

import json
import re
import subprocess
import textwrap

import pytest

from conftest import REPO, run_cli

README = (REPO / "README.md").read_text()


def block_after(marker: str, lang: str) -> str:
    start = README.index(marker)
    m = re.compile(rf"```{lang}\n(.*?)```", re.S).search(README, start)
    assert m, f"no {lang} block after {marker!r}"
    return m.group(1)


@pytest.mark.parametrize("fail_at", [1, 2, 5])
def test_the_demo_loop_stops_at_the_first_failed_run(tmp_path, fail_at):
    loop = block_after("## Worked example", "bash")
    assert "set -e" in loop
    stub = textwrap.dedent(f"""
        n=0
        kdbench() {{
          n=$((n + 1)); echo "$1 $n" >> {tmp_path}/calls
          [ "$n" -ne {fail_at} ]
        }}
    """)
    done = subprocess.run(["bash", "-c", stub + loop], capture_output=True, text=True)
    calls = (tmp_path / "calls").read_text().split("\n")[:-1]
    assert done.returncode != 0
    assert calls == [f"run {i}" for i in range(1, fail_at + 1)]  # nothing after, no table


def test_make_demo_stops_at_the_first_failed_run():
    done = subprocess.run(["make", "-o", "install", "demo", "DEMO_RUN=false",
                           "KDB=echo TABLE"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode != 0 and "TABLE" not in done.stdout


def test_the_readme_loss_gets_its_options(tmp_path):
    code = block_after("**A loss**", "python")
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "mse.py").write_text(code)
    done = run_cli("run", "--dataset", "synthetic", "--student", "resnet8", "--teacher-arch",
                   "resnet8", "--loss", "mse_logits", "--opt", "T=2", "--w", "w_mse=0.5",
                   "--epochs", "1", "--set", "teacher.recipe.epochs=1", "--device", "cpu",
                   "--quiet", "--json", "--no-keep", "--results-dir", tmp_path / "r",
                   env={"KDBENCH_PLUGINS_DIR": str(plugins), "KDBENCH_LOAD_PLUGINS": ""})
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    loss = record["config"]["loss"]
    assert loss["options"] == {"T": 2.0} and loss["weights"] == {"w_ce": 1.0, "w_mse": 0.5}
    assert "train_mse" in record["metrics"]["curve"][0] and record["weights"] is None


def test_no_machine_paths_in_the_readme_and_docs():
    texts = {p: p.read_text() for p in [REPO / "README.md", *(REPO / "docs").glob("*.md")]}
    for path, text in texts.items():
        found = re.findall(r"(?<![\w.])/(?:work|home|tmp|Users|root|mnt)/[\w./-]+", text)
        assert not found, f"{path.name}: machine paths {found[:3]}"
