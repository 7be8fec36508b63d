"""The streamed image-folder dataset on real CIFAR-10 images written out as PNG class folders:
the same numbers as the resident copy, timm's transforms, data transforms on file splits, the
Tiny-ImageNet layout, and every bad tree as a one-line error with nothing written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

import kdbench
from kdbench.data import apply_transforms, load_dataset
from kdbench.data.stream import FileImages, StreamLoader, is_streamed, make_loader
from kdbench.errors import DataError

sys.path.insert(0, str(Path(__file__).parent))
from imagetree import cifar_tree  # noqa: E402

CIFAR10 = ["--data-option", "mean=0.4914,0.4822,0.4465", "--data-option",
           "std=0.2470,0.2435,0.2616"]  # the resident cifar10 dataset's normalisation
RUN = ["--loss", "ce", "--student", "resnet8", "--epochs", "2",
       "--batch-size", "40", "--device", "cpu", "--precision", "fp32", "--quiet", "--json",
       "--workers", "2"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """10 classes × 20 training and × 10 validation images of the CIFAR-10 copy."""
    from conftest import REPO  # noqa: F401 - the repository's conftest is importable

    source = None
    for c in (Path("/work/shared/data/cifar10"), REPO.parent / "shared/data/cifar10"):
        if (c / "train.npz").is_file():
            source = c
    if source is None:
        pytest.skip("no CIFAR-10 copy here")
    return cifar_tree(source, tmp_path_factory.mktemp("cifar"), 20, 10)


def _record(out) -> dict:
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout[out.stdout.index("{"):])


def test_streamed_run_equals_the_resident_copy(cli_runner, tree, tmp_path):
    """Tolerance: none beyond float printing (1e-9). The PNGs hold the resident copy's exact
    pixels in its order, and the streamed loader draws the epoch's order and crop-and-flip
    from the same generator in the same sequence, so the two runs see identical batches."""
    npz = tree.parent / "npz"
    resident = _record(cli_runner("run", "--dataset", "cifar10", "--data-dir", npz, *RUN,
                                  "--results-dir", tmp_path / "a"))
    streamed = _record(cli_runner("run", "--dataset", "imagefolder", "--data-dir", tree,
                                  "--data-option", "size=32", "--data-option", "load=stream",
                                  *CIFAR10, *RUN, "--results-dir", tmp_path / "b"))
    assert streamed["data"]["info"]["load"] == "stream"
    assert streamed["data"]["train_size"] == resident["data"]["train_size"] == 200
    for a, b in zip(resident["metrics"]["curve"], streamed["metrics"]["curve"]):
        for key in ("top1", "top5", "test_loss", "train_loss"):
            assert a[key] == pytest.approx(b[key], abs=1e-9), key


def test_auto_load_is_resident_when_it_fits_and_recorded(tree, monkeypatch):
    data = load_dataset("imagefolder", str(tree), size=32)
    assert data.info["load"] == "resident" and not is_streamed(data.train)
    assert data.train.images.dtype == torch.uint8 and data.train.images.shape == (200, 3, 32, 32)
    import kdbench.data.imagefolder as imf

    monkeypatch.setattr(imf, "available_memory", lambda: 100_000)  # 200·3·32·32 > half of it
    data = load_dataset("imagefolder", str(tree), size=32)
    assert data.info["load"] == "stream" and is_streamed(data.train)
    assert data.info["decoded_train_bytes"] == 200 * 3 * 32 * 32


def test_streamed_batches_equal_resident_batches(tree):
    stream = load_dataset("imagefolder", str(tree), size=32, load="stream")
    resident = load_dataset("imagefolder", str(tree), size=32, load="resident")
    stream.train.images.settings["workers"] = 2
    a = list(make_loader(stream, "train", 32, train=True, seed=3).epoch(1))
    b = list(make_loader(resident, "train", 32, train=True, seed=3).epoch(1))
    assert len(a) == len(b) == 200 // 32
    for (xa, ya, ia), (xb, yb, ib) in zip(a, b):
        assert torch.equal(ia, ib) and torch.equal(ya, yb) and torch.equal(xa, xb)


def test_timm_transforms_and_seeded_draws(tree):
    """timm's ImageNet transforms: RandomResizedCrop + flip in training, resize + center crop
    in evaluation; each image's draws depend on (seed, epoch, image), not on the workers."""
    data = load_dataset("imagefolder", str(tree), size=24, augment="timm", crop_pct=0.75)
    assert data.info == {**data.info, "load": "stream", "augment": "timm"}
    loader = StreamLoader(data, "train", 50, train=True, seed=1)
    assert "RandomResizedCrop" in repr(loader._loader.dataset.transform)
    x0, y0, i0 = next(iter(loader.epoch(0)))
    assert x0.shape == (50, 3, 24, 24) and x0.dtype == torch.float32
    data.train.images.settings["workers"] = 0
    x1, _, i1 = next(iter(StreamLoader(data, "train", 50, train=True, seed=1).epoch(0)))
    assert torch.equal(i0, i1) and torch.equal(x0, x1)
    x2, _, _ = next(iter(StreamLoader(data, "train", 50, train=True, seed=1).epoch(1)))
    assert not torch.equal(x0, x2)
    ev = StreamLoader(data, "test", 64, train=False)
    assert "CenterCrop" in repr(ev._loader.dataset.transform)
    assert sum(b[0].shape[0] for b in ev) == 100


