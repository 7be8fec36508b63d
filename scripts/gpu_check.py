"""``make gpu-check``: the CUDA path checked on the first GPU machine, in under 10 minutes.

The project's machines have no GPU, so what only a GPU can show is measured here, once, into
one JSON file (``--out``, default ``gpu-check.json``):

1. ``environment``: torch, CUDA, cuDNN, the devices and whether they run bf16;
2. ``runs``: a short RepDistiller-protocol run (preset repdistiller, resnet32x4 → resnet8x4,
   KD) on synthetic CIFAR-100-shaped data (100 classes, 32×32), in bf16 autocast and in fp16
   with a gradient scaler, channels_last, pinned memory and cuDNN benchmark: that each trains
   to a finite loss, its top-1 and images/s;
3. ``bench``: ``kdbench bench``'s classic KD loop against the engine on the GPU (images/s);
4. ``ddp``: with two GPUs or more, the same run on 2 ranks (``kdbench run --nproc 2``, NCCL)
   against 1, their metrics side by side.

Without CUDA it stops with a one-line message (exit 2). ``--cpu`` runs every part that can run
on the CPU, tiny, which is how the tests check this script (gloo stands in for NCCL there).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _environment(torch: Any) -> dict[str, Any]:
    cuda = torch.cuda.is_available()
    return {"torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if cuda else None,
            "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            if cuda else [],
            "bf16": bool(cuda and torch.cuda.is_bf16_supported())}


def _kdbench(args: list[str], results: Path, timeout: float) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "kdbench", "run", *args, "--results-dir",
                           str(results), "--json", "--quiet", "--force"], env=env, text=True,
                          capture_output=True, timeout=timeout)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or [""]
        return {"ok": False, "exit": proc.returncode, "error": tail[0], "seconds": seconds}
    record = json.loads(proc.stdout)
    m = record["metrics"]
    return {"ok": True, "seconds": seconds, "top1_last": m.get("top1_last"),
            "train_loss_last": m["curve"][-1].get("train_loss"),
            "images_per_s": record["cost"].get("images_per_s"),
            "env": {k: record["env"].get(k) for k in (
                "device", "device_name", "precision", "channels_last", "world_size", "backend",
                "pin_memory", "cudnn_benchmark", "grad_scaler")}}


def _run_args(device: str, tiny: bool) -> list[str]:
    train = 512 if tiny else 10_000
    return ["--preset", "repdistiller", "--dataset", "synthetic",
            "--data-option", "num_classes=100", "--data-option", "size=32",
            "--data-option", f"train_size={train}", "--data-option", f"test_size={train // 5}",
            "--teacher-arch", "resnet8x4" if tiny else "resnet32x4", "--student", "resnet8x4",
            "--loss", "kd", "--epochs", "1" if tiny else "3",
            "--set", f"teacher.recipe.epochs={1 if tiny else 3}", "--set",
            "teacher.save_every=1", "--batch-size", "64", "--device", device]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu-check.json", help="the JSON file of figures")
    parser.add_argument("--cpu", action="store_true",
                        help="run the CPU-safe parts, tiny, without a GPU (tests)")
    parser.add_argument("--steps", type=int, default=20, help="bench: timed steps per round")
    args = parser.parse_args(argv)
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.cpu:
        print("gpu-check: no CUDA device here (torch.cuda.is_available() is False); run it on "
              "a GPU machine, or pass --cpu for the CPU-safe parts", file=sys.stderr)
        return 2
    device = "cuda" if cuda and not args.cpu else "cpu"
    tiny = device == "cpu"
    timeout = 600.0
    out: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                           "device": device, "environment": _environment(torch)}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kdbench-gpu-check-") as tmp:
        tmp_path = Path(tmp)
        base = _run_args(device, tiny)
        # ---- short runs in each precision and with each CUDA setting
        variants = {"bf16": ["--precision", "bf16"], "fp16": ["--precision", "fp16"]}
        if device == "cuda":
            variants = {k: v + ["--channels-last", "--pin-memory", "--cudnn-benchmark"]
                        for k, v in variants.items()}
        else:
            variants = {"fp32": ["--precision", "fp32"]}
        out["runs"] = {name: _kdbench(base + extra, tmp_path / name, timeout)
                       for name, extra in variants.items()}
        # ---- the throughput benchmark on this device
        from kdbench.bench import BenchOptions, run_bench

        opts = BenchOptions(teacher="resnet8x4" if tiny else "resnet32x4", student="resnet8x4",
                            batch_size=64, steps=2 if tiny else args.steps,
                            rounds=1 if tiny else 3, warmup=1, num_train=512 if tiny else 10_000,
                            device=device, variants=["classic", "engine", "compute"],
                            workers=2 if tiny else 0)
        result = run_bench(opts)
        out["bench"] = {name: {"images_per_s": v.get("images_per_s")}
                        for name, v in result["variants"].items()}
        # ---- one run on two ranks against one process
        if device == "cuda" and torch.cuda.device_count() >= 2 or device == "cpu":
            one = out["runs"][next(iter(out["runs"]))]
            two = _kdbench(base + variants[next(iter(variants))] + ["--nproc", "2"],
                           tmp_path / "ddp", timeout)
            out["ddp"] = {"one_process": one, "two_ranks": two}
        else:
            out["ddp"] = {"skipped": f"{torch.cuda.device_count()} GPU(s): needs 2"}
    out["seconds"] = time.perf_counter() - t_start
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    failed = [k for k, v in out["runs"].items() if not v["ok"]]
    if "two_ranks" in out["ddp"] and not out["ddp"]["two_ranks"]["ok"]:
        failed.append("ddp")
    print(f"gpu-check: {'FAILED ' + ', '.join(failed) if failed else 'ok'} in "
          f"{out['seconds']:.0f} s; figures in {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
