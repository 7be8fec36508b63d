"""The ``kdbench`` command line: one small function per command, the logic lives elsewhere."""

from __future__ import annotations

import json
import os
import sys
import warnings
from typing import Any

import click

from .config import PRESETS, preset_default
from .errors import KDBenchError
from .plugins import ENV_DIR

# ============================== the group ======================================================


class KDBenchGroup(click.Group):
    """Adds plugin commands lazily and turns KDBenchError into a one-line error and exit code."""

    _plugin_commands_loaded = False

    def _load_plugin_commands(self, ctx: click.Context) -> None:
        if self._plugin_commands_loaded:
            return
        self._plugin_commands_loaded = True
        plugins_dir = ctx.params.get("plugins_dir") if ctx is not None else None
        if plugins_dir:
            os.environ[ENV_DIR] = str(plugins_dir)
        from .plugins import get_host

        for source, call in get_host().impls("register_commands"):
            try:
                call(cli=self)
            except Exception as exc:  # noqa: BLE001
                warnings.warn(f"kdbench: {source} register_commands failed: "
                              f"{type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=2)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_plugin_commands(ctx)
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None:
            self._load_plugin_commands(ctx)
            command = super().get_command(ctx, cmd_name)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KDBenchError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exc.exit_code)


def _showwarning(message, category, filename, lineno, file=None, line=None) -> None:
    text = str(message)
    click.echo(text if text.startswith("kdbench") else f"kdbench: warning: {text}", err=True)


@click.group(cls=KDBenchGroup, context_settings={"help_option_names": ["-h", "--help"],
                                                  "show_default": True})
@click.version_option(package_name="kdbench")
@click.option("--plugins-dir", type=click.Path(file_okay=False), envvar=ENV_DIR,
              show_envvar=True, default=None,
              help="Folder of *.py plugin files, loaded after installed plugins.")
def cli(plugins_dir: str | None) -> None:
    """kdbench: knowledge-distillation benchmarks — train, distil, record, tabulate."""
    if plugins_dir:
        os.environ[ENV_DIR] = str(plugins_dir)
    warnings.showwarning = _showwarning


def results_dir_option(f):
    return click.option("--results-dir", type=click.Path(file_okay=False),
                        envvar="KDBENCH_RESULTS_DIR", show_envvar=True, default="results",
                        help="Store of run records (runs/) and teacher trajectories "
                             "(teachers/).")(f)


def _from_preset(field: str) -> str:
    return "from preset: " + ", ".join(f"{p} {preset_default(p, field)}" for p in PRESETS)


# ============================== run ============================================================


@cli.command()
@click.option("--spec", type=click.Path(dir_okay=False), default=None,
              help="Run spec (YAML/JSON of config fields, or a record); flags override it.")
@click.option("--preset", default=None, show_default="quick",
              help=f"Recipe preset: {', '.join(PRESETS)}.")
@click.option("--dataset", default=None, show_default="digits", help="Dataset plugin name.")
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="KDBENCH_DATA_DIR",
              show_envvar=True, default=None, help="Folder holding the dataset's files.")
@click.option("--download", is_flag=True, default=None,
              help="Let torchvision download a missing dataset (needs the network).")
@click.option("--student", default=None, show_default="resnet20", help="Student architecture.")
@click.option("--student-weights", type=click.Path(dir_okay=False), default=None,
              help="Initial student weights (local state dict or .safetensors).")
@click.option("--teacher", "teacher_source", default=None, show_default="full",
              help="Teacher source (full, intermediate, ...; see `kdbench plugins`).")
@click.option("--teacher-arch", default=None, show_default="resnet56",
              help="Teacher architecture.")
@click.option("--teacher-epoch", type=int, default=None, show_default="half-way checkpoint",
              help="Checkpoint epoch for --teacher intermediate.")
@click.option("--teacher-seed", type=int, default=None, show_default="0",
              help="Seed of the teacher trajectory (shared by all student seeds).")
@click.option("--loss", default=None, show_default="kd", help="KD loss plugin name.")
@click.option("--w", "weights", multiple=True, metavar="NAME=VALUE",
              help="Override a loss weight, e.g. --w w_kd=0.9 --w w_ce=0.1.")
@click.option("--opt", "options", multiple=True, metavar="NAME=VALUE",
              help="Override a loss option, e.g. --opt T=4.")
@click.option("--epochs", type=int, default=None, show_default=_from_preset("recipe.epochs"),
              help="Student training epochs.")
@click.option("--batch-size", type=int, default=None,
              show_default=_from_preset("recipe.batch_size"), help="Student batch size.")
@click.option("--lr", type=float, default=None, show_default=_from_preset("recipe.lr"),
              help="Student base learning rate.")
@click.option("--seed", type=int, default=None, show_default="0",
              help="Student seed: data order, augmentation, initialisation.")
@click.option("--device", default=None, show_default="auto", help="auto, cpu, cuda[:N] or mps.")
@click.option("--precision", default=None, show_default="auto (bf16 where fast, else fp32)",
              help="auto, fp32, bf16 or fp16 (autocast).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Set any config field by dotted path, e.g. teacher.recipe.epochs=10.")
