"""One run on several processes: gloo on the CPU with 2 ranks.

The gradient averaging is exact (a BatchNorm-free model: half batches averaged over two ranks
give the one-process gradient to float rounding). A whole run is not: each rank normalises its
BatchNorm layers by the statistics of its half of the global batch (SyncBatchNorm, which would
remove that, has no CPU kernel), and the all-reduce sums in another order. Hence the stated
tolerance of a 2-rank run against 1 process on the same global batch (real CIFAR-10 images,
200 train / 100 test, resnet8, 3 epochs): training loss within 0.05, test loss within 0.15,
top-1 within 6 points (6 of 100 test images). Measured on 500 train / 200 test images of the
same copy (batch 50, 3 epochs): Δtrain_loss ≤ 0.011, Δtest_loss ≤ 0.08, Δtop-1 ≤ 4 points.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "data"))
from imagetree import cifar_tree  # noqa: E402

CIFAR10 = Path("/work/shared/data/cifar10")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: one rank of the gradient test, in a fresh interpreter (a forked pytest process inherits an
#: OpenMP pool that makes tiny steps take seconds)
RANK_SCRIPT = """
import sys, torch, torch.distributed as dist
from kdbench import ranks
from kdbench.engine.distributed import AveragedOptimizer
rank, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
torch.set_num_threads(1)
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
x = torch.randn(8, 6, generator=torch.Generator().manual_seed(1))
y = torch.arange(8) % 3
opt = AveragedOptimizer(torch.optim.SGD(model.parameters(), lr=0.5))
part = slice(rank * 4, rank * 4 + 4)
for _ in range(3):
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x[part]), y[part]).backward()
    opt.step()
logits = ranks.gather_rows(model(x[part]).detach(), 8)
if rank == 0:
    torch.save({"state": model.state_dict(), "logits": logits}, out)
