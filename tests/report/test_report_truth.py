"""The report tells the truth by default: a study folder shows the tables its study.yaml
declares, with its README's numbers; a plain folder never pools runs that differ in more than
their seed into one cell of the pivot without splitting them, and keeps a clean-data teacher
apart from a same-data one."""

from __future__ import annotations

import re

import pytest

from conftest import REPO
from kdbench.config import build_config
from kdbench.report.page import build_report
from kdbench.store import SCHEMA_VERSION, Store

STUDIES = sorted(p.parent for p in (REPO / "results").glob("*/study.yaml")
                 if (p.parent / "README.md").is_file() and (p.parent / "runs").is_dir())


def headline_numbers(readme: str) -> set[str]:
    """The README's ``mean ± std`` figures (the numbers it reports, from its tables)."""
    return set(re.findall(r"\d+\.\d+ ± \d+\.\d+", readme))


@pytest.mark.parametrize("folder", STUDIES, ids=[p.name for p in STUDIES])
def test_the_report_of_a_study_shows_its_readmes_numbers(folder):
    page, summary = build_report(folder)
    numbers = headline_numbers((folder / "README.md").read_text())
    assert numbers, "the README states its results as mean ± std"
    missing = sorted(n for n in numbers if n not in page)
    assert not missing, f"{folder.name}: README numbers not in the report: {missing[:8]}"
    # the tables shown are those study.yaml declares, once each (no .tex twin), in its order
    import yaml

    declared = [t["file"] for t in yaml.safe_load((folder / "study.yaml").read_text())["tables"]]
    shown = [name for study, name in summary.tables if name.startswith("tables/")]
    md = [f for f in declared if not f.endswith(".tex")]
    assert shown == md
    assert "averages" not in page  # no cell pools configurations


def test_the_checkpoint_study_reports_the_readmes_best_checkpoint():
    folder = REPO / "results" / "checkpoint-kd-cifar10"
    readme = (folder / "README.md").read_text()
    best = re.search(r"best intermediate, epoch (\d+)", readme).group(1)
    page, _ = build_report(folder)
    table1 = page[page.index('data-name="tables/table1.md"'):]
    table1 = table1[:table1.index("</figure>")]
    assert "top1_last10_best" in table1  # the study's metric, not the default top1_last
    assert re.search(rf"<td>\s*{best}\s*</td>", table1), f"best checkpoint {best} not shown"


def write(store, run_id, seed, top1, *, clean_teacher=False, lr=None):
    over = {"loss.name": "kd", "seed": seed, "student": "resnet8", "recipe.lr": lr,
            "data.transforms": [{"name": "label_noise", "rate": 0.4}]}
    if clean_teacher:
        over["teacher.data"] = {"name": "digits", "transforms": []}
    cfg = build_config(over).to_dict()
    store.write_record({"schema": SCHEMA_VERSION, "run_id": run_id, "status": "done",
                        "config": cfg, "metrics": {"top1_last": top1, "top1_best": top1},
                        "teacher": {"epochs": [30], "arch": "resnet56"}})


def test_a_plain_folder_keeps_a_clean_teacher_apart_from_a_same_data_one(tmp_path):
    s = Store(tmp_path)
    for seed, (same, clean) in enumerate([(50.0, 60.0), (52.0, 62.0)]):
        write(s, f"same{seed}", seed, same)
        write(s, f"clean{seed}", seed, clean, clean_teacher=True)
    page, _ = build_report(tmp_path)
    pivot = page[page.index('data-name="pivot"'):]
    pivot = pivot[:pivot.index("</figure>")]
    assert "51.00 ± 1.41 (2)" in pivot and "61.00 ± 1.41 (2)" in pivot  # not 56.00 (4)
    assert "rows also split by teacher_data" in pivot and "averages" not in pivot
    # a difference with no named column is split by its config field, and named
    other = tmp_path / "lr"
    s = Store(other)
    for seed in (0, 1):
        write(s, f"a{seed}", seed, 40.0 + seed, lr=0.05)
        write(s, f"b{seed}", seed, 70.0 + seed, lr=0.1)
    page, _ = build_report(other)
    pivot = page[page.index('data-name="pivot"'):]
    pivot = pivot[:pivot.index("</figure>")]
    assert "rows also split by config.recipe.lr" in pivot
    assert "40.50 ± 0.71 (2)" in pivot and "70.50 ± 0.71 (2)" in pivot


def test_wide_tables_scroll_inside_the_page_in_chromium(tmp_path):
    """The label-noise study's widest table is wider than the window: it scrolls inside its
    own box, and nothing of the page runs off the window's right edge (checked in headless
    Chromium, as the report's browser test is)."""
    from chromium import Chromium, find_chromium

    from kdbench.report.page import write_report

    if find_chromium() is None:
        pytest.skip("no Chromium here (apt-get install chromium)")
    out = tmp_path / "report.html"
    write_report(REPO / "results" / "kd-beyond-compression", out)
    with Chromium() as browser:
        page = browser.open(out.as_uri())
        assert page.errors == []
        boxes = page.evaluate("""Array.from(document.querySelectorAll('.kd-scroll')).map(
          function (el) { var r = el.getBoundingClientRect();
            return {right: r.right, scroll: el.scrollWidth, client: el.clientWidth,
                    overflow: getComputedStyle(el).overflowX}; })""")
        width = page.evaluate("document.documentElement.clientWidth")
        page_width = page.evaluate("document.documentElement.scrollWidth")
    wide = [b for b in boxes if b["scroll"] > b["client"] + 1]
    assert wide, "the study has a table wider than the window"
    assert all(b["overflow"] == "auto" and b["right"] <= width + 1 for b in wide)
    assert page_width <= width + 1  # the page itself never scrolls sideways
