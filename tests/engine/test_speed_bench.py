"""``kdbench bench`` at tiny sizes: every variant runs and the report holds what it claims."""

from __future__ import annotations

import json
import statistics

import pytest

from conftest import REPO

TINY = ["bench", "--teacher", "resnet8", "--student", "resnet8", "--batch-size", "8",
        "--steps", "1", "--rounds", "2", "--warmup", "1", "--num-train", "24",
        "--image-size", "8", "--num-classes", "4", "--workers", "1", "--lockstep", "2",
        "--threads", "1", "--peak-size", "32", "--precision", "fp32", "--quiet"]


def test_bench_runs_every_variant_and_writes_json(cli_runner, tmp_path):
    out = tmp_path / "bench.json"
    result = cli_runner(*TINY, "--json", out)
    assert result.exit_code == 0, result.output
    for label in ("(a) classic loop", "(b) kdbench engine, default settings", "(g) engine",
                  "(c) compute bound", "(t) teacher forward alone, fused",
                  "(d) lockstep: 2 students", "(p) fp32 peak: n×n GEMM",
                  "(p) fp32 peak: large 3×3 conv", "engine (default "
                  "settings) / classic", "engine default / best setting",
                  "teacher fusion: step speed-up", "teacher fusion: teacher-forward speed-up",
                  "teacher forward / default step", "data-path efficiency",
                  "lockstep of 2 / 2 separate runs", "fp32 peak: measured", "busy at the start",
                  "load average",
                  "teacher fusion folds 9 of 9 BatchNorms", "best setting:"):
        assert label in result.output, label
    report = json.loads(out.read_text())
    variants = report["variants"]
    resolved = report["resolved"]
    cores = resolved["cores"]
    default = resolved["default"]
    assert default == {"threads": 1, "channels_last": True, "fuse": False, "precision": "fp32"}
    # the grid: threads {1, cores} × layout × fusion, and the other precision; not the default
    grid = [k for k in variants if k.startswith("grid:")]
    assert len(grid) == (8 if cores > 1 else 4) - 1 + 1
    assert "grid:t1-nhwc-fused-fp32" in grid and "grid:t1-nchw-plain-fp32" in grid
    assert "grid:t1-nhwc-plain-bf16" in grid and "grid:t1-nhwc-plain-fp32" not in grid
    assert list(variants)[:2] == ["classic", "engine"]
    assert list(variants)[-6:] == ["compute", "teacher:plain", "teacher:fused", "lockstep",
                                   "peak:gemm", "peak:conv"]
    for v in variants.values():
        assert len(v["per_round"]) == 2 and all(x > 0 for x in v["per_round"])
        assert v["flops_per_s"] > 0 and v["peak_memory_mib"] > 0
    ips = {k: v["images_per_s"] for k, v in variants.items()}
    r = report["ratios"]
    assert r["engine_over_classic"] == pytest.approx(ips["engine"] / ips["classic"])
    best = max((k for k in ips if k == "engine" or k.startswith("grid:")), key=ips.get)
    assert r["best"] == best and r["engine_over_best"] == pytest.approx(ips["engine"] / ips[best])
    assert r["fusion_gain_step"] == pytest.approx(ips["grid:t1-nhwc-fused-fp32"] / ips["engine"])
    assert r["fusion_gain_teacher_forward"] == pytest.approx(
        ips["teacher:fused"] / ips["teacher:plain"])
    assert r["teacher_forward_share"] == pytest.approx(ips["engine"] / ips["teacher:plain"])
    assert r["lockstep_speedup"] == pytest.approx(ips["lockstep"] / ips["engine"])
    assert resolved["workers"] == 1 and resolved["threads"] == 1
    assert resolved["data"] == "random-4-class" and resolved["num_train"] == 24
    assert len(resolved["load_rounds"]) == 2 and resolved["busy_cpus_before"] >= 0
    assert resolved["teacher_fusion"]["folded"] == 9
    # FLOP/s = FLOPs per step × steps per second; lockstep does one teacher forward for 2 students
    engine = variants["engine"]
    assert engine["flops_per_s"] == pytest.approx(
        resolved["flops_per_step"] * engine["images_per_s"] / 8)
    lock = variants["lockstep"]
    assert lock["flops_per_s"] / (lock["images_per_s"] / 16) == pytest.approx(
        2 * resolved["flops_per_step"] - resolved["teacher_forward_flops"])
    teacher = variants["teacher:plain"]
    assert teacher["flops_per_s"] == pytest.approx(
        resolved["teacher_forward_flops"] * teacher["images_per_s"] / 8)
    # the peak: a GEMM of 2·n³ FLOPs and a 3×3 conv of 2·16·c²·9·32² FLOPs (c = n/8) a step;
    # the faster is the measured peak every GFLOP/s is also given against
    gemm, conv = variants["peak:gemm"], variants["peak:conv"]
    assert gemm["images_per_s"] is None and conv["images_per_s"] is None
    assert gemm["flops_per_s"] == pytest.approx(2 * 32**3 * statistics.median(gemm["per_round"]))
    assert conv["flops_per_s"] == pytest.approx(
        2 * 16 * 4 * 4 * 9 * 32 * 32 * statistics.median(conv["per_round"]))
    best = max(gemm["flops_per_s"], conv["flops_per_s"])
    assert report["peak"]["measured_gflops"] == pytest.approx(best / 1e9)
    assert r["engine_of_measured_peak"] == pytest.approx(engine["flops_per_s"] / best)


