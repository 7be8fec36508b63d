"""The committed studies under results/ are what their records say: every table and figure
regenerates byte for byte from the committed records (no training), and ``kdbench reproduce``
remakes a study from nothing (here a tiny one on synthetic data)."""

from __future__ import annotations

import json
import textwrap

import pytest

from conftest import REPO, tiny_overrides
from kdbench.report.reproduce import find_study, render, run_study

ALL = sorted(p.parent for p in (REPO / "results").glob("*/study.yaml"))


def _rendered(folder) -> bool:
    """A study counts as published once any table or figure it declares is committed; until then
    it is a plan (its runs may be under way) and only its manifest is checked."""
    study = find_study(folder)
    return any((folder / t["file"]).exists() for t in [*study.tables, *study.figures])


STUDIES = [p for p in ALL if _rendered(p)]
PLANNED = [p for p in ALL if not _rendered(p)]


@pytest.mark.parametrize("folder", ALL, ids=[p.name for p in ALL])
def test_every_study_manifest_resolves_to_runs(folder):
    from kdbench.sweep import expand, load_sweep

    study = find_study(folder)
    assert study.tables, "a study declares at least one table"
    for sweep_file in study.sweeps:
        plan = expand(load_sweep(str(folder / sweep_file)), results_dir=folder)
        assert len(plan.runs) > 0, f"{sweep_file} expands to no runs"


@pytest.mark.parametrize("folder", STUDIES, ids=[p.name for p in STUDIES])
def test_committed_tables_and_figures_regenerate_from_the_records(folder, tmp_path):
    study = find_study(folder)
    assert list((folder / "runs").glob("*.json")), "a committed study holds its records"
    written = render(study, out=tmp_path)
    assert len(written) == len(study.tables) + len(study.figures)
    for path in written:
        committed = folder / path.relative_to(tmp_path)
        assert committed.is_file(), f"{committed} is not committed"
        assert path.read_bytes() == committed.read_bytes(), (
            f"{committed.relative_to(REPO)} differs from what its records give: run "
            f"`kdbench reproduce {folder.name} --render-only` and commit")


def test_reproduce_remakes_a_study_from_nothing(tmp_path, cli_runner):
    folder = tmp_path / "toy-study"
    folder.mkdir()
    base = tiny_overrides(folder, **{"loss.name": "kd"})
    base.pop("results_dir")
    (folder / "sweep.yaml").write_text(json.dumps({"base": base, "grid": {
        "loss.name": ["ce", "kd"], "seed": [0, 1]}}))
    (folder / "study.yaml").write_text(textwrap.dedent("""
        description: a toy study
        sweeps: [sweep.yaml]
        tables:
          - {file: tables/main.md, cols: loss}
          - {file: tables/main.tex, cols: loss, metric: top1_best}
    """))
    run_study(find_study(folder), executor="inline", progress=False, say=lambda m: None)
    ids = sorted(p.stem for p in (folder / "runs").glob("*.json"))
    with open(folder / "study.yaml", "a") as fh:  # run ids are known once the runs are made
        fh.write(f"figures:\n  - {{file: figures/curves.png, plot: curves, runs: {ids[:2]}}}\n")
    study = find_study(folder)
    first = {p: p.read_bytes() for p in render(study)}
    assert (folder / "figures" / "curves.png").read_bytes()[:4] == b"\x89PNG"
    [row] = [r for r in (folder / "tables" / "main.md").read_text().splitlines()
             if r.startswith("| synthetic")]
    assert row.count("± ") == 2 and row.count("(2)") == 2  # ce and kd, two seeds each
    assert "\\pm" in (folder / "tables" / "main.tex").read_text()
    again = {p: p.read_bytes() for p in render(study, out=tmp_path / "again")}
    assert list(first.values()) == list(again.values())  # the same records, the same bytes
    result = cli_runner("reproduce", str(folder), "--render-only")
    assert result.exit_code == 0 and "wrote" in result.output
    bad = cli_runner("reproduce", "no-such-study", "--root", str(tmp_path))
    assert bad.exit_code == 2 and "unknown study 'no-such-study'" in bad.output
