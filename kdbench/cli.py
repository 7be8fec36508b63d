"""The ``kdbench`` command line: one small function per command, the logic lives elsewhere."""

from __future__ import annotations

import copy
import json
import os
import sys
import warnings
from typing import Any

import click

from .config import PRESETS, preset_default
from .errors import ConfigError, KDBenchError
from .openmp import choose_wait_policy
from .plugins import ENV_DIR
from .version import __version__


def summary_line(record: dict[str, Any]) -> str:
    """:func:`kdbench.runner.record.summary_line`, imported by the commands that print one (it
    loads torch, which ``kdbench --help`` does without)."""
    from .runner.record import summary_line as line

    return line(record)


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
        from .plugins import command_host

        # the built-ins register no command: a host without them keeps torch out of --help
        for source, call in command_host().impls("register_commands"):
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


#: decimals a float (IEEE double: 15 significant digits) shows in a table
MAX_DIGITS = 15


def _showwarning(message, category, filename, lineno, file=None, line=None) -> None:
    text = str(message)
    click.echo(text if text.startswith("kdbench") else f"kdbench: warning: {text}", err=True)


@click.group(cls=KDBenchGroup, context_settings={"help_option_names": ["-h", "--help"],
                                                  "show_default": True})
@click.version_option(version=__version__, prog_name="kdbench")
@click.option("--plugins-dir", type=click.Path(file_okay=False), envvar=ENV_DIR,
              show_envvar=True, default=None,
              help="Folder of *.py plugin files, loaded after installed plugins.")
def cli(plugins_dir: str | None) -> None:
    """kdbench: knowledge-distillation benchmarks — train, distil, record, tabulate."""
    # the OpenMP runtime reads its wait policy once, when torch loads it: choose before any
    # command imports torch (here, not at import: --help needs neither torch nor the sample)
    choose_wait_policy()
    if plugins_dir:
        if not os.path.isdir(plugins_dir):
            raise ConfigError(f"--plugins-dir {str(plugins_dir)!r} does not exist or is not a "
                              f"folder (give a folder of *.py plugin files, or leave it out; "
                              f"also read from {ENV_DIR})")
        os.environ[ENV_DIR] = str(plugins_dir)
    warnings.showwarning = _showwarning


def results_dir_option(f=None, *, spec_default: bool = False):
    """``--results-dir``; with ``spec_default`` an unset flag leaves a spec file's value alone."""
    def deco(fn):
        return click.option("--results-dir", type=click.Path(file_okay=False),
                            envvar="KDBENCH_RESULTS_DIR", show_envvar=True,
                            default=None if spec_default else "results",
                            show_default="results (or the spec's)" if spec_default else True,
                            help="Store of run records (runs/) and teacher trajectories "
                                 "(teachers/).")(fn)
    return deco(f) if f is not None else deco


def _from_preset(field: str) -> str:
    return "from preset: " + ", ".join(f"{p} {preset_default(p, field)}" for p in PRESETS)


# ============================== teacher-source flags of run ====================================


def _int_list(ctx, param, value):
    """``"100,150,200"`` → ``[100, 150, 200]`` (None stays None)."""
    if value is None:
        return None
    try:
        return [int(v) for v in value.replace(" ", ",").split(",") if v]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated epochs, got {value!r}") from None


def _epoch_or_all(ctx, param, value):
    if value is None or value == "all":
        return value
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(f"expected an epoch number or 'all', got {value!r}") from None


_TEACHER_FLAGS = {  # flag parameter -> config field
    "teacher_epoch_frac": "teacher.options.epoch_frac", "members": "teacher.options.members",
    "members_count": "teacher.options.members_count",
    "ensemble_mode": "teacher.options.ensemble_mode", "save_every": "teacher.save_every",
    "save_epochs": "teacher.save_epochs", "teacher_weights": "teacher.weights",
    "peers": "teacher.options.peers", "select": "teacher.options.select",
}


def teacher_source_options(f):
    """Flags of the teacher sources (intermediate, snapshot, independent, weights)."""
    for option in reversed([
        click.option("--teacher-epoch-frac", type=float, default=None, show_default="0.5",
                     help="--teacher intermediate: the saved checkpoint nearest this fraction "
                          "of teacher training."),
        click.option("--select", default=None, metavar="ESTIMATOR",
                     help="--teacher intermediate: choose the checkpoint by Algorithm 1 of "
                          "Checkpoint KD with this MI estimator (e.g. recon; options: --set "
                          "teacher.options.select_options.samples=500 ...)."),
        click.option("--members", default=None, callback=_int_list, metavar="E1,E2,...",
                     help="--teacher snapshot: the checkpoint epochs to ensemble."),
        click.option("--members-count", type=int, default=None, show_default="3",
                     help="Ensemble size K: snapshot (evenly spaced checkpoints, latest "
                          "included) or independent (seeds s..s+K-1)."),
        click.option("--ensemble-mode", type=click.Choice(["logit", "prob"]), default=None,
                     show_default="logit",
                     help="Average the members' logits, or their probabilities at the KD "
                          "temperature."),
        click.option("--save-every", type=int, default=None,
                     show_default=_from_preset("teacher.save_every"),
                     help="Save a teacher checkpoint every N epochs (0: a tenth of training; "
                          "the last epoch is always saved)."),
        click.option("--save-epochs", default=None, callback=_int_list, metavar="E1,E2,...",
                     help="Explicit teacher checkpoint epochs (overrides --save-every)."),
        click.option("--teacher-weights", type=click.Path(), default=None,
                     help="--teacher full: local teacher weights instead of a trained "
                          "trajectory: a state dict, .safetensors, RepDistiller's/mdistiller's "
                          "checkpoints, a timm hub-cache folder (format and SHA-256 recorded)."),
        click.option("--peers", type=int, default=None, show_default="2",
                     help="--teacher peers: cohort size for online distillation (deep mutual "
                          "learning), the student included."),
    ]):
        f = option(f)
    return f


def teacher_overrides(flags: dict[str, Any]) -> dict[str, Any]:
    return {_TEACHER_FLAGS[k]: v for k, v in flags.items() if k in _TEACHER_FLAGS}


def model_option_flags(f):
    """--student-opt/--teacher-opt: an architecture's own options (timm's drop_path_rate)."""
    f = click.option("--teacher-opt", "teacher_model_opts", multiple=True, metavar="NAME=VALUE",
                     help="A teacher architecture option, e.g. --teacher-opt drop_rate=0.2 "
                          "(teacher.model_options; the valid ones are listed on a bad name).")(f)
    return click.option("--student-opt", "student_model_opts", multiple=True,
                        metavar="NAME=VALUE",
                        help="A student architecture option, e.g. --student-opt "
                             "drop_path_rate=0.1 (student_options).")(f)


def model_option_overrides(flags: dict[str, Any]) -> dict[str, Any]:
    """Take --student-opt/--teacher-opt out of ``flags``: dotted config overrides."""
    from .config import parse_assignments

    student = parse_assignments(flags.pop("student_model_opts", ()), "--student-opt")
    teacher = parse_assignments(flags.pop("teacher_model_opts", ()), "--teacher-opt")
    return {**{f"student_options.{k}": v for k, v in student.items()},
            **{f"teacher.model_options.{k}": v for k, v in teacher.items()}}


# ============================== engine flags of run ============================================


