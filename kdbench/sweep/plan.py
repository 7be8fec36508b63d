"""Sweep files and their plan: loading, inheritance, grid expansion, run ids, the teachers needed.

A sweep file (YAML) holds a ``base`` run spec (the same fields as ``kdbench run --spec``), a
``grid`` of axes (dotted field -> list of values, expanded as a cartesian product) and/or a
``runs`` list (each entry a set of field values: one run, or one run per grid point when there is
a grid too). ``parts`` splits a sweep into blocks with their own grid/runs (e.g. losses that only
apply to some teacher–student pairs); ``extends`` inherits another sweep file (e.g. a ``quick``
variant of a paper sweep). Precedence, lowest first: preset < base < runs entry < grid point <
``--set``. Every run is identified by its resolved config's hash, so the order of the grid, of the
runs and of the keys never changes an id, and two points that resolve to the same config are run
once.
"""

from __future__ import annotations

import copy
import itertools
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ALIASES, RunConfig, build_config, deep_merge, resolve
from ..errors import ConfigError, KDBenchError, StoreError, UnknownNameError
from ..store import Store

SWEEP_KEYS = ("description", "extends", "base", "grid", "runs", "parts")
PART_KEYS = ("name", "description", "base", "grid", "runs")


# ============================== sweep files ====================================================


def shipped_dir() -> Path:
    """The paper sweeps that ship with the package."""
    return Path(__file__).resolve().parent.parent / "sweeps"


def shipped() -> dict[str, Path]:
    return {p.stem: p for p in sorted(shipped_dir().glob("*.yaml"), key=lambda p: p.stem)}


def locate(name: str | os.PathLike[str], relative_to: Path | None = None) -> Path:
    """A sweep file by path (absolute, relative to ``relative_to`` or the cwd) or shipped name."""
    text = str(name)
    candidates = [Path(text).expanduser()]
    if relative_to is not None and not Path(text).is_absolute():
        candidates.insert(0, relative_to / text)
    for path in candidates:
        if path.is_file():
            return path
    ships = shipped()
    if text in ships:
        return ships[text]
    if Path(text).suffix in (".yaml", ".yml", ".json") or os.sep in text:
        raise ConfigError(f"sweep file {text!r} does not exist")
    raise UnknownNameError("sweep", text, ships, hint="or give the path of a sweep file")


def load_sweep(name: str | os.PathLike[str], *, _relative_to: Path | None = None,
               _chain: tuple[str, ...] = ()) -> dict[str, Any]:
    """A sweep file as a dict, with ``extends`` resolved and ``name``/``path`` filled in."""
    import yaml

    path = locate(name, _relative_to)
    if str(path.resolve()) in _chain:
        raise ConfigError(f"sweep file {str(path)!r} extends itself (via "
                          f"{' -> '.join(_chain)})")
    try:
        data = yaml.safe_load(path.read_text())
    except UnicodeDecodeError:
        raise ConfigError(f"sweep file {str(path)!r} is not text (not UTF-8): give a YAML "
                          f"sweep file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"sweep file {str(path)!r} is not valid YAML: "
                          f"{str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"sweep file {str(path)!r} must hold a mapping with keys "
                          f"{', '.join(SWEEP_KEYS)}")
    _check_keys(data, SWEEP_KEYS, f"sweep file {str(path)!r}")
    if data.get("extends"):
        parent = load_sweep(data["extends"], _relative_to=path.parent,
                            _chain=_chain + (str(path.resolve()),))
        child = {k: v for k, v in data.items() if k != "extends"}
        data = merge_sweeps({k: v for k, v in parent.items() if k not in ("name", "path")}, child)
    data = {k: v for k, v in data.items() if k != "extends"}
    data["name"] = path.stem
    data["path"] = str(path)
    validate_sweep(data, str(path))
    return data


