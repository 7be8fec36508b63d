"""Executors: what runs a sweep's jobs. Each job is a spec file and a ``kdbench`` command line.

Executors move specs, never closures: a job is ``kdbench run --spec FILE`` (or, for a teacher
trajectory, ``kdbench sweep train-teacher FILE``; for runs trained in lockstep, ``kdbench sweep
run-lockstep FILE...``) against a results store, so any executor can run,
and any later sweep can resume, any job. An executor is a plugin (``register_executors``): a
factory taking keyword options and returning an object with ``run(jobs, results_dir, report)``
that calls ``report(job, outcome)`` from the calling thread as each job ends, and is a context
manager (set-up and tear-down of a cluster connection).
"""

from __future__ import annotations

import contextlib
import inspect
import os
import queue
import signal
import site
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, UnknownNameError
from ..store import atomic_write_bytes, open_append
from .work import execute

if TYPE_CHECKING:  # pragma: no cover
    from typing_extensions import Self

#: Executors that live in their own package, and how to get them.
EXTERNAL_EXECUTORS = {
    "ray": "the ray executor is the kdbench-ray plugin package: pip install kdbench-ray "
           "(plugins/kdbench-ray in the kdbench sources), which installs Ray",
}

#: Exit code of ``kdbench`` for bad input: the same command would fail again, never retried.
BAD_INPUT = 2


# ============================== jobs and outcomes ==============================================


@dataclass
class Job:
    """One unit of work: spec files in the store and the command that executes them."""

    key: str  # run id, ``teacher:<trajectory key>`` or ``lockstep:<first run id>``
    kind: str  # "run" | "teacher" | "lockstep" (several runs trained together)
    specs: list[str]  # spec files, relative to the results dir
    label: str = ""
    inputs: list[str] = field(default_factory=list)  # store paths the job reads, specs included
    outputs: list[str] = field(default_factory=list)  # store paths the job writes

    def argv(self, results_dir: str | os.PathLike[str]) -> list[str]:
        """The ``kdbench`` arguments that execute this job against ``results_dir``."""
        paths = [str(Path(results_dir) / spec) for spec in self.specs]
        head = {"run": ["run", "--spec", *paths[:1]],
                "teacher": ["sweep", "train-teacher", *paths[:1]],
                "lockstep": ["sweep", "run-lockstep", *paths]}[self.kind]
        # the driver has decided about records made by other code (kdbench.sweep.run_sweep):
        # a job it sends is made
        again = ["--rerun-changed"] if self.kind in ("run", "lockstep") else []
        return [*head, "--results-dir", str(results_dir), *again, "--quiet"]

    @property
    def log_name(self) -> str:
        return self.key.replace(":", "-") + ".log"


@dataclass
class Outcome:
    """How a job ended, as the executor saw it (the store says what the run itself recorded)."""

    returncode: int | None
    error: str | None = None
    attempts: int = 1
    seconds: float = 0.0
    interrupted: bool = False
    env: dict[str, str] = field(default_factory=dict)  # what the executor set for the job
    log: str | None = None

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.interrupted


Report = Callable[[Job, Outcome], None]


class Executor:
    """Base class: a context manager whose ``run`` executes jobs and reports each outcome."""

    name = "executor"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release whatever ``run`` set up (clusters, pools)."""

    def run(self, jobs: Sequence[Job], results_dir: Path, report: Report) -> None:
        raise NotImplementedError


def make_executor(name: str, **options: Any) -> Executor:
    """The executor plugin ``name`` built with ``options``; options it does not take are errors."""
    from ..plugins import get, names

    known = names("executor")
    if name not in known:
        raise UnknownNameError("executor", name, known, hint=EXTERNAL_EXECUTORS.get(name, ""))
    entry = get("executor", name)
    params = inspect.signature(entry.factory).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        valid = [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
        for option in options:
            if option not in params:
                raise ConfigError(f"option {option!r} does not apply to executor {name!r} "
                                  f"(its options: {', '.join(valid) or 'none'})")
    return entry.create(**options)


def error_line(text: str) -> str | None:
    """The error a ``kdbench`` process printed: its ``Error:`` line, else its last line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for line in reversed(lines):
        if line.startswith("Error:"):
            return line[len("Error:"):].strip()
    return lines[-1][-300:] if lines else None