def engine_options(f):
    """Flags that change how fast a run trains, never its result's identity (engine.*)."""
    f = click.option("--lockstep/--no-lockstep", default=True,
                     help="Train several --student/--loss runs together (else one by one).")(f)
    f = click.option("--compile", "compile_", is_flag=True, default=False,
                     help="torch.compile the models (pays off over long runs).")(f)
    f = click.option("--fuse-teacher/--no-fuse-teacher", default=None, show_default="off",
                     help="Fold the frozen teacher's BatchNorm into its convolutions (equal "
                          "outputs up to float rounding; faster).")(f)
    f = click.option("--channels-last/--no-channels-last", default=None,
                     show_default="on for CPU and CUDA",
                     help="NHWC memory layout for the convolutions.")(f)
    f = click.option("--threads", type=int, default=None, show_default="all cores",
                     help="Torch threads (fewer can be faster on a machine busy with other "
                          "work).")(f)
    return f


#: the flags of scale_options, taken out of run's keyword arguments by name
SCALE_FLAGS = ("nproc", "workers", "data_options", "pin_memory", "cudnn_benchmark", "sync_bn")


def scale_options(f):
    """Flags of one run on several processes, of streamed data and of CUDA (engine.* and
    data.options; see the README's "Scaling up")."""
    for option in reversed([
        click.option("--nproc", type=int, default=None, show_default="1",
                     help="Local ranks of one distributed run (torch.distributed: gloo on the "
                          "CPU, NCCL on CUDA). Under torchrun or Slurm leave it out."),
        click.option("--data-option", "data_options", multiple=True, metavar="NAME=VALUE",
                     help="An option of the dataset plugin, e.g. size=224, load=stream."),
        click.option("--workers", type=int, default=None,
                     show_default="one per core, at most 8",
                     help="DataLoader workers decoding a streamed dataset."),
        click.option("--pin-memory/--no-pin-memory", default=None, show_default="on CUDA",
                     help="Page-locked batches copied to the GPU without blocking."),
        click.option("--cudnn-benchmark/--no-cudnn-benchmark", default=None,
                     show_default="off", help="cuDNN picks its fastest kernels (CUDA)."),
        click.option("--sync-bn/--no-sync-bn", default=None, show_default="off",
                     help="BatchNorm statistics over all ranks of a distributed run (CUDA)."),
    ]):
        f = option(f)
    return f


def scale_overrides(scale: dict[str, Any]) -> dict[str, Any]:
    from .config import parse_assignments

    out = {"engine.workers": scale["workers"], "engine.pin_memory": scale["pin_memory"],
           "engine.cudnn_benchmark": scale["cudnn_benchmark"], "engine.sync_bn": scale["sync_bn"]}
    out.update({f"data.options.{k}": v for k, v in
                parse_assignments(scale["data_options"] or (), "--data-option").items()})
    return out


def _distributed(nproc: int | None, device: str | None, configs: list) -> bool:
    """Start ``nproc`` local ranks of this same command (True: this process only waited for
    them), or join the process group the environment describes (torchrun, Slurm, a rank
    started here)."""
    from .engine import distributed

    _, env_size, _ = distributed.env_world()
    if env_size > 1:
        if nproc not in (None, env_size):
            raise ConfigError(f"--nproc {nproc} disagrees with WORLD_SIZE {env_size} of the "
                              f"launcher (valid: leave --nproc out under torchrun)")
        distributed.setup(device or configs[0].device)
        return False
    if nproc is None or nproc == 1:
        distributed.check_nproc(nproc or 1, device or configs[0].device)
        return False
    distributed.check_nproc(nproc, device or configs[0].device)
    for cfg in configs:
        if cfg.recipe.batch_size % nproc:
            raise ConfigError(f"recipe.batch_size {cfg.recipe.batch_size} does not split over "
                              f"--nproc {nproc} ranks (valid: a multiple of {nproc})")
    argv, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            argv.append(a)
    code = distributed.launch(argv, nproc)
    if code:
        sys.exit(code)
    return True


# ============================== run ============================================================


def changed_options(f):
    """--reuse / --rerun-changed: what is done with a finished record made by other code."""
    f = click.option("--rerun-changed", is_flag=True,
                     help="Make a run again when its finished record was made by other code "
                          "(kdbench, a plugin, torch, torchvision or timm at another version).")(f)
    return click.option("--reuse", is_flag=True,
                        help="Keep a finished record made by other code (announced). Without "
                             "either flag such a record is an error that names the change.")(f)


@cli.command()
@click.option("--spec", type=click.Path(dir_okay=False), multiple=True,
              help="Run spec (YAML/JSON of config fields, or a record); flags override it. "
                   "Several: one run each, in lockstep where they can share (what executors "
                   "send for a lockstep group).")
@click.option("--preset", default=None, show_default="quick",
              help=f"Recipe preset: {', '.join(PRESETS)}.")
@click.option("--dataset", default=None, show_default="digits", help="Dataset plugin name.")
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="KDBENCH_DATA_DIR",
              show_envvar=True, default=None, help="Folder holding the dataset's files.")
@click.option("--download", is_flag=True, default=None,
              help="Let torchvision download a missing dataset (needs the network).")
@click.option("--student", "students", multiple=True, show_default="resnet20",
              help="Student architecture; several (repeated or comma-separated) train in "
                   "lockstep, one run each.")
@click.option("--student-weights", type=click.Path(), default=None,
              help="Initial student weights (any file --teacher-weights reads).")
@click.option("--teacher", "teacher_source", default=None, show_default="full",
              help="Teacher source (full, intermediate, ...; see `kdbench plugins`).")
@click.option("--teacher-arch", default=None, show_default="resnet56",
              help="Teacher architecture.")
@click.option("--teacher-epoch", default=None, callback=_epoch_or_all, metavar="E|all",
              show_default="half-way checkpoint",
              help="Checkpoint epoch for --teacher intermediate; 'all' distils one student per "
                   "saved checkpoint (the checkpoint curve).")
@click.option("--teacher-seed", type=int, default=None, show_default="0",
              help="Seed of the teacher trajectory (shared by all student seeds).")
@click.option("--loss", "losses", multiple=True, show_default="kd",
              help="KD loss plugin name, or several joined by + (crd+kd) in one run; each "
                   "one's paper, taps and default weights: `kdbench losses`. Several runs: "
                   "repeat the flag or separate by commas (they train in lockstep).")
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
@click.option("--warmup", "warmups", multiple=True, metavar="NAME[:K=V,...]",
              help="A warm-up stage before the loss's own (repeatable: chained in order), e.g. "
                   "--warmup indistill:a=2; `kdbench plugins --kind stage`.")
@click.option("--eval", "evals", multiple=True, metavar="NAME[:K=V,...]",
              help="An evaluator besides accuracy (repeatable), e.g. --eval retrieval; "
                   "`kdbench plugins --kind evaluator`.")
@click.option("--best-metric", default=None, show_default="top1",
              help="The metric that picks the best epoch (any evaluator's).")
@click.option("--data-transform", "transforms", multiple=True, metavar="NAME[:K=V,...]",
              help="A data transform of the training split (repeatable, applied in order), "
                   "e.g. --data-transform subset:per_class=500; `kdbench plugins --kind "
                   "data_transform`.")
