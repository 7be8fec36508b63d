"""The report of a small real store in a real browser: headless Chromium (Debian's ``chromium``;
``.ci/run`` installs it) loads the page with no console error and no request besides the page,
every table and figure is there and visible, tables sort on a click, a point grows under the
mouse, the print stylesheet hides the navigation and keeps every table and figure, and a
screenshot is saved. Skipped, with the reason, only where no browser can be had."""

from __future__ import annotations

import pytest
from chromium import Chromium, find_chromium
from report_store import make_store

from kdbench.report.page import write_report

pytestmark = pytest.mark.skipif(find_chromium() is None,
                                reason="no Chromium here (apt-get install chromium, or set "
                                       "KDBENCH_CHROMIUM to a Chrome/Chromium executable)")

BLOCKS = """Array.from(document.querySelectorAll('[data-kd]')).map(function (el) {
  var r = el.getBoundingClientRect(), s = getComputedStyle(el);
  var chart = el.querySelector('svg'), c = chart ? chart.getBoundingClientRect() : null;
  return {kind: el.dataset.kd, name: el.dataset.name, width: r.width, height: r.height,
          shown: s.display !== 'none' && s.visibility !== 'hidden' && s.opacity !== '0',
          chart: c ? [c.width, c.height] : null,
          rows: el.querySelectorAll('tbody tr').length};
})"""


def column(page, table_name, col):
    return page.evaluate(f"""Array.from(document.querySelectorAll(
        '[data-name="{table_name}"] tbody tr')).map(function (tr) {{
        return tr.cells[{col}].textContent.trim(); }})""")


def test_report_in_headless_chromium(tmp_path):
    store = tmp_path / "store"
    made = make_store(store)
    out = tmp_path / "report.html"
    summary = write_report(store, out)
    with Chromium() as browser:
        page = browser.open(out.as_uri())
        assert page.errors == []
        assert page.requests == [out.as_uri()]  # nothing fetched but the page itself
        blocks = page.evaluate(BLOCKS)
        tables = [(b["name"]) for b in blocks if b["kind"] == "table"]
        figures = [(b["name"]) for b in blocks if b["kind"] == "figure"]
        assert tables == [name for _, name in summary.tables]
        assert figures == [name for _, name, _ in summary.figures]
        for b in blocks:
            assert b["shown"] and b["width"] > 50 and b["height"] > 20, b
            if b["kind"] == "figure":  # the chart itself is drawn at its size
                assert b["chart"] and b["chart"][0] >= 300 and b["chart"][1] >= 200, b
            else:
                assert b["rows"] >= 1, b
        # a click on a header sorts the runs table, a second click reverses it
        runs = [r["run_id"] for name, r in made["records"].items() if name != "ce_seed1"]
        assert sorted(column(page, "runs", 0)[:3]) == sorted(runs)
        page.evaluate("document.querySelector('[data-name=runs] th:nth-child(11)').click()")
        walls = [float(x) for x in column(page, "runs", 10)[:3]]
        assert walls == sorted(walls)
        page.evaluate("document.querySelector('[data-name=runs] th:nth-child(11)').click()")
        assert [float(x) for x in column(page, "runs", 10)[:3]] == sorted(walls, reverse=True)
        # hover: the mouse over a point of the checkpoint curve makes it grow, its <title> is
        # the tooltip text
        point = page.evaluate("""(function () {
            var c = document.querySelector('[data-name=checkpoint_curve] circle');
            c.scrollIntoView({block: 'center'});
            var r = c.getBoundingClientRect();
            return {x: r.x + r.width / 2, y: r.y + r.height / 2, r: getComputedStyle(c).r,
                    tip: c.querySelector('title').textContent};
        })()""")
        assert point["tip"].startswith("teacher epoch ")
        browser.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": point["x"],
                                                  "y": point["y"]}, session=page.session)
        hovered = page.evaluate("getComputedStyle(document.querySelector("
                                "'[data-name=checkpoint_curve] circle')).r")
        assert (point["r"], hovered) == ("3px", "5.5px")
        page.evaluate("window.scrollTo(0, 0)")
        shot = page.screenshot(tmp_path / "report.png")
        assert shot.stat().st_size > 10_000
        # printed: no navigation, every table and figure still there
        browser.send("Emulation.setEmulatedMedia", {"media": "print"}, session=page.session)
        assert page.evaluate("getComputedStyle(document.querySelector('.kd-nav')).display") \
            == "none"
        printed = page.evaluate(BLOCKS)
        assert all(b["shown"] and b["height"] > 20 for b in printed)
        pdf = browser.send("Page.printToPDF", {"printBackground": True}, session=page.session)
        assert len(pdf["data"]) > 10_000
        assert page.errors == []
