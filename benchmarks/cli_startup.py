"""Wall time of ``kdbench --help`` (and, for scale, of a bare interpreter): the median of N
fresh processes. A benchmark, not a test: the figure depends on the machine and its load.

    python benchmarks/cli_startup.py [-n 5] [--repo PATH]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path


def wall(args: list[str], env: dict[str, str], cwd: str) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one process: on a busy machine the CPU time
    says what the command costs, the wall time what a user waits."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(args, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=True)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=5, help="processes per measurement")
    p.add_argument("--repo", default=str(Path(__file__).resolve().parents[1]),
                   help="the kdbench checkout to time")
    a = p.parse_args()
    env = {**os.environ, "PYTHONPATH": a.repo}
    for label, cmd in (("python -c pass", [sys.executable, "-c", "pass"]),
                       ("kdbench --help", [sys.executable, "-m", "kdbench", "--help"]),
                       ("kdbench run --help", [sys.executable, "-m", "kdbench", "run",
                                               "--help"])):
        runs = [wall(cmd, env, a.repo) for _ in range(a.n)]  # the checkout first on sys.path
        times, cpu = [w for w, _ in runs], [c for _, c in runs]
        print(f"{label:20s} wall median {statistics.median(times):.2f} s (min {min(times):.2f}, "
              f"max {max(times):.2f}), CPU median {statistics.median(cpu):.2f} s, n={a.n}")


if __name__ == "__main__":
    main()
