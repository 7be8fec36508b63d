"""Streamed against resident data on the same images, and the memory of a streamed run.

CIFAR-10 (the offline JPEG-q75 copy, ``--cifar10 DIR``) is written out as PNG class folders
(32×32), then:

1. **throughput**: images/s of the same training run (``--student``, CE, batch 128, one epoch,
   the batch crop-and-flip) fed by the streamed loader (DataLoader ``--workers`` decoding the
   PNGs) and by the resident one (the same PNGs decoded once into a uint8 tensor), in
   alternating rounds so a machine shared with other work slows both alike; and the loaders
   alone (one epoch of batches, no model);
2. **memory**: the peak PSS (the process and its DataLoader workers, sampled every 50 ms) of a
   streamed one-epoch run on ``--small`` and on ``--large`` training images: a streamed run
   holds file paths, not pixels, so the two should be the same.

Not a test: run it by hand (``python benchmarks/streaming.py --out docs/bench/streaming.json``)
and copy the figures, dated, into docs/perf.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "data"))


def _pss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _tree(pid: int) -> list[int]:
    out = [pid]
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            kids = (task / "children").read_text().split()
            for k in kids:
                out += _tree(int(k))
    except OSError:
        pass
    return out


def peak_pss(cmd: list[str], env: dict[str, str]) -> tuple[int, float, int]:
    """Peak PSS of ``cmd`` and its descendants, its wall seconds, its exit code."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak, stop = 0, threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.wait(0.05):
            peak = max(peak, sum(_pss(p) for p in _tree(proc.pid)))

    t = threading.Thread(target=sample, daemon=True)
    t0 = time.perf_counter()
    t.start()
    proc.wait()
    stop.set()
    t.join()
    if proc.returncode:
        sys.stderr.write(proc.stderr.read().decode()[-2000:])
    return peak, time.perf_counter() - t0, proc.returncode


def write_tree(cifar10: Path, root: Path, per_class: int) -> Path:
    from imagetree import cifar_tree

    if not (root / "tree").is_dir():
        cifar_tree(cifar10, root, per_class, 10)
    return root / "tree"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cifar10", default=os.environ.get("KDBENCH_DATA_DIR",
                                                       "/work/shared/data/cifar10"))
    p.add_argument("--workdir", default=None, help="where the PNG trees go (kept)")
    p.add_argument("--throughput-images", type=int, default=10_000)
    p.add_argument("--small", type=int, default=10_000)
    p.add_argument("--large", type=int, default=50_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--student", default="resnet8")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="torch threads of the runs (0: all)")
    args = p.parse_args()

    import torch

    from kdbench.data import load_dataset
    from kdbench.data.stream import configure, make_loader

    work = Path(args.workdir or tempfile.mkdtemp(prefix="kdbench-streaming-"))
    cifar = Path(args.cifar10)
    out: dict = {"date": time.strftime("%Y-%m-%d"), "workers": args.workers,
                 "student": args.student, "cpus": os.cpu_count(),
                 "cpu_flags": sorted({f for line in Path("/proc/cpuinfo").read_text()
                                      .splitlines() if line.startswith("flags")
                                      for f in line.split(":", 1)[1].split()
                                      if f.startswith(("avx512", "amx", "avx2"))})}
    tree = write_tree(cifar, work / f"c{args.throughput_images}",
                      args.throughput_images // 10)

    # ---- the loaders alone
    if args.skip_throughput:
        args.rounds = 0
    loader_rates: dict[str, list[float]] = {"stream": [], "resident": []}
    for _ in range(args.rounds):
        for load in ("stream", "resident"):
            data = load_dataset("imagefolder", str(tree), size=32, load=load)
            configure(data, workers=args.workers)
            loader = make_loader(data, "train", 128, train=True, seed=0)
            n, t0 = 0, time.perf_counter()
            for x, _, _ in loader.epoch(0):
                n += x.shape[0]
            loader_rates[load].append(n / (time.perf_counter() - t0))
    if args.rounds:
        out.update(_throughput(args, tree, work, loader_rates))
    return _memory(args, cifar, work, out, torch)


def _throughput(args, tree, work, loader_rates) -> dict:
    out: dict = {"threads": args.threads}
    out["loader_images_per_s"] = {k: statistics.median(v) for k, v in loader_rates.items()}

    # ---- the same training run, fed each way: `kdbench run` as users start it (a fresh
    # process, so each run chooses its OpenMP wait policy and starts its own workers)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    train_rates: dict[str, list[float]] = {"stream": [], "resident": []}
    for r in range(args.rounds):
        for load in ("stream", "resident"):
            cmd = [sys.executable, "-m", "kdbench", "run", "--dataset", "imagefolder",
                   "--data-dir", str(tree), "--data-option", "size=32", "--data-option",
                   f"load={load}", "--loss", "ce", "--student", args.student, "--epochs", "1",
                   "--batch-size", "128", "--device", "cpu", "--precision", "fp32",
                   "--workers", str(args.workers), "--threads", str(args.threads), "--quiet",
                   "--force", "--json", "--results-dir", str(work / f"results-{load}-{r}")]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            record = json.loads(proc.stdout)
            train_rates[load].append(record["cost"]["images_per_s"])
            print(load, r, train_rates[load][-1], flush=True)
    out["train_images_per_s"] = {k: statistics.median(v) for k, v in train_rates.items()}
    out["train_rounds"] = train_rates
    out["stream_over_resident"] = (out["train_images_per_s"]["stream"]
                                   / out["train_images_per_s"]["resident"])
    out["loader_stream_over_resident"] = (out["loader_images_per_s"]["stream"]
                                          / out["loader_images_per_s"]["resident"])
    print(json.dumps({k: out[k] for k in ("loader_images_per_s", "train_images_per_s",
                                          "stream_over_resident")}, indent=1), flush=True)
    return out


def _memory(args, cifar, work, out, torch) -> int:
    # ---- peak memory of a streamed run: small vs large
    if not args.skip_memory:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        mem = {}
        for n in (args.small, args.large):
            t = write_tree(cifar, work / f"c{n}", n // 10)
            cmd = [sys.executable, "-m", "kdbench", "run", "--dataset", "imagefolder",
                   "--data-dir", str(t), "--data-option", "size=32", "--data-option",
                   "load=stream", "--loss", "ce", "--student", args.student, "--epochs", "1",
                   "--batch-size", "128", "--device", "cpu", "--precision", "fp32",
                   "--workers", str(args.workers), "--quiet", "--force",
                   "--results-dir", str(work / f"mem-{n}")]
            peak, seconds, code = peak_pss(cmd, env)
            mem[str(n)] = {"peak_pss_mib": peak / 2**20, "seconds": seconds, "exit": code}
            print(n, mem[str(n)], flush=True)
        out["streamed_peak_pss"] = mem
        out["peak_ratio_large_over_small"] = (mem[str(args.large)]["peak_pss_mib"]
                                              / mem[str(args.small)]["peak_pss_mib"])
    out["torch"] = torch.__version__
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
