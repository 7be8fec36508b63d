"""The documentation keeps up with the code: every hook of the plugin contract is in
docs/plugins.md with the fields of its typed spec, the README keeps its two commands and no
machine paths, links between the docs resolve, and the version has one source."""

from __future__ import annotations

import inspect
import re

import pytest

from conftest import REPO
from kdbench import hookspecs
from kdbench.spec import SPECS, PluginSpec
from kdbench.version import __version__

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest depends on tomli there
    import tomli as tomllib

PLUGINS_MD = REPO / "docs" / "plugins.md"


def hookspec_options() -> dict[str, dict]:
    """Every hook ``hookspecs.py`` declares: name -> its pluggy spec options (firstresult, ...)."""
    marker = f"{hookspecs.hookspec.project_name}_spec"
    return {name: getattr(fn, marker) for name, fn in inspect.getmembers(hookspecs,
                                                                         inspect.isfunction)
            if hasattr(fn, marker)}


HOOKS = hookspec_options()


def sections(text: str) -> dict[str, str]:
    """The text under each Markdown heading whose title is a code name: name -> body."""
    out: dict[str, str] = {}
    parts = re.split(r"^(#{2,4} .*)$", text, flags=re.M)
    for heading, body in zip(parts[1::2], parts[2::2]):
        match = re.fullmatch(r"#{2,4} `([A-Za-z_][A-Za-z0-9_]*)`\s*", heading)
        if match:
            out[match.group(1)] = body
    return out


DOC = sections(PLUGINS_MD.read_text())


def test_the_contract_has_hooks():
    assert {"register_losses", "register_models", "kdbench_run_end"} <= set(HOOKS)


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_every_hook_has_a_section_saying_whether_the_first_answer_wins(hook):
    assert hook in DOC, f"docs/plugins.md has no '### `{hook}`' section (hookspecs.py has it)"
    body = DOC[hook].lower()
    first = bool(HOOKS[hook].get("firstresult"))
    # lifecycle hooks share one statement above their sections
    said = body if "firstresult" in body else PLUGINS_MD.read_text().lower()
    assert f"firstresult: {'yes' if first else 'no'}" in said, hook
    assert f"{hook}(" in DOC[hook] or "register(" in DOC[hook], \
        f"the section on {hook} shows no call signature"


def _spec_of(hook: str) -> type[PluginSpec] | None:
    return next((cls for h, _, cls in SPECS.values() if h == hook), None)


@pytest.mark.parametrize("hook", sorted(h for h in HOOKS if _spec_of(h) is not None))
def test_every_registration_field_is_documented(hook):
    """Each field of the kind's typed spec (beyond name, factory, source, description) is named
    in its section, in the ``register(...)`` signature or the table of fields."""
    import dataclasses

    spec = _spec_of(hook)
    base = {f.name for f in dataclasses.fields(PluginSpec)}
    own = [f.name for f in dataclasses.fields(spec) if f.name not in base]
    missing = [f for f in own if not re.search(rf"\b{f}=|`{f}`", DOC[hook])]
    assert not missing, f"docs/plugins.md, {hook}: fields {missing} of {spec.__name__} missing"
    assert "register(name, factory" in DOC[hook]


def test_no_section_for_a_hook_that_does_not_exist():
    stale = sorted(n for n in DOC if n.startswith(("register_", "kdbench_")) and n not in HOOKS)
    assert not stale, f"docs/plugins.md documents hooks hookspecs.py does not have: {stale}"


# -- the README --------------------------------------------------------------------------------

README = (REPO / "README.md").read_text()


def test_readme_keeps_its_two_commands_near_the_top():
    head = "\n".join(README.splitlines()[:60])
    assert "make demo" in head and "make test" in head


def test_readme_has_no_machine_paths():
    found = re.findall(r"(?<![\w.])/(?:work|home|tmp|proc|root|mnt|usr|var|opt)/[\w./-]*", README)
    assert not found, f"machine paths in README.md: {found}"


# -- links and versions ------------------------------------------------------------------------

DOCS = [REPO / "README.md", REPO / "CONTRIBUTING.md", REPO / "CHANGELOG.md",
        *sorted((REPO / "docs").glob("*.md"))]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_resolve(path):
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        if not (path.parent / target.split("#")[0]).exists():
            broken.append(target)
    assert not broken, f"{path.name}: links to missing files {broken}"


def test_the_version_has_one_source_and_a_changelog_entry():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "kdbench.version.__version__"}
    release = re.match(r"\d+\.\d+\.\d+", __version__).group(0)
    assert re.search(rf"^## .*\b{re.escape(release)}\b", (REPO / "CHANGELOG.md").read_text(),
                     flags=re.M), f"CHANGELOG.md has no section for {release}"


def test_ruff_is_pinned_where_make_lint_finds_it():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    pins = [d for d in project["project"]["optional-dependencies"]["dev"]
            if d.startswith("ruff")]
    assert len(pins) == 1 and re.fullmatch(r"ruff==[\d.]+", pins[0]), pins
    assert "ruff check" in (REPO / "Makefile").read_text()
    assert "make lint" in (REPO / ".ci" / "run").read_text()


# -- the names the docs point at exist, at their new homes ---------------------------------------


def _dotted_names(text: str) -> set[str]:
    """``kdbench.a.b`` named in backticks, and ``from kdbench.a import b, c`` in code."""
    names = set(re.findall(r"`(kdbench(?:\.[A-Za-z_]\w*)+)", text))
    for module, imported in re.findall(r"^\s*from (kdbench[\w.]*) import ([\w, ]+)$", text,
                                       flags=re.M):
        names |= {f"{module}.{n.strip()}" for n in imported.split(",") if n.strip()}
    return names


@pytest.mark.parametrize("path", [PLUGINS_MD, REPO / "CONTRIBUTING.md", REPO / "README.md"],
                         ids=lambda p: p.name)
def test_kdbench_names_in_the_docs_resolve_without_a_deprecation(path):
    import importlib
    import warnings

    from kdbench.compat import moved_targets

    missing = []
    for dotted in sorted(_dotted_names(path.read_text())):
        parts = dotted.split(".")
        for cut in range(len(parts), 0, -1):
            module = ".".join(parts[:cut])
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    obj = importlib.import_module(module)
            except ModuleNotFoundError:
                continue
            if moved_targets(module) is not None:
                missing.append(f"{dotted} (the old path of {', '.join(moved_targets(module))})")
                break
            try:
                for attr in parts[cut:]:
                    obj = getattr(obj, attr)
            except AttributeError:
                missing.append(dotted)
            break
    assert not missing, f"{path.name} names what kdbench does not have: {missing}"
