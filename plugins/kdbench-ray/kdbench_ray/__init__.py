"""kdbench-ray: the ``ray`` executor for ``kdbench sweep``, a plugin package like any other.

Each job of a sweep (a teacher trajectory or a run) becomes one Ray task. The task executes the
job's ``kdbench`` command in a private results directory on its worker, after writing there the
job's spec file and the teacher trajectories it reads, which travel through Ray's object store.
What the job wrote (the run record, or the trained trajectory) travels back as the task's result
and is written atomically into the driver's store — so a cluster without a shared file system
still ends with every record on the driver. A task whose worker dies is retried by Ray.

Without ``--address`` a private local Ray is started for the sweep (bound to 127.0.0.1, its own
temporary directory, no dashboard) and stopped at the end.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import kdbench
from kdbench.errors import ConfigError
from kdbench.store import atomic_write_bytes
from kdbench.sweep.executors import (
    Executor,
    Job,
    Outcome,
    Report,
    child_env,
    describe_exit,
    error_line,
    kdbench_command,
    thread_env,
    usable_cpus,
)

INSTALL = "pip install kdbench-ray (it installs Ray)"
#: Files a job leaves behind that are its own business: locks, resume state, half-written temps.
PRIVATE = (".lock", "state.pt")


@kdbench.hookimpl
def register_executors(register):
    register("ray", RayExecutor)


# ============================== files in and out of a task =====================================


def read_tree(root: Path, rel: str) -> dict[str, bytes]:
    """A store path (file or folder) as {relative path: bytes}, without private files."""
    path = root / rel
    if path.is_file():
        return {rel: path.read_bytes()}
    files: dict[str, bytes] = {}
    if path.is_dir():
        for f in sorted(path.rglob("*")):
            if f.is_file() and not _private(f.name):
                files[str(f.relative_to(root))] = f.read_bytes()
    return files


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    """Write files atomically under ``root``; manifests last, so no reader ever sees a manifest
    naming a checkpoint that is not there yet."""
    for rel in sorted(files, key=lambda r: (Path(r).name == "manifest.json", r)):
        target = (root / rel).resolve()
        if root.resolve() not in target.parents:
            raise ConfigError(f"ray task returned a path outside the store: {rel!r}")
        atomic_write_bytes(target, files[rel])


def _private(name: str) -> bool:
    return name in PRIVATE or name.endswith((".tmp", ".state.pt"))


def run_job(job: dict[str, Any], inputs: dict[str, Any], threads: int,
            scratch: str | None = None) -> dict[str, Any]:
    """The Ray task: one job in a private results directory on this worker (under ``scratch``
    when the sweep owns the Ray instance, so even a killed attempt's files go with it)."""
    import ray

    if scratch:
        os.makedirs(scratch, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="kdbench-ray-job-", dir=scratch))
    try:
        for ref in inputs.values():
            write_tree(work, ray.get(ref))
        spec = Job(**job)
        t0 = time.perf_counter()
        proc = subprocess.run(kdbench_command(spec.argv(work)), env=child_env(thread_env(threads)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              stdin=subprocess.DEVNULL, check=False)
        files: dict[str, bytes] = {}
        for rel in spec.outputs:
            files.update(read_tree(work, rel))
        error = None
        if proc.returncode != 0:
            error = (error_line(proc.stdout) if proc.returncode > 0 else None) or \
                describe_exit(proc.returncode)
        return {"returncode": proc.returncode, "error": error, "files": files,
                "log": proc.stdout[-50_000:], "host": socket.gethostname(),
                "seconds": time.perf_counter() - t0}
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ============================== the executor ===================================================


class RayExecutor(Executor):
    """Each run a Ray task (local Ray, or --address), retried when its worker dies."""

    name = "ray"

    def __init__(self, *, address: str | None = None, gpus_per_run: float = 0,
                 cpus_per_run: float = 1, retries: int = 3, temp_dir: str | None = None,
                 object_store_mb: int = 256) -> None:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ConfigError(f"executor 'ray' needs Ray, which is not installed: {INSTALL}"
                              ) from None
        if retries < 0:
            raise ConfigError(f"--retries must be >= 0, got {retries}")
        if cpus_per_run <= 0 or gpus_per_run < 0:
            raise ConfigError(f"--cpus-per-run must be > 0 and --gpus-per-run >= 0, got "
                              f"{cpus_per_run} and {gpus_per_run}")
        self.address = address
        self.gpus_per_run = gpus_per_run
        self.cpus_per_run = cpus_per_run
        self.retries = retries
        self.temp_dir = temp_dir
        self.object_store_mb = object_store_mb
        self._started = False
        self._own_temp: str | None = None
        self._scratch: str | None = None  # job folders on a Ray this sweep started

    # -- connection --------------------------------------------------------------------------
    def _connect(self) -> None:
        import ray

        if ray.is_initialized():
            return
        if self.address:
            try:
                ray.init(address=self.address, log_to_driver=False)
            except Exception as exc:  # noqa: BLE001
                raise ConfigError(f"cannot connect to the Ray cluster at {self.address!r}: "
                                  f"{type(exc).__name__}: {exc}") from None
        else:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            temp = self.temp_dir
            if temp is None:
                # Short and private: Ray's socket paths must stay under 107 characters, so
                # under RAY_TMPDIR (Ray's own setting) or /tmp, not a long TMPDIR.
                temp = self._own_temp = tempfile.mkdtemp(
                    prefix="kdbench-ray-", dir=os.environ.get("RAY_TMPDIR") or "/tmp")
            ray.init(num_cpus=usable_cpus(), _temp_dir=temp, _node_ip_address="127.0.0.1",
                     include_dashboard=False, object_store_memory=self.object_store_mb * 2**20,
                     log_to_driver=False)
            self._scratch = os.path.join(temp, "jobs")
        self._started = True

    def close(self) -> None:
        if self._started:
            import ray

            ray.shutdown()
            self._started = False
        if self._scratch:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
        if self._own_temp:
            shutil.rmtree(self._own_temp, ignore_errors=True)
            self._own_temp = None

    # -- jobs --------------------------------------------------------------------------------
    def run(self, jobs: Sequence[Job], results_dir: Path, report: Report) -> None:
        import ray

        self._connect()
        root = Path(results_dir)
        log_dir = root / "sweeps" / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        task = ray.remote(run_job).options(
            num_cpus=self.cpus_per_run, num_gpus=self.gpus_per_run, max_retries=self.retries,
            retry_exceptions=False)
        shipped: dict[str, Any] = {}  # store path -> object ref, each put once per batch
        pending: dict[Any, Job] = {}
        threads = max(1, int(self.cpus_per_run))
        for job in jobs:
            inputs = {}
            for rel in job.inputs:
                if rel not in shipped:
                    shipped[rel] = ray.put(read_tree(root, rel))
                inputs[rel] = shipped[rel]
            ref = task.remote(dataclasses.asdict(job), inputs, threads, self._scratch)
            pending[ref] = job
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in ready:
                    job = pending.pop(ref)
                    report(job, self._collect(ref, job, root, log_dir))
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise

    def _collect(self, ref: Any, job: Job, root: Path, log_dir: Path) -> Outcome:
        import ray

        try:
            result = ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - retries exhausted, task cancelled, ...
            text = str(exc).strip().splitlines()
            return Outcome(None, f"{type(exc).__name__}: {text[0] if text else ''}",
                           attempts=self.retries + 1)
        write_tree(root, result["files"])
        log = log_dir / job.log_name
        log.write_text(f"# ray task on {result['host']}\n{result['log']}")
        return Outcome(result["returncode"], result["error"], seconds=result["seconds"],
                       log=str(log))
