"""The tensor-resident data path: batched crop/flip against torchvision, statistics, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from kdbench.data import BatchLoader, Dataset, Split
from kdbench.data.base import augment, crop_flip, epoch_generator, random_crop, random_hflip


def coded_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Random uint8 images with two extra channels holding (row + 1) and (column + 1), so the
    crop offset and the flip of every output image can be read back from the image itself."""
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    rows = (torch.arange(size) + 1).view(size, 1).expand(size, size)
    cols = (torch.arange(size) + 1).view(1, size).expand(size, size)
    code = torch.stack([rows, cols]).to(torch.uint8).expand(n, 2, size, size)
    return torch.cat([pixels, code], dim=1)


def decode(out: torch.Tensor, padding: int) -> tuple[int, int, bool]:
    """(top, left, flipped) of one augmented coded image (needs 2·padding < size)."""
    p = padding
    row, col = out[3].long(), out[4].long()
    flipped = bool(col[p, p + 1] < col[p, p])
    if flipped:
        row, col = row.flip(1), col.flip(1)
    # output pixel (p, p) is padded pixel (top + p, left + p) = image pixel (top, left)
    return int(row[p, p]) - 1, int(col[p, p]) - 1, flipped


def reference(image: torch.Tensor, padding: int, top: int, left: int, flipped: bool
              ) -> torch.Tensor:
    """torchvision's RandomCrop(size, padding, fill=0) then RandomHorizontalFlip, at given draws."""
    h, w = image.shape[-2:]
    out = TF.crop(TF.pad(image, [padding] * 4, fill=0), top, left, h, w)
    return TF.horizontal_flip(out) if flipped else out


@pytest.mark.parametrize("padding, size", [(4, 32), (1, 8), (2, 6)])
def test_augment_matches_torchvision_per_image(padding, size):
    images = coded_images(64, size)
    out = augment(images, padding, True, torch.Generator().manual_seed(3))
    assert out.shape == images.shape and out.dtype == torch.uint8
    for k in range(images.shape[0]):
        top, left, flipped = decode(out[k], padding)
        assert 0 <= top <= 2 * padding and 0 <= left <= 2 * padding
        assert torch.equal(out[k], reference(images[k], padding, top, left, flipped))


def test_crop_flip_hand_worked_case():
    # a 1×2×3 image, padding 1: padded rows are [0 0 0 0 0], [0 1 2 3 0], [0 4 5 6 0], [0 ...]
    image = torch.tensor([[[1, 2, 3], [4, 5, 6]]], dtype=torch.uint8)[None]
    batch = image.expand(3, 1, 2, 3).contiguous()
    offsets = torch.tensor([[0, 1, 2], [0, 2, 1]])
    flips = torch.tensor([False, False, True])
    out = crop_flip(batch, 1, offsets, flips)
    assert out[0, 0].tolist() == [[0, 0, 0], [0, 1, 2]]
    assert out[1, 0].tolist() == [[2, 3, 0], [5, 6, 0]]
    assert out[2, 0].tolist() == [[6, 5, 4], [0, 0, 0]]  # rows 2..3, cols 1..3, mirrored


def test_fused_augment_draws_like_separate_crop_then_flip():
    images = coded_images(50, 12)
    fused = augment(images, 3, True, epoch_generator(5, 2))
    g = epoch_generator(5, 2)
    assert torch.equal(fused, random_hflip(random_crop(images, 3, g), g))
    g = epoch_generator(5, 2)
    assert torch.equal(augment(images, 3, False, epoch_generator(5, 2)), random_crop(images, 3, g))
    assert torch.equal(augment(images, 0, False, epoch_generator(5, 2)), images)
    flips_only = augment(images, 0, True, epoch_generator(5, 2))
    assert torch.equal(flips_only, random_hflip(images, epoch_generator(5, 2)))


def test_augmentation_statistics():
    padding, n = 2, 6000
    out = augment(coded_images(n, 8), padding, True, torch.Generator().manual_seed(11))
    draws = np.array([decode(o, padding) for o in out])
    k = 2 * padding + 1
    # every (top, left) pair equally likely: chi-square with 24 dof, 99.99% quantile ≈ 59
    counts = np.bincount(draws[:, 0] * k + draws[:, 1], minlength=k * k)
    expected = n / (k * k)
    assert ((counts - expected) ** 2 / expected).sum() < 59
    flips = draws[:, 2].astype(float)
    assert abs(flips.mean() - 0.5) < 4 * 0.5 / np.sqrt(n)
    # flips independent of the crop: the flip rate is the same for every top offset
    for top in range(k):
        sel = flips[draws[:, 0] == top]
        assert abs(sel.mean() - 0.5) < 5 * 0.5 / np.sqrt(len(sel))