def test_nominal_peak_is_cores_times_clock_times_flop_per_cycle(monkeypatch, tmp_path):
    """An AMD core with AVX2/AVX-512 and FMA: 2 pipes × 8 lanes × 2 = 32 FLOP/cycle; an Intel
    AVX-512 core: 64. 2 cores at 2500 MHz: 160 and 320 GFLOP/s."""
    from pathlib import Path

    from kdbench import bench

    real = Path.read_text

    def fake(vendor, flags):
        text = "".join(f"processor\t: {i}\nvendor_id\t: {vendor}\ncpu MHz\t\t: 2500.000\n"
                       f"flags\t\t: fpu {flags}\n\n" for i in range(2))

        def read_text(self, *a, **k):
            return text if str(self) == "/proc/cpuinfo" else real(self, *a, **k)
        monkeypatch.setattr(Path, "read_text", read_text)

    fake("AuthenticAMD", "avx2 fma avx512f")
    assert bench.nominal_peak(2)["gflops"] == pytest.approx(160.0)
    fake("GenuineIntel", "avx2 fma avx512f")
    assert bench.nominal_peak(2)["gflops"] == pytest.approx(320.0)
    fake("GenuineIntel", "sse4_2")  # no FMA: no nominal peak claimed
    assert bench.nominal_peak(2)["gflops"] is None


def test_bench_flop_count_of_a_hand_worked_step():
    """FLOPs of one KD step counted independently: conv = 2·Cin·Cout·k²·H·W per image, linear
    2·in·out; a student's backward costs twice its forward except the stem conv's input grad."""
    import torch

    from kdbench.bench import BenchOptions, bench_data, step_flops
    from kdbench.models import create_model

    data = bench_data(BenchOptions(num_train=8, image_size=8, num_classes=4))
    teacher, student = create_model("resnet8", 4, 3), create_model("resnet8", 4, 3)
    b = 2

    def conv(cin, cout, k, hw):
        return 2 * cin * cout * k * k * hw * hw

    # resnet8: stem 3→16 at 8×8; one block per stage (16@8, 32@4, 64@2) with 1×1 projections
    stem = conv(3, 16, 3, 8)
    body = (2 * conv(16, 16, 3, 8)
            + conv(16, 32, 3, 4) + conv(32, 32, 3, 4) + conv(16, 32, 1, 4)
            + conv(32, 64, 3, 2) + conv(64, 64, 3, 2) + conv(32, 64, 1, 2))
    fc = 2 * 64 * 4
    forward = b * (stem + body + fc)
    backward = b * (stem + 2 * body + 2 * fc)  # the stem's input needs no gradient
    loss = lambda s, t, y: torch.nn.functional.cross_entropy(s, y)  # noqa: E731
    assert step_flops(teacher, student, data, b, loss) == 2 * forward + backward


