"""Old import paths kept working for one release, with a DeprecationWarning.

kdbench 0.3 moved modules (one loss per file, presentation into :mod:`kdbench.report`, the
engine, runner and config into packages). A third-party plugin that still imports an old path
(``from kdbench.losses.functional import kd``) keeps working: the old name resolves to a stand-in
module whose attributes are looked up, on first use, in the modules that now hold them, and the
import warns once, naming the new place.

The table of moves lives in the package that owned the old module (``MOVED`` in its
``__init__``, e.g. ``kdbench.losses.MOVED``), beside the code it describes::

    MOVED = {"functional": ("kdbench.losses.kd", "kdbench.losses.dkd", ...)}

Each value is one module path or a tuple of them, searched in order for a name. The finder is
installed by ``import kdbench``; nothing here imports torch.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from collections.abc import Sequence
from typing import Any

#: the release in which the old paths stop working
REMOVED_IN = "0.4"


class MovedModule(types.ModuleType):
    """Stand-in for a module that moved: attributes come from its new homes."""

    def __init__(self, name: str, targets: Sequence[str]):
        super().__init__(name, f"moved to {', '.join(targets)} (deprecated path)")
        self.__targets = tuple(targets)

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        for target in self.__targets:
            module = importlib.import_module(target)
            if hasattr(module, attr):
                value = getattr(module, attr)
                setattr(self, attr, value)
                return value
        raise AttributeError(f"module {self.__name__!r} (moved to {', '.join(self.__targets)}) "
                             f"has no attribute {attr!r}")

    def __dir__(self) -> list[str]:
        out: set[str] = set()
        for target in self.__targets:
            out |= {n for n in dir(importlib.import_module(target)) if not n.startswith("_")}
        return sorted(out)


def moved_targets(fullname: str) -> tuple[str, ...] | None:
    """Where the old module ``fullname`` went, read from its parent package's ``MOVED``."""
    parent, _, leaf = fullname.rpartition(".")
    if not parent.startswith("kdbench"):
        return None
    package = sys.modules.get(parent)
    table = getattr(package, "MOVED", None) if package is not None else None
    if not table or leaf not in table:
        return None
    target = table[leaf]
    return (target,) if isinstance(target, str) else tuple(target)


class _Loader(importlib.abc.Loader):
    def __init__(self, targets: tuple[str, ...]):
        self.targets = targets
        self.own_spec: importlib.machinery.ModuleSpec | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        if len(self.targets) == 1:  # a plain rename: the new module itself
            module = importlib.import_module(self.targets[0])
            self.own_spec = module.__spec__
            return module
        return MovedModule(spec.name, self.targets)

    def exec_module(self, module: types.ModuleType) -> None:
        # the import system set the old name's spec on the new module: give it back its own
        if self.own_spec is not None:
            module.__spec__ = self.own_spec


class MovedFinder(importlib.abc.MetaPathFinder):
    """Finds old kdbench module paths that ``MOVED`` tables list, after the real finders
    failed (a module that exists is always imported as itself)."""

    def find_spec(self, fullname: str, path: Any, target: Any = None
                  ) -> importlib.machinery.ModuleSpec | None:
        targets = moved_targets(fullname)
        if targets is None:
            return None
        warnings.warn(f"{fullname} is deprecated and will be removed in kdbench {REMOVED_IN}; "
                      f"import from {' or '.join(targets)}", DeprecationWarning, stacklevel=2)
        return importlib.machinery.ModuleSpec(fullname, _Loader(targets))


def install() -> None:
    """Put the finder at the end of ``sys.meta_path`` (once)."""
    if not any(isinstance(f, MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(MovedFinder())
