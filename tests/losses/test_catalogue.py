"""The built-in catalogue: one module per method, named as the method is registered, each
registration beside its code and every one reaching the registry through the hook."""

from __future__ import annotations

import pytest

from kdbench.losses.catalogue import DISTILLERS, LOSSES
from kdbench.plugins import get_registry

#: registered names that share a module with their base method
SHARED = {"mlkd_noaug": "mlkd", "wttm": "ttm"}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_each_loss_lives_in_the_module_named_as_it_is_registered(name):
    factory, fields = LOSSES[name]
    assert factory.__module__ == f"kdbench.losses.{SHARED.get(name, name)}"
    assert fields["description"] and fields["paper"] and fields["defaults"]


def test_the_catalogue_is_every_built_in_distiller_and_all_are_registered():
    assert len(LOSSES) == 28 and {f for f, _ in LOSSES.values()} == set(DISTILLERS)
    registered = {e.name: e for e in get_registry().entries("loss")}
    for name, (factory, _) in LOSSES.items():
        assert registered[name].factory is factory
