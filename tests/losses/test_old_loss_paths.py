"""kdbench 0.2's loss modules keep working for one release: each old path imports, warns
DeprecationWarning naming its new home, and gives the very same objects as the new modules."""

from __future__ import annotations

import importlib
import pathlib
import sys

import pytest

import kdbench.losses
from kdbench.losses import base, catalogue, compose, connectors, dkd, kd, modifiers, pkt_indistill
from kdbench.losses.ce import CE


def first_import(old: str):
    """Import ``old`` as if for the first time (the finder warns on a first import only)."""
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} is deprecated .* import from kdbench"):
        return importlib.import_module(old)


# the names other modules (and kdbench 0.2's plugins) import through the old paths
OLD_NAMES = [
    ("functional", "kd", kd.kd), ("functional", "dkd", dkd.dkd),
    ("functional", "pool_to_common", base.pool_to_common),
    ("logit", "CE", CE), ("logit", "KD", kd.KD), ("logit", "arch_key", base.arch_key),
    ("plugin", "KD", kd.KD), ("plugin", "CE", CE), ("plugin", "register_losses",
                                                     catalogue.register_losses),
    ("modern_plugin", "MODIFIERS", modifiers.MODIFIERS),
    ("modern_plugin", "LS_TABLE", modifiers.LS_TABLE),
    ("functional_modern", "standardize", modifiers.standardize),
    ("modern_logit", "CurriculumTemperature", modifiers.CurriculumTemperature),
    ("indistill", "curriculum_epochs", pkt_indistill.curriculum_epochs),
    ("indistill", "layer_mse", pkt_indistill.layer_mse),
    ("indistill_plugin", "PKTInDistill", pkt_indistill.PKTInDistill),
    ("combine", "Combined", compose.Combined),
    ("connectors_modern", "ConvBN", connectors.ConvBN),
]


@pytest.mark.parametrize("leaf, name, new", OLD_NAMES)
def test_an_old_path_warns_and_gives_the_same_object(leaf, name, new):
    module = first_import(f"kdbench.losses.{leaf}")
    assert getattr(module, name) is new


def test_from_import_of_an_old_module_works():
    sys.modules.pop("kdbench.losses.functional", None)
    vars(kdbench.losses).pop("functional", None)
    with pytest.warns(DeprecationWarning, match="kdbench.losses.functional is deprecated"):
        from kdbench.losses import functional as KF
    assert KF.kd is kd.kd


def test_plain_renames_are_the_new_modules_themselves():
    assert first_import("kdbench.losses.combine") is compose
    assert first_import("kdbench.losses.connectors_modern") is connectors
    # kdbench.plugins may list the old built-in plugin: it must be the module with the hook
    assert first_import("kdbench.losses.plugin") is catalogue


def test_every_old_module_is_in_moved_and_no_new_name_is_modern_functional_or_plugin():
    old = {"functional", "functional_modern", "functional_modern_feature", "logit", "feature",
           "relation", "contrastive", "modern_logit", "modern_feature", "modern_plugin",
           "modern_feature_plugin", "indistill_plugin", "plugin", "combine",
           "connectors_modern", "indistill"}
    assert set(kdbench.losses.MOVED) == old
    names = [p.stem for p in pathlib.Path(kdbench.losses.__path__[0]).glob("*.py")]
    assert not [n for n in names if any(w in n for w in ("modern", "functional", "plugin"))]
    for targets in kdbench.losses.MOVED.values():
        for target in (targets,) if isinstance(targets, str) else targets:
            importlib.import_module(target)  # every home exists