def test_bench_rejects_bad_variants(cli_runner):
    result = cli_runner(*TINY, "--variants", "engine,clasic")
    assert result.exit_code == 2
    assert "unknown bench variant 'clasic'" in result.output and "classic" in result.output


# ============================== the OpenMP wait policy =========================================

STAT_BEFORE = """cpu  250 0 50 1850 0 0 0 0 0 0
cpu0 100 0 50 850 0 0 0 0 0 0
cpu1 150 0 0 1000 0 0 0 0 0 0
intr 1 2 3
"""
STAT_AFTER = """cpu  280 0 60 2000 0 0 0 10 0 0
cpu0 130 0 60 900 0 0 0 10 0 0
cpu1 150 0 0 1100 0 0 0 0 0 0
intr 1 2 3
"""


def test_busy_cpus_of_hand_made_proc_stat_readings(tmp_path):
    """cpu0: busy 150 → 200 jiffies (user +30, system +10, steal +10) of 1000 → 1100 in total
    (idle +50), 50/100 = 0.5 busy; cpu1: only idle time passes, 0. Together 0.5 CPUs."""
    from kdbench.openmp import busy_cpus, busy_fraction, cpu_times

    before, after = cpu_times(STAT_BEFORE), cpu_times(STAT_AFTER)
    assert before == {0: (150, 1000), 1: (150, 1150)}
    assert after == {0: (200, 1100), 1: (150, 1250)}
    assert busy_fraction(before, after) == pytest.approx(0.5)
    assert cpu_times(STAT_AFTER, cpus=[1]) == {1: (150, 1250)}  # only this process's CPUs
    # the measurement itself: two readings of the file around a sleep
    stat = tmp_path / "stat"
    stat.write_text(STAT_BEFORE)
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        stat.write_text(STAT_AFTER)
    busy = busy_cpus(0.25, stat, sleep)
    assert slept == [0.25]
    import os
    expected = busy_fraction(*(cpu_times(t, os.sched_getaffinity(0))
                               for t in (STAT_BEFORE, STAT_AFTER)))
    assert busy == pytest.approx(expected)
    assert busy_cpus(0.25, tmp_path / "missing", sleep) is None


@pytest.mark.parametrize("busy, expected", [(0.0, "ACTIVE"), (0.49, "ACTIVE"),
                                            (0.5, "PASSIVE"), (3.0, "PASSIVE")])
def test_wait_policy_follows_the_cpus_other_processes_use(busy, expected):
    from kdbench.openmp import choose_wait_policy

    env: dict[str, str] = {}
    assert choose_wait_policy(env, modules=[], measure=lambda: busy) == expected
    assert env == {"OMP_WAIT_POLICY": expected}


@pytest.mark.parametrize("env, modules", [
    ({"OMP_WAIT_POLICY": "ACTIVE"}, []),  # the user's choice stands
    ({"GOMP_SPINCOUNT": "10000"}, []),
    ({"OMP_NUM_THREADS": "1"}, []),  # no thread team, nothing to wait for
    ({}, ["torch"]),  # the runtime has read its policy already: setting one would be a lie
])
def test_wait_policy_is_left_alone(env, modules):
    from kdbench.openmp import choose_wait_policy

    def measure():
        raise AssertionError("nothing to measure")
    before = dict(env)
    assert choose_wait_policy(env, modules=modules, measure=measure) == env.get(
        "OMP_WAIT_POLICY")
    assert env == before
    assert choose_wait_policy({}, modules=[], measure=lambda: None) is None  # cannot measure


