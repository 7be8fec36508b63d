"""``kdbench bench`` at tiny sizes: every variant runs and the report holds what it claims."""

from __future__ import annotations

import json

import pytest

TINY = ["bench", "--teacher", "resnet8", "--student", "resnet8", "--batch-size", "8",
        "--steps", "1", "--rounds", "2", "--warmup", "1", "--num-train", "24",
        "--image-size", "8", "--num-classes", "4", "--workers", "1", "--lockstep", "2",
        "--threads", "1", "--quiet"]


def test_bench_runs_every_variant_and_writes_json(cli_runner, tmp_path):
    out = tmp_path / "bench.json"
    result = cli_runner(*TINY, "--json", out)
    assert result.exit_code == 0, result.output
    for label in ("(a) classic loop", "(b) kdbench engine", "(c) compute bound",
                  "(d) lockstep: 2 students", "engine / classic", "data-path efficiency",
                  "lockstep of 2 / 2 separate runs", "load average"):
        assert label in result.output
    report = json.loads(out.read_text())
    variants = report["variants"]
    assert list(variants) == ["classic", "engine", "compute", "lockstep"]
    for v in variants.values():
        assert len(v["per_round"]) == 2 and all(x > 0 for x in v["per_round"])
        assert v["images_per_s"] > 0 and v["flops_per_s"] > 0 and v["peak_memory_mib"] > 0
    r = report["ratios"]
    assert r["engine_over_classic"] == pytest.approx(
        variants["engine"]["images_per_s"] / variants["classic"]["images_per_s"])
    assert r["lockstep_speedup"] == pytest.approx(
        variants["lockstep"]["images_per_s"] / variants["engine"]["images_per_s"])
    resolved = report["resolved"]
    assert resolved["threads"] == 1 and resolved["workers"] == 1
    assert resolved["data"] == "random-4-class" and resolved["num_train"] == 24
    # FLOP/s = FLOPs per step × steps per second; lockstep does one teacher forward for 2 students
    engine = variants["engine"]
    assert engine["flops_per_s"] == pytest.approx(
        resolved["flops_per_step"] * engine["images_per_s"] / 8)
    lock = variants["lockstep"]
    assert resolved["flops_per_step"] < lock["flops_per_s"] / (lock["images_per_s"] / 16) \
        < 2 * resolved["flops_per_step"]


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


@pytest.mark.parametrize("load, expected", [(3.2, "PASSIVE"), (0.1, None)])
def test_console_entry_lets_idle_openmp_threads_sleep_on_a_busy_machine(monkeypatch, load,
                                                                          expected):
    import os
    import sys

    from kdbench import cli

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(sys, "argv", ["kdbench", "--version"])
    with pytest.raises(SystemExit):
        cli.main()
    assert os.environ.get("OMP_WAIT_POLICY") == expected
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the user's choice stands
    assert cli.openmp_wait_policy() == "ACTIVE"
