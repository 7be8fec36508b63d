"""Plugin manager and registries.

Discovery order: the built-in plugin modules (``DEFAULT_PLUGINS``), then installed distributions
that declare the ``kdbench`` entry point, then ``*.py`` files in a local plugins folder
(``--plugins-dir`` or ``KDBENCH_PLUGINS_DIR``). ``KDBENCH_LOAD_PLUGINS=a,b`` restricts the entry
points loaded to the named distributions (or entry-point names); set but empty loads none.

Each registration hook implementation is called on its own with a ``register`` callable bound to
its plugin, so every entry remembers its source and a clash names both sources. A plugin that
fails to import or to register is reported (name and exception) and skipped.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import importlib.util
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError, UnknownNameError
from .spec import SPECS, PluginSpec

ENTRY_POINT_GROUP = "kdbench"
ENV_LOAD = "KDBENCH_LOAD_PLUGINS"
ENV_DIR = "KDBENCH_PLUGINS_DIR"

#: The built-ins are plugins too: the same hooks third parties implement.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "kdbench.data.plugin",
    "kdbench.models.plugin",
    "kdbench.losses.catalogue",
    "kdbench.teachers.plugin",
    "kdbench.teachers.indistill",
    "kdbench.mi.plugin",
    "kdbench.sweep.plugin",
    "kdbench.stages.optim",
    "kdbench.evaluators.plugin",
    "kdbench.report.layouts",
    "kdbench.loggers.builtin",
    "kdbench.report.plugin",
)

#: kind -> (hook name, human label used in messages)
KINDS: dict[str, tuple[str, str]] = {kind: (hook, label) for kind, (hook, label, _) in
                                     SPECS.items()}

#: A registered thing: its kind's typed spec (kept under the old name for plugin authors).
Entry = PluginSpec


@dataclass(frozen=True)
class Failure:
    """A plugin that could not be imported or whose registration raised."""

    plugin: str
    error: str

    def __str__(self) -> str:
        return f"plugin {self.plugin!r} failed to load: {self.error}"


class Registry:
    """All registered entries by kind, with provenance, and the plugins that failed."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
        self.failures: list[Failure] = []

    # -- registration ------------------------------------------------------------------------
    def add(self, kind: str, name: str, factory: Callable[..., Any], source: str,
            description: str = "", **fields: Any) -> None:
        """Register ``name``: its kind's spec is built from ``fields`` and checked (an unknown
        field, a wrong type or a factory that disagrees with the registration is an error)."""
        if kind not in self._entries:
            raise PluginError(f"unknown plugin kind {kind!r} (valid: {', '.join(KINDS)})")
        if not isinstance(name, str) or not name or name != name.strip():
            raise PluginError(f"{source}: {kind} name must be a non-empty string, got {name!r}")
        if not callable(factory):
            raise PluginError(f"{source}: {kind} {name!r} factory is not callable")
        existing = self._entries[kind].get(name)
        if existing is not None:
            raise PluginError(
                f"{KINDS[kind][1]} {name!r} is registered twice: by {existing.source} and by "
                f"{source} (uninstall one, or choose with {ENV_LOAD})")
        if not description:
            doc = (getattr(factory, "__doc__", None) or "").strip()
            description = doc.splitlines()[0] if doc else ""
        self._entries[kind][name] = SPECS[kind][2].build(name, factory, source, description,
                                                         fields)

    # -- lookup --------------------------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        return sorted(self._entries[kind], key=natural_key)

    def entries(self, kind: str | None = None) -> list[Entry]:
        kinds = [kind] if kind else list(KINDS)
        return [self._entries[k][n] for k in kinds for n in self.names(k)]

    def __contains__(self, key: tuple[str, str]) -> bool:
        kind, name = key
        try:
            self.get(kind, name)
        except UnknownNameError:
            return False
        return True

    def get(self, kind: str, name: str) -> Entry:
        """The entry for ``name``; a ``prefix/rest`` name falls back to a ``prefix/*`` namespace.

        A namespace entry's factory may define ``validate(variant)`` (metadata ``validate``)
        raising UnknownNameError for variants it does not know.
        """
        table = self._entries[kind]
        if name in table:
            return table[name]
        if "/" in name:
            prefix, variant = name.split("/", 1)
            ns = table.get(prefix + "/*")
            if ns is not None and variant:
                validate = ns.metadata.get("validate")
                if validate is not None:
                    validate(variant)
                return dataclasses.replace(ns, name=name,
                                           factory=_bind_variant(ns.factory, variant))
        raise UnknownNameError(KINDS[kind][1], name, table)

    def create(self, kind: str, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.get(kind, name).create(*args, **kwargs)


def natural_key(name: str) -> list[Any]:
    """Sort key that puts resnet8 before resnet20."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _bind_variant(factory: Callable[..., Any], variant: str) -> Callable[..., Any]:
    def bound(*args: Any, **kwargs: Any) -> Any:
        return factory(*args, variant=variant, **kwargs)

    bound.__doc__ = factory.__doc__
    return bound


# -- discovery ---------------------------------------------------------------------------------

class PluginHost:
    """The pluggy manager plus which source each plugin came from, in load order."""

    def __init__(self, plugins_dir: str | os.PathLike[str] | None = None,
                 load: Iterable[str] | None = None, *, builtins: bool = True) -> None:
        self.pm = pluggy.PluginManager("kdbench")
        self.pm.add_hookspecs(hookspecs)
        self.sources: dict[str, str] = {}  # plugin name -> source shown to users
        self.order: list[str] = []
        self.failures: list[Failure] = []
        if builtins:  # without: the third parties' plugins only (their commands, fast)
            self._load_builtins()
        self._load_entry_points(load)
        self._load_dir(plugins_dir)

    def _add(self, obj: Any, name: str, source: str) -> None:
        self.pm.register(obj, name=name)
        self.sources[name] = source
        self.order.append(name)

    def _load_builtins(self) -> None:
        for modname in DEFAULT_PLUGINS:
            # Built-ins must import; a failure here is a bug in kdbench, not a user plugin.
            self._add(importlib.import_module(modname), modname, f"builtin ({modname})")

    def _load_entry_points(self, load: Iterable[str] | None) -> None:
        allow = None if load is None else {_norm(x) for x in load if x.strip()}
        for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP),
                         key=lambda e: (getattr(e.dist, "name", "") or "", e.name)):
            dist = getattr(ep.dist, "name", None) or ep.name
            if allow is not None and _norm(dist) not in allow and _norm(ep.name) not in allow:
                continue
            name = f"{dist}:{ep.name}"
            if name in self.sources:  # the same distribution seen twice on sys.path
                continue
            try:
                self._add(ep.load(), name, dist)
            except Exception as exc:  # noqa: BLE001 - any import error is reported, not fatal
                self._fail(dist, exc)

    def _load_dir(self, plugins_dir: str | os.PathLike[str] | None) -> None:
        if not plugins_dir:
            return
        folder = Path(plugins_dir)
        if not folder.is_dir():
            self.failures.append(Failure(str(folder), "plugins folder does not exist"))
            return
        for path in sorted(folder.glob("*.py")):
            modname = f"kdbench_local_plugins.{path.stem}"
            try:
                spec = importlib.util.spec_from_file_location(modname, path)
                assert spec is not None and spec.loader is not None
                module = importlib.util.module_from_spec(spec)
                sys.modules[modname] = module
                spec.loader.exec_module(module)
                self._add(module, f"local:{path}", f"local ({path})")
            except Exception as exc:  # noqa: BLE001
                sys.modules.pop(modname, None)
                self._fail(str(path), exc)

    def _fail(self, plugin: str, exc: BaseException) -> None:
        self.failures.append(Failure(plugin, f"{type(exc).__name__}: {exc}"))

    def impls(self, hook_name: str) -> list[tuple[str, Callable[..., Any]]]:
        """(source, call) of every implementation of a hook, in discovery order.

        ``call(**kwargs)`` passes each implementation only the arguments it names, as pluggy does.
        """
        index = {name: i for i, name in enumerate(self.order)}
        impls = getattr(self.pm.hook, hook_name).get_hookimpls()
        impls = sorted(impls, key=lambda impl: index.get(impl.plugin_name, len(index)))
        return [(self.sources.get(i.plugin_name, i.plugin_name), _caller(i)) for i in impls]

    def build_registry(self) -> Registry:
        registry = Registry()
        registry.failures.extend(self.failures)
        for kind, (hook_name, _) in KINDS.items():
            for source, function in self.impls(hook_name):
                def register(name: str, factory: Callable[..., Any], *, description: str = "",
                             _kind: str = kind, _source: str = source, **fields: Any) -> None:
                    registry.add(_kind, name, factory, _source, description, **fields)

                try:
                    function(register=register)
                except PluginError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    registry.failures.append(Failure(source, f"{hook_name}: "
                                                     f"{type(exc).__name__}: {exc}"))
        return registry


def _caller(impl: Any) -> Callable[..., Any]:
    def call(**kwargs: Any) -> Any:
        return impl.function(**{k: kwargs[k] for k in impl.argnames})

    return call


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-")


# -- process-wide access -----------------------------------------------------------------------

_host: PluginHost | None = None
_registry: Registry | None = None


def _env_load() -> list[str] | None:
    value = os.environ.get(ENV_LOAD)
    return None if value is None else value.split(",")


def get_host() -> PluginHost:
    global _host
    if _host is None:
        _host = PluginHost(os.environ.get(ENV_DIR) or None, _env_load())
    return _host


def command_host() -> PluginHost:
    """The installed and local plugins without the built-ins, which register no command:
    what ``kdbench --help`` asks for its plugin commands without loading torch."""
    return PluginHost(os.environ.get(ENV_DIR) or None, _env_load(), builtins=False)


def get_registry() -> Registry:
    """The process-wide registry, built on first use. Failures are warned about once."""
    global _registry
    if _registry is None:
        _registry = get_host().build_registry()
        for failure in _registry.failures:
            warnings.warn(f"kdbench: {failure}", RuntimeWarning, stacklevel=2)
    return _registry


def reset() -> None:
    """Forget the loaded plugins (tests, or after changing the environment variables)."""
    global _host, _registry
    _host = None
    _registry = None


def get(kind: str, name: str) -> Entry:
    return get_registry().get(kind, name)


def names(kind: str) -> list[str]:
    return get_registry().names(kind)


def notify(hook_name: str, **kwargs: Any) -> None:
    """Call a notify-all lifecycle hook; a failing logger plugin warns but never stops a run."""
    for source, function in get_host().impls(hook_name):
        try:
            function(**kwargs)
        except Exception as exc:  # noqa: BLE001
            warnings.warn(f"kdbench: {source} {hook_name} failed: {type(exc).__name__}: {exc}",
                          RuntimeWarning, stacklevel=2)
