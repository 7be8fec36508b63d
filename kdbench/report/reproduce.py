"""A study: a folder of ``results/`` that remakes itself from one command.

``results/<study>/study.yaml`` says what the study runs and what it shows::

    description: ...
    data_dir: ../../../shared/data/cifar10     # relative to the study folder, or $KDBENCH_DATA_DIR
    sweeps: [sweep.yaml]                       # run in order with kdbench sweep
    select:                                    # Algorithm 1 on teacher trajectories (optional)
      - {trajectory: resnet20-cifar10-s0-..., estimator: recon, layer: embedding, samples: 1000}
    tables:
      - {file: tables/table1.md, layout: checkpoint, metric: top1_last10_best}
    figures:
      - {file: figures/curve.png, plot: checkpoint-curve, metric: top1_last10_best}

``kdbench reproduce STUDY`` runs the sweeps (finished runs are reused: a study can span
sessions), the selections, then renders every table and figure from the records;
``--render-only`` does the last step alone, which is what the test of committed results does:
tables and figures are functions of the committed records, byte for byte.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, KDBenchError, UnknownNameError
from ..plugins import get
from .figures import find_plot
from .records import load_records

STUDY_FILE = "study.yaml"


@dataclass
class Study:
    """A study folder and its ``study.yaml``."""

    folder: Path
    description: str = ""
    data_dir: str | None = None
    sweeps: list[str] = field(default_factory=list)
    select: list[dict[str, Any]] = field(default_factory=list)
    tables: list[dict[str, Any]] = field(default_factory=list)
    figures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.folder.name


def find_study(name: str | Path, root: str | Path = "results") -> Study:
    """The study at ``name`` (a folder, or a folder name under ``root``)."""
    import yaml

    folder = Path(name)
    if not (folder / STUDY_FILE).is_file():
        folder = Path(root) / str(name)
    path = folder / STUDY_FILE
    if not path.is_file():
        known = sorted(p.parent.name for p in Path(root).glob(f"*/{STUDY_FILE}"))
        raise UnknownNameError("study", str(name), known, hint=f"a folder with a {STUDY_FILE}")
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{str(path)!r} is not valid YAML: {str(exc).splitlines()[0]}"
                          ) from None
    known_keys = {"description", "data_dir", "sweeps", "select", "tables", "figures"}
    unknown = sorted(set(doc) - known_keys)
    if unknown:
        raise ConfigError(f"{str(path)!r}: unknown key {unknown[0]!r} (valid: "
                          f"{', '.join(sorted(known_keys))})")
    return Study(folder=folder, **doc)


def data_dir(study: Study, given: str | None = None) -> str | None:
    """The study's data folder: given, else $KDBENCH_DATA_DIR, else its own (relative)."""
    if given:
        return given
    if os.environ.get("KDBENCH_DATA_DIR"):
        return os.environ["KDBENCH_DATA_DIR"]
    return str((study.folder / study.data_dir).resolve()) if study.data_dir else None


def run_study(study: Study, *, data: str | None = None, executor: str = "local",
              jobs: int | None = None, progress: bool = True,
              say: Any = print, changed: str = "ask") -> None:
    """Run the study's sweeps and selections (what is done already is reused; a finished
    record made by other code as ``changed`` says, see :func:`kdbench.sweep.run_sweep`)."""
    from ..sweep import expand, load_sweep, make_executor, run_sweep, summary_report

    for sweep_file in study.sweeps:
        plan = expand(load_sweep(str(study.folder / sweep_file)), results_dir=study.folder,
                      data_dir=data_dir(study, data))
        options = {"jobs": jobs} if jobs and executor == "local" else {}
        summary = run_sweep(plan, make_executor(executor, **options), progress=progress,
                            warn=say, changed=changed)
        say(summary_report(summary))
        if summary.exit_code:
            raise KDBenchError(f"study {study.name}: sweep {sweep_file} did not finish "
                               f"({summary.line()})")
    for item in study.select:
        from ..mi.commands import select_command

        request = {"estimator": "recon", "layer": "embedding", "samples": 1000, "seed": 0,
                   "repeats": 3, "options": {}, **item}
        request["options"] = tuple(f"{k}={v}" for k, v in request["options"].items())
        say(select_command(**request, results_dir=str(study.folder), device="auto",
                           data_dir=data_dir(study, data), force=False, quiet=not progress,
                           as_json=False))


def render(study: Study, out: Path | None = None) -> list[Path]:
    """Every table and figure of the study, from its records, into ``out`` (default: the
    study folder itself); returns the files written."""
    out = Path(out) if out is not None else study.folder
    df = load_records(study.folder)
    if df.empty:
        raise KDBenchError(f"study {study.name} has no run records in "
                           f"{str(study.folder / 'runs')!r}: run `kdbench reproduce "
                           f"{study.name}` first")
    written = []
    for item in study.tables:
        text = get("table_layout", item.get("layout", "pivot")).create(
            df, **table_options(item))
        path = out / item["file"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.rstrip("\n") + "\n")
        written.append(path)
    for item in study.figures:
        written.append(_figure(df, item, out, study))
    return written


def table_options(item: dict[str, Any], fmt: str | None = None) -> dict[str, Any]:
    """The layout options of one of the study's ``tables:`` (in ``fmt``, default: its file's
    format): what ``kdbench reproduce`` and ``kdbench report`` both render."""
    options = {k: v for k, v in item.items() if k not in ("file", "layout")}
    if fmt is not None:
        options["fmt"] = fmt
    options.setdefault("fmt", _format_of(item["file"]))
    for axis in ("rows", "cols"):  # "a,b" as on the command line, or a list
        value = options.get(axis)
        options[axis] = ([x.strip() for x in value.split(",") if x.strip()]
                         if isinstance(value, str) else value)
    return options


def _format_of(file: str) -> str:
    suffix = Path(file).suffix.lower()
    return {".md": "github", ".tex": "latex", ".csv": "csv", ".html": "html"}.get(suffix, "plain")


def _figure(df: Any, item: dict[str, Any], out: Path, study: Study) -> Path:
    """Draw one of the study's ``figures:``, found by its ``plot`` name in the figure registry
    (:func:`kdbench.report.figures.find_plot`)."""
    options = {k: v for k, v in item.items() if k not in ("file", "plot")}
    path = out / item["file"]
    find_plot(item.get("plot"), f"study {study.name}: ").save(df, path, **options)
    return path
