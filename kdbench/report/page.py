"""The report page: one self-contained HTML file for a results store.

For each study (:mod:`kdbench.report.study`): what it holds (runs by status, datasets,
students, losses, teacher sources, teacher trajectories), every table layout that applies to
its records (each registered ``table_layout`` rendered as HTML; a layout that raises for lack of
matching runs is listed as not applicable, with its reason), every figure the ``report_figure``
plugins draw, the runs as a table, and each run's provenance in a collapsed ``<details>``
(config, teacher, data and transforms, stages, environment, cost, error).

Offline by construction: styles and the one small script are inline, figures are inline SVG,
and a Content-Security-Policy forbids any fetch, so a page that tried one would say so in the
browser's console. Tables sort by a click on their header; points show their values on hover;
the print stylesheet drops the navigation and keeps tables and figures whole on a page.

The page carries ``<meta name="generator" content="kdbench report">``. :func:`write_report`
writes over an existing file only if it carries that mark, and only once the new page is built.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import os
import re
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, KDBenchError, UnknownNameError
from ..store import atomic_write_bytes
from ..version import __version__
from .study import Study, load_studies

GENERATOR = "kdbench report"
MARK = f'<meta name="generator" content="{GENERATOR}">'
CSP = ("default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
       "img-src data:")


@dataclass
class Summary:
    """What a report holds: per study, the tables (layout names and the inventory's), the
    figures (plugin name, title), the layouts left out (name, reason) and the runs."""

    path: Path | None = None
    studies: list[str] = field(default_factory=list)
    tables: list[tuple[str, str]] = field(default_factory=list)
    figures: list[tuple[str, str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)
    runs: int = 0

    def line(self) -> str:
        return (f"{len(self.studies)} stud{'y' if len(self.studies) == 1 else 'ies'}, "
                f"{self.runs} runs, {len(self.tables)} tables, {len(self.figures)} figures")


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


# ============================== output safety ==================================================


def written_by_kdbench(path: Path) -> bool:
    """Whether ``path`` is a page this module wrote (its generator mark in the first 4 KiB)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096).decode("utf-8", "replace")
    except OSError:
        return False
    return MARK in head


def check_output(out: str | Path) -> Path:
    """``out`` if the report may be written there: a new file, or a page kdbench wrote."""
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"report output {str(out)!r} is a folder; give a file name, e.g. "
                          f"{str(out / 'report.html')!r}")
    if out.exists() and not written_by_kdbench(out):
        raise ConfigError(f"report output {str(out)!r} exists and was not written by kdbench "
                          f"report; choose another file or remove it")
    if out.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"report output {str(out)!r} must end in .html")
    return out


# ============================== entry points ===================================================


def write_report(results_dir: str | Path, out: str | Path, *, curves: Sequence[str] = (),
                 title: str | None = None) -> Summary:
    """Build the page of ``results_dir`` and write it to ``out`` (atomically). ``curves``: run
    ids (or unique prefixes) whose training curves to draw. Bad input (an empty or unreadable
    store, an output that is not a kdbench page, an unknown run) raises a one-line
    KDBenchError and writes nothing."""
    out = check_output(out)
    page, summary = build_report(results_dir, curves=curves, title=title)
    atomic_write_bytes(out, page.encode("utf-8"))
    umask = os.umask(0)  # the temporary file is private; a page is for sharing
    os.umask(umask)
    os.chmod(out, 0o666 & ~umask)
    summary.path = out
    return summary


def build_report(results_dir: str | Path, *, curves: Sequence[str] = (),
                 title: str | None = None) -> tuple[str, Summary]:
    """The page's HTML and what it holds."""
    studies = load_studies(results_dir)
    _choose(studies, curves)
    summary = Summary(studies=[s.name for s in studies],
                      runs=sum(len(s.records) for s in studies))
    sections = [_study_section(s, summary, many=len(studies) > 1) for s in studies]
    title = title or f"kdbench report: {Path(results_dir).resolve().name}"
    return _page(title, results_dir, studies, sections, summary), summary


