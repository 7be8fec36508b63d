"""The ``slurm`` executor: job arrays through submitit, with checkpoint-and-requeue.

Each array task executes one job's ``kdbench`` command in the task's own process. When Slurm
warns of the time limit or of preemption (submitit arranges a USR2 signal shortly before), the
task is checkpointed and requeued with the same command: the run then resumes from its last saved
epoch (``<results>/runs/<id>.state.pt``, teacher trajectories from their ``state.pt``), so a run
longer than the partition's time limit still finishes. The results directory must be on a file
system the compute nodes share, as usual on Slurm clusters.

Needs ``pip install 'kdbench[slurm]'``. ``cluster='local'`` runs the same arrays through
submitit's local backend (processes on this machine): what the tests use.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .executors import Executor, Job, Outcome, Report, error_line, execute

CLUSTERS = ("slurm", "local")
INSTALL = "pip install 'kdbench[slurm]'"


def parse_minutes(value: float | str) -> int:
    """Slurm time (``90``, ``"1:30:00"``, ``"2-00:00:00"``, ``"45:00"``) as whole minutes."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        minutes = float(value)
    else:
        text = str(value).strip()
        m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
        if not m:
            raise ConfigError(f"--time {text!r} is not a Slurm time (minutes, MM:SS, "
                              f"HH:MM:SS or D-HH:MM:SS)")
        days, a, b, c = (int(g) if g else None for g in m.groups())
        if b is None:  # minutes (with days: hours)
            minutes = (days or 0) * 1440 + (a * 60 if days is not None else a)
        elif c is None:  # MM:SS, or D-HH:MM
            minutes = (days * 1440 + a * 60 + b) if days is not None else a + b / 60
        else:  # HH:MM:SS
            minutes = (days or 0) * 1440 + a * 60 + b + c / 60
    if minutes <= 0:
        raise ConfigError(f"--time must be positive, got {value!r}")
    return max(1, round(minutes))


class SlurmTask:
    """What each array task runs: one ``kdbench`` command, checkpointable (same command again,
    which resumes from the run's last epoch). Carries only the command: specs, not closures."""

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads

    def __call__(self, argv: list[str]) -> tuple[int, str | None]:
        if self.threads:
            import torch

            os.environ["OMP_NUM_THREADS"] = str(self.threads)
            torch.set_num_threads(self.threads)
        code, output = execute(argv)
        print(output, flush=True)  # into the task's log
        return code, None if code == 0 else error_line(output)

    def checkpoint(self, argv: list[str]) -> Any:
        """Requeue the same command: the run's state file makes it resume, not restart."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, argv)


class SlurmExecutor(Executor):
    """Slurm job arrays through submitit, checkpoint-and-requeue (pip install 'kdbench[slurm]')."""

    name = "slurm"

    def __init__(self, *, partition: str | None = None, time: float | str = "4:00:00",
                 gpus_per_run: int = 0, cpus_per_run: int | None = None,
                 mem_gb: float | None = None, array_parallelism: int | None = None,
                 account: str | None = None, qos: str | None = None,
                 constraint: str | None = None, setup: Sequence[str] | None = None,
                 max_requeues: int = 3, cluster: str = "slurm",
                 poll_seconds: float | None = None) -> None:
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise ConfigError(f"executor 'slurm' needs submitit, which is not installed: "
                              f"{INSTALL}") from None
        if cluster not in CLUSTERS:
            from ..errors import UnknownNameError

            raise UnknownNameError("slurm cluster", cluster, CLUSTERS)
        if cluster == "slurm" and not shutil.which("sbatch"):
            raise ConfigError("executor 'slurm' submits with sbatch, which is not on this "
                              "machine's PATH (run the sweep from a Slurm login node; "
                              "-X cluster=local runs the same job arrays on this machine)")
        for label, value in (("--gpus-per-run", gpus_per_run), ("--cpus-per-run", cpus_per_run),
                             ("--array-parallelism", array_parallelism),
                             ("max_requeues", max_requeues)):
            if value is not None and int(value) < 0:
                raise ConfigError(f"{label} must be >= 0, got {value}")
        self.minutes = parse_minutes(time)
        self.partition, self.account, self.qos, self.constraint = (partition, account, qos,
                                                                   constraint)
        self.gpus_per_run = int(gpus_per_run or 0)
        self.cpus_per_run = int(cpus_per_run) if cpus_per_run else None
        self.mem_gb = mem_gb
        self.array_parallelism = array_parallelism
        self.setup = [setup] if isinstance(setup, str) else list(setup or [])
        self.max_requeues = int(max_requeues)
        self.cluster = cluster
        self.poll_seconds = poll_seconds if poll_seconds is not None else (
            1.0 if cluster == "local" else 30.0)
        self._jobs: list[Any] = []

    def _submitit_executor(self, folder: Path) -> Any:
        import submitit

        if self.cluster == "local":
            ex = submitit.LocalExecutor(folder=folder, max_num_timeout=self.max_requeues)
            ex.update_parameters(timeout_min=self.minutes, gpus_per_node=self.gpus_per_run,
                                 tasks_per_node=1, nodes=1, setup=self.setup)
            return ex
        ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=self.max_requeues)
        ex.update_parameters(**self.slurm_parameters())
        return ex

    def slurm_parameters(self) -> dict[str, Any]:
        """submitit's Slurm parameters for one array task (one run)."""
        params: dict[str, Any] = {
            "time": self.minutes, "nodes": 1, "ntasks_per_node": 1, "job_name": "kdbench",
            "setup": self.setup, "stderr_to_stdout": True}
        for key, value in (("partition", self.partition), ("account", self.account),
                           ("qos", self.qos), ("constraint", self.constraint),
                           ("gpus_per_node", self.gpus_per_run),
                           ("cpus_per_task", self.cpus_per_run),
                           ("array_parallelism", self.array_parallelism)):
            if value:
                params[key] = value
        if self.mem_gb:
            params["mem"] = f"{int(self.mem_gb * 1024)}M"
        return params

    def run(self, jobs: Sequence[Job], results_dir: Path, report: Report) -> None:
        import submitit

        folder = Path(results_dir) / "sweeps" / "slurm" / "%j"
        ex = self._submitit_executor(folder)
        task = SlurmTask(self.cpus_per_run)
        try:
            submitted = ex.map_array(task, [job.argv(results_dir) for job in jobs])
        except Exception as exc:  # noqa: BLE001 - e.g. no sbatch here
            raise ConfigError(f"could not submit to {self.cluster}: {type(exc).__name__}: "
                              f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
                              ) from None
        self._jobs = list(submitted)
        by_id = {id(s): job for s, job in zip(submitted, jobs)}
        try:
            for sjob in submitit.helpers.as_completed(submitted, poll_frequency=self.poll_seconds):
                job = by_id[id(sjob)]
                try:
                    code, error = sjob.result()
                except Exception as exc:  # noqa: BLE001 - the task died (OOM, node failure, ...)
                    text = str(exc).strip().splitlines()
                    code, error = None, f"{type(exc).__name__}: {text[0] if text else ''}"
                log = str(sjob.paths.stdout).replace("%j", str(sjob.job_id))
                report(job, Outcome(code, error, log=log))
        except BaseException:
            for sjob in self._jobs:
                if not sjob.done():
                    sjob.cancel(check=False)
            raise
        finally:
            self._jobs = []