dist.destroy_process_group()
"""


def test_averaged_gradients_equal_the_one_process_step(tmp_path):
    import subprocess

    from conftest import REPO

    out, port = tmp_path / "two.pt", _port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", RANK_SCRIPT, str(r), str(port), str(out)],
                              env=env) for r in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    two = torch.load(out)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    x = torch.randn(8, 6, generator=torch.Generator().manual_seed(1))
    y = torch.arange(8) % 3
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(two["state"][k], v, rtol=0, atol=1e-6)
    torch.testing.assert_close(two["logits"], model(x).detach(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("args,message", [
    (["--nproc", "99"], "--nproc 99 is more than the"),
    (["--nproc", "0"], "--nproc 0 is not valid (valid: 1 or more)"),
    (["--nproc", "2", "--batch-size", "33"],
     "recipe.batch_size 33 does not split over --nproc 2 ranks (valid: a multiple of 2)"),
])
def test_bad_nproc_one_line_exit_2(cli_runner, results, args, message):
    out = cli_runner("run", "--dataset", "synthetic", "--loss", "ce", "--student", "resnet8",
                     "--epochs", "1", "--device", "cpu", *args, "--results-dir", results)
    assert out.exit_code == 2, out.output
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not (results / "runs").exists() or not list((results / "runs").iterdir())


def _kdbench(*args, results: Path, env: dict | None = None):
    import subprocess

    from conftest import REPO

    full = {**os.environ, "KDBENCH_DIST_TIMEOUT": "60", **(env or {})}
    full["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([full["PYTHONPATH"]]
                                                        if full.get("PYTHONPATH") else []))
    return subprocess.Popen([sys.executable, "-m", "kdbench", "run", *map(str, args),
                             "--results-dir", str(results)], env=full, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


@pytest.fixture(scope="module")
def npz(tmp_path_factory) -> Path:
    if not (CIFAR10 / "train.npz").is_file():
        pytest.skip("no CIFAR-10 copy here")
    return cifar_tree(CIFAR10, tmp_path_factory.mktemp("cifar"), 20, 10).parent / "npz"


def _run(npz: Path, epochs: int) -> list[str]:
    return ["--dataset", "cifar10", "--data-dir", npz, "--loss", "ce", "--student", "resnet8",
            "--epochs", epochs, "--batch-size", "50", "--device", "cpu", "--precision", "fp32",
            "--threads", "1", "--quiet", "--json"]


@pytest.mark.slow
def test_two_ranks_match_one_process_and_write_one_record(npz, tmp_path):
    one = _kdbench(*_run(npz, 3), results=tmp_path / "one")
    two = _kdbench(*_run(npz, 3), "--nproc", "2", results=tmp_path / "two")
    out1, err1 = one.communicate(timeout=600)
    out2, err2 = two.communicate(timeout=600)
    assert one.returncode == 0, err1
    assert two.returncode == 0, err2
    a, b = json.loads(out1), json.loads(out2)  # rank 0 alone prints the record
    assert b["env"]["world_size"] == 2 and b["env"]["backend"] == "gloo"
    assert a["run_id"] == b["run_id"]  # how many processes is not what the run is
    files = sorted(p.name for p in (tmp_path / "two" / "runs").iterdir())
    # one record and the kept student's weights, no resume state, no stray temp file
    rid = b["run_id"]
    assert files == [f"{rid}.best.safetensors", f"{rid}.json", f"{rid}.last.safetensors"]
    for ca, cb in zip(a["metrics"]["curve"], b["metrics"]["curve"]):
        assert abs(ca["train_loss"] - cb["train_loss"]) <= 0.05
        assert abs(ca["test_loss"] - cb["test_loss"]) <= 0.15
        assert abs(ca["top1"] - cb["top1"]) <= 6.0
    assert b["data"]["test_size"] == 100


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids = task / "children"
        if kids.is_file():
            out += [int(x) for x in kids.read_text().split()]
    return out


@pytest.mark.slow
def test_kill_9_of_a_rank_then_the_same_command_resumes(npz, tmp_path):
    results = tmp_path / "r"
    args = [*_run(npz, 4), "--nproc", "2"]
    launcher = _kdbench(*args, results=results)
    runs = results / "runs"
    deadline = time.monotonic() + 300
    while not any(p.name.endswith(".state.pt") for p in runs.glob("*")) \
            if runs.is_dir() else True:
        assert launcher.poll() is None, launcher.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.2)
    rank_pids = _children(launcher.pid)
    assert len(rank_pids) == 2
    os.kill(rank_pids[1], signal.SIGKILL)
    _, err = launcher.communicate(timeout=120)  # never a hang
    assert launcher.returncode != 0
    assert "rank 1 of 2 exited with -9" in err
    [record_file] = runs.glob("*.json")
    first = json.loads(record_file.read_text())
    assert first["status"] in ("running", "interrupted", "failed")
    again = _kdbench(*args, results=results)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    done = json.loads(out)
    assert done["status"] == "done" and done["metrics"]["epochs"] == 4
    assert len(done["cost"]["attempts"]) == 2
    assert [c["epoch"] for c in done["metrics"]["curve"]] == [1, 2, 3, 4]
    assert not list(runs.glob("*.state.pt"))


def test_gradient_scaler_steps_through_the_averaging_optimizer():
    """fp16's GradScaler (CUDA in runs; its CPU twin here) drives the averaging wrapper: the
    unscaled step equals a plain step, and an inf gradient skips it."""
    from kdbench.engine.distributed import AveragedOptimizer

    def model():
        torch.manual_seed(0)
        return torch.nn.Linear(4, 2)

    x, y = torch.randn(8, 4), torch.arange(8) % 2
    plain, scaled = model(), model()
    opt = torch.optim.SGD(plain.parameters(), lr=0.1)
    torch.nn.functional.cross_entropy(plain(x), y).backward()
    opt.step()
    wrapped = AveragedOptimizer(torch.optim.SGD(scaled.parameters(), lr=0.1))
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.scale(torch.nn.functional.cross_entropy(scaled(x), y)).backward()
    wrapped.average()
    scaler.step(wrapped)
    scaler.update()
    for a, b in zip(plain.parameters(), scaled.parameters()):
        torch.testing.assert_close(a, b)
    before = [p.detach().clone() for p in scaled.parameters()]
    wrapped.zero_grad()
    scaler.scale(scaled(x).sum() * float("inf")).backward()
    scaler.step(wrapped)
    scaler.update()
    assert all(torch.equal(a, b) for a, b in zip(before, scaled.parameters()))
    assert scaler.get_scale() == 512.0
