"""Helpers for the tests of the plugin packages beside kdbench (``plugins/kdbench-*``): install
one for real, and the test-only plugins several of those tests load."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO
from kdbench import plugins


def install(package: str, target: Path) -> Path:
    """``plugins/<package>`` installed with pip into ``target`` (offline: no index, no
    dependencies fetched, no build isolation), a folder to put on ``sys.path`` or
    ``PYTHONPATH``; the package's dependencies come with ``make install``."""
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                           "--no-build-isolation", "--no-index", "--target", str(target),
                           str(REPO / "plugins" / package)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return target


def load_only(monkeypatch, site: Path, distribution: str) -> None:
    """Plugins from the installed ``site`` folder, and of the installed distributions only
    ``distribution`` (``KDBENCH_LOAD_PLUGINS``), from the next registry on."""
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("KDBENCH_LOAD_PLUGINS", distribution)
    plugins.reset()


def run_logged(cli_runner, results: Path, logger: str) -> dict:
    """The record of a 3-epoch KD run on synthetic data (resnet8 from a resnet8 trained 2
    epochs) logged to ``logger``, which must not have been switched off with a warning."""
    done = cli_runner("run", "--dataset", "synthetic", "--student", "resnet8",
                      "--teacher-arch", "resnet8", "--loss", "kd", "--epochs", "3", "--set",
                      "teacher.recipe.epochs=2", "--log", logger, "--quiet", "--json",
                      "--results-dir", results)
    assert done.exit_code == 0, done.output
    assert f"logger {logger!r}" not in done.output  # no warning: it did not fail
    return json.loads(done.stdout)


#: A logger that interrupts its run (as Ctrl-C would) the first time it hears of epoch 2, and
#: remembers the run in ``KILLED``.
INTERRUPT = '''
import kdbench

KILLED = []


class Interrupt:
    """Interrupts the run (as Ctrl-C would) the first time it hears of epoch 2."""

    def __init__(self, results_dir):
        pass

    def start(self, record):
        pass

    def epoch(self, run_id, row):
        if row["epoch"] == 2 and not KILLED:
            KILLED.append(run_id)
            raise KeyboardInterrupt

    def end(self, record):
        pass


@kdbench.hookimpl
def register_loggers(register):
    register("interrupt", Interrupt)
'''
