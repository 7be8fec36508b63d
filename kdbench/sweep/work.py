"""What a sweep job does, as library calls: train a teacher trajectory from its spec file, run
one run spec, or run several in lockstep. Executors run jobs in a subprocess (``kdbench ARGV``)
or, the inline and Slurm executors, in-process through :func:`execute` — which maps the job's
``kdbench`` arguments onto these functions without going through the command line."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import DamagedStoreError, KDBenchError
from ..store import Store, read_json


def train_teacher(spec_file: str | Path, results_dir: str | Path, progress: bool = True) -> str:
    """Train (or finish) the trajectory a teacher spec file names; returns its key."""
    from ..config import RunConfig
    from ..data import load_data
    from ..device import resolve_device, set_threads
    from ..teachers import trajectory as traj

    try:
        data = read_json(Path(spec_file), "teacher spec")
    except FileNotFoundError:
        raise KDBenchError(f"teacher spec {str(spec_file)!r} does not exist") from None
    if not isinstance(data, dict) or not {"trajectory", "save_epochs", "config"} <= set(data):
        raise DamagedStoreError(f"corrupt teacher spec {str(spec_file)!r}: needs trajectory, "
                                f"save_epochs and config")
    cfg = RunConfig.from_dict(data["config"])
    store = Store(results_dir)
    store.check_writable()
    set_threads(cfg.engine.threads)
    device = resolve_device(cfg.device)
    dataset = load_data(cfg.teacher_data, device)
    found = traj.ensure(store, data["trajectory"], list(data["save_epochs"]), dataset, device,
                        progress=progress, repair=True,
                        evaluate=cfg.teacher.evaluate if cfg.teacher is not None else "epochs")
    return found.key


def run_specs(spec_files: Sequence[str | Path], results_dir: str | Path | None,
              progress: bool = True, lockstep: bool = True,
              changed: str = "ask") -> list[dict[str, Any]]:
    """Run spec files (together, in lockstep where they can share); their records, each the one
    the run would get alone."""
    from ..config import build_config, load_spec
    from ..runner import run_many

    over = {"results_dir": str(results_dir)} if results_dir is not None else {}
    configs = [build_config(over, load_spec(p)) for p in spec_files]
    return run_many(configs, progress=progress, lockstep=lockstep, changed=changed)


def execute(argv: Sequence[str]) -> tuple[int, str]:
    """Run a sweep job's ``kdbench ARGV`` (see :meth:`kdbench.sweep.Job.argv`) in this process;
    returns (exit code, captured output), with the exit codes of the console script.

    Bad input and training errors come back as their exit codes; other exceptions as exit
    code 1 with their message. Ctrl-C stays a KeyboardInterrupt and a ``SystemExit`` (e.g.
    submitit's requeue on preemption) passes through.
    """
    from ..runner.record import summary_line

    args = list(argv)
    results_dir = None
    if "--results-dir" in args:
        i = args.index("--results-dir")
        results_dir = args[i + 1]
        del args[i:i + 2]
    progress = "--quiet" not in args
    changed = "rerun" if "--rerun-changed" in args else "reuse" if "--reuse" in args else "ask"
    args = [a for a in args if a not in ("--quiet", "--rerun-changed", "--reuse")]
    buf = io.StringIO()
    code = 0
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            if args[:2] == ["sweep", "train-teacher"] and len(args) == 3:
                print(f"teacher {train_teacher(args[2], results_dir, progress)} done")
            elif args[:2] == ["sweep", "run-lockstep"] or (args[:2] == ["run", "--spec"]
                                                         and len(args) == 3):
                specs = args[2:]
                records = run_specs(specs, results_dir, progress, lockstep=len(specs) > 1,
                                    changed=changed)
                for record in records:
                    print(summary_line(record))
                code = 1 if any(r["status"] != "done" for r in records) else 0
            else:
                raise KDBenchError(f"not a sweep job: kdbench {' '.join(argv)}")
    except KDBenchError as exc:
        buf.write(f"Error: {exc}\n")
        code = exc.exit_code
    except Exception as exc:  # noqa: BLE001 - a crashing run is reported, the sweep goes on
        buf.write(f"Error: {type(exc).__name__}: {exc}\n")
        code = 1
    return code, buf.getvalue()
