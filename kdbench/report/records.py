"""Records → one pandas DataFrame: a row per run, and the filters every table starts with.

:func:`load_records` reads every record of a store as one row (:func:`record_row`: short
columns for the usual axes, ``config.*`` for the rest, the metrics and the cost);
:func:`finished` and :func:`apply_where` keep the runs a table shows; :func:`metric_columns`,
:func:`check_metric` and :func:`metric_unit` say which metrics the records hold and in what unit.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import RunConfig, canonical_json, identity
from ..errors import ConfigError, KDBenchError, StoreError, UnknownNameError
from ..plugins import get_registry
from ..store import Store
from ..teachers.trajectory import changed_checkpoints

#: a value a record does not have (no teacher, no warm-up, ...)
NONE = "-"
#: the data condition without label noise or imbalance
CLEAN = "clean"


def record_row(record: dict[str, Any]) -> dict[str, Any]:
    """One record as a flat row: short columns for the usual axes, ``config.*`` for the rest."""
    cfg = record["config"]
    teacher = cfg.get("teacher")
    prov = record.get("teacher") or {}
    metrics = {k: v for k, v in (record.get("metrics") or {}).items()
               if not isinstance(v, (list, dict))}
    row: dict[str, Any] = {
        "run_id": record["run_id"], "status": record["status"], "error": record.get("error"),
        "dataset": cfg["data"]["name"], "student": cfg["student"], "loss": cfg["loss"]["name"],
        "teacher": teacher["source"] if teacher else NONE,
        "teacher_arch": teacher["arch"] if teacher else NONE,
        "teacher_epoch": ",".join(map(str, prov.get("epochs", []))) or NONE,
        # the warm-up stages before the main stage, by name ("indistill", "a+b"), or "-"
        "warmup": "+".join(w["name"] if isinstance(w, dict) else str(w)
                           for w in cfg.get("warmup") or []) or NONE,
        "teacher_top1": prov.get("teacher_top1"),
        "seed": cfg["seed"], "preset": cfg.get("preset"), "precision": cfg.get("precision"),
        **metrics,
        **{k: v for k, v in (record.get("cost") or {}).items() if not isinstance(v, (dict, list))},
        "cell_config": _config_without_seed(cfg),
        # the code that made the run (`kdbench table --cols code`, `--where code=...`), and the
        # versions a cell must not mix (git aside: it changes every commit)
        "code": code_text(record), CELL_CODE: code_versions(record),
    }
    for k, v in prov.items():  # the rest of the teacher provenance (cost, ensemble mode, ...)
        row.setdefault(k if k.startswith("teacher_") else f"teacher_{k}", _scalar(v))
    flat = pd.json_normalize(cfg, sep=".").iloc[0].to_dict()
    row.update({f"config.{k}": _scalar(v) for k, v in flat.items()})
    # where the teacher learned: same (the student's data), clean (its own data without the
    # student's label noise or imbalance), other, or - (no teacher); as the robustness layout
    row["teacher_data"] = teacher_data(row)
    for k, v in (record.get("extra") or {}).items():
        row.setdefault(k, _scalar(v))
    return row


#: a row's hidden column: the code versions a table cell must not mix (:func:`code_versions`)
CELL_CODE = "cell_code"
#: columns a row holds for the tables' own checks, never offered as a key
HIDDEN = ("cell_config", CELL_CODE)


def _record_code(record: dict[str, Any]) -> dict[str, Any]:
    """A record's ``code``; for a record made before records held one, what its ``env`` says
    (kdbench's version, its git commit, torch's version); empty when it says nothing."""
    code = record.get("code")
    if isinstance(code, dict):
        return code
    env = record.get("env") if isinstance(record.get("env"), dict) else {}
    return {k: env[k] for k in ("kdbench", "git", "torch") if env.get(k)}


def _plugins(code: dict[str, Any]) -> list[str]:
    plugins = code.get("plugins") if isinstance(code.get("plugins"), dict) else {}
    return [f"{name}=={'?' if v is None else v}" for name, v in sorted(plugins.items())]


def code_text(record: dict[str, Any]) -> str:
    """The code that made a record as a row's ``code`` text: ``kdbench 0.3.0.dev0 @ abc1234``
    (the commit's first 7 hex digits, ``+dirty`` for local changes), then every plugin as
    ``name==version``, sorted (``, kdbench-example==0.1.0``); from ``env`` for a record
    without ``code``; ``-`` when the record says nothing."""
    code = _record_code(record)
    git = code.get("git")
    head = ""
    if code.get("kdbench"):
        head = f"kdbench {code['kdbench']}"
    if isinstance(git, str) and git:
        commit, dirty = (git[:-len("+dirty")], "+dirty") if git.endswith("+dirty") else (git, "")
        head = f"{head or 'kdbench ?'} @ {commit[:7]}{dirty}"
    text = ", ".join([head] * bool(head) + _plugins(code))
    return text or NONE


def code_versions(record: dict[str, Any]) -> str:
    """The versions of the code that made a record that a table cell must not mix: kdbench's,
    every plugin's and torch's (``kdbench 0.3.0.dev0, torch 2.5.1, kdbench-example==0.1.0``;
    ``-`` when the record says none). The git commit is left out: every commit of a checkout
    would otherwise count as other code (as when a run decides whether to reuse a record)."""
    code = _record_code(record)
    parts = [f"{k} {code[k]}" for k in ("kdbench", "torch") if code.get(k)] + _plugins(code)
    return ", ".join(parts) or NONE


def transform_list(value: Any) -> list[dict[str, Any]]:
    """A record row's transforms column (JSON text, a list, or missing) as a list."""
    if isinstance(value, str):
        value = json.loads(value) if value.strip() else []
    if isinstance(value, list):
        return [t if isinstance(t, dict) else {"name": t} for t in value]
    return []


def corruptions(transforms: list[dict[str, Any]]) -> list[tuple[str, str, float]]:
    """The label-noise and imbalance transforms that change the data, as (family, kind, level):
    ("noise", kind, rate) and ("imbalance", kind, ratio), in the order applied."""
    out = []
    for t in transforms:
        if t.get("name") == "label_noise" and float(t.get("rate", 0.0)) > 0:
            out.append(("noise", str(t.get("kind", "symmetric")), float(t["rate"])))
        elif t.get("name") == "imbalance" and float(t.get("ratio", 1.0)) > 1:
            out.append(("imbalance", str(t.get("kind", "exponential")), float(t["ratio"])))
    return out


def teacher_data(row: pd.Series | dict[str, Any]) -> str:
    """Where a run's teacher learned, from a record row: ``same`` (the student's data, the
    default, and always for an online cohort), ``clean`` (a ``teacher.data`` without the
    student's label noise or imbalance), ``other`` (any other difference), ``-`` (no teacher)."""
    get = row.get
    if get("teacher", NONE) in (NONE, None) or (isinstance(get("teacher"), float)
                                                 and math.isnan(get("teacher"))):
        return NONE
    if get("teacher") == "peers":
        return "same"
    own = get("config.teacher.data.transforms")
    if not isinstance(own, (str, list)):
        return "same"  # teacher.data None: the student's data
    student, teacher = transform_list(get("config.data.transforms")), transform_list(own)
    if teacher == student:
        return "same"
    # the teacher's data lacks the student's label noise and imbalance: clean; it differs in
    # some other way (another corruption, another subset): other
    return CLEAN if not corruptions(teacher) and corruptions(student) else "other"


def _scalar(v: Any) -> Any:
    return json.dumps(v) if isinstance(v, (list, dict)) else v


def _config_without_seed(cfg: dict[str, Any]) -> str:
    try:
        ident = identity(RunConfig.from_dict(cfg))
    except KDBenchError:
        ident = dict(cfg)
    ident.pop("seed", None)
    return hashlib.sha256(canonical_json(ident).encode()).hexdigest()[:12]


def load_records(results_dir: str | Path = "results", *, warn: bool = True) -> pd.DataFrame:
    """Every record under ``<results_dir>/runs`` as one row; unreadable records are skipped with a
    warning naming the file, and finished records distilled from teacher weights their
    trajectory no longer holds are named in one warning."""
    rows = []
    store, manifests, stale = Store(results_dir), {}, []
    for _path, rec in store.iter_records():
        if isinstance(rec, StoreError):
            if warn:
                warnings.warn(f"skipping {rec}", RuntimeWarning, stacklevel=2)
            continue
        if warn and rec.get("status") == "done":
            changes = changed_checkpoints(rec, store, manifests)
            if changes:
                stale.append((rec["run_id"], changes[0]))
        rows.append(record_row(rec))
    if stale:
        first, change = stale[0]
        warnings.warn(f"kdbench: {len(stale)} finished record(s) were distilled from teacher "
                      f"weights their trajectory no longer holds (the first, run {first}: "
                      f"{change}); their figures are the old teacher's (`kdbench run` of the "
                      f"run with --rerun-changed remakes it)", RuntimeWarning, stacklevel=2)
    df = pd.DataFrame(rows)
    df.attrs["results_dir"] = str(results_dir)  # layouts that read more than the rows need it
    return df


def apply_where(df: pd.DataFrame, where: Iterable[str]) -> pd.DataFrame:
    """Keep rows matching every ``key=value`` (values compared as text)."""
    for clause in where:
        key, sep, value = clause.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"malformed --where {clause!r}: expected KEY=VALUE, e.g. loss=kd")
        if key not in df.columns:
            raise UnknownNameError("column", key, [c for c in df.columns if c not in HIDDEN])
        df = df[df[key].map(as_text) == value.strip()]
    return df


