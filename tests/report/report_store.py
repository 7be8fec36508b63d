"""A small real results store for the report tests: two studies of tiny runs on the synthetic
dataset, made with the real runner and the real MI command.

- ``ablation/``: ce, kd from the full teacher (epoch 4 of 4), kd from its epoch-2 checkpoint
  (the checkpoint curve has two points), and a kde MI cache of that teacher trajectory (so the
  information plane and the selection layout apply);
- ``baseline/``: ce with seed 1.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from conftest import one_thread, tiny_overrides


def make_store(root: Path) -> dict[str, Any]:
    """Build the store under ``root``; returns its records by name and the trajectory key."""
    from kdbench import plugins
    from kdbench.config import build_config
    from kdbench.mi.commands import mi_command
    from kdbench.runner import run

    with pytest.MonkeyPatch.context() as mp, one_thread():
        mp.setenv("KDBENCH_LOAD_PLUGINS", "")
        for var in ("KDBENCH_PLUGINS_DIR", "KDBENCH_RESULTS_DIR", "KDBENCH_DATA_DIR"):
            mp.delenv(var, raising=False)
        plugins.reset()

        def tiny(folder: Path, **extra: Any) -> dict[str, Any]:
            cfg = build_config(tiny_overrides(folder, **{"recipe.epochs": 3, **extra}))
            return run(cfg, progress=False)

        ablation, baseline = root / "ablation", root / "baseline"
        records = {
            "ce": tiny(ablation, **{"loss.name": "ce"}),
            "kd_full": tiny(ablation, **{"loss.name": "kd", "teacher.source": "full"}),
            "kd_mid": tiny(ablation, **{"loss.name": "kd", "teacher.source": "intermediate",
                                        "teacher.epoch": 2}),
            "ce_seed1": tiny(baseline, **{"loss.name": "ce", "seed": 1}),
        }
        key = records["kd_full"]["teacher"]["trajectory"]
        mi_command(plot=None, as_json=False, trajectory=key, estimator="kde",
                   layer="embedding", samples=64, seed=0, repeats=1, options=(),
                   data_dir=None, device="cpu", results_dir=str(ablation), force=False,
                   quiet=True)
        plugins.reset()
    assert all(r["status"] == "done" for r in records.values())
    assert os.path.isdir(ablation / "teachers" / key / "mi")
    return {"records": records, "trajectory": key}