@click.option("--teacher-data-transform", "teacher_transforms", multiple=True,
              metavar="NAME[:K=V,...]|none",
              help="The teacher's own data transforms instead of the student's ('none': the "
                   "teacher trains on the untransformed data).")
@click.option("--log", "loggers", multiple=True, metavar="NAME[:K=V,...]",
              help="A logger besides the record (repeatable or comma-separated names), e.g. "
                   "--log csv --log tensorboard; `kdbench plugins --kind logger`.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Set any config field by dotted path, e.g. teacher.recipe.epochs=10.")
@results_dir_option(spec_default=True)
@click.option("--force", is_flag=True, help="Rerun even if a finished record exists.")
@click.option("--keep/--no-keep", default=None, show_default="keep",
              help="Keep the student's last and best weights beside the record.")
@changed_options
@click.option("--dry-run", is_flag=True,
              help="Print the fully resolved config, the run id and whether a record exists "
                   "(and by which code); train nothing, write nothing.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
@engine_options
@scale_options
@teacher_source_options
@model_option_flags
def run(spec, preset, dataset, data_dir, download, students, student_weights, teacher_source,
        teacher_arch, teacher_epoch, teacher_seed, losses, weights, options, epochs, batch_size,
        lr, seed, device, precision, warmups, evals, best_metric, transforms,
        teacher_transforms, loggers, sets, results_dir, force, keep, reuse, rerun_changed,
        dry_run, quiet, as_json, lockstep, compile_, channels_last, threads, fuse_teacher,
        **teacher_flags):
    """Train (or reuse) the teacher, distil the student, write the run record.

    Several --student/--loss values make one run per combination; runs that share teacher,
    data, seed and recipe train in lockstep (one teacher forward per batch for all).
    """
    from .config import build_config, load_spec, parse_assignments
    from .runner import run as run_config

    scale = {k: teacher_flags.pop(k, None) for k in SCALE_FLAGS}
    students, losses = _several(students), _several(losses)
    changed = _changed(reuse, rerun_changed)
    model_opts = model_option_overrides(teacher_flags)  # --student-opt/--teacher-opt
    overrides: dict[str, Any] = {
        "preset": preset, "data.name": dataset, "data.dir": data_dir,
        "student": students[0] if students else None,
        "student_weights": student_weights, "teacher.source": teacher_source,
        "teacher.arch": teacher_arch,
        "teacher.epoch": teacher_epoch if teacher_epoch != "all" else None,
        "teacher.seed": teacher_seed, "loss.name": losses[0] if losses else None,
        "recipe.epochs": epochs, "engine.compile": compile_ or None,
        "engine.channels_last": channels_last, "engine.threads": threads,
        "engine.fuse_teacher": fuse_teacher,
        "recipe.batch_size": batch_size, "recipe.lr": lr, "seed": seed, "device": device,
        "precision": precision, "results_dir": results_dir, "keep": keep,
    }
    if download:
        overrides["data.options.download"] = True
    overrides.update({f"loss.weights.{k}": v
                      for k, v in parse_assignments(weights, "--w").items()})
    overrides.update({f"loss.options.{k}": v
                      for k, v in parse_assignments(options, "--opt").items()})
    overrides.update(teacher_overrides(teacher_flags))
    overrides.update(model_opts)
    overrides.update(behaviour_overrides(warmups, evals, best_metric, transforms,
                                         teacher_transforms))
    overrides.update(scale_overrides(scale))
    if loggers:
        from .config import parse_plugin_item

        overrides["log"] = [parse_plugin_item(x, "--log") for item in loggers
                            for x in ([item] if ":" in item else item.split(",")) if x.strip()]
    explicit = parse_assignments(sets, "--set")  # --set KEY=null means None, not "unset"
    specs = [load_spec(f) for f in spec] or [None]
    spec_dict = specs[0]
    teacher_given = [f"--{k.replace('_', '-')}" for k, v in {
        "teacher": teacher_source, "teacher_arch": teacher_arch, "teacher_epoch": teacher_epoch,
        "teacher_seed": teacher_seed, "teacher_data_transform": teacher_transforms or None,
        **teacher_flags}.items() if v is not None]
    if len(students) > 1 or len(losses) > 1 or len(specs) > 1:
        if teacher_epoch == "all":
            raise ConfigError("--teacher-epoch all takes one --student, --loss and --spec")
        configs = [build_config({**overrides, "student": st, "loss.name": lo}, sp, explicit)
                   for sp in specs for st in students or [None] for lo in losses or [None]]
        if dry_run:
            return _dry_run(configs, as_json)
        _check_teacher_flags(configs, teacher_given)
        if _distributed(scale["nproc"], device, configs):
            return
        _run_several(configs, force=force, quiet=quiet, as_json=as_json, lockstep=lockstep,
                     changed=changed)
        return
    config = build_config(overrides, spec_dict, explicit)
    if dry_run:
        return _dry_run([config], as_json)
    _check_teacher_flags([config], teacher_given)
    if _distributed(scale["nproc"], device, [config]):
        return
    if teacher_epoch == "all":
        from .teachers.curve import run_each_checkpoint

        records = run_each_checkpoint(config, force=force, progress=not quiet, on_record=(
            None if as_json else lambda r: click.echo(summary_line(r))), changed=changed)
        if as_json:
            click.echo(json.dumps(records, indent=2))
        return
    record = run_config(config, force=force, progress=not quiet, changed=changed)
    from .ranks import is_primary

    if not is_primary():  # rank 0 speaks for a distributed run
        return
    if as_json:
        click.echo(json.dumps(record, indent=2))
    else:
        click.echo(summary_line(record))


def _changed(reuse: bool, rerun_changed: bool) -> str:
    if reuse and rerun_changed:
        raise ConfigError("give --reuse or --rerun-changed, not both")
    return "reuse" if reuse else "rerun" if rerun_changed else "ask"


def _dry_run(configs, as_json: bool) -> None:
    """``run --dry-run``: every config resolved (every error found, one line), described."""
    from .config import resolve_config, run_id
    from .runner.record import describe_run

    resolved, errors = [], []
    for cfg in configs:
        try:
            resolved.append(resolve_config(cfg))
        except ConfigError as exc:
            errors += [str(e) for e in getattr(exc, "errors", [exc]) if str(e) not in errors]
    if errors:
        raise ConfigError(f"{len(errors)} problems: "
                          + " ".join(f"({i}) {e}" for i, e in enumerate(errors, 1))
                          if len(errors) > 1 else errors[0])
    described = [{**describe_run(cfg, run_id(cfg)), "config": cfg.to_dict()} for cfg in resolved]
    if as_json:
        click.echo(json.dumps(described if len(described) > 1 else described[0], indent=2))
        return
    for item in described:
        click.echo(_dry_run_text(item))


def _dry_run_text(item: dict[str, Any]) -> str:
    record = item["record"]
    if record is None:
        status = "no record yet: it would be trained"
    elif record["status"] == "unreadable":
        status = f"unreadable record ({record['error']})"
    else:
        code = record["code"] or {}
        status = (f"{record['status']} record, {record['made']} by kdbench "
                  f"{code.get('kdbench', '?')}" + (f" (git {code['git']})" if code.get("git")
                                                   else "")
                  + ("; same code as now" if record["same_code"] else
                     f"; other code: {'; '.join(record['changes'])}"))
    lines = [f"run {item['run_id']} (preset {item['preset']})", f"record: {item['record_path']}",
             f"status: {status}"]
    t = item.get("teacher")
    if t:
        where = (f"weights {t['weights']}" if t["weights"] else
                 f"trajectory {t.get('trajectory', '?')} ({t.get('trained', '?')} trained), "
                 f"epoch {t['epoch'] if t['epoch'] is not None else 'as the source picks'}")
        lines.append(f"teacher: {t['source']} {t['arch']} seed {t['seed']}, {where}")
    plugins_ = item["code"]["plugins"]
    lines.append("code: kdbench " + str(item["code"]["kdbench"])
                 + (f", git {item['code']['git']}" if item["code"]["git"] else "")
                 + f", torch {item['code']['torch']}"
                 + "".join(f", {k} {v}" for k, v in plugins_.items()))
    lines.append("config: " + json.dumps(item["config"], indent=2))
    return "\n".join(lines)


def _check_teacher_flags(configs, given: list[str]) -> None:
    """Teacher flags with losses that use no teacher are ignored: say so (a loop over losses
    may pass them to every loss on purpose, so it is a warning, not an error)."""
    from .config import resolve

    if not given:
        return
    idle = [c.loss.name for c in configs if resolve(c).teacher is None]
    if idle and len(idle) == len(configs):  # flags for the others of a multi-loss run are fine
        warnings.warn(f"kdbench: loss {', '.join(map(repr, idle))} uses no teacher, so "
                      f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} ignored for it",
                      RuntimeWarning, stacklevel=2)


