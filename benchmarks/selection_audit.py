"""Audit of Algorithm 1's decision rule, per registered MI estimator: the two properties of its
noise model (kdbench.mi.selection; the same cases as tests/mi/test_selection_noise.py).

1. **Equal checkpoints are rarely chosen.** Ten "checkpoints" whose features are independent
   draws from one class-conditional Gaussian (4 classes, 2 dimensions) on one probe set of 100
   samples: none is better, so a choice is a false one. Each of 8 trials (seeds 0–7) runs the
   estimator as ``kdbench select`` would — a seeded estimator 3 repeat seeds per checkpoint (the
   same seeds at every checkpoint), a deterministic one once plus 6 half-samples of the probe
   set — and counts the trials in which the rule chooses. The rule must choose in at most 1.
2. **A shared block effect is not noise.** Synthetic estimates of ten checkpoints, one better by
   0.5 on both series, observed in 3 blocks (repeat seeds, or half-samples) that each add an
   effect of sd 1 shared by every checkpoint, and own noise of sd 0.02. The blocked residual
   removes the shared effect, so the better checkpoint must be chosen in 8 of 8 trials;
   pooling the within-checkpoint spread instead (kdbench 0.2) would decline.

    OMP_NUM_THREADS=1 python benchmarks/selection_audit.py --out docs/mi-selection-audit.md
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import time
import warnings
from pathlib import Path

import torch

from kdbench.mi.calibration import equal_checkpoints, shared_block_effect
from kdbench.plugins import get, names

#: the trained estimators get a smaller network and budget (the property is about the rule)
SMALL = {"recon": {"epochs": 60, "hidden": 64}, "infonce": {"epochs": 60, "hidden": 64}}
TRIALS = 8


def audit(name: str) -> dict:
    estimator = get("mi_estimator", name).create(**SMALL.get(name, {}))
    stochastic = bool(getattr(estimator, "stochastic", True))
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        equal = [equal_checkpoints(estimator, seed=s, samples=100, dim=2, resamples=6)
                 for s in range(TRIALS)]
    shared = [shared_block_effect(stochastic=stochastic, seed=s) for s in range(TRIALS)]
    return {"name": name, "noise": "repeat seeds as blocks" if stochastic
            else "half-samples of the probe set",
            "equal_chosen": sum(t.selection.chosen is not None for t in equal),
            "equal_choices": [t.selection.chosen for t in equal],
            "shared_chosen": sum(s.chosen == 6 for s in shared),
            "seconds": time.perf_counter() - t0}


def render(rows: list[dict], meta: dict) -> str:
    lines = ["# Algorithm 1's decision rule: audit per estimator", "",
             f"Made by `{meta['command']}` on {meta['date']} ({meta['machine']}, torch "
             f"{meta['torch']}, git {meta['git']}, {meta['minutes']:.1f} min). The cases are "
             f"in `benchmarks/selection_audit.py`'s docstring; the same ones are tests "
             f"(`tests/mi/test_selection_noise.py`).", "",
             "| estimator | noise measured by | equal checkpoints: trials that chose (of 8; "
             "must be ≤ 1) | better checkpoint under a shared block effect: trials that "
             "chose it (of 8; must be 8) | seconds |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| `{r['name']}` | {r['noise']} | {r['equal_chosen']} | "
                     f"{r['shared_chosen']} | {r['seconds']:.0f} |")
    ok = all(r["equal_chosen"] <= 1 and r["shared_chosen"] == TRIALS for r in rows)
    lines += ["", "Both properties hold for every estimator." if ok else
              "**At least one property fails** (see the rows above).", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/mi-selection-audit.md")
    ap.add_argument("--estimators", default=None, help="comma-separated (default: all)")
    args = ap.parse_args()
    chosen = args.estimators.split(",") if args.estimators else names("mi_estimator")
    t0 = time.perf_counter()
    rows = []
    for name in chosen:
        rows.append(audit(name))
        print(f"[{time.perf_counter() - t0:6.0f} s] {name}: {rows[-1]}", flush=True)
    try:
        git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        git = "unknown"
    meta = {"command": "OMP_NUM_THREADS=1 python benchmarks/selection_audit.py",
            "date": time.strftime("%Y-%m-%d"),
            "machine": torch.backends.cpu.get_cpu_capability() + " CPU, "
            + (platform.processor() or platform.machine()),
            "torch": torch.__version__, "git": git,
            "minutes": (time.perf_counter() - t0) / 60}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(render(rows, meta))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