def test_the_command_line_chooses_the_policy_before_torch_loads():
    """In a fresh interpreter, a command (here ``kdbench run --help``; not ``kdbench --help``,
    which runs none and must stay fast) sets a policy while torch is not yet loaded (so the
    OpenMP runtime reads it); a policy the user set is kept."""
    import os
    import subprocess
    import sys

    probe = ("import os, sys; import kdbench.openmp as o; real = o.choose_wait_policy\n"
             "def spy(*a, **k):\n    print('torch' in sys.modules, file=sys.__stdout__)\n"
             "    return real(*a, **k)\n"
             "o.choose_wait_policy = spy\n"
             "import kdbench.cli, contextlib, io\n"
             "with contextlib.redirect_stdout(io.StringIO()):\n"
             "    kdbench.cli.cli.main(['run', '--help'], standalone_mode=False)\n"
             "print(os.environ.get('OMP_WAIT_POLICY'))")
    root = str(REPO)
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    env["PYTHONPATH"] = root
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() in (["False", "ACTIVE"], ["False", "PASSIVE"])
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.stdout.split() == ["False", "PASSIVE"]


@pytest.mark.parametrize("jobs, user, expected", [(2, None, "PASSIVE"), (1, None, None),
                                                  (2, "ACTIVE", None)])
def test_local_executor_lets_threads_of_parallel_jobs_sleep(monkeypatch, tmp_path, jobs,
                                                            user, expected):
    """Several jobs at once share the cores: their idle threads sleep; a job alone chooses its
    own policy; a policy in the sweep's environment is inherited as it is."""
    from kdbench.sweep import executors

    if user:
        monkeypatch.setenv("OMP_WAIT_POLICY", user)
    else:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    seen = {}

    class Proc:
        pid = 12345

        def __init__(self, argv, env, **kwargs):
            seen.update(env)

        def wait(self):
            return 0
    import types

    # a stand-in for the subprocess module as the executor sees it (the real one stays intact)
    fake = types.SimpleNamespace(**{k: getattr(executors.subprocess, k) for k in
                                    ("STDOUT", "DEVNULL", "TimeoutExpired")}, Popen=Proc)
    monkeypatch.setattr(executors, "subprocess", fake)
    ex = executors.LocalExecutor(jobs=jobs, threads=1)
    job = executors.Job("r1", "run", ["specs/r1.json"])
    outcome = ex._run_one(job, None, tmp_path, tmp_path)
    assert outcome.ok
    assert outcome.env.get("OMP_WAIT_POLICY") == expected
    assert seen.get("OMP_WAIT_POLICY") == (expected or user)


def test_bf16_counts_as_fast_only_with_amx():
    """AVX-512 BF16 without AMX (Zen 4, this machine) trains slower in bf16 than in fp32."""
    from kdbench.device import cpu_has_fast_bf16

    def info(flags):
        return f"processor\t: 0\nflags\t\t: fpu avx2 fma {flags}\n\nprocessor\t: 1\n"
    assert not cpu_has_fast_bf16(info("avx512f avx512_bf16"))
    assert cpu_has_fast_bf16(info("avx512f avx512_bf16 amx_tile amx_bf16"))
    assert not cpu_has_fast_bf16("")


@pytest.mark.slow
def test_compiled_variant_runs_beside_the_eager_engine(cli_runner, tmp_path):
    out = tmp_path / "bench.json"
    result = cli_runner(*TINY, "--variants", "engine,compiled", "--json", out)
    assert result.exit_code == 0, result.output
    assert "(k) engine, default settings, torch.compile" in result.output
    assert "torch.compile: step speed-up over the eager default" in result.output
    report = json.loads(out.read_text())
    variants = report["variants"]
    assert list(variants) == ["engine", "compiled"]
    assert variants["compiled"]["settings"].endswith(", compiled")
    assert "compiled" not in variants["engine"]["settings"]
    ips = {k: v["images_per_s"] for k, v in variants.items()}
    assert report["ratios"]["compile_gain"] == pytest.approx(ips["compiled"] / ips["engine"])