def behaviour_overrides(warmups, evals, best_metric, transforms, teacher_transforms
                        ) -> dict[str, Any]:
    """Config overrides of the stage, evaluator and data-transform flags."""
    from .config import parse_plugin_item

    out: dict[str, Any] = {"eval.best_metric": best_metric}
    if warmups:
        out["warmup"] = [parse_plugin_item(w, "--warmup") for w in warmups]
    if evals:
        out["eval.evaluators"] = [{"name": "accuracy"}] + [
            parse_plugin_item(e, "--eval") for e in evals if e != "accuracy"]
    if transforms:
        out["data.transforms"] = [parse_plugin_item(t, "--data-transform") for t in transforms]
    if teacher_transforms:
        out["teacher.data.transforms"] = [
            parse_plugin_item(t, "--teacher-data-transform") for t in teacher_transforms
            if t != "none"]
    return out


def _several(values: tuple[str, ...]) -> list[str]:
    """Repeated and comma-separated option values, in order, without repeats (an empty one,
    ``--loss ''``, is an error: it would silently mean the default)."""
    out: list[str] = []
    for v in values:
        if not v.strip(" ,"):
            raise ConfigError(f"an empty name ({v!r}) was given; name a registered item "
                              f"(`kdbench plugins` lists them)")
        for item in v.split(","):
            if item.strip() and item.strip() not in out:
                out.append(item.strip())
    return out


def _run_several(configs, *, force: bool, quiet: bool, as_json: bool, lockstep: bool,
                 changed: str = "ask") -> None:
    from .errors import TrainingError
    from .runner import run_many

    records = run_many(configs, force=force, progress=not quiet, lockstep=lockstep,
                       changed=changed)
    if as_json:
        click.echo(json.dumps(records, indent=2))
    else:
        for record in records:
            click.echo(summary_line(record))
    failed = [r for r in records if r["status"] != "done"]
    if failed:
        raise TrainingError(f"{len(failed)} of {len(records)} runs failed: " + "; ".join(
            f"{r['run_id']} {r.get('error')}" for r in failed))


# ============================== table ==========================================================


@cli.command()
@results_dir_option
@click.option("--rows", default=None, show_default="dataset,student (study,dataset,student for a "
              "folder of studies)", help="Comma-separated row keys.")
@click.option("--cols", default="loss,teacher", help="Comma-separated column keys ('' for none).")
@click.option("--metric", default="top1_last",
              help="Metric column: any evaluator metric with _last or _best (top1_last, "
                   "top5_best, map_cosine_last, ...).")
@click.option("--where", multiple=True, metavar="KEY=VALUE",
              help="Keep only runs with this column value (repeatable).")
@click.option("--format", "fmt", default=None, show_default="github, or from -o's suffix",
              type=click.Choice(["github", "latex", "csv", "html", "plain"]),
              help="Output format.")
@click.option("--out", "-o", type=click.Path(dir_okay=False), default=None,
              help="Write the table to this file (.md, .tex, .csv, .html, .txt: its format) "
                   "instead of printing it.")
@click.option("--bold-best/--no-bold-best", default=False,
              help="Bold each column's best value (the highest; the lowest for a metric where "
                   "lower is better). Layout pivot.")
@click.option("--digits", default=2, help="Decimals shown.")
@click.option("--layout", "layout_name", default="pivot",
              help="Table layout: pivot (rows × cols), or a paper layout (`kdbench plugins "
                   "--kind table_layout`).")
@click.option("--vs", default=None, metavar="COLUMN",
              help="Compare every cell with this column of its row (e.g. --cols loss --vs ce): "
                   "difference, 95%% CI, p (paired by seed where the seeds match, else "
                   "Welch), Holm over the table, MDE where not detected.")
@click.option("--pairing", default="auto", type=click.Choice(["auto", "paired", "welch"]),
              help="With --vs: auto pairs by seed when both cells hold the same seeds; paired "
                   "insists (n/a otherwise); welch never pairs.")
def table(results_dir, rows, cols, metric, where, fmt, out, bold_best, digits, layout_name, vs,
          pairing):
    """Comparison table from all run records: mean ± std over seeds, seeds per cell.

    Run from a folder of studies (the repository's results/), it reads every study's runs/
    and keeps the studies apart (a study column).
    """
    from .plugins import get
    from .report.records import table_output
    from .report.study import table_records

    if not 0 <= digits <= MAX_DIGITS:
        raise ConfigError(f"--digits {digits} is outside what a float shows (valid: "
                          f"0..{MAX_DIGITS})")
    fmt, target = table_output(out, fmt)
    layout = get("table_layout", layout_name)
    df = table_records(results_dir)
    if df.empty:
        raise KDBenchError(f"no run records in {os.path.join(results_dir, 'runs')!r} or in "
                           f"study folders below {results_dir!r}")
    split = lambda s: [x.strip() for x in s.split(",") if x.strip()]  # noqa: E731
    if rows is None:
        rows = ("study," if "study" in df.columns else "") + "dataset,student"
    options: dict[str, Any] = {"vs": vs, "pairing": pairing} if vs is not None else {}
    if options and layout_name != "pivot":
        raise click.UsageError(f"--vs applies to the pivot layout; layout {layout_name!r} makes "
                               f"its own comparisons")
    if bold_best:
        from .report.records import lower_is_better

        if layout_name != "pivot":
            raise ConfigError(f"--bold-best applies to the pivot layout, not {layout_name!r}")
        options["bold"] = "min" if lower_is_better(metric) else "max"
    text = layout.create(df, rows=split(rows), cols=split(cols), metric=metric, where=where,
                         fmt=fmt, digits=digits, **options)
    if target is None:
        click.echo(text)
        return
    from .store import atomic_write_bytes

    atomic_write_bytes(target, (text.rstrip("\n") + "\n").encode())
    click.echo(f"wrote {target}", err=True)


# ============================== eval, export ===================================================


