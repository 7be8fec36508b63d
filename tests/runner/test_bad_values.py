"""#29's last bad values: each a one-line error naming the value and the valid range or
choices, exit code 2, nothing written."""

from __future__ import annotations

import os

import pytest

from tests.sweep_helpers import sweep_file


def one_line_error(result, *messages: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for message in messages:
        assert message in lines[0], result.output


def written(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# ============================== 1. table --digits ===============================================


@pytest.mark.parametrize("digits", ["-1", "16", "1000"])
def test_table_refuses_digits_outside_what_a_float_shows(digits, results, cli_runner):
    result = cli_runner("table", "--results-dir", results, "--digits", digits)
    one_line_error(result, f"--digits {digits}", "0..15")


# ============================== 2. mi --plot ====================================================


def test_mi_refuses_a_plot_file_it_cannot_write_before_any_estimate(results, tmp_path,
                                                                    cli_runner, monkeypatch):
    import kdbench.mi.commands as commands

    def estimate(**kwargs):  # the old code estimates first
        raise AssertionError("estimated before the plot file was checked")
    monkeypatch.setattr(commands, "_estimate", estimate)
    out = tmp_path / "x.txt"
    result = cli_runner("mi", "no-such-trajectory", "--results-dir", results, "--plot", out)
    one_line_error(result, repr(str(out)), ".png, .pdf or .svg")
    assert not out.exists() and not results.exists()


# ============================== 3. bench sizes and threads ======================================

CORES = os.cpu_count() or 1


@pytest.mark.parametrize("args, message", [
    (["--image-size", "0"], "--image-size 0"),
    (["--num-classes", "0"], "--num-classes 0"),
    (["--threads", "-1"], "--threads -1"),
    (["--threads", str(4 * CORES + 1)], f"0..{4 * CORES}"),
])
def test_bench_refuses_bad_sizes_and_threads_up_front(args, message, tmp_path, cli_runner):
    out = tmp_path / "bench.json"
    result = cli_runner("bench", "--quiet", "--json", out, *args)
    one_line_error(result, message)
    assert not out.exists()


# ============================== 4. sweep run --gpus without a GPU ===============================


def test_sweep_gpus_on_a_machine_without_a_gpu_is_refused(tmp_path, results, cli_runner,
                                                         monkeypatch):
    import kdbench.device

    monkeypatch.setattr(kdbench.device, "cuda_device_count", lambda: 0)
    f = sweep_file(tmp_path, runs=[{"loss.name": "ce"}])
    result = cli_runner("sweep", "run", f, "--gpus", "0", "--results-dir", results, "--quiet")
    one_line_error(result, "--gpus '0'", "no CUDA GPU")
    assert not results.exists()


# ============================== 5. a missing --plugins-dir ======================================


def test_a_missing_plugins_dir_is_named(tmp_path, results, cli_runner):
    missing = tmp_path / "no-such-plugins"
    result = cli_runner("--plugins-dir", missing, "table", "--results-dir", results)
    one_line_error(result, f"--plugins-dir {str(missing)!r} does not exist")
    assert not results.exists()


# ============================== 6. bench --variants '' ==========================================


@pytest.mark.parametrize("variants", ["", " , "])
def test_bench_refuses_no_variants(variants, tmp_path, cli_runner):
    out = tmp_path / "bench.json"
    result = cli_runner("bench", "--quiet", "--json", out, "--variants", variants)
    one_line_error(result, "--variants", "classic")
    assert not out.exists()


# ============================== 7. binary spec and sweep files ==================================


@pytest.mark.parametrize("content", [b"\xff\xfe\x00\x01binary\x80", b"base: {}\x00\x00"])
def test_a_binary_spec_file_is_named_in_one_line(content, tmp_path, results, cli_runner):
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(content)
    result = cli_runner("run", "--spec", spec, "--results-dir", results, "--quiet")
    one_line_error(result, f"spec file {str(spec)!r}")
    assert written(tmp_path) == ["spec.yaml"]


@pytest.mark.parametrize("content", [b"\xff\xfe\x00\x01binary\x80", b"base: {}\x00\x00"])
def test_a_binary_sweep_file_is_named_in_one_line(content, tmp_path, results, cli_runner):
    f = tmp_path / "sweep.yaml"
    f.write_bytes(content)
    result = cli_runner("sweep", "run", f, "--results-dir", results, "--quiet")
    one_line_error(result, f"sweep file {str(f)!r}")
    assert written(tmp_path) == ["sweep.yaml"]
