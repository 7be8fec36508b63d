"""How idle OpenMP threads wait, chosen from a short measurement before torch loads OpenMP.

torch's CPU kernels run on an OpenMP thread team. Between parallel regions (every few hundred
microseconds in a CIFAR training step) the team's idle threads either spin or sleep, and the
runtime reads that choice (``OMP_WAIT_POLICY``, GNU's ``GOMP_SPINCOUNT``) once, when torch loads
it: setting the variable after ``import torch`` changes nothing. Which choice is fast depends on
whether other processes want the cores:

- cores free (an idle machine, or one whose load average still counts kdbench's previous job):
  spinning threads answer the next region at once; sleeping ones pay a futex wake-up per region;
- cores taken by other processes: a spinning thread burns the time slice its busy peer (or the
  other process) needs, and the step waits for the scheduler instead.

So :func:`choose_wait_policy` measures, for a quarter of a second while this process sleeps, how
many CPUs other processes keep busy (:func:`busy_cpus`, from ``/proc/stat``; time the hypervisor
gives other guests counts as busy), and sets ``OMP_WAIT_POLICY=PASSIVE`` when that is half a CPU
or more, ``ACTIVE`` otherwise. The figures behind it are in the README (Performance) and
docs/bench/. A user's own
``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` always stands, one thread needs no policy, and once
torch is loaded nothing is set (it could not take effect). The load average is no guide: it
stays above 0.5 for minutes after any job has finished.

Only the command line calls this (kdbench.cli, before it imports torch); the library never
changes a process's environment on import.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, MutableMapping
from pathlib import Path

#: CPUs' worth of other processes' work from which idle threads sleep instead of spinning
BUSY_THRESHOLD = 0.5
#: how long the measurement watches the CPUs (this process sleeps meanwhile)
SAMPLE_SECONDS = 0.25


def cpu_times(text: str, cpus: Iterable[int] | None = None) -> dict[int, tuple[int, int]]:
    """(busy, total) jiffies of each CPU in a ``/proc/stat`` text (only ``cpus`` if given).

    busy = user + nice + system + irq + softirq + steal; total = busy + idle + iowait (guest
    time is already inside user and nice).
    """
    wanted = None if cpus is None else set(cpus)
    out: dict[int, tuple[int, int]] = {}
    for line in text.splitlines():
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        cpu = int(name[3:])
        if wanted is not None and cpu not in wanted:
            continue
        v = [int(x) for x in fields] + [0] * (8 - len(fields))
        user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
        busy = user + nice + system + irq + softirq + steal
        out[cpu] = (busy, busy + idle + iowait)
    return out


def busy_fraction(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]
                  ) -> float:
    """CPUs' worth of busy time between two :func:`cpu_times` readings: the sum over CPUs of
    Δbusy / Δtotal (a CPU whose counters did not move counts as idle)."""
    total = 0.0
    for cpu, (busy1, all1) in after.items():
        if cpu not in before:
            continue
        busy0, all0 = before[cpu]
        if all1 > all0:
            total += max(0, busy1 - busy0) / (all1 - all0)
    return total


def busy_cpus(seconds: float = SAMPLE_SECONDS, stat: Path = Path("/proc/stat"),
              sleep: Callable[[float], None] = time.sleep) -> float | None:
    """How many CPUs (of those this process may run on) other processes keep busy, measured
    over ``seconds`` while this process sleeps; None where ``/proc/stat`` cannot be read."""
    try:
        cpus: Iterable[int] | None = os.sched_getaffinity(0)
    except AttributeError:  # pragma: no cover - not Linux
        cpus = None
    try:
        before = cpu_times(stat.read_text(), cpus)
        sleep(seconds)
        after = cpu_times(stat.read_text(), cpus)
    except (OSError, ValueError):
        return None
    return busy_fraction(before, after)


def choose_wait_policy(environ: MutableMapping[str, str] | None = None,
                       modules: Iterable[str] | None = None,
                       measure: Callable[[], float | None] = busy_cpus) -> str | None:
    """Set ``OMP_WAIT_POLICY`` in ``environ`` (default: this process's) from :func:`busy_cpus`
    and return the policy the process runs with (None: the runtime's default).

    Nothing is measured or set when the user chose (``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``
    set), when ``OMP_NUM_THREADS`` is 1 (no thread team), when torch is already in ``modules``
    (default: ``sys.modules``; the runtime has read its policy), or when the CPUs cannot be
    measured.
    """
    env = os.environ if environ is None else environ
    loaded = sys.modules if modules is None else modules
    if "OMP_WAIT_POLICY" in env or "GOMP_SPINCOUNT" in env:
        return env.get("OMP_WAIT_POLICY")
    if env.get("OMP_NUM_THREADS", "").strip() == "1" or "torch" in loaded:
        return None
    busy = measure()
    if busy is None:
        return None
    env["OMP_WAIT_POLICY"] = "PASSIVE" if busy >= BUSY_THRESHOLD else "ACTIVE"
    return env["OMP_WAIT_POLICY"]