@cli.command("eval")
@click.argument("source", metavar="RUN_ID|FILE")
@results_dir_option
@click.option("--which", type=click.Choice(["last", "best"]), default="last",
              help="The kept weights of the last or the best epoch.")
@click.option("--eval", "evals", multiple=True, metavar="NAME[:K=V,...]",
              help="Evaluator (repeatable); default: the run's own.")
@click.option("--dataset", default=None, show_default="the run's",
              help="Evaluate on this dataset's test split instead.")
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="KDBENCH_DATA_DIR",
              show_envvar=True, default=None, help="Folder holding the dataset's files.")
@click.option("--device", default="cpu", help="auto, cpu, cuda[:N] or mps.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def eval_(source, results_dir, which, evals, dataset, data_dir, device, as_json):
    """Evaluate a run's kept student (or a kept .safetensors file) as the run did."""
    from .runner.keep import evaluate_kept

    out = evaluate_kept(source, results_dir=results_dir, which=which,
                        evaluators=list(evals) or None, dataset=dataset, data_dir=data_dir,
                        device=device)
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(f"{out['run_id']} {out['which']} (epoch {out['epoch']}, {out['arch']}) on "
               f"{out['dataset']}: " + ", ".join(f"{k} {v:.4g}" for k, v in
                                                  out["metrics"].items()))


@cli.command("export")
@click.argument("source", metavar="RUN_ID|FILE")
@results_dir_option
@click.option("--format", "fmt", type=click.Choice(["safetensors", "torchscript", "onnx"]),
              default="safetensors", help="What to write.")
@click.option("--which", type=click.Choice(["last", "best"]), default="last",
              help="The kept weights of the last or the best epoch.")
@click.option("--out", "-o", type=click.Path(dir_okay=False), default=None,
              show_default="<run id>.<which>.<arch>.<suffix>", help="File to write.")
def export(source, results_dir, fmt, which, out):
    """Write a run's kept student as a deployable model file."""
    from .runner.keep import export_kept

    click.echo(str(export_kept(source, fmt, out, results_dir=results_dir, which=which)))


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


# ============================== teacher (trajectories) ==================================




@cli.group()
def teacher():
    """Teacher trajectories: train ahead, list, show, remove."""


def _fmt(value: Any, digits: int = 2) -> Any:
    return f"{value:.{digits}f}" if isinstance(value, float) else value


@teacher.command("train")
@click.option("--epochs", type=int, default=None,
              show_default=_from_preset("teacher.recipe.epochs"), help="Teacher training epochs.")
def teacher_train(epochs, spec, preset, dataset, data_dir, teacher_source, teacher_arch,
                  teacher_seed, members_count, save_every, save_epochs, device, precision, sets,
                  results_dir, quiet, threads):
    """Train the teacher trajectories a run needs, ahead of it (each trained once, then reused):
    one, or K for --teacher independent (seeds s..s+K-1)."""
    from .config import build_config, load_spec, parse_assignments
    from .teachers import manage

    overrides = {"preset": preset, "data.name": dataset, "data.dir": data_dir,
                 "teacher.source": teacher_source, "teacher.arch": teacher_arch,
                 "teacher.seed": teacher_seed, "teacher.options.members_count": members_count,
                 "teacher.recipe.epochs": epochs, "teacher.save_every": save_every,
                 "teacher.save_epochs": save_epochs, "device": device, "precision": precision,
                 "results_dir": results_dir, "engine.threads": threads}
    config = build_config(overrides, load_spec(spec) if spec else None,
                          parse_assignments(sets, "--set"))
    for t in manage.train(config, progress=not quiet):
        row = manage.summary(t)
        click.echo(f"{t.key}: {row['arch']} on {row['dataset']} seed {row['seed']}, "
                   f"{row['epochs']} epochs, {row['saved']} checkpoints, top-1 last "
                   f"{_fmt(row['last_top1'])}, best {_fmt(row['best_top1'])}")


# the options that mean the same as in `kdbench run` are its own, defined once
teacher_train.params += [copy.copy(next(p for p in run.params if p.name == name)) for name in (
    "spec", "preset", "dataset", "data_dir", "teacher_source", "teacher_arch", "teacher_seed",
    "members_count", "save_every", "save_epochs", "device", "precision", "sets", "results_dir",
    "quiet", "threads")]
# ... but one spec (run takes several, one run each)
_spec = next(p for p in teacher_train.params if p.name == "spec")
_spec.multiple, _spec.default = False, None
_spec.help = "Run spec (YAML/JSON of config fields, or a record); flags override it."


@teacher.command("list")
@results_dir_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def teacher_list(results_dir, as_json):
    """Every stored trajectory: key, arch, dataset, seed, epochs, accuracy, size, runs using it."""
    from tabulate import tabulate

    from .store import Store
    from .teachers import manage

    rows = manage.rows(Store(results_dir))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    elif not rows:
        click.echo(f"no teacher trajectories in {os.path.join(results_dir, 'teachers')!r}")
    else:
        click.echo(tabulate([{k: _fmt(v) for k, v in r.items()} for r in rows], headers="keys",
                            disable_numparse=True))


@teacher.command("show")
@click.argument("key")
@results_dir_option
@click.option("--json", "as_json", is_flag=True, help="The manifest as JSON.")
def teacher_show(key, results_dir, as_json):
    """One trajectory: its spec, per-epoch accuracy and saved checkpoints."""
    from tabulate import tabulate

    from .store import Store
    from .teachers import manage

    store = Store(results_dir)
    t = manage.get(store, key)
    if as_json:
        click.echo(json.dumps(t.manifest, indent=2))
        return
    row = manage.summary(t, len(manage.references(store).get(key, [])))
    click.echo(f"{t.key} ({row['status']}): {row['arch']} on {row['dataset']} seed "
               f"{row['seed']}, {row['epochs']} epochs, {row['saved']} checkpoints, "
               f"{row['size_mb']} MB, used by {row['runs']} run(s)")
    click.echo(f"recipe: {json.dumps(t.spec['recipe'])}")
    click.echo(tabulate([{k: _fmt(v, 4 if k in ("lr", "test_loss") else 2) for k, v in r.items()}
                         for r in manage.detail(t)], headers="keys", disable_numparse=True))


@teacher.command("rm")
@click.argument("key")
@results_dir_option
@click.option("--force", is_flag=True, help="Delete even while run records reference it.")
def teacher_rm(key, results_dir, force):
    """Delete a trajectory (refused while run records reference it, unless --force)."""
    from .store import Store
    from .teachers import manage

    folder = manage.remove(Store(results_dir), key, force=force)
    click.echo(f"removed {folder}")


# ============================== plot ===========================================================


@cli.group()
def plot():
    """Figures from the run records (PNG or PDF, by the output's suffix)."""


@plot.command("checkpoint-curve")
@results_dir_option
@click.option("--out", "-o", type=click.Path(dir_okay=False), default="checkpoint-curve.png",
              help="Output file (.png or .pdf).")
@click.option("--metric", default="top1_last",
              help="Student metric: top1_last, top1_best, top1_last10_best, ...")
@click.option("--where", multiple=True, metavar="KEY=VALUE",
              help="Keep only runs with this column value (repeatable).")
def plot_checkpoint_curve(results_dir, out, metric, where):
    """Student accuracy against teacher checkpoint epoch, teacher accuracy on a second axis."""
    from .report.checkpoint import checkpoint_curve
    from .report.records import load_records

    path, panels = checkpoint_curve(load_records(results_dir), out, metric=metric, where=where)
    click.echo(f"wrote {path} ({panels} teacher–student pair(s))")


@plot.command("robustness")
@results_dir_option
@click.option("--out", "-o", type=click.Path(dir_okay=False), default="robustness.png",
              help="Output file (.png or .pdf).")
@click.option("--metric", default="top1_last",
              help="Metric: top1_last, top1_best, acc_few_last, noisy_fit_noisy_last, ...")
@click.option("--where", multiple=True, metavar="KEY=VALUE",
              help="Keep only runs with this column value (repeatable).")
def plot_robustness(results_dir, out, metric, where):
    """Accuracy against label-noise rate and imbalance ratio, one line per method (error bars:
    std over seeds), one panel per noise or imbalance kind."""
    from .report.records import load_records
    from .report.robustness import robustness_plot

    path, panels = robustness_plot(load_records(results_dir), out, metric=metric, where=where)
    click.echo(f"wrote {path} ({panels} panel(s))")


@plot.command("curves")
@click.argument("run_ids", nargs=-1, required=True, metavar="RUN_ID...")
@results_dir_option
@click.option("--out", "-o", type=click.Path(dir_okay=False), default="curves.png",
              help="Output file (.png or .pdf).")
@click.option("--metric", default=None, show_default="each run's best metric (top1)",
              help="Test metric per epoch: top1, top5, test_loss or any evaluator metric.")
def plot_curves(run_ids, results_dir, out, metric):
    """Training curves of runs side by side (ids or unique prefixes): the metric and every loss
    term per epoch, where each stage starts marked."""
    from .report.curves import find_records
    from .report.curves import plot_curves as draw

    path = draw(find_records(results_dir, run_ids), out, metric=metric)
    click.echo(f"wrote {path} ({len(run_ids)} run(s))")


# ============================== reproduce ======================================================


@cli.command()
@click.argument("study")
@click.option("--render-only", is_flag=True,
              help="Only remake the tables and figures from the study's records.")
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="KDBENCH_DATA_DIR",
              show_envvar=True, default=None, show_default="the study's own",
              help="Folder holding the dataset's files.")