@results_dir_option
@click.option("--force", is_flag=True, help="Rerun even if a finished record exists.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
def run(spec, preset, dataset, data_dir, download, student, student_weights, teacher_source,
        teacher_arch, teacher_epoch, teacher_seed, loss, weights, options, epochs, batch_size,
        lr, seed, device, precision, sets, results_dir, force, quiet, as_json):
    """Train (or reuse) the teacher, distil the student, write the run record."""
    from .config import build_config, load_spec, parse_assignments
    from .runner import run as run_config

    overrides: dict[str, Any] = {
        "preset": preset, "data.name": dataset, "data.dir": data_dir, "student": student,
        "student_weights": student_weights, "teacher.source": teacher_source,
        "teacher.arch": teacher_arch, "teacher.epoch": teacher_epoch,
        "teacher.seed": teacher_seed, "loss.name": loss, "recipe.epochs": epochs,
        "recipe.batch_size": batch_size, "recipe.lr": lr, "seed": seed, "device": device,
        "precision": precision, "results_dir": results_dir,
    }
    if download:
        overrides["data.options.download"] = True
    overrides.update({f"loss.weights.{k}": v
                      for k, v in parse_assignments(weights, "--w").items()})
    overrides.update({f"loss.options.{k}": v
                      for k, v in parse_assignments(options, "--opt").items()})
    overrides.update(parse_assignments(sets, "--set"))
    config = build_config(overrides, load_spec(spec) if spec else None)
    record = run_config(config, force=force, progress=not quiet)
    if as_json:
        click.echo(json.dumps(record, indent=2))
    else:
        click.echo(summary_line(record))


def summary_line(record: dict[str, Any]) -> str:
    cfg, m = record["config"], record.get("metrics") or {}
    t = record.get("teacher")
    teacher = (f" ← {t['arch']} ({t['source']}, epoch {','.join(map(str, t['epochs']))}, "
               f"top-1 {t.get('teacher_top1', float('nan')):.2f})") if t else ""
    cost = record.get("cost") or {}
    return (f"{record['run_id']} {record['status']}: {cfg['student']}{teacher} "
            f"{cfg['loss']['name']} on {cfg['data']['name']} seed {cfg['seed']}: top-1 last "
            f"{m.get('top1_last', float('nan')):.2f}, best {m.get('top1_best', float('nan')):.2f}"
            f" (epoch {m.get('best_epoch', '?')}); {cost.get('wall_seconds', 0):.1f} s, "
            f"{cost.get('images_per_s', 0):.0f} img/s")


# ============================== table ==========================================================


@cli.command()
@results_dir_option
@click.option("--rows", default="dataset,student", help="Comma-separated row keys.")
@click.option("--cols", default="loss,teacher", help="Comma-separated column keys ('' for none).")
@click.option("--metric", default="top1_last",
              help="Metric column: top1_last, top1_best, top5_last, top5_best, ...")
@click.option("--where", multiple=True, metavar="KEY=VALUE",
              help="Keep only runs with this column value (repeatable).")
@click.option("--format", "fmt", default="github",
              type=click.Choice(["github", "latex", "csv", "html", "plain"]),
              help="Output format.")
@click.option("--digits", default=2, help="Decimals shown.")
@click.option("--layout", "layout_name", default="pivot",
              help="Table layout: pivot (rows × cols), or a paper layout (see --help of each).")
def table(results_dir, rows, cols, metric, where, fmt, digits, layout_name):
    """Comparison table from all run records: mean ± std over seeds, seeds per cell."""
    from .errors import UnknownNameError
    from .table import LAYOUTS, load_records

    if layout_name not in LAYOUTS:
        raise UnknownNameError("table layout", layout_name, LAYOUTS)
    df = load_records(results_dir)
    if df.empty:
        raise KDBenchError(f"no run records in {os.path.join(results_dir, 'runs')!r}")
    split = lambda s: [x.strip() for x in s.split(",") if x.strip()]  # noqa: E731
    click.echo(LAYOUTS[layout_name](df, rows=split(rows), cols=split(cols), metric=metric,
                                    where=where, fmt=fmt, digits=digits))


# ============================== plugins ========================================================


@cli.command()
@click.option("--kind", default=None, help="Only this kind (model, dataset, loss, ...).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(kind, as_json):
    """Every registered item: kind, name, source and description."""
    from tabulate import tabulate

    from .errors import UnknownNameError
    from .plugins import KINDS, get_registry

    if kind is not None and kind not in KINDS:
        raise UnknownNameError("plugin kind", kind, KINDS)
    registry = get_registry()
    entries = registry.entries(kind)
    if as_json:
        click.echo(json.dumps([{"kind": e.kind, "name": e.name, "source": e.source,
                                "description": e.description} for e in entries], indent=2))
    else:
        click.echo(tabulate([(e.kind, e.name, e.source, e.description) for e in entries],
                            headers=["kind", "name", "source", "description"]))


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="kdbench")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
