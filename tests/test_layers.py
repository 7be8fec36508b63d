"""The import-layer contract, checked on the source (imports inside functions included: a lazy
import is never a way round a cycle): no import cycles between modules, nothing imports the
command line, and each layer imports only its own and lower layers."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "kdbench"

#: Lowest first. A module belongs to the first layer with a prefix of its name; a module may
#: import modules of its own layer and of lower ones.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("leaves", ("kdbench.errors", "kdbench.version", "kdbench.spec", "kdbench.hookspecs",
                "kdbench.progress", "kdbench.plotting",
                "kdbench.presets",
                "kdbench.device", "kdbench.store", "kdbench.plugins", "kdbench.openmp",
                "kdbench.compat")),
    ("blocks", ("kdbench.models", "kdbench.data", "kdbench.losses", "kdbench.evaluators",
                "kdbench.optim", "kdbench.stages", "kdbench.loggers", "kdbench.mi")),
    ("core", ("kdbench.config", "kdbench.engine", "kdbench.checks", "kdbench.record")),
    # the MI estimators are blocks; estimating a trajectory and choosing from it orchestrate
    ("orchestration", ("kdbench.teachers", "kdbench.mi.analysis", "kdbench.mi.report",
                       "kdbench.mi.commands", "kdbench.runner", "kdbench.table",
                       "kdbench.layouts", "kdbench.sweep", "kdbench.bench", "kdbench.report",
                       "kdbench.reproduce", "kdbench.robustness", "kdbench.methods")),
    ("surface", ("kdbench.cli", "kdbench.__main__", "kdbench")),
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str) -> set[str]:
    """The kdbench modules ``module`` imports anywhere in its source."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {n.name for n in node.names if n.name.startswith("kdbench")}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[:len(base) - node.level + 1]
                full = ".".join(base + ([node.module] if node.module else []))
            else:
                full = node.module or ""
            if full.startswith("kdbench"):
                for alias in node.names:
                    sub = f"{full}.{alias.name}"
                    found.add(sub if sub in MODULES else full)
    return {m for m in (_resolve(f) for f in found) if m and m != module}


GRAPH = {m: imports(m) for m in MODULES}


def layer(module: str) -> int:
    best = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or
                                                                 len(p) > best[1]):
                best = (i, len(p))
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best[0]


def test_no_import_cycles():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_nothing_imports_the_command_line():
    users = sorted(m for m, deps in GRAPH.items() if "kdbench.cli" in deps
                   and m != "kdbench.__main__")
    assert not users, f"{users} import kdbench.cli; call the library instead"


def test_layers_point_one_way():
    bad = sorted(f"{m} ({LAYERS[layer(m)][0]}) imports {d} ({LAYERS[layer(d)][0]})"
                 for m, deps in GRAPH.items() for d in deps
                 if layer(d) > layer(m))
    assert not bad, "\n".join(bad)