def _coded_dataset(n: int = 70, size: int = 8, padding: int = 2) -> Dataset:
    images = coded_images(n, size, seed=1)
    labels = torch.arange(n) % 7
    ones, zeros = (1.0,) * 5, (0.0,) * 5
    return Dataset("coded", Split(images, labels), Split(images[:20], labels[:20]), 7, zeros, ones,
                   crop_padding=padding, hflip=True)


def _batches(loader: BatchLoader, epoch: int) -> list[tuple[torch.Tensor, ...]]:
    return [tuple(t.clone() for t in b) for b in loader.epoch(epoch)]


def test_loader_batches_are_augmented_samples_of_the_split():
    data = _coded_dataset()
    loader = BatchLoader(data, "train", 16, train=True, seed=0)
    seen = []
    for x, y, idx in loader.epoch(0):
        images = (x * 255).round().to(torch.uint8)  # mean 0, std 1: x = pixels / 255
        assert torch.equal(y, data.train.labels[idx])
        for k in range(len(idx)):
            top, left, flipped = decode(images[k], 2)
            assert torch.equal(images[k], reference(data.train.images[idx[k]], 2, top, left,
                                                    flipped))
        seen.append(idx)
    # distinct samples of the split: full batches, an incomplete tail batch is dropped
    order = torch.cat(seen).tolist()
    assert len(order) == len(data.train) // 16 * 16 and len(set(order)) == len(order)


def test_loader_normalises_with_mean_and_std():
    data = _coded_dataset()
    data.mean, data.std = (0.1, 0.2, 0.3, 0.0, 0.5), (0.25, 0.5, 1.5, 1.0, 2.0)
    loader = BatchLoader(data, "test", 8, train=False)
    x, y, idx = next(iter(loader))
    raw = data.test.images[idx].double() / 255
    want = (raw - torch.tensor(data.mean, dtype=torch.float64).view(1, 5, 1, 1)) / torch.tensor(
        data.std, dtype=torch.float64).view(1, 5, 1, 1)
    assert x.dtype == torch.float32
    torch.testing.assert_close(x.double(), want, rtol=0, atol=1e-6)
    assert torch.equal(idx, torch.arange(8))  # evaluation is in order, unaugmented


def test_loader_determinism_seed_and_epoch():
    data = _coded_dataset()
    make = lambda seed: BatchLoader(data, "train", 16, train=True, seed=seed)  # noqa: E731
    a, b, c = _batches(make(3), 1), _batches(make(3), 1), _batches(make(4), 1)
    for (xa, ya, ia), (xb, yb, ib) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(ia, ib)
    assert not torch.equal(a[0][2], c[0][2])  # another seed: another order
    assert not torch.equal(a[0][2], _batches(make(3), 2)[0][2])  # another epoch: another order

    # ... and other crops and flips of the same samples
    def by_sample(batches):
        return {int(i): x[k] for x, _, idx in batches for k, i in enumerate(idx)}
    sa, sc = by_sample(a), by_sample(c)
    common = set(sa) & set(sc)  # the dropped tail batch differs between seeds
    assert len(common) > len(sa) // 2
    differ = sum(not torch.equal(sa[i], sc[i]) for i in common)
    assert differ > len(common) // 2


def test_loader_channels_last_is_same_values():
    data = _coded_dataset()
    plain = _batches(BatchLoader(data, "train", 16, train=True, seed=2), 0)
    cl = _batches(BatchLoader(data, "train", 16, train=True, seed=2, channels_last=True), 0)
    for (xp, _, _), (xc, _, _) in zip(plain, cl):
        assert xc.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(xp, xc)


def test_loader_drops_trailing_singleton_in_training_only():
    data = _coded_dataset(n=33)
    train = BatchLoader(data, "train", 16, train=True)
    assert len(train) == 2 and train.num_samples == 32
    assert [len(y) for _, y, _ in train.epoch(0)] == [16, 16]
    test = BatchLoader(data, "train", 16, train=False)
    assert [len(y) for _, y, _ in test] == [16, 16, 1]