def merge_sweeps(parent: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """``child`` on top of ``parent``: base deep-merged, grid axes added/replaced (an axis set to
    null is dropped), runs and parts replaced, other keys replaced."""
    out = copy.deepcopy(parent)
    for key, value in child.items():
        if key == "base":
            out["base"] = deep_merge(nested(out.get("base") or {}), nested(value or {}))
        elif key == "grid":
            grid = dict(out.get("grid") or {})
            for axis, values in (value or {}).items():
                if values is None:
                    grid.pop(axis, None)
                else:
                    grid[axis] = copy.deepcopy(values)
            out["grid"] = grid
        else:
            out[key] = copy.deepcopy(value)
    return out


def validate_sweep(data: dict[str, Any], where: str) -> None:
    parts = data.get("parts")
    if parts is not None:
        if not isinstance(parts, list) or not parts:
            raise ConfigError(f"{where}: parts must be a non-empty list of mappings")
        for i, part in enumerate(parts):
            if not isinstance(part, dict):
                raise ConfigError(f"{where}: parts[{i}] must be a mapping, got {part!r}")
            _check_keys(part, PART_KEYS, f"{where} parts[{i}]")
    for block, label in [(data, where)] + [(p, f"{where} part {p.get('name', i)!r}")
                                           for i, p in enumerate(parts or [])]:
        base = block.get("base")
        if base is not None and not isinstance(base, dict):
            raise ConfigError(f"{label}: base must be a mapping of config fields")
        grid = block.get("grid")
        if grid is not None:
            if not isinstance(grid, dict):
                raise ConfigError(f"{label}: grid must map config fields to lists of values")
            for axis, values in grid.items():
                if values is None:
                    continue
                if not isinstance(values, list) or not values:
                    raise ConfigError(f"{label}: grid axis {axis!r} must be a non-empty list of "
                                      f"values, got {values!r}")
        runs = block.get("runs")
        if runs is not None:
            if not isinstance(runs, list) or not runs:
                raise ConfigError(f"{label}: runs must be a non-empty list of mappings")
            for i, entry in enumerate(runs):
                if not isinstance(entry, dict):
                    raise ConfigError(f"{label}: runs[{i}] must be a mapping of config fields, "
                                      f"got {entry!r}")


def _check_keys(data: dict[str, Any], valid: Iterable[str], where: str) -> None:
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise UnknownNameError(f"key in {where}", unknown[0], valid)


def nested(values: dict[str, Any], top: bool = True) -> dict[str, Any]:
    """Dotted keys (``teacher.arch``) and nested mappings, mixed freely, as one nested dict.
    At the top level the command line's names stand for their config paths (``dataset`` for
    ``data.name``, ``loss: kd`` for ``loss.name``: :data:`kdbench.config.ALIASES`)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if top and key in ALIASES and value is not None and not isinstance(value, dict):
            key = ALIASES[key]
        *parents, leaf = str(key).split(".")
        layer: dict[str, Any] = {leaf: nested(value, top=False) if isinstance(value, dict) else
                                 copy.deepcopy(value)}
        for p in reversed(parents):
            layer = {p: layer}
        out = deep_merge(out, layer)
    return out


def flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys (the inverse of :func:`nested`)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def count_points(data: dict[str, Any]) -> int:
    """Grid points a sweep file names (before de-duplication): cheap, no validation."""
    total = 0
    top = {k: v for k, v in data.items() if k != "parts"}
    for part in data.get("parts") or [{}]:
        block = merge_sweeps(top, part)
        n = len(block.get("runs") or [{}])
        for values in (block.get("grid") or {}).values():
            n *= len(values)
        total += n
    return total


# ============================== the plan =======================================================


@dataclass
class PlannedTeacher:
    """A teacher trajectory some runs of the sweep need, trained once before them."""

    key: str
    spec: dict[str, Any]
    save_epochs: list[int]
    config: RunConfig  # one run that uses it: where the data is, which device

    def status(self, store: Store) -> str:
        from ..teachers import trajectory as traj

        try:
            found = traj.find(store, self.spec)
        except StoreError:
            return "corrupt"
        if found is None:
            return "pending"
        return "done" if found.done else "partial"


@dataclass
class PlannedRun:
    """One run of the sweep: its id, resolved config and the sweep values that made it."""

    run_id: str
    config: RunConfig
    label: dict[str, Any]
    part: str | None = None
    teachers: list[str] = field(default_factory=list)

    def label_text(self) -> str:
        return " ".join(f"{k}={_short(v)}" for k, v in self.label.items())

    def status(self, store: Store) -> str:
        # imported here: it loads torch, which an executor plugin importing the sweep package
        # (kdbench-ray) must not bring into `kdbench --help`
        from ..runner.record import existing_record

        try:  # a record an older kdbench stored under another id of this run is adopted
            existing_record(store, self.config, self.run_id)
        except KDBenchError:
            pass
        return run_status(store, self.run_id)


@dataclass
class Plan:
    """A sweep expanded: runs in file order (de-duplicated by id) and the teachers they need."""

    name: str
    description: str
    results_dir: Path
    runs: list[PlannedRun]
    teachers: dict[str, PlannedTeacher]
    axes: list[str]
    duplicates: int = 0

    @property
    def store(self) -> Store:
        return Store(self.results_dir)


def run_status(store: Store, run_id: str) -> str:
    """done / failed / running / interrupted from the record, ``pending`` without one."""
    try:
        record = store.load_record(run_id)
    except KDBenchError:
        return "corrupt"
    return "pending" if record is None else str(record["status"])


def expand(sweep: dict[str, Any], *, results_dir: str | os.PathLike[str],
           sets: dict[str, Any] | None = None, data_dir: str | None = None) -> Plan:
    """Every run of a sweep, resolved and validated against the registries, and its teachers."""
    name = sweep.get("name", "sweep")
    top = {k: v for k, v in sweep.items() if k not in ("parts", "name", "path")}
    paths: dict[str, Any] = {"results_dir": str(results_dir)}
    if data_dir:
        paths["data"] = {"dir": str(data_dir)}
    overrides = nested(sets or {})
    runs: dict[str, PlannedRun] = {}
    axes: list[str] = []
    points = 0
    for index, part in enumerate(sweep.get("parts") or [{}]):
        block = merge_sweeps(top, part)
        part_name = part.get("name", str(index)) if sweep.get("parts") else None
        base = nested(block.get("base") or {})
        grid = [(axis, values) for axis, values in (block.get("grid") or {}).items()]
        entries = block.get("runs") or [{}]
        for key in [k for e in entries for k in flat(nested(e))] + [
                k for axis, values in grid for v in values for k in flat(nested({axis: v}))]:
            if key not in axes:
                axes.append(key)
        for entry in entries:
            entry_flat = flat(nested(entry))
            for values in itertools.product(*[v for _, v in grid]):
                point = {axis: value for (axis, _), value in zip(grid, values)}
                label = {**entry_flat, **flat(nested(point))}
                spec = base
                for layer in (nested(entry), nested(point), overrides, paths):
                    spec = deep_merge(spec, layer)
                points += 1
                try:
                    config = resolve(build_config(None, spec))
                except KDBenchError as exc:
                    # same exception (kind, name, choices), its message saying which run
                    where = " ".join(f"{k}={_short(v)}" for k, v in label.items()) or "base"
                    exc.args = (f"sweep {name!r} run {where}: {exc}",)
                    raise exc from None
                rid = config.run_id
                if rid not in runs:
                    runs[rid] = PlannedRun(rid, config, label, part_name)
    teachers: dict[str, PlannedTeacher] = {}
    for run in runs.values():
        for spec in teacher_needs(run.config):
            from ..teachers.trajectory import trajectory_key

            key = trajectory_key(spec)
            run.teachers.append(key)
            epochs = run.config.teacher.checkpoint_epochs() if run.config.teacher else []
            if key in teachers:
                merged = sorted(set(teachers[key].save_epochs) | set(epochs))
                teachers[key].save_epochs = merged
            else:
                teachers[key] = PlannedTeacher(key, spec, sorted(epochs), run.config)
    return Plan(name=name, description=str(sweep.get("description") or "").strip(),
                results_dir=Path(results_dir), runs=list(runs.values()), teachers=teachers,
                axes=axes, duplicates=points - len(runs))


def teacher_needs(config: RunConfig) -> list[dict[str, Any]]:
    """Trajectory specs a resolved run trains or reads, so a sweep can train them first: one per
    seed its teacher source draws from (the source's ``seeds`` registration, e.g. an independent
    ensemble's s..s+K-1; none for a teacher given as weights)."""
    from ..teachers.manage import seeds_needed
    from ..teachers.trajectory import trajectory_spec

    return [trajectory_spec(config, seed) for seed in seeds_needed(config)]


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(_short(v) for v in value)
    return str(value)