def _choose(studies: list[Study], wanted: Iterable[str]) -> None:
    ids = [r["run_id"] for s in studies for r in s.records]
    for w in wanted:
        matches = [i for i in ids if i.startswith(w)]
        if not matches:
            raise UnknownNameError("run", w, ids)
        if len(set(matches)) > 1:
            raise ConfigError(f"run id prefix {w!r} matches {len(set(matches))} runs "
                              f"({', '.join(sorted(set(matches))[:5])}); give more characters")
        for s in studies:
            if any(r["run_id"] == matches[0] for r in s.records) and matches[0] not in s.chosen:
                s.chosen.append(matches[0])


# ============================== one study ======================================================


def _study_section(study: Study, summary: Summary, many: bool) -> str:
    sid = study.slug
    parts = [f'<section class="kd-study" id="study-{_e(sid)}">']
    parts.append(f"<h2>{'Study: ' if many else ''}{_e(study.name)}</h2>"
                 + (f'<p class="kd-path">{_e(study.path)}</p>' if many else ""))
    parts.append(f'<section id="{_e(sid)}-inventory"><h3>What is in it</h3>'
                 f"{_inventory(study, summary)}</section>")
    parts.append(f'<section id="{_e(sid)}-tables"><h3>Tables</h3>{_tables(study, summary)}'
                 f"</section>")
    parts.append(f'<section id="{_e(sid)}-figures"><h3>Figures</h3>{_figures(study, summary)}'
                 f"</section>")
    parts.append(f'<section id="{_e(sid)}-runs"><h3>Runs</h3>{_runs(study, summary)}'
                 f"</section>")
    parts.append("</section>")
    return "\n".join(parts)


def _counts(values: Iterable[Any]) -> str:
    items = Counter(str(v) for v in values).most_common()
    return "<ul>" + "".join(f"<li>{_e(k)} <span class=\"kd-n\">{n}</span></li>"
                            for k, n in items) + "</ul>"


def _inventory(study: Study, summary: Summary) -> str:
    recs = study.records
    status = Counter(r["status"] for r in recs)
    cards = [
        ("Runs", f'<p class="kd-big">{len(recs)}</p><p>' + " · ".join(
            f'<span class="kd-status kd-{_e(k)}">{_e(k)} {n}</span>'
            for k, n in sorted(status.items())) + "</p>"),
        ("Datasets", _counts(r["config"]["data"]["name"] for r in recs)),
        ("Students", _counts(r["config"]["student"] for r in recs)),
        ("Losses", _counts(r["config"]["loss"]["name"] for r in recs)),
        ("Teachers", _counts((f"{t['source']} {t['arch']}" if (t := r["config"].get("teacher"))
                              else "none") for r in recs)),
    ]
    out = ['<div class="kd-cards">'] + [f'<div class="kd-card"><h4>{_e(h)}</h4>{b}</div>'
                                       for h, b in cards] + ["</div>"]
    if study.unreadable:
        out.append('<div class="kd-warn"><p>Unreadable records (left out):</p><ul>'
                   + "".join(f"<li>{_e(u)}</li>" for u in study.unreadable) + "</ul></div>")
    if study.trajectories:
        used = Counter((r.get("teacher") or {}).get("trajectory") for r in recs)
        rows = []
        for m in study.trajectories:
            spec = m.get("spec") or {}
            curve = m.get("curve") or []
            last = curve[-1] if curve else {}
            planned = (spec.get("recipe") or {}).get("epochs", "?")
            mi = list((study.path / "teachers" / str(m.get("key")) / "mi").glob("*.json"))
            rows.append([m.get("key"), spec.get("arch"), spec.get("dataset"), spec.get("seed"),
                         m.get("status"), f"{len(curve)} / {planned}",
                         ", ".join(map(str, m.get("save_epochs") or [])),
                         _num(last.get("top1")), len(mi), used.get(m.get("key"), 0)])
        out.append(_table("teachers", ["trajectory", "arch", "dataset", "seed", "status",
                                       "epochs trained", "checkpoints", "final top-1",
                                       "MI caches", "runs using it"], rows,
                          "Teacher trajectories of this study (from their manifests)."))
        summary.tables.append((study.name, "teachers"))
    return "\n".join(out)