def describe_exit(code: int | None) -> str:
    if code is None:
        return "did not finish"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


# ============================== in-process execution ===========================================


class InlineExecutor(Executor):
    """In this process, one job after the other (tests, debugging, pdb)."""

    name = "inline"

    def __init__(self) -> None:
        pass

    def run(self, jobs: Sequence[Job], results_dir: Path, report: Report) -> None:
        log_dir = Path(results_dir) / "sweeps" / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        for job in jobs:
            t0 = time.perf_counter()
            code, output = execute(job.argv(results_dir))
            log = log_dir / job.log_name
            atomic_write_bytes(log, output.encode())
            report(job, Outcome(code, None if code == 0 else error_line(output),
                                seconds=time.perf_counter() - t0, log=str(log)))


# ============================== local: a subprocess per job ====================================


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def dies_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGTERM when this process dies, however it
    dies (Linux ``PR_SET_PDEATHSIG``; kdbench turns SIGTERM into an interrupted, resumable
    record). None where the platform has no such call."""
    import ctypes
    import ctypes.util

    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    parent = os.getpid()

    def set_death_signal() -> None:
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the call: stop now
            os.kill(os.getpid(), signal.SIGTERM)
    return set_death_signal


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment for a ``kdbench`` child, plus ``extra``.

    When kdbench runs from a source tree (not an installed copy), the tree goes first on the
    child's PYTHONPATH so the child runs the very code that planned the sweep.
    """
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    site_dirs = set(site.getsitepackages() + [site.getusersitepackages()])
    if root not in site_dirs:
        parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        if root not in parts:
            env["PYTHONPATH"] = os.pathsep.join([root, *parts])
    env.update(extra)
    return env


def thread_env(threads: int) -> dict[str, str]:
    n = str(max(1, threads))
    return {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n}


def kdbench_command(argv: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "kdbench", *argv]


def parse_gpus(gpus: str | Sequence[Any] | None) -> list[str]:
    if gpus is None or gpus == "":
        return []
    items = gpus.split(",") if isinstance(gpus, str) else [str(g) for g in gpus]
    out = [g.strip() for g in items if g.strip()]
    bad = [g for g in out if not g.isdigit()]
    if bad:
        raise ConfigError(f"--gpus {bad[0]!r} is not a GPU index (e.g. --gpus 0,1)")
    return out


