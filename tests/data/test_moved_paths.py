"""The old module paths of the data, evaluator and model rooms (kdbench < 0.3) keep working for
one release: they warn, naming the new home, and give the very objects the new modules hold."""

from __future__ import annotations

import importlib
import sys

import pytest


@pytest.mark.parametrize("old, name, new", [
    ("kdbench.data.robust", "CLEAN", "kdbench.data.label_noise"),
    ("kdbench.data.robust", "Imbalance", "kdbench.data.imbalance"),
    ("kdbench.data.corrupt", "corrupt_labels", "kdbench.data.label_noise"),
    ("kdbench.data.corrupt", "imbalance_indices", "kdbench.data.imbalance"),
    ("kdbench.data.builtin", "fit_size", "kdbench.data.datasets"),
    ("kdbench.data.transforms", "apply_transforms", "kdbench.data"),
    ("kdbench.data.transforms", "Subset", "kdbench.data.subset"),
    ("kdbench.evaluators.builtin", "Accuracy", "kdbench.evaluators.accuracy"),
    ("kdbench.evaluators.robust", "Memorisation", "kdbench.evaluators.memorisation"),
    ("kdbench.evaluators.robust", "LongTail", "kdbench.evaluators.longtail"),
    ("kdbench.evaluators.robustness", "memorisation", "kdbench.evaluators.memorisation"),
    ("kdbench.evaluators.robustness", "shot_groups", "kdbench.evaluators.longtail"),
    ("kdbench.models.zoo", "ZOO", "kdbench.models.registry"),
])
def test_old_paths_warn_and_give_the_same_objects(monkeypatch, old, name, new):
    monkeypatch.delitem(sys.modules, old, raising=False)
    with pytest.warns(DeprecationWarning, match=f"{old} is deprecated.*{new}"):
        module = importlib.import_module(old)
    assert getattr(module, name) is getattr(importlib.import_module(new), name)
