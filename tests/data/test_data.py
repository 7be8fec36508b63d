"""Dataset plugins on real data, and their failure paths."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from kdbench.data import BatchLoader, load_dataset
from kdbench.errors import DataError, UnknownNameError


def test_digits_is_a_fixed_stratified_split():
    d = load_dataset("digits")
    assert (len(d.train), len(d.test), d.num_classes, d.input_shape) == (1347, 450, 10, (1, 8, 8))
    test_counts = torch.bincount(d.test.labels, minlength=10).double()
    all_counts = test_counts + torch.bincount(d.train.labels, minlength=10)
    assert float((test_counts - 0.25 * all_counts).abs().max()) <= 1  # stratified 25 % per class
    again = load_dataset("digits")
    assert torch.equal(d.train.images, again.train.images)
    # pixels 0..16 scaled to 0..255, class 0 looks like a zero (dark centre column, bright ring)
    from sklearn.datasets import load_digits
    raw = load_digits()
    assert int(d.train.images.max()) == 255 and d.train.images.dtype == torch.uint8
    assert sorted(torch.cat([d.train.labels, d.test.labels]).tolist()) == sorted(raw.target)


def test_synthetic_is_deterministic_and_learnable_in_principle():
    a, b = load_dataset("synthetic"), load_dataset("synthetic")
    assert torch.equal(a.train.images, b.train.images)
    assert a.input_shape == (3, 8, 8) and a.num_classes == 4
    c = load_dataset("synthetic", seed=1)
    assert not torch.equal(a.train.images, c.train.images)
    # class means differ more than the noise within a class: nearest class mean beats chance
    x = a.train.images.float().flatten(1)
    means = torch.stack([x[a.train.labels == k].mean(0) for k in range(4)])
    xt = a.test.images.float().flatten(1)
    pred = torch.cdist(xt, means).argmin(1)
    assert float((pred == a.test.labels).float().mean()) > 0.9


def test_cifar10_from_the_npz_copy(cifar10_dir):
    d = load_dataset("cifar10", str(cifar10_dir))
    assert (len(d.train), len(d.test), d.input_shape, d.num_classes) == (50000, 10000,
                                                                          (3, 32, 32), 10)
    assert torch.bincount(d.train.labels).tolist() == [5000] * 10
    assert d.classes[0] == "airplane" and (d.crop_padding, d.hflip) == (4, True)
    # the README's measured train mean (R) is 0.4913
    assert abs(float(d.train.images[:, 0].float().mean()) / 255 - 0.4913) < 1e-3


def test_cifar_errors_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="dataset 'cifar10' needs --data-dir"):
        load_dataset("cifar10")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("cifar100", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="no cifar100 data in .*cifar-100-python"):
        load_dataset("cifar100", str(tmp_path))
    np.savez(tmp_path / "train.npz", images=np.zeros((4, 32, 32, 3), np.float32),
             labels=np.zeros(4, np.int64))
    np.savez(tmp_path / "test.npz", images=np.zeros((4, 32, 32, 3), np.uint8),
             labels=np.zeros(4, np.int64))
    with pytest.raises(DataError, match="'images' must be uint8"):
        load_dataset("cifar10", str(tmp_path))
    (tmp_path / "train.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot read .*train.npz"):
        load_dataset("cifar10", str(tmp_path))
    with pytest.raises(UnknownNameError, match="did you mean cifar10"):
        load_dataset("cifar11")


def test_fashion_mnist_reads_idx_files(tmp_path):
    import gzip
    def idx(path, arr):
        header = bytes([0, 0, 8, arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
        with gzip.open(path, "wb") as f:
            f.write(header + arr.astype(np.uint8).tobytes())
    imgs = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    for split in ("train", "t10k"):
        idx(tmp_path / f"{split}-images-idx3-ubyte.gz", imgs)
        idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", np.array([1, 2, 9]))
    d = load_dataset("fashion_mnist", str(tmp_path))
    assert d.input_shape == (1, 28, 28) and d.train.labels.tolist() == [1, 2, 9]
    assert torch.equal(d.test.images[:, 0], torch.from_numpy(imgs.astype(np.uint8)))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="no t10k-labels-idx1-ubyte"):
        load_dataset("fashion_mnist", str(tmp_path))


FASHION_DIRS = [os.environ.get("KDBENCH_TEST_FASHION_MNIST"), "/usr/share/datasets/fashion-mnist"]


@pytest.mark.skipif(not any(d and os.path.isdir(d) for d in FASHION_DIRS),
                    reason="no Fashion-MNIST IDX files (apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_real_files():
    root = next(d for d in FASHION_DIRS if d and os.path.isdir(d))
    d = load_dataset("fashion_mnist", root)
    assert (len(d.train), len(d.test), d.num_classes, d.input_shape) == (60000, 10000, 10,
                                                                          (1, 28, 28))
    # the official release is balanced: 6,000 / 1,000 images per class
    assert torch.bincount(d.train.labels).tolist() == [6000] * 10
    assert torch.bincount(d.test.labels).tolist() == [1000] * 10
    # the normalisation constants match the real training pixels
    pixels = d.train.images.double() / 255
    assert abs(float(pixels.mean()) - d.mean[0]) < 1e-3
    assert abs(float(pixels.std()) - d.std[0]) < 1e-3


def test_loader_visits_every_sample_once_in_a_seeded_order():
    d = load_dataset("synthetic")
    loader = BatchLoader(d, "train", 100, train=True, seed=3)
    seen = []
    for x, y, idx in loader.epoch(0):
        assert torch.equal(y, d.train.labels[idx]) and x.dtype == torch.float32
        seen.append(idx)
    order = torch.cat(seen)
    # 256 samples, batches of 100: two full batches, the 56-sample tail is dropped in training
    assert len(order) == 200 and len(set(order.tolist())) == 200
    again = torch.cat([i for _, _, i in BatchLoader(d, "train", 100, train=True, seed=3).epoch(0)])
    other_epoch = torch.cat([i for _, _, i in loader.epoch(1)])
    assert torch.equal(order, again) and not torch.equal(order, other_epoch)
    test_order = torch.cat([i for _, _, i in BatchLoader(d, "test", 50, train=False).epoch(0)])
    assert test_order.tolist() == list(range(len(d.test)))


def test_loader_normalises_with_dataset_statistics():
    d = load_dataset("digits")
    x = torch.cat([b for b, _, _ in BatchLoader(d, "train", 512, train=False)])
    assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1) < 1e-2


def test_loader_drops_an_incomplete_trailing_batch_in_training_only():
    d = load_dataset("synthetic", train_size=100)
    train = BatchLoader(d, "train", 64, train=True)
    assert len(train) == 1 and train.num_samples == 64
    assert [len(y) for _, y, _ in train.epoch(0)] == [64]
    tails = {frozenset(set(range(100)) - set(i.tolist())) for e in range(3)
             for _, _, i in train.epoch(e)}
    assert len(tails) == 3  # each epoch drops different samples
    assert [len(y) for _, y, _ in BatchLoader(d, "train", 64, train=False).epoch(0)] == [64, 36]
    small = BatchLoader(load_dataset("synthetic", train_size=10), "train", 64, train=True)
    assert [len(y) for _, y, _ in small.epoch(0)] == [10]
