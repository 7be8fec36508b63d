"""The zoo's registration beside each family's definitions."""

from __future__ import annotations

import importlib

import pytest

from kdbench import plugins
from kdbench.errors import PluginError
from kdbench.models.registry import ZOO, register_model

FAMILIES = {"resnet": "resnet", "wrn": "wrn", "vgg": "vgg", "mobilenetv2": "mobilenetv2",
            "shufflenet": "shufflenet", "cnn": "cnn32"}  # family -> the module defining it


def test_every_zoo_model_is_registered_with_its_family_from_its_family_module():
    assert {family for _, family in ZOO.values()} == set(FAMILIES)
    for name, (factory, family) in ZOO.items():
        assert getattr(importlib.import_module(f"kdbench.models.{FAMILIES[family]}"),
                       name) is factory
        entry = plugins.get("model", name)
        assert entry.factory is factory and entry.family == family
        assert entry.source == "builtin (kdbench.models.plugin)"


def test_a_name_defined_twice_is_an_error_but_a_reloaded_family_is_not():
    def resnet20(num_classes, in_chans=3):
        """A second resnet20."""

    factory = ZOO["resnet20"][0]
    with pytest.raises(PluginError, match="'resnet20' is defined twice"):
        register_model(resnet20, family="mine")
    assert register_model(factory, family="resnet") is factory  # importlib.reload(resnet)
    assert ZOO["resnet20"] == (factory, "resnet")