class LocalExecutor(Executor):
    """Each job in its own subprocess (a crash or OOM cannot kill the sweep), ``jobs`` at a time.

    The CPU threads are divided between the parallel jobs (OMP_NUM_THREADS), and when several
    jobs run at once their idle OpenMP threads sleep (``OMP_WAIT_POLICY=PASSIVE``, unless this
    process's environment sets the policy): a thread that spins while it waits takes the core
    a neighbouring job needs — two spinning threads trained 2.5x slower at load 5 on the 2-core
    development machine — while a job alone keeps the runtime's short spin, which idle-machine
    training wants (README, Performance). With ``gpus`` every
    job takes a slot from a pool of ``runs_per_gpu`` slots per GPU and sees only that GPU
    (CUDA_VISIBLE_DEVICES). A job that fails for another reason than bad input is retried
    ``retries`` times (it resumes from its last epoch). Ctrl-C interrupts the running jobs,
    which record themselves as interrupted, and waits for them.
    """

    name = "local"

    def __init__(self, *, jobs: int | None = None, gpus: str | Sequence[Any] | None = None,
                 runs_per_gpu: int = 1, retries: int = 0, threads: int | None = None,
                 grace_seconds: float = 60.0) -> None:
        self.gpus = parse_gpus(gpus)
        if runs_per_gpu < 1:
            raise ConfigError(f"--runs-per-gpu must be >= 1, got {runs_per_gpu}")
        if jobs is not None and jobs < 1:
            raise ConfigError(f"--jobs must be >= 1, got {jobs}")
        if retries < 0:
            raise ConfigError(f"--retries must be >= 0, got {retries}")
        self.slots: list[str | None] = ([g for g in self.gpus for _ in range(runs_per_gpu)]
                                        or [None])
        if self.gpus:
            self.parallel = min(jobs or len(self.slots), len(self.slots))
        else:
            self.parallel = jobs or 1
            self.slots = [None] * self.parallel
        self.threads = threads or max(1, usable_cpus() // self.parallel)
        self.retries = retries
        self.grace_seconds = grace_seconds
        self._live: dict[int, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def run(self, jobs: Sequence[Job], results_dir: Path, report: Report) -> None:
        todo: queue.Queue[Job] = queue.Queue()
        for job in jobs:
            todo.put(job)
        slots: queue.Queue[str | None] = queue.Queue()
        for slot in self.slots:
            slots.put(slot)
        finished: queue.Queue[tuple[Job, Outcome]] = queue.Queue()
        log_dir = Path(results_dir) / "sweeps" / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        self._stop.clear()

        def worker() -> None:
            while not self._stop.is_set():
                try:
                    job = todo.get_nowait()
                except queue.Empty:
                    return
                slot = slots.get()
                try:
                    outcome = self._run_one(job, slot, Path(results_dir), log_dir)
                except BaseException as exc:  # noqa: BLE001 - reported, never lost in a thread
                    outcome = Outcome(None, f"{type(exc).__name__}: {exc}")
                finally:
                    slots.put(slot)
                finished.put((job, outcome))

        workers = [threading.Thread(target=worker, daemon=True, name=f"kdbench-local-{i}")
                   for i in range(min(self.parallel, len(jobs)))]
        for t in workers:
            t.start()
        try:
            for _ in range(len(jobs)):
                while True:
                    try:
                        job, outcome = finished.get(timeout=0.25)
                        break
                    except queue.Empty:
                        if not any(t.is_alive() for t in workers) and finished.empty():
                            return  # stopped
                report(job, outcome)
        except BaseException:
            self._interrupt_children()
            for t in workers:
                t.join()
            raise

    def _run_one(self, job: Job, slot: str | None, results_dir: Path, log_dir: Path) -> Outcome:
        extra = thread_env(self.threads)
        if self.parallel > 1 and "OMP_WAIT_POLICY" not in os.environ:
            extra["OMP_WAIT_POLICY"] = "PASSIVE"
        if slot is not None:
            extra["CUDA_VISIBLE_DEVICES"] = slot
        env = child_env(extra)
        log = log_dir / job.log_name
        t0 = time.perf_counter()
        attempt = 0
        while True:
            attempt += 1
            with open_append(log) as fh:
                fh.write(f"# attempt {attempt}: {' '.join(kdbench_command(job.argv(results_dir)))}"
                         f"\n")
                fh.flush()
                # A session of its own: Ctrl-C in the terminal reaches the sweep, which then
                # interrupts its children on purpose (and waits for their records); a child
                # whose driver dies (even kill -9) is told to stop (dies_with_parent).
                proc = subprocess.Popen(kdbench_command(job.argv(results_dir)), env=env,
                                        stdout=fh, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True,
                                        preexec_fn=dies_with_parent())
                with self._lock:
                    self._live[proc.pid] = proc
                try:
                    code = proc.wait()
                finally:
                    with self._lock:
                        self._live.pop(proc.pid, None)
            if self._stop.is_set():
                return Outcome(code, "interrupted", attempt, time.perf_counter() - t0,
                               interrupted=True, env=extra, log=str(log))
            if code == 0 or code == BAD_INPUT or attempt > self.retries:
                break
        error = None
        if code != 0:
            error = error_line(log.read_text()) if code > 0 else None
            error = error or describe_exit(code)
            if code < 0:
                error = f"{describe_exit(code)} (crashed or out of memory)"
        return Outcome(code, error, attempt, time.perf_counter() - t0, env=extra, log=str(log))

    def _interrupt_children(self) -> None:
        self._stop.set()
        with self._lock:
            live = list(self._live.values())
        for proc in live:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)
        deadline = time.monotonic() + self.grace_seconds
        for proc in live:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