@click.option("--executor", default="local", help="Sweep executor for the study's runs.")
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="local: runs in parallel.")
@click.option("--root", type=click.Path(file_okay=False), default="results",
              help="Where studies live (STUDY may also be a folder).")
@changed_options
@click.option("--quiet", is_flag=True, help="No progress.")
def reproduce(study, render_only, data_dir, executor, jobs, root, reuse, rerun_changed, quiet):
    """Remake a study of results/ from nothing: its sweeps (finished runs reused), its teacher
    selections, then every table and figure from the records (study.yaml says which)."""
    from .report.reproduce import find_study, render, run_study

    found = find_study(study, root)
    if not render_only:
        run_study(found, data=data_dir, executor=executor, jobs=jobs, progress=not quiet,
                  say=lambda msg: click.echo(msg, err=True),
                  changed=_changed(reuse, rerun_changed))
    for path in render(found):
        click.echo(f"wrote {path}")


# ============================== report =========================================================


@cli.command()
@click.argument("results_dir", required=False, default="results", envvar="KDBENCH_RESULTS_DIR")
@click.option("--out", "-o", default="report.html",
              help="Output HTML file; an existing file is replaced only if kdbench report "
                   "wrote it.")
@click.option("--curves", multiple=True, metavar="RUN_ID",
              help="Draw this run's training curves (id or unique prefix; repeatable). "
                   "Default: one run per dataset, student, teacher and loss.")
@click.option("--title", default=None, show_default="kdbench report: <store folder>",
              help="Page title.")
def report(results_dir, out, curves, title):
    """One self-contained HTML page for a results store: its studies, datasets, runs and
    teachers, every table layout that applies, the figures, each run's provenance.

    RESULTS_DIR defaults to $KDBENCH_RESULTS_DIR, else ./results; a study is any folder in it
    (itself included) with its own runs/."""
    from .report.page import write_report

    summary = write_report(results_dir, out, curves=curves, title=title)
    click.echo(f"wrote {summary.path} ({summary.line()})")


# ============================== losses =========================================================


@cli.command()
@click.argument("names", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def losses(names, as_json):
    """Each KD loss: paper, what it taps, default weights and options (NAMES: only these)."""
    from .losses import describe, format_table

    rows = describe(list(names) or None)
    click.echo(json.dumps(rows, indent=2) if as_json else format_table(rows, detail=bool(names)))


# ============================== sweep ==========================================================


class DefaultCommandGroup(KDBenchGroup):
    """A group whose first argument, when it is not a subcommand, goes to ``default_command``
    (``kdbench sweep FILE`` is ``kdbench sweep run FILE``)."""

    default_command = "run"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


@cli.group(cls=DefaultCommandGroup)
def sweep():
    """Whole benchmark grids: `kdbench sweep FILE` (same as `kdbench sweep run FILE`, whose
    --help lists the executors' options).

    A sweep file holds a base run spec plus a `grid` (cartesian) and/or a `runs` list (`parts`
    for blocks with their own grid, `extends` to inherit another sweep file):

    \b
        base: {data: {name: digits}, teacher: {arch: resnet56}, student: resnet20}
        runs: [{student: resnet20}, {student: resnet8, recipe.lr: 0.1}]
        grid: {loss.name: [ce, kd, at], seed: [0, 1, 2]}

    Runs already done in the store are skipped; the teachers the runs need are trained first,
    once each. `kdbench sweep --list` shows the sweeps shipped with kdbench (use them by name).
    """


def _sweep_plan(file, sets, results_dir, data_dir):
    from .config import parse_assignments
    from .sweep import expand, load_sweep

    return expand(load_sweep(file), results_dir=results_dir, data_dir=data_dir,
                  sets=parse_assignments(sets, "--set"))


def _sweep_inputs(f):
    f = click.option("--data-dir", type=click.Path(file_okay=False), envvar="KDBENCH_DATA_DIR",
                     show_envvar=True, default=None,
                     help="Folder holding the dataset's files (every run).")(f)
    f = results_dir_option(f)
    f = click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                     help="Set a config field in every run (wins over base, runs and grid), "
                          "e.g. --set recipe.epochs=5.")(f)
    return click.argument("file", required=False)(f)


@sweep.command("run")
@_sweep_inputs
@click.option("--list", "list_sweeps", is_flag=True, help="List the shipped sweep files.")
@click.option("--dry-run", is_flag=True, help="List the runs with their ids and status; run none.")
@click.option("--executor", default="local",
              help="Executor plugin: inline, local, slurm, ray (kdbench-ray).")
@click.option("--jobs", type=int, default=None, show_default="1, or one per GPU slot",
              help="local: runs in parallel (CPU threads are divided between them).")
@click.option("--gpus", default=None, help="local: GPU indices to use, e.g. 0,1.")
@click.option("--runs-per-gpu", type=int, default=None, show_default="1",
              help="local: runs sharing one GPU.")
@click.option("--retries", type=int, default=None, show_default="0 (ray: 3)",
              help="Retries of a crashed run (local, ray).")