def _num(v: Any, digits: int = 2) -> str:
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else ""


def _table(name: str, headers: list[str], rows: list[list[Any]], caption: str) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c if isinstance(c, _Raw) else _e(c)}</td>"
                                    for c in row) + "</tr>" for row in rows)
    return (f'<figure class="kd-block" data-kd="table" data-name="{_e(name)}"><figcaption>'
            f"{_e(caption)}</figcaption><div class=\"kd-scroll\"><table class=\"kd-table "
            f"sortable\"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
            f"</figure>")


class _Raw(str):
    """Markup that goes into a table cell as it is (made here, escaped already)."""


def _sortable(markup: str) -> str:
    return re.sub(r"<table(?=[\s>])", '<table class="kd-table sortable"', markup, count=1)


def _tables(study: Study, summary: Summary) -> str:
    """A study folder's tables are those its ``study.yaml`` names, rendered as ``kdbench
    reproduce`` renders them (the numbers of its README); a plain folder gets every layout that
    applies, the pivot's rows split by whatever differs between the runs of one cell."""
    from ..plugins import get_registry

    declared = _declared(study)
    if declared is not None:
        return _declared_tables(study, declared, summary)
    out, skipped = [], []
    for entry in get_registry().entries("table_layout"):
        options: dict[str, Any] = {"fmt": "html"}
        split: list[str] = []
        if entry.name == "pivot":
            from .pivot import DEFAULT_COLS, DEFAULT_ROWS

            split = _splitting_keys(study.df, [*DEFAULT_ROWS, *DEFAULT_COLS])
            options["rows"] = [*DEFAULT_ROWS, *split]
        text, notes, reason = _layout(entry, study.df, options)
        if reason is not None:
            skipped.append((entry.name, reason))
            continue
        if split:
            notes.insert(0, f"rows also split by {', '.join(split)}: runs that differ there "
                            f"are not pooled into one cell")
        out.append(_layout_block(entry.name, f"{entry.name}", f"{entry.description} "
                                 f"({entry.source})", text, notes))
        summary.tables.append((study.name, entry.name))
    for name, reason in skipped:
        summary.skipped.append((study.name, name, reason))
    if skipped:
        out.append('<details class="kd-skipped"><summary>Layouts that do not apply here ('
                   + ", ".join(_e(n) for n, _ in skipped) + ")</summary><ul>"
                   + "".join(f"<li><b>{_e(n)}</b>: {_e(r)}</li>" for n, r in skipped)
                   + "</ul></details>")
    return "\n".join(out) or "<p>No table layout applies.</p>"


