"""Registration beside the code: the decorators a built-in data or evaluator item wears.

Each item's file records it where it is defined (``@register_dataset`` on a dataset's factory,
``@register_data_transform("label_noise", defaults=...)`` on a transform's class), the way timm
registers a model beside its definition. The room's plugin module (``kdbench.data.plugin``,
``kdbench.evaluators.plugin``) imports those files and hands the collection to the plugin
registry through the same hooks third-party plugins implement, so the registry checks the
built-ins exactly as it checks theirs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import PluginError

F = TypeVar("F", bound=Callable[..., Any])


class Catalogue:
    """The built-in items of one plugin kind, in the order their files define them.

    ``catalogue(factory)`` or ``catalogue(name, **fields)`` as a decorator records the factory
    (a class or function) under ``name`` (default: its ``__name__``) with the registration
    ``fields`` of the kind (``defaults``, ``description``, ``every``, ...), unchecked until
    :meth:`register_all` passes them to a hook's ``register``.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self.items: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {}

    def __call__(self, name: str | Callable[..., Any] | None = None, **fields: Any) -> Any:
        if callable(name):  # used bare: @catalogue
            return self._add(name, None, fields)

        def decorate(factory: F) -> F:
            return self._add(factory, name, fields)
        return decorate

    def _add(self, factory: F, name: str | None, fields: dict[str, Any]) -> F:
        key = name or factory.__name__
        if key in self.items and _where(self.items[key][0]) != _where(factory):
            # the same definition again is a reloaded module, not a clash
            raise PluginError(f"built-in {self.kind} {key!r} is defined twice: by "
                              f"{_where(self.items[key][0])} and by {_where(factory)}")
        self.items[key] = (factory, dict(fields))
        return factory

    def register_all(self, register: Callable[..., None]) -> None:
        """``register(name, factory, **fields)`` for every item, in definition order."""
        for name, (factory, fields) in self.items.items():
            register(name, factory, **fields)


def _where(factory: Callable[..., Any]) -> str:
    return f"{factory.__module__}.{factory.__qualname__}"


register_dataset = Catalogue("dataset")
register_augmentation = Catalogue("augmentation")
register_data_transform = Catalogue("data transform")
