"""Shared fixtures: hermetic plugin loading, temporary stores, tiny configs, real data paths."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from kdbench import plugins
from kdbench.config import build_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def hermetic(monkeypatch):
    """No installed third-party plugins, no local plugins folder, no stray env settings, torch
    on one thread (subprocesses inherit OMP_NUM_THREADS=1)."""
    monkeypatch.setenv("KDBENCH_LOAD_PLUGINS", "")
    for var in ("KDBENCH_PLUGINS_DIR", "KDBENCH_RESULTS_DIR", "KDBENCH_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    plugins.reset()
    with one_thread():  # tiny models: one thread is faster than two spin-waiting ones
        yield
    plugins.reset()


@pytest.fixture
def results(tmp_path) -> Path:
    return tmp_path / "results"


def tiny_overrides(results_dir: Path, /, **extra: Any) -> dict[str, Any]:
    """A run on the synthetic dataset that trains in about a second (teacher included)."""
    base = {
        "data.name": "synthetic", "student": "resnet8", "teacher.arch": "resnet8",
        "recipe.epochs": 2, "recipe.batch_size": 64, "recipe.milestones": [],
        "teacher.recipe.epochs": 4, "teacher.recipe.batch_size": 64,
        "teacher.recipe.milestones": [], "teacher.save_every": 2,
        "precision": "fp32", "device": "cpu", "results_dir": str(results_dir),
    }
    base.update(extra)
    return base


@pytest.fixture
def tiny(results):
    """``tiny(**dotted_overrides) -> RunConfig`` on synthetic data in a temporary store."""
    def make(**extra: Any):
        return build_config(tiny_overrides(results, **extra))
    return make


@pytest.fixture
def cli_runner():
    """``invoke(*args) -> click Result`` running the real CLI in-process."""
    from kdbench.cli import cli

    runner = CliRunner()

    def invoke(*args: str, **kwargs: Any):
        return runner.invoke(cli, [str(a) for a in args], catch_exceptions=False, **kwargs)
    return invoke


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None
            ) -> subprocess.CompletedProcess:
    """The CLI in a fresh interpreter (``python -m kdbench``): exit codes and stderr as users see
    them, and plugin discovery from scratch."""
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO)] + ([full_env["PYTHONPATH"]] if full_env.get("PYTHONPATH") else []))
    return subprocess.run([sys.executable, "-m", "kdbench", *map(str, args)], env=full_env,
                          cwd=cwd, capture_output=True, text=True, timeout=600,
                          preexec_fn=_interruptible)


def _interruptible() -> None:
    """Ctrl-C as in a terminal: a test suite started in the background (``make test &``)
    inherits an ignored SIGINT, which the Ctrl-C tests' child would keep."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def cifar10_dir() -> Path:
    """The offline CIFAR-10 copy (train.npz/test.npz); skipped where it is not present."""
    candidates = [os.environ.get("KDBENCH_TEST_CIFAR10"), REPO.parent / "shared/data/cifar10",
                  Path("/work/shared/data/cifar10")]
    for c in candidates:
        if c and (Path(c) / "train.npz").is_file():
            return Path(c)
    pytest.skip("no CIFAR-10 copy here (set KDBENCH_TEST_CIFAR10)")


@contextmanager
def one_thread():
    """torch on one thread, kept there by OMP_NUM_THREADS (the runner's set_threads respects it)."""
    import torch

    before, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        if env is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = env


@pytest.fixture
def single_thread():
    """Tiny models train several times faster on one thread than on a shared, busy machine's
    cores (no thread spin-waits); results do not depend on it. Opt in per module with
    ``pytestmark = pytest.mark.usefixtures("single_thread")``."""
    with one_thread():
        yield


@pytest.fixture
def local_plugin(tmp_path, monkeypatch):
    """``local_plugin(source, name="plugin.py") -> folder``: write a plugin module into a fresh
    local plugins folder and load plugins from it, as a user's ``--plugins-dir`` would."""
    folder = tmp_path / "local-plugins"

    def write(source: str, name: str = "plugin.py") -> Path:
        folder.mkdir(exist_ok=True)
        (folder / name).write_text(source)
        monkeypatch.setenv("KDBENCH_PLUGINS_DIR", str(folder))
        plugins.reset()
        return folder
    return write


#: a plugin that interrupts a run (KeyboardInterrupt, as Ctrl-C) after a chosen epoch
STOPPER = """
import kdbench

STOP = {"after": None}

@kdbench.hookimpl
def kdbench_epoch_end(run_id, epoch, metrics):
    if STOP["after"] == epoch:
        STOP["after"] = None
        raise KeyboardInterrupt
"""


@pytest.fixture
def stopper(local_plugin):
    """The STOPPER plugin loaded; set ``stopper["after"] = epoch`` to interrupt after it."""
    import sys

    local_plugin(STOPPER, "stopper.py")
    plugins.get_registry()
    return sys.modules["kdbench_local_plugins.stopper"].STOP
