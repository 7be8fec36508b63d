"""The data room's registration beside the code."""

from __future__ import annotations

import pytest

from kdbench import plugins
from kdbench.data import plugin  # noqa: F401 - imports (so collects) every item's file
from kdbench.data.registry import (
    Catalogue,
    register_augmentation,
    register_data_transform,
    register_dataset,
)
from kdbench.errors import PluginError


@pytest.mark.parametrize("kind, catalogue, names", [
    ("dataset", register_dataset, {"digits", "synthetic", "cifar10", "cifar100",
                                   "fashion_mnist", "imagefolder"}),
    ("augmentation", register_augmentation, {"crop_flip", "strong", "none"}),
    ("data_transform", register_data_transform, {"subset", "label_noise", "imbalance"}),
])
def test_every_item_registered_beside_its_code_reaches_the_registry(kind, catalogue, names):
    assert set(catalogue.items) == names
    for name, (factory, _) in catalogue.items.items():
        entry = plugins.get(kind, name)
        assert entry.factory is factory and entry.source == "builtin (kdbench.data.plugin)"


def test_a_file_named_as_its_item_defines_it():
    for name in ("subset", "label_noise", "imbalance"):
        factory, _ = register_data_transform.items[name]
        assert factory.__module__ == f"kdbench.data.{name}"


def test_a_name_defined_twice_is_an_error_but_a_reloaded_module_is_not():
    def mine():
        """One dataset."""

    def other():
        """Another."""

    catalogue = Catalogue("dataset")
    catalogue(mine)
    catalogue(mine)  # importlib.reload runs the same decorator again
    with pytest.raises(PluginError, match="built-in dataset 'mine' is defined twice: by .*mine "
                                          "and by .*other"):
        catalogue("mine")(other)
    assert catalogue.items["mine"][0] is mine
