"""The import-layer contract, checked on the source (imports inside functions included: a lazy
import is never a way round a cycle): no import cycles between modules, nothing imports the
command line, and each layer imports only its own and lower layers. With them, the rules of the
house a name can break: no module is named after how it was made (``modern``, ``functional_*``,
``*_plugin``), kdbench imports no deprecated path, and no test skips itself when a kdbench
module is renamed. ``make lint`` runs this file."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "kdbench"
TESTS = Path(__file__).resolve().parent

#: Lowest first. A module belongs to the first layer with a prefix of its name; a module may
#: import modules of its own layer and of lower ones.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("leaves", ("kdbench.errors", "kdbench.version", "kdbench.spec", "kdbench.hookspecs",
                "kdbench.ranks",
                "kdbench.kinds", "kdbench.coerce", "kdbench.progress", "kdbench.device",
                "kdbench.store", "kdbench.plugins", "kdbench.openmp", "kdbench.compat")),
    ("blocks", ("kdbench.models", "kdbench.data", "kdbench.losses", "kdbench.evaluators",
                "kdbench.stages", "kdbench.loggers", "kdbench.mi")),
    ("core", ("kdbench.config", "kdbench.engine")),
    # the MI estimators are blocks; estimating a trajectory, choosing from it and judging the
    # choices against the students orchestrate
    ("orchestration", ("kdbench.teachers", "kdbench.mi.analysis", "kdbench.mi.summary",
                       "kdbench.mi.calibration", "kdbench.mi.commands", "kdbench.runner",
                       "kdbench.sweep", "kdbench.bench", "kdbench.report")),
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


def _moved() -> dict[str, tuple[str, ...]]:
    """Every old module path a package's ``MOVED`` table still serves (see kdbench.compat):
    old dotted path -> the modules that now hold its names."""
    out: dict[str, tuple[str, ...]] = {}
    for package, path in MODULES.items():
        if path.name != "__init__.py" or not re.search(r"^MOVED\b", path.read_text(), re.M):
            continue
        for leaf, targets in importlib.import_module(package).MOVED.items():
            out[f"{package}.{leaf}"] = (targets,) if isinstance(targets, str) else tuple(targets)
    return out


MOVED = _moved()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        if name in MOVED:  # an old path: the layer check judges where its names now live
            return None
        name = name.rpartition(".")[0]
    return name or None


def _targets(name: str) -> set[str]:
    """The modules behind an imported name: itself, or the new homes of an old path."""
    while name and name not in MODULES:
        if name in MOVED:
            return {m for m in (_resolve(t) for t in MOVED[name]) if m}
        name = name.rpartition(".")[0]
    return {name} if name else set()


def statements(module: str) -> list[tuple[str, list[str]]]:
    """Every import of ``module``'s source as (the module imported from, the names imported
    from it; none for a plain ``import a.b``), relative imports made absolute."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(n.name, []) for n in node.names]
        elif isinstance(node, ast.ImportFrom):
            full = node.module or ""
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                full = ".".join(base + ([node.module] if node.module else []))
            out.append((full, [alias.name for alias in node.names]))
    return out


def imports(module: str) -> set[str]:
    """The kdbench modules ``module`` imports anywhere in its source."""
    found: set[str] = set()
    for full, names in statements(module):
        if not full.startswith("kdbench"):
            continue
        subs = [f"{full}.{name}" for name in names]
        found |= {sub if sub in MODULES or sub in MOVED else full for sub in subs} or {full}
    return {t for f in found for t in _targets(f) if t != module}


def deprecated_imports(module: str) -> set[str]:
    """The old (``MOVED``) paths ``module`` imports."""
    return {n for full, names in statements(module)
            for n in [full, *(f"{full}.{name}" for name in names)] if n in MOVED}


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


# -- the rules a name can break ------------------------------------------------------------------

#: what a module name must not say: how or when it was made, rather than what it is
MADE_NAMES = re.compile(r"modern|^functional|_plugin$")


def test_no_module_is_named_after_how_it_was_made():
    bad = sorted(m for m in MODULES if MADE_NAMES.search(m.rpartition(".")[2]))
    assert not bad, f"name these after what they hold (one method per file, named as it is " \
                    f"registered): {bad}"


def test_moved_paths_lead_to_modules_that_exist():
    missing = sorted(f"{old} -> {t}" for old, targets in MOVED.items() for t in targets
                     if t not in MODULES)
    assert not missing, f"MOVED tables point at modules that do not exist: {missing}"


def test_kdbench_imports_no_deprecated_path():
    """The old paths are for third-party plugins; kdbench itself imports the new homes."""
    bad = sorted(f"{m} imports {', '.join(sorted(d))}" for m in MODULES
                 if (d := deprecated_imports(m)))
    assert not bad, "\n".join(bad)


def test_no_test_skips_itself_when_a_kdbench_module_is_renamed():
    """``pytest.importorskip("kdbench...")`` turns a rename into a silent pass: import what a
    test tests, so that a move fails loudly."""
    pattern = re.compile(r"importorskip\(\s*[\"']kdbench")
    bad = sorted(str(p.relative_to(TESTS)) for p in TESTS.rglob("*.py")
                 if p != Path(__file__).resolve() and pattern.search(p.read_text()))
    assert not bad, f"tests that skip themselves over a kdbench import: {bad}"



def test_the_command_line_loads_torch_only_for_commands_that_need_it():
    """``import kdbench.cli`` and ``kdbench --help`` (plugin commands listed) load neither torch
    nor pandas: the help comes fast (benchmarks/cli_startup.py measures it)."""
    import subprocess
    import sys

    probe = ("import sys, contextlib, io\n"
             "import kdbench.cli\n"
             "assert 'torch' not in sys.modules, 'import kdbench.cli loaded torch'\n"
             "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
             "    kdbench.cli.cli.main(['--help'], standalone_mode=False)\n"
             "assert 'run' in out.getvalue() and 'eval' in out.getvalue()\n"
             "print(sorted(m for m in ('torch', 'pandas', 'numpy') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          cwd=PACKAGE.parent, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