def finished(df: pd.DataFrame, where: Iterable[str] = ()) -> pd.DataFrame:
    """The finished runs matching every ``--where`` clause; none is an error that says so."""
    if df.empty:
        raise KDBenchError("no run records to tabulate")
    df = apply_where(df, where)
    df = df[df["status"] == "done"]
    if df.empty:
        raise KDBenchError("no finished runs match" + (f" --where {' '.join(where)}" if where
                                                         else ""))
    return df


def as_text(v: Any) -> str:
    """A cell value as the text ``--where`` compares and labels sort by (``3.0`` → ``3``,
    missing → empty)."""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return "" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v)


def metric_columns(df: pd.DataFrame) -> list[str]:
    """The metric columns the records hold (``<metric>_last``, ``_best``, ``_last10_best``)."""
    return [c for c in df.columns if c.endswith(("_last", "_best")) and not
            c.startswith(("config.", "teacher_"))]


def check_metric(df: pd.DataFrame, metric: str) -> None:
    """A metric no record has is an error listing the ones they have."""
    if metric not in df.columns:
        raise UnknownNameError("metric", metric, metric_columns(df),
                               hint="a metric the records hold (an evaluator's, + _last/_best)")


#: a table file's suffix -> its format (``kdbench table -o FILE``)
SUFFIX_FORMATS = {".md": "github", ".tex": "latex", ".csv": "csv", ".html": "html",
                  ".txt": "plain"}