def _layout(entry: Any, df: Any, options: dict[str, Any]) -> tuple[str, list[str], str | None]:
    """A layout's HTML, the warnings it gave, and why it does not apply (None: it does)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            text = entry.create(df, **options)
        except KDBenchError as exc:
            return "", [], str(exc)
        except Exception as exc:  # noqa: BLE001 - a broken layout must not sink the page
            return "", [], f"failed: {type(exc).__name__}: {exc}"
    return text, [str(w.message) for w in caught], None


def _layout_block(name: str, title: str, caption: str, text: str, notes: list[str]) -> str:
    body = _sortable(text) if "<table" in text else f"<pre>{_e(text)}</pre>"
    items = "".join(f"<li>{_e(n)}</li>" for n in notes)
    return (f'<figure class="kd-block" data-kd="table" data-name="{_e(name)}">'
            f'<figcaption><span class="kd-name">{_e(title)}</span> — {_e(caption)}'
            f'</figcaption><div class="kd-scroll">{body}</div>'
            + (f'<ul class="kd-notes">{items}</ul>' if items else "") + "</figure>")


def _declared(study: Study) -> Any:
    """The study's ``study.yaml`` (:func:`kdbench.report.reproduce.find_study`), or None for a
    plain folder (or one whose study.yaml cannot be read: it is reported as a plain folder)."""
    from .reproduce import STUDY_FILE, find_study

    if not (study.path / STUDY_FILE).is_file():
        return None
    try:
        return find_study(study.path)
    except KDBenchError as exc:
        warnings.warn(f"{study.name}: {exc}; showing every layout instead", RuntimeWarning,
                      stacklevel=2)
        return None


def _declared_tables(study: Study, declared: Any, summary: Summary) -> str:
    """The tables ``study.yaml`` names, in its order, once each (a .tex twin of a .md table is
    the same table), with the layout and options that made each committed file."""
    from ..plugins import get
    from .reproduce import table_options

    out, seen, skipped = [], set(), []
    for item in declared.tables:
        options = table_options(item, fmt="html")
        name = item.get("layout", "pivot")
        key = (name, json.dumps(options, sort_keys=True, default=str))
        if key in seen:
            continue
        seen.add(key)
        try:
            entry = get("table_layout", name)
        except KDBenchError as exc:
            skipped.append((item["file"], str(exc)))
            continue
        text, notes, reason = _layout(entry, study.df, options)
        if reason is not None:
            skipped.append((item["file"], reason))
            continue
        shown = ", ".join(f"{k} {v if not isinstance(v, list) else ','.join(map(str, v))}"
                          for k, v in options.items() if k != "fmt" and v)
        out.append(_layout_block(item["file"], item["file"], f"layout {name}; {shown} (as "
                                 f"study.yaml declares it)", text, notes))
        summary.tables.append((study.name, item["file"]))
    for name, reason in skipped:
        summary.skipped.append((study.name, name, reason))
    note = ('<p class="kd-note">The tables this study\'s <code>study.yaml</code> declares '
            "(its README's numbers). Other views: <code>kdbench table --results-dir "
            f"{_e(study.path)} --layout NAME</code>.</p>")
    if skipped:
        out.append('<div class="kd-warn"><p>Tables of study.yaml that could not be made:</p>'
                   "<ul>" + "".join(f"<li><b>{_e(n)}</b>: {_e(r)}</li>" for n, r in skipped)
                   + "</ul></div>")
    return note + "\n".join(out)


#: columns the page may split a plain folder's pivot rows by, named ones first; then any
#: config field (``config.*``) but those that never change a result
_SPLIT_FIRST = ("teacher_data", "teacher_arch", "teacher_epoch", "warmup", "preset")
_NOT_SPLIT = ("config.seed", "config.results_dir", "config.device", "config.data.dir",
              "config.log", "config.keep", "config.teacher.evaluate", "config.engine.",
              "config.preset")


def _splitting_keys(df: Any, keys: list[str]) -> list[str]:
    """Columns to add to ``keys`` so that no cell of finished runs pools configurations that
    differ in more than their seed (each record's ``cell_config``): greedily, the column that
    leaves the fewest mixed cells, until none is mixed or nothing more separates them."""
    if df.empty or "cell_config" not in df.columns:
        return []
    done = df[df["status"] == "done"] if "status" in df.columns else df
    if done.empty or any(k not in done.columns for k in keys):
        return []
    done = done.astype({c: str for c in done.columns if c.startswith("config.")
                        or c in _SPLIT_FIRST})

    def mixed(by: list[str]) -> int:
        counts = done.groupby(by, dropna=False)["cell_config"].nunique()
        return int((counts > 1).sum())

    chosen: list[str] = []
    left = mixed(keys)
    candidates = [c for c in (*_SPLIT_FIRST, *sorted(done.columns)) if c in done.columns
                  and (c in _SPLIT_FIRST or c.startswith("config."))
                  and not c.startswith(_NOT_SPLIT) and c not in keys]
    candidates = list(dict.fromkeys(candidates))
    while left:
        scored = [(mixed([*keys, *chosen, c]), i, c) for i, c in enumerate(candidates)
                  if c not in chosen]
        if not scored:
            break
        best, _, column = min(scored)
        if best >= left:
            break
        chosen.append(column)
        left = best
    return chosen


def _figures(study: Study, summary: Summary) -> str:
    from ..plugins import get_registry

    out, failed = [], []
    for entry in get_registry().entries("report_figure"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                figures = entry.create(study) or []
        except Exception as exc:  # noqa: BLE001 - a broken figure must not sink the page
            failed.append((entry.name, f"{type(exc).__name__}: {exc}"))
            continue
        for fig in figures:
            out.append(f'<figure class="kd-block kd-figure" data-kd="figure" '
                       f'data-name="{_e(entry.name)}"><figcaption><b>{_e(fig.title)}</b>'
                       + (f" — {_e(fig.caption)}" if fig.caption else "")
                       + f'</figcaption><div class="kd-scroll">{fig.body}</div></figure>')
            summary.figures.append((study.name, entry.name, fig.title))
    for name, reason in failed:
        summary.skipped.append((study.name, f"figure {name}", reason))
        out.append(f'<p class="kd-warn">Figure {_e(name)} failed: {_e(reason)}</p>')
    return ('<div class="kd-figures">' + "\n".join(out) + "</div>") if out else \
        "<p>No figure applies (no checkpoint curve, MI estimates or finished runs).</p>"


def _runs(study: Study, summary: Summary) -> str:
    from ..runner.record import summary_line

    rows, details = [], []
    for r in sorted(study.records, key=lambda r: r["run_id"]):
        cfg, m, t = r["config"], r.get("metrics") or {}, r.get("teacher") or {}
        best = (cfg.get("eval") or {}).get("best_metric", "top1")
        teacher = "-"
        if cfg.get("teacher"):
            teacher = (f"{cfg['teacher']['source']} {cfg['teacher']['arch']} @"
                       f"{','.join(map(str, t.get('epochs', []))) or '?'}")
        rid = r["run_id"]
        rows.append([_Raw(f'<a href="#run-{_e(rid)}"><code>{_e(rid)}</code></a>'),
                     _Raw(f'<span class="kd-status kd-{_e(r["status"])}">{_e(r["status"])}'
                          f"</span>"),
                     cfg["data"]["name"], cfg["student"], teacher, cfg["loss"]["name"],
                     cfg["seed"], m.get("epochs", ""), _num(m.get(f"{best}_last")),
                     _num(m.get(f"{best}_best")), _num((r.get("cost") or {}).get("wall_seconds"),
                                                       1)])
        try:
            line = summary_line(r)
        except Exception:  # noqa: BLE001 - an old or partial record still gets its details
            line = f"{rid} {r['status']}"
        sections = [("Configuration", cfg), ("Teacher", r.get("teacher")),
                    ("Data and transforms", r.get("data")), ("Stages", r.get("stages")),
                    ("Environment", r.get("env")), ("Cost", r.get("cost")),
                    ("Extra", r.get("extra")),
                    ("Error", {"error": r.get("error"), "traceback": r.get("traceback")}
                     if r.get("error") else None)]
        body = "".join(f"<h4>{_e(h)}</h4><pre>{_e(json.dumps(v, indent=2, default=str))}</pre>"
                       for h, v in sections if v)
        details.append(f'<details class="kd-run" id="run-{_e(rid)}"><summary>{_e(line)}'
                       f'</summary><div class="kd-prov">{body}</div></details>')
    table = _table("runs", ["run", "status", "dataset", "student", "teacher", "loss", "seed",
                            "epochs", "best metric last", "best metric best", "wall s"], rows,
                   "Every run of the study (best metric: each run's own, top1 unless set); "
                   "click a run for its provenance, a header to sort.")
    summary.tables.append((study.name, "runs"))
    return table + '<div class="kd-provenance"><h4>Provenance</h4>' + "".join(details) + \
        "</div>"


# ============================== the page =======================================================


def _page(title: str, results_dir: str | Path, studies: list[Study], sections: list[str],
          summary: Summary) -> str:
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    nav = "".join(
        f'<li><a href="#study-{_e(s.slug)}">{_e(s.name)}</a> <span class="kd-n">'
        f"{len(s.records)}</span><ul>"
        + "".join(f'<li><a href="#{_e(s.slug)}-{part}">{label}</a></li>'
                  for part, label in (("inventory", "contents"), ("tables", "tables"),
                                      ("figures", "figures"), ("runs", "runs")))
        + "</ul></li>" for s in studies)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
{MARK}
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<style>{CSS}</style>
</head>
<body>
<header><h1>{_e(title)}</h1>
<p class="kd-meta">Store <code>{_e(Path(results_dir))}</code> · {_e(summary.line())}
· generated {_e(now)} by kdbench {_e(__version__)}</p></header>
<nav class="kd-nav"><ul>{nav}</ul></nav>
<main>
{"".join(sections)}
</main>
<footer>kdbench report · self-contained: no network needed to view or print it.</footer>
<script>{SCRIPT}</script>
</body>
</html>
"""


CSS = """
:root{--fg:#1b1f24;--muted:#5b6470;--line:#d5d9de;--bg:#fff;--soft:#f4f6f8;--accent:#0072B2}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
 color:var(--fg);background:var(--bg)}
header,main,footer,.kd-nav{max-width:1280px;margin:0 auto;padding:0 20px}
header h1{margin:18px 0 4px;font-size:22px}
.kd-meta,.kd-path,footer{color:var(--muted);font-size:12px}
footer{padding:24px 20px}
.kd-nav ul{list-style:none;margin:8px 0;padding:0;display:flex;flex-wrap:wrap;gap:4px 18px}
.kd-nav ul ul{display:inline-flex;gap:8px;margin:0 0 0 6px}
.kd-nav a{color:var(--accent);text-decoration:none}
h2{border-bottom:2px solid var(--line);padding-bottom:4px;margin-top:28px}
h3{margin:22px 0 8px}
h4{margin:10px 0 4px;font-size:13px}
.kd-cards{display:flex;flex-wrap:wrap;gap:10px}
.kd-card{border:1px solid var(--line);border-radius:6px;padding:8px 12px;min-width:150px;
 background:var(--soft)}
.kd-card ul{margin:0;padding-left:16px}
.kd-big{font-size:26px;font-weight:600;margin:0}
.kd-n{color:var(--muted);font-size:12px}
.kd-n::before{content:"("}.kd-n::after{content:")"}
.kd-status{padding:0 5px;border-radius:3px;background:#e8ebef;white-space:nowrap}
.kd-done{background:#d9f2e4}.kd-failed{background:#fbdada}
.kd-running,.kd-interrupted{background:#fdf0cf}
.kd-block{margin:10px 0 18px}
.kd-block figcaption{font-size:12.5px;color:var(--muted);margin-bottom:4px}
.kd-name{font-weight:600;color:var(--fg)}
.kd-scroll{overflow-x:auto}
table.kd-table{border-collapse:collapse;font-size:12.5px;font-variant-numeric:tabular-nums}
.kd-table th,.kd-table td{border:1px solid var(--line);padding:3px 7px;white-space:nowrap}
.kd-table thead th{background:var(--soft);cursor:pointer;user-select:none;position:relative;
 padding-right:16px}
.kd-table thead th:hover{background:#e6eaee}
.kd-table thead th[aria-sort=ascending]::after{content:"▲";position:absolute;right:4px;
 font-size:9px;top:6px}
.kd-table thead th[aria-sort=descending]::after{content:"▼";position:absolute;right:4px;
 font-size:9px;top:6px}
.kd-table tbody tr:nth-child(even){background:#fafbfc}
.kd-table tbody tr:hover{background:#eef5fb}
.kd-block p{margin:2px 0 4px;font-size:12.5px;color:var(--muted)}
.kd-notes,.kd-warn{color:#8a5300;font-size:12px}
.kd-skipped{font-size:12px;color:var(--muted);margin:6px 0 14px}
.kd-figures{display:flex;flex-wrap:wrap;gap:8px 18px;align-items:flex-start}
/* a table box: as wide as its chart, the caption wrapped to that width */
.kd-figure{display:table}
.kd-figure figcaption{display:table-caption;caption-side:top}
.kd-figure svg.kd-chart{max-width:none}
svg.kd-chart{display:block;max-width:100%;height:auto;font-size:11px;
 font-family:inherit;background:#fff}
.kd-title{font-size:12.5px;font-weight:600;fill:var(--fg)}
.kd-tick{fill:var(--muted);font-size:10.5px}
.kd-label{fill:var(--fg);font-size:11.5px}
.kd-grid{stroke:#eceff2;stroke-width:1}
.kd-frame{fill:none;stroke:#9aa3ad;stroke-width:1}
.kd-line{fill:none;stroke:currentColor;stroke-width:1.8}
.kd-band{fill:currentColor;fill-opacity:.15;stroke:none}
.kd-point{fill:currentColor;stroke:#fff;stroke-width:1}
.kd-point:hover{r:5.5;stroke:var(--fg)}
.kd-point-label{fill:var(--muted);font-size:9.5px}
.kd-legend line{stroke:currentColor;stroke-width:2.2}
.kd-legend text{fill:var(--fg);font-size:10.5px}
.kd-mark line{stroke:#8c96a0;stroke-dasharray:2 3}
.kd-mark text{fill:var(--muted);font-size:9.5px}
.kd-run{border-bottom:1px solid var(--line);padding:3px 0;font-size:12.5px}
.kd-run summary{cursor:pointer}
.kd-run pre{background:var(--soft);padding:6px 8px;overflow-x:auto;font-size:11.5px;margin:2px 0}
.kd-run:target summary{background:#fff6d6}
@media print{
 .kd-nav,.kd-provenance,footer{display:none}
 body{font-size:10pt}
 header,main{max-width:none;padding:0}
 .kd-block,.kd-card,svg.kd-chart{break-inside:avoid}
 h2,h3{break-after:avoid}
 .kd-study{break-before:page}
 .kd-study:first-of-type{break-before:auto}
 .kd-scroll{overflow:visible}
 .kd-table thead th{background:#eee}
 a{color:inherit;text-decoration:none}
 @page{margin:12mm}
}
"""

SCRIPT = """
(function () {
  "use strict";
  function key(cell) {
    var text = cell.textContent.trim();
    var m = text.match(/^[-+]?(\\d+\\.?\\d*|\\.\\d+)(e[-+]?\\d+)?/i);
    return m ? {n: parseFloat(m[0]), t: text} : {n: null, t: text.toLowerCase()};
  }
  function compare(a, b) {
    if (a.t === "" || b.t === "") { return (a.t === "") - (b.t === ""); }
    if (a.n !== null && b.n !== null) { return a.n - b.n || a.t.localeCompare(b.t); }
    if (a.n !== null) { return -1; }
    if (b.n !== null) { return 1; }
    return a.t.localeCompare(b.t);
  }
  function sort(table, col, th) {
    var body = table.tBodies[0];
    if (!body) { return; }
    var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    Array.prototype.forEach.call(th.parentNode.cells, function (c) {
      c.removeAttribute("aria-sort");
    });
    th.setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
    var rows = Array.prototype.slice.call(body.rows).map(function (row, i) {
      return {row: row, key: row.cells[col] ? key(row.cells[col]) : {n: null, t: ""}, i: i};
    });
    rows.sort(function (a, b) {
      var empty = (a.key.t === "") - (b.key.t === "");
      return empty || dir * compare(a.key, b.key) || a.i - b.i;
    });
    rows.forEach(function (r) { body.appendChild(r.row); });
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    var head = table.tHead;
    if (!head || !head.rows.length) { return; }
    var cells = head.rows[head.rows.length - 1].cells;
    Array.prototype.forEach.call(cells, function (th, col) {
      th.tabIndex = 0;
      th.title = "sort by " + th.textContent.trim();
      th.addEventListener("click", function () { sort(table, col, th); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sort(table, col, th); }
      });
    });
  });
  function openTarget() {
    var id = decodeURIComponent(location.hash.slice(1));
    var el = id && document.getElementById(id);
    if (el && el.tagName === "DETAILS") { el.open = true; }
  }
  window.addEventListener("hashchange", openTarget);
  openTarget();
})();
"""