@click.option("--partition", default=None, help="slurm: partition.")
@click.option("--time", "time_limit", default=None, show_default="4:00:00",
              help="slurm: time limit per run (runs past it are requeued and resume).")
@click.option("--gpus-per-run", type=int, default=None, help="slurm, ray: GPUs per run.")
@click.option("--cpus-per-run", type=int, default=None, help="slurm, ray: CPUs per run.")
@click.option("--array-parallelism", type=int, default=None,
              help="slurm: array tasks running at once.")
@click.option("--address", default=None, help="ray: address of an existing Ray cluster.")
@click.option("-X", "--executor-opt", "executor_opts", multiple=True, metavar="KEY=VALUE",
              help="Any other executor option, e.g. -X account=abc -X cluster=local.")
@click.option("--lockstep", is_flag=True,
              help="Train runs that share teacher, data, seed and recipe together.")
@changed_options
@click.option("--quiet", is_flag=True, help="No progress bar.")
def sweep_run(file, sets, results_dir, data_dir, list_sweeps, dry_run, executor, jobs, gpus,
              runs_per_gpu, retries, partition, time_limit, gpus_per_run, cpus_per_run,
              array_parallelism, address, executor_opts, lockstep, reuse, rerun_changed, quiet):
    """Run a sweep file (a path, or the name of a shipped sweep)."""
    from .config import parse_assignments
    from .sweep import dry_run_report, make_executor, run_sweep, summary_report
    from .sweep import list_sweeps as shipped_list

    if list_sweeps:
        click.echo(shipped_list())
        return
    if not file:
        raise KDBenchError("give a sweep file (or the name of a shipped one: kdbench sweep "
                           "--list)")
    plan = _sweep_plan(file, sets, results_dir, data_dir)
    if dry_run:
        click.echo(dry_run_report(plan))
        return
    if gpus and executor == "local":
        from .device import cuda_device_count
        from .sweep.executors import parse_gpus

        if parse_gpus(gpus) and cuda_device_count() == 0:
            raise ConfigError(f"--gpus {gpus!r}: there is no CUDA GPU on this machine (leave "
                              f"--gpus out to run on the CPU)")
    options = {"jobs": jobs, "gpus": gpus, "runs_per_gpu": runs_per_gpu, "retries": retries,
               "partition": partition, "time": time_limit, "gpus_per_run": gpus_per_run,
               "cpus_per_run": cpus_per_run, "array_parallelism": array_parallelism,
               "address": address}
    options = {k: v for k, v in options.items() if v is not None}
    options.update(parse_assignments(executor_opts, "-X"))
    runner = make_executor(executor, **options)
    summary = run_sweep(plan, runner, progress=not quiet, lockstep=lockstep,
                        warn=lambda msg: click.echo(msg, err=True),
                        changed=_changed(reuse, rerun_changed))
    click.echo(summary_report(summary))
    if summary.exit_code:
        click.get_current_context().exit(summary.exit_code)


@sweep.command("status")
@_sweep_inputs
@click.option("--all", "all_runs", is_flag=True, help="List finished runs too.")
def sweep_status(file, sets, results_dir, data_dir, all_runs):
    """How far a sweep is, read from the store: counts by status and the unfinished runs."""
    from .sweep import status_report

    if not file:
        raise KDBenchError("give a sweep file (or the name of a shipped one: kdbench sweep "
                           "--list)")
    click.echo(status_report(_sweep_plan(file, sets, results_dir, data_dir), all_runs=all_runs))


@sweep.command("train-teacher", hidden=True)
@click.argument("spec", type=click.Path(dir_okay=False))
@results_dir_option
@click.option("--quiet", is_flag=True, help="No progress bars.")
def sweep_train_teacher(spec, results_dir, quiet):
    """Train one teacher trajectory from a sweep's teacher spec file (what executors run)."""
    from .sweep import train_teacher

    click.echo(f"teacher {train_teacher(spec, results_dir, progress=not quiet)} done")


@sweep.command("run-lockstep", hidden=True)
@click.argument("specs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@results_dir_option
@changed_options
@click.option("--quiet", is_flag=True, help="No progress bars.")
def sweep_run_lockstep(specs, results_dir, reuse, rerun_changed, quiet):
    """Train several run spec files together, in lockstep (what executors run for --lockstep)."""
    from .sweep import run_lockstep

    records = run_lockstep(list(specs), results_dir, progress=not quiet,
                           changed=_changed(reuse, rerun_changed))
    for record in records:
        click.echo(summary_line(record))
    if any(r["status"] != "done" for r in records):
        click.get_current_context().exit(1)


# ============================== mi and select (MI estimators, Algorithm 1) =====================


def _mi_options(f):
    options = [
        click.argument("trajectory"),
        click.option("--estimator", default="recon",
                     help="MI estimator plugin (see `kdbench plugins --kind mi_estimator`)."),
        click.option("--layer", default="embedding",
                     help="Features T: embedding, stage-K (K from 1) or logits."),
        click.option("--samples", type=int, default=1000,
                     help="Probe samples, drawn from the training split."),
        click.option("--seed", type=int, default=0,
                     help="Seed of the probe samples and of the estimator's training."),
        click.option("--repeats", type=int, default=3,
                     help="Trained estimators: seeds seed..seed+R-1; the mean leaves out "
                          "diverged repeats, and their spread is what Algorithm 1's decision "
                          "rule compares score differences with (1: it cannot choose)."),
        click.option("--resamples", type=int, default=10, show_default=True,
                     help="Deterministic estimators (kde, binning, cka, nhsic): also estimate "
                          "on this many half-samples of the probe set, the same at every "
                          "checkpoint: the noise Algorithm 1's decision rule compares score "
                          "differences with (0: it cannot choose)."),
        click.option("--opt", "options", multiple=True, metavar="NAME=VALUE",
                     help="Estimator setting, e.g. --opt noise_variance=0.01."),
        click.option("--data-dir", type=click.Path(file_okay=False), envvar="KDBENCH_DATA_DIR",
                     show_envvar=True, default=None,
                     help="Folder holding the trajectory's dataset files."),
        click.option("--device", default="auto", help="auto, cpu, cuda[:N] or mps."),
        results_dir_option,
        click.option("--force", is_flag=True, help="Estimate again instead of using the cache."),
        click.option("--quiet", is_flag=True, help="No progress bars."),
        click.option("--json", "as_json", is_flag=True, help="Machine-readable output."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


#: the suffixes save_figure writes (kdbench/report/figures.py)
MI_PLOT_FORMATS = (".png", ".pdf", ".svg")


@cli.command()
@_mi_options
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              show_default="beside the cache in <trajectory>/mi/",
              help="Where to write the information plane (.png, .pdf or .svg).")
def mi(**kwargs):
    """I(X;T) and I(T;Y) at every checkpoint of a teacher trajectory (a key or folder): the table
    and the information plane, cached in the trajectory folder."""
    plot = kwargs["plot"]
    if plot is not None and os.path.splitext(plot)[1].lower() not in MI_PLOT_FORMATS:
        raise ConfigError(f"--plot {plot!r}: the information plane is written as "
                          f"{', '.join(MI_PLOT_FORMATS[:-1])} or {MI_PLOT_FORMATS[-1]} (by the "
                          f"file's suffix)")
    from .mi.commands import mi_command

    click.echo(mi_command(**kwargs))


@cli.command()
@_mi_options
def select(**kwargs):
    """Choose a trajectory's teacher checkpoint by Algorithm 1 of Checkpoint KD: min-max
    normalised I(X;T) + I(T;Y), argmax."""
    from .mi.commands import select_command

    click.echo(select_command(**kwargs))


# ============================== models =========================================================


@cli.command()
@click.argument("names", nargs=-1)
@click.option("--dataset", default="digits", help="Dataset whose classes and input size to use.")
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="KDBENCH_DATA_DIR",
              show_envvar=True, default=None, help="Folder holding the dataset's files.")
@click.option("--timm", "pattern", default=None, metavar="PATTERN",
              help="List timm models matching PATTERN (shell wildcards; plain text matches "
                   "as a substring) instead of the registered ones.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def models(names, dataset, data_dir, pattern, as_json):
    """Architectures: name, family, parameters and MACs at the dataset's input size.

    NAMES (e.g. resnet20 timm/resnet18) limits the list to those models.
    """
    from tabulate import tabulate

    from .data import load_dataset
    from .models.profile import named_models, profile_all, registered_models, timm_models

    data = load_dataset(dataset, data_dir)
    shape = (data.in_chans, *data.image_size)
    chosen = named_models(names)
    if pattern:
        chosen += timm_models(pattern)
    elif not names:
        chosen = registered_models()
    rows = profile_all(chosen, data.num_classes, shape, progress=not as_json)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rows], indent=2))
        return
    size = "×".join(map(str, data.image_size))
    click.echo(tabulate(
        [(r.name, r.family, "-" if r.params is None else f"{r.params:,}",
          "-" if r.macs is None else f"{r.macs / 1e6:,.2f}", r.note) for r in rows],
        headers=["name", "family", "params", f"MMACs @ {size}", ""],
        colalign=("left", "left", "right", "right", "left")))
    if not names and not pattern:
        click.echo(f"\nplus timm/<name>: any timm model (`kdbench models --timm PATTERN`); "
                   f"{data.num_classes} classes, {data.in_chans}×{size} input ({dataset})")