def table_output(out: str | None, fmt: str | None) -> tuple[str, Path | None]:
    """The format and file of ``kdbench table [-o FILE] [--format F]``: the format from the
    file's suffix (a different ``--format`` is an error), the file's folder must exist."""
    if out is None:
        return fmt or "github", None
    target = Path(out)
    by_suffix = SUFFIX_FORMATS.get(target.suffix.lower())
    if by_suffix is None:
        raise ConfigError(f"-o {out!r}: unknown table suffix {target.suffix or '(none)'!r} "
                          f"(valid: {', '.join(SUFFIX_FORMATS)})")
    if fmt is not None and fmt != by_suffix:
        raise ConfigError(f"-o {out!r} is {by_suffix} by its suffix, but --format is {fmt}")
    if not target.parent.is_dir():
        raise ConfigError(f"-o {out!r}: folder {str(target.parent)!r} does not exist")
    return by_suffix, target


def lower_is_better(metric: str) -> bool:
    """Whether the evaluator that reports ``metric`` (with or without _last/_best) declares
    lower values better (a loss, a KL)."""
    base = re.sub(r"_(last|best)$", "", metric)
    reg = get_registry()
    return any(base in reg.get("evaluator", name).lower_is_better
               for name in reg.names("evaluator"))


#: how an axis or a caption names a metric (any other: its name with spaces)
METRIC_NAMES = {"top1": "top-1 accuracy", "top5": "top-5 accuracy", "test_loss": "test loss",
                "train_top1": "training top-1 accuracy", "map_cosine": "mAP (cosine)",
                "map_euclidean": "mAP (Euclidean)", "agreement": "top-1 agreement with the "
                "teacher", "teacher_kl": "KL(teacher ‖ student)"}
_WHEN = (("_last10_best", "best of the last 10 epochs"), ("_last", "last epoch"),
         ("_best", "best epoch"))


def metric_label(metric: str, unit: bool = True) -> str:
    """A metric as a reader names it on an axis: ``top1_last`` → ``top-1 accuracy, last epoch
    (%)``; with ``unit``, the unit of :func:`metric_unit`."""
    base, when = metric, ""
    for suffix, text in _WHEN:
        if metric.endswith(suffix):
            base, when = metric[:-len(suffix)], text
            break
    name = METRIC_NAMES.get(base, base.replace("_", " "))
    label = f"{name}, {when}" if when else name
    if not unit:
        return label
    u = metric_unit(metric)
    return f"{label} ({u})" if u else label


def metric_unit(metric: str) -> str:
    """The unit a table states for a metric column: ``%`` unless the evaluator that reports
    the metric declares another (``units`` at registration; e.g. retrieval's mAP is 0-1)."""
    base = re.sub(r"_(last|best)$", "", metric)
    reg = get_registry()
    for name in reg.names("evaluator"):
        unit = reg.get("evaluator", name).units.get(base)
        if unit:
            return unit
    return "%"
