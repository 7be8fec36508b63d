"""``kdbench report`` on a small real store: the page holds every table layout that applies and
every figure, the numbers come from the records, each run's provenance, nothing from the
network; bad input (empty, missing or unreadable stores, outputs kdbench did not write, unknown
runs) is one line, exit 2, nothing overwritten. ``kdbench plot curves`` and the curve data;
the SVG axes."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser

import pytest
from report_store import make_store

from kdbench.report.curves import plot_curves, run_curves
from kdbench.report.page import GENERATOR, write_report
from kdbench.report.svg import nice_ticks

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    return {"root": root, **make_store(root)}


class Elements(HTMLParser):
    """Every element with ``data-kd`` (name, kind), the text of each <pre> inside a run's
    provenance, every <circle> and whether it has a <title>, every src/href."""

    def __init__(self):
        super().__init__()
        self.blocks: list[tuple[str, str]] = []
        self.links: list[str] = []
        self.circles = 0
        self.titled = 0
        self.provenance: dict[str, list[str]] = {}
        self._run = None
        self._pre = None
        self._circle = False
        self.tables = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "data-kd" in a:
            self.blocks.append((a["data-kd"], a.get("data-name")))
        self.links += [a[k] for k in ("src", "href") if k in a]
        if tag == "table":
            self.tables += 1
        if tag == "details" and (a.get("id") or "").startswith("run-"):
            self._run = a["id"][4:]
            self.provenance[self._run] = []
        if tag == "pre" and self._run:
            self._pre = []
        if tag == "circle":
            self.circles += 1
            self._circle = True
        if tag == "title" and self._circle:
            self.titled += 1

    def handle_endtag(self, tag):
        if tag == "pre" and self._pre is not None:
            self.provenance[self._run].append("".join(self._pre))
            self._pre = None
        if tag == "details":
            self._run = None
        if tag == "circle":
            self._circle = False

    def handle_data(self, data):
        if self._pre is not None:
            self._pre.append(data)


def parse(path):
    p = Elements()
    p.feed(path.read_text())
    return p


# ============================== the page =======================================================


def test_report_holds_every_applicable_table_and_every_figure(store, tmp_path, cli_runner):
    out = tmp_path / "report.html"
    result = cli_runner("report", store["root"], "-o", out)
    assert result.exit_code == 0, result.output
    assert result.output.strip().startswith(f"wrote {out} (2 studies, 4 runs,")
    page = parse(out)
    tables = [name for kind, name in page.blocks if kind == "table"]
    figures = [name for kind, name in page.blocks if kind == "figure"]
    # ablation: its trajectories, the layouts that apply (ensemble needs ensemble teachers),
    # its runs; baseline: the pivot and its runs
    assert tables == ["teachers", "checkpoint", "pivot", "selection", "runs", "pivot", "runs"]
    assert page.tables == len(tables)  # every <table> is one of them
    # ablation: one checkpoint-curve panel, one information plane (kde), the top-1 overlay and
    # three runs' loss terms; baseline: the overlay and one run's loss terms
    assert figures == ["checkpoint_curve", "information_plane"] + ["training_curves"] * 4 \
        + ["training_curves"] * 2
    text = out.read_text()
    assert "Layouts that do not apply here (ensemble, indistill, methods, robustness)" in text
    assert text.count('<section class="kd-study"') == 2


def test_report_numbers_and_provenance_come_from_the_records(store, tmp_path):
    out = tmp_path / "report.html"
    summary = write_report(store["root"], out)
    text = out.read_text()
    page = parse(out)
    records = store["records"]
    # the pivot cell of each ablation run: its top1_last, 2 decimals, one seed
    for name in ("ce", "kd_full", "kd_mid"):
        assert f"{records[name]['metrics']['top1_last']:.2f} (1)" in text
    # every run's provenance: its config and environment, as JSON
    for record in records.values():
        blocks = page.provenance[record["run_id"]]
        assert json.loads(blocks[0]) == record["config"]
        for part in ("env", "cost", "data", "stages"):
            assert any(json.loads(b) == record[part] for b in blocks), part
    kd_mid = page.provenance[records["kd_mid"]["run_id"]]
    assert any(json.loads(b) == records["kd_mid"]["teacher"] for b in kd_mid)
    # hover: every point of every chart has its own title
    assert page.circles > 0 and page.titled == page.circles
    # the checkpoint curve's points say the student's accuracy at each teacher epoch
    mid = records["kd_mid"]["metrics"]["top1_last"]
    assert f"teacher epoch 2: student {mid:.2f} ± 0.00 (n=1)" in text
    # offline: no reference out of the page, a policy that forbids fetching anything
    assert all(link.startswith("#") for link in page.links), page.links
    assert "http://" not in text and "https://" not in text
    assert "default-src 'none'" in text
    assert f'<meta name="generator" content="{GENERATOR}">' in text[:200]
    assert summary.runs == 4 and summary.studies == ["ablation", "baseline"]


def test_curves_option_chooses_the_runs_drawn(store, tmp_path, cli_runner):
    out = tmp_path / "report.html"
    rid = store["records"]["kd_mid"]["run_id"]
    result = cli_runner("report", store["root"], "-o", out, "--curves", rid[:6])
    assert result.exit_code == 0, result.output
    page = parse(out)
    figures = [name for kind, name in page.blocks if kind == "figure"]
    # ablation: the overlay of the chosen run and its loss terms; baseline: its default pick
    assert figures.count("training_curves") == 2 + 2
    assert f"Loss terms: {rid[:8]}" in out.read_text()
    assert "the runs chosen with --curves" in out.read_text()


def test_a_failed_and_an_unreadable_record_are_shown_not_fatal(store, tmp_path):
    root = tmp_path / "s"
    shutil.copytree(store["root"] / "baseline", root)
    [path] = (root / "runs").glob("*.json")
    failed = json.loads(path.read_text())
    failed.update(run_id="f" * 16, status="failed", metrics={},
                  error="RuntimeError: boom", traceback="Traceback ...\nRuntimeError: boom")
    (root / "runs" / f"{'f' * 16}.json").write_text(json.dumps(failed))
    (root / "runs" / "broken.json").write_text("{not json")
    summary = write_report(root, tmp_path / "r.html")
    text = (tmp_path / "r.html").read_text()
    assert summary.runs == 2
    assert "failed 1" in text and "RuntimeError: boom" in text
    assert "Unreadable records (left out)" in text and "broken.json" in text


# ============================== bad input ======================================================


def test_report_bad_input_is_one_line_exit_2_and_overwrites_nothing(store, tmp_path,
                                                                    cli_runner):
    def fails(*args, message):
        result = cli_runner("report", *args)
        assert result.exit_code == 2, result.output
        assert result.output.strip().splitlines() == [f"Error: {message}"], result.output

    out = tmp_path / "out.html"
    fails(tmp_path / "nope", "-o", out,
          message=f"results dir {str(tmp_path / 'nope')!r} does not exist")
    (tmp_path / "empty").mkdir()
    fails(tmp_path / "empty", "-o", out, message=f"no run records in results dir "
          f"{str(tmp_path / 'empty')!r}: none found in runs/ or in study folders */runs/")
    bad = tmp_path / "bad"
    (bad / "runs").mkdir(parents=True)
    (bad / "runs" / "x.json").write_text("[]")
    result = cli_runner("report", bad, "-o", out)
    assert result.exit_code == 2 and "no run records in results dir" in result.output
    assert "1 unreadable (first: corrupt record" in result.output
    assert not out.exists()

    theirs = tmp_path / "notes.html"
    theirs.write_text("<html>my notes</html>")
    fails(store["root"], "-o", theirs, message=f"report output {str(theirs)!r} exists and was "
          f"not written by kdbench report; choose another file or remove it")
    assert theirs.read_text() == "<html>my notes</html>"
    fails(store["root"], "-o", tmp_path, message=f"report output {str(tmp_path)!r} is a "
          f"folder; give a file name, e.g. {str(tmp_path / 'report.html')!r}")
    fails(store["root"], "-o", tmp_path / "r.txt",
          message=f"report output {str(tmp_path / 'r.txt')!r} must end in .html")
    result = cli_runner("report", store["root"], "-o", out, "--curves", "zzzz")
    assert result.exit_code == 2 and "unknown run 'zzzz'" in result.output
    assert not out.exists()
    # a page kdbench wrote is replaced
    assert cli_runner("report", store["root"], "-o", out).exit_code == 0
    before = out.read_text()
    assert cli_runner("report", store["root"], "-o", out, "--title", "again").exit_code == 0
    assert out.read_text() != before and "<title>again</title>" in out.read_text()


# ============================== plot curves and the curve data =================================


def test_plot_curves_draws_runs_side_by_side(store, tmp_path, cli_runner):
    from PIL import Image

    records = store["records"]
    ids = [records["ce"]["run_id"], records["kd_mid"]["run_id"][:7]]
    out = tmp_path / "curves.png"
    result = cli_runner("plot", "curves", *ids, "--results-dir", store["root"] / "ablation",
                        "-o", out)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"wrote {out} (2 run(s))"
    one = tmp_path / "one.png"
    cli_runner("plot", "curves", ids[0], "--results-dir", store["root"] / "ablation", "-o", one)
    # one column per run: two runs make the figure twice as wide, as tall
    (w2, h2), (w1, h1) = Image.open(out).size, Image.open(one).size
    assert h2 == h1 and abs(w2 - 2 * w1) <= 2
    pdf = tmp_path / "curves.pdf"
    assert cli_runner("plot", "curves", ids[0], "--results-dir", store["root"] / "ablation",
                      "-o", pdf, "--metric", "top5").exit_code == 0
    assert pdf.read_bytes()[:5] == b"%PDF-"

    def fails(*args, contains):
        result = cli_runner("plot", "curves", *args, "--results-dir",
                            store["root"] / "ablation", "-o", tmp_path / "x.png")
        assert result.exit_code == 2 and contains in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1

    fails(ids[0], "--metric", "top7", contains="unknown metric 'top7'; did you mean top5, "
          "top1? (valid: test_loss, top1, top5, train_top1)")
    fails("zzz", contains="unknown run 'zzz'")
    fails("", contains="run id prefix '' matches 3 runs")
    result = cli_runner("plot", "curves", ids[0], "--results-dir", store["root"] / "ablation",
                        "-o", tmp_path / "x.svg")
    assert result.exit_code == 2 and "must end in .png or .pdf" in result.output


def staged_record():
    """A hand-made record: a warm-up stage with its own term, then the main stage; an evaluator
    metric named train_* (it has a ``_last``) is a metric, not a loss term."""
    curve = [
        {"epoch": 1, "lr": 0.1, "top1": 10.0, "train_top1": 12.0, "train_loss": 3.0,
         "train_zero": 3.0, "train_emb": 0.5, "stage": "warm"},
        {"epoch": 2, "lr": 0.1, "top1": 20.0, "train_top1": 22.0, "train_loss": 2.0,
         "train_zero": 2.0, "stage": "warm"},
        {"epoch": 3, "lr": 0.1, "top1": 30.0, "train_top1": 32.0, "train_loss": 1.5,
         "train_ce": 1.0, "train_kd": 0.5, "train_emb": 0.7, "stage": "main"},
    ]
    return {"run_id": "abc", "status": "done",
            "config": {"student": "s", "loss": {"name": "kd"}, "seed": 0, "teacher": None,
                       "data": {"name": "d", "transforms": []},
                       "eval": {"best_metric": "top1"}},
            "metrics": {"top1_last": 30.0, "train_emb_last": 0.7, "curve": curve}}


def test_run_curves_split_metrics_loss_terms_and_stages(tmp_path):
    record = staged_record()
    c = run_curves(record)
    assert c.metric == "top1" and c.values == [10.0, 20.0, 30.0]
    assert c.train_top1 == [12.0, 22.0, 32.0]
    assert c.terms == {"train_loss": [3.0, 2.0, 1.5], "train_zero": [3.0, 2.0, None],
                       "train_ce": [None, None, 1.0], "train_kd": [None, None, 0.5]}
    assert c.stages == [(1, "warm"), (3, "main")]
    assert run_curves(record, "train_emb").values == [0.5, None, 0.7]
    with pytest.raises(Exception, match="unknown metric 'top5'"):
        run_curves(record, "top5")
    # the PNG of a run of two stages, and the report's chart marks where each starts
    assert plot_curves([record], tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from kdbench.report.curves import training_curve_figures
    from kdbench.report.study import Study

    figures = training_curve_figures(Study("s", tmp_path, [record], [], None))
    assert [f.title for f in figures] == ["Training curves: test top1",
                                          "Loss terms: abc s kd s0"]
    marks = re.findall(r'<g class="kd-mark"><line x1="([\d.]+)".*?<text[^>]*>(\w+)</text>',
                       figures[1].body)
    assert [name for _, name in marks] == ["warm", "main"]
    assert float(marks[0][0]) < float(marks[1][0])


def test_nice_ticks_by_hand():
    a = nice_ticks(0.3, 9.7)  # range 9.4 / 5 = 1.88 -> step 2
    assert (a.lo, a.hi, a.ticks) == (0, 10, [0, 2, 4, 6, 8, 10])
    a = nice_ticks(21.5, 68.0)  # 46.5 / 5 = 9.3 -> step 10
    assert (a.lo, a.hi, a.ticks) == (20, 70, [20, 30, 40, 50, 60, 70])
    a = nice_ticks(0.012, 0.0449)  # 0.0329 / 5 = 0.00658 -> step 0.01
    assert a.ticks == pytest.approx([0.01, 0.02, 0.03, 0.04, 0.05])
    a = nice_ticks(4.15821, 4.15879)  # 0.00058 / 5 = 0.000116 -> step 0.0002, 4 decimals
    assert [a.label(t) for t in a.ticks] == ["4.1582", "4.1584", "4.1586", "4.1588"]
    a = nice_ticks(5.0, 5.0)  # a flat series gets ±5 % around it
    assert a.lo < 5.0 < a.hi
    assert re.fullmatch(r"[\d.]+", f"{a.ticks[0]:g}")