def test_data_transforms_work_on_streamed_splits(tree):
    data = load_dataset("imagefolder", str(tree), size=32, load="stream")
    out = apply_transforms(data, [{"name": "subset", "per_class": 5, "seed": 0},
                                  {"name": "label_noise", "rate": 0.4, "seed": 0}])
    assert is_streamed(out.train) and len(out.train) == 50
    assert isinstance(out.train.images, FileImages) and len(out.train.images.paths) == 50
    assert int(out.train.meta["noisy"].sum()) == 20
    out = apply_transforms(data, [{"name": "imbalance", "ratio": 10, "seed": 0}])
    counts = out.train.class_counts(10)
    assert counts[0] == 20 and counts[-1] == 2 and is_streamed(out.train)


def test_tiny_imagenet_val_layout(tmp_path):
    from PIL import Image

    root = tmp_path / "tiny"
    for c in ("n01", "n02"):
        (root / "train" / c / "images").mkdir(parents=True)
        for k in range(3):
            Image.new("RGB", (8, 8), (k * 40, 0, 0)).save(root / "train" / c / "images" /
                                                         f"{c}_{k}.JPEG")
    (root / "val" / "images").mkdir(parents=True)
    lines = []
    for k, c in enumerate(("n02", "n01", "n02")):
        Image.new("RGB", (8, 8)).save(root / "val" / "images" / f"val_{k}.JPEG")
        lines.append(f"val_{k}.JPEG\t{c}\t0\t0\t8\t8")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    data = load_dataset("imagefolder", str(root), size=8)
    assert data.classes == ["n01", "n02"] and len(data.train) == 6
    assert data.test.labels.tolist() == [0, 1, 1]


def _bad_trees(tree: Path, tmp_path: Path) -> list[tuple[Path, list[str], str]]:
    import shutil

    no_train = tmp_path / "no_train"
    (no_train / "val" / "a").mkdir(parents=True)
    empty = tmp_path / "empty"
    shutil.copytree(tree, empty)
    (empty / "train" / "zebra").mkdir()
    (empty / "val" / "zebra").mkdir()
    mismatch = tmp_path / "mismatch"
    shutil.copytree(tree, mismatch)
    shutil.rmtree(mismatch / "val" / "truck")
    broken = tmp_path / "broken"
    shutil.copytree(tree, broken)
    bad = broken / "train" / "cat" / "bad.png"
    bad.write_bytes(b"not a png")
    return [(no_train, [], f"{str(no_train)!r} has no train/ folder"),
            (empty, [], f"class folder {str(empty / 'train' / 'zebra')!r} has no images"),
            (mismatch, [], "differ: only in val: [], only in train: ['truck']"),
            (broken, [], f"cannot read image {str(bad)!r}"),
            (tree, ["--data-option", "load=sideways"],
             "imagefolder load 'sideways' is unknown (valid: auto, stream, resident)"),
            (tree, ["--data-option", "augment=timm", "--data-option", "load=resident"],
             "load 'resident' needs augment 'batch'")]


def test_bad_trees_one_line_exit_2_nothing_written(cli_runner, tree, tmp_path):
    for root, extra, message in _bad_trees(tree, tmp_path):
        results = tmp_path / f"r_{root.name}"
        out = cli_runner("run", "--dataset", "imagefolder", "--data-dir", root,
                         "--data-option", "size=32", *extra, *RUN, "--results-dir", results)
        assert out.exit_code == 2, (root, out.output)
        assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert not (results / "runs").exists() or not list((results / "runs").iterdir())


def test_unreadable_images_skipped_and_counted(tree, tmp_path, results):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tree, broken)
    (broken / "train" / "cat" / "bad.png").write_bytes(b"not a png")
    (broken / "val" / "dog" / "bad.jpg").write_bytes(b"")
    record = kdbench.run({"data": {"name": "imagefolder", "dir": str(broken),
                                   "options": {"size": 32, "on_error": "skip",
                                               "load": "stream"}},
                          "teacher": None, "loss": {"name": "ce"}, "student": "resnet8",
                          "recipe": {"epochs": 1, "batch_size": 50, "milestones": []},
                          "device": "cpu", "precision": "fp32", "results_dir": str(results)},
                         progress=False)
    assert record["data"]["info"]["unreadable_skipped"] == {"train": 1, "test": 1}
    assert record["data"]["train_size"] == 200 and record["data"]["test_size"] == 100


def test_decode_failure_after_header_stops_with_one_line(tree, tmp_path):
    import shutil

    broken = tmp_path / "trunc"
    shutil.copytree(tree, broken)
    target = sorted((broken / "train" / "cat").iterdir())[0]
    target.write_bytes(target.read_bytes()[:60])  # the header reads, the pixels do not
    data = load_dataset("imagefolder", str(broken), size=32, load="stream")
    data.train.images.settings["workers"] = 0
    with pytest.raises(DataError, match=r"cannot decode image .*on_error=skip"):
        for _ in StreamLoader(data, "train", 200, train=True):
            pass


def test_mi_probe_set_decodes_a_streamed_split(tree):
    from kdbench.mi.features import probe_set

    stream = load_dataset("imagefolder", str(tree), size=32, load="stream")
    resident = load_dataset("imagefolder", str(tree), size=32, load="resident")
    a = probe_set(stream, 30, 0, torch.device("cpu"))
    b = probe_set(resident, 30, 0, torch.device("cpu"))
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