# ============================== bench ==========================================================


@cli.command()
@click.option("--teacher", default="resnet56", help="Teacher architecture.")
@click.option("--student", default="resnet20", help="Student architecture.")
@click.option("--batch-size", type=int, default=64, help="Batch size of every variant "
              "(RepDistiller's protocol: 64).")
@click.option("--steps", type=int, default=5, help="Timed steps per variant and round.")
@click.option("--rounds", type=int, default=3, help="Rounds (the variants take turns).")
@click.option("--warmup", type=int, default=2, help="Untimed steps per variant first.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              show_default="random CIFAR-100-shaped images",
              help="Real CIFAR-10 (train.npz/test.npz or torchvision's files).")
@click.option("--num-train", type=int, default=10_000, help="Random images (without --data-dir).")
@click.option("--image-size", type=int, default=32, help="Side of the random images.")
@click.option("--num-classes", type=int, default=100, help="Classes of the random images.")
@click.option("--workers", type=int, default=0, show_default="one per core",
              help="DataLoader workers of the classic loop.")
@click.option("--device", default="auto", help="auto, cpu, cuda[:N] or mps.")
@click.option("--precision", default="auto",
              type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
              help="Precision of the engine variants, resolved as `kdbench run` does (the "
                   "classic loop is fp32).")
@click.option("--channels-last/--no-channels-last", default=None,
              show_default="engine default", help="NHWC layout in the default engine variant.")
@click.option("--fuse-teacher/--no-fuse-teacher", default=None,
              show_default="engine default", help="Teacher fusion in the default engine variant.")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the engine's models.")
@click.option("--lockstep", type=int, default=4, help="Students of the lockstep variant (0: none).")
@click.option("--threads", type=int, default=0, show_default="all cores",
              help="Torch threads of the default engine variant.")
@click.option("--peak-size", type=int, default=2048, help="n of the peak variant's n×n fp32 GEMM "
              "(its 3×3 conv has n/8 channels).")
@click.option("--variants", default="classic,engine,grid,compute,teacher,lockstep,peak",
              help="Comma-separated subset of classic, engine, grid (the other threads × layout "
                   "× fusion settings), compute, teacher, lockstep, peak; and compiled (not a "
                   "default: the default step under torch.compile beside the eager one, after "
                   "about a minute of compilation on a CPU).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the figures to this JSON file.")
@click.option("--quiet", is_flag=True, help="No progress lines.")
def bench(teacher, student, batch_size, steps, rounds, warmup, data_dir, num_train, image_size,
          num_classes, workers, device, precision, channels_last, fuse_teacher, compile_,
          lockstep, threads, peak_size, variants, json_path, quiet):
    """Images/s of the classic KD loop and kdbench's engine (default and best settings), the
    compute bound, the teacher forward and the fp32 peak, side by side."""
    from .config.resolve import THREADS_PER_CORE

    chosen = [v.strip() for v in variants.split(",") if v.strip()]
    cores = os.cpu_count() or 1
    if image_size < 1:
        raise ConfigError(f"--image-size {image_size} must be >= 1 (pixels per side)")
    if num_classes < 2:
        raise ConfigError(f"--num-classes {num_classes} must be >= 2")
    if not 0 <= threads <= THREADS_PER_CORE * cores:
        raise ConfigError(f"--threads {threads} is outside 0..{THREADS_PER_CORE * cores} "
                          f"({THREADS_PER_CORE} per core of the {cores} here; 0: all cores)")
    if not chosen:
        raise ConfigError(f"--variants {variants!r} names no variant (valid: classic, engine, "
                          f"grid, compute, teacher, lockstep, peak, compiled)")
    from .bench import BenchOptions, format_report, run_bench
    from .store import atomic_write_json

    opts = BenchOptions(teacher=teacher, student=student, batch_size=batch_size, steps=steps,
                        rounds=rounds, warmup=warmup, data_dir=data_dir, num_train=num_train,
                        image_size=image_size, num_classes=num_classes, workers=workers,
                        device=device, precision=precision, channels_last=channels_last,
                        fuse_teacher=fuse_teacher, compile=compile_, lockstep=lockstep,
                        threads=threads, peak_size=peak_size,
                        variants=chosen)
    result = run_bench(opts, progress=None if quiet else lambda m: click.echo(m, err=True))
    click.echo(format_report(result))
    if json_path:
        atomic_write_json(json_path, result)


#: the signal that stopped the run (None: Ctrl-C), for the exit code
_stopped_by: list[int] = []


def _terminated(signum, frame) -> None:
    """SIGTERM (a scheduler, a dying sweep driver) and SIGHUP (a closed terminal) stop a run as
    Ctrl-C does: its record says ``interrupted`` and the next attempt resumes it."""
    _stopped_by.append(signum)
    raise KeyboardInterrupt


def main() -> None:
    """Console-script entry point: exit 0, 1 (a run failed, or the results store is damaged),
    2 (bad input), 130 (interrupted: Ctrl-C or SIGTERM), 129 (SIGHUP: the terminal closed)."""
    import signal

    signal.signal(signal.SIGTERM, _terminated)
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:  # nohup's choice is kept
        signal.signal(signal.SIGHUP, _terminated)
    try:
        code = cli.main(prog_name="kdbench", standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("Interrupted.", err=True)
        sys.exit(129 if _stopped_by and _stopped_by[0] == signal.SIGHUP else 130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
