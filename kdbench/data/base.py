"""Datasets as device-resident uint8 tensors, and the batched, seeded loader over them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import torch


@dataclass
class Split:
    """One split: ``images`` uint8 (N, C, H, W), ``labels`` int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels shape {tuple(self.labels.shape)} does not match "
                             f"{self.images.shape[0]} images")
        self.labels = self.labels.long()

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device | str) -> "Split":
        return Split(self.images.to(device), self.labels.to(device))


@dataclass
class Dataset:
    """Train and test splits plus what the loader needs to normalise and augment them.

    ``mean``/``std`` are per channel in [0, 1] pixel units. Training augmentation is a random
    crop with ``crop_padding`` zero padding (0 turns it off) and, if ``hflip``, a random
    horizontal flip — the CIFAR recipe of the field, done on whole batches.
    """

    name: str
    train: Split
    test: Split
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int = 0
    hflip: bool = False
    classes: list[str] | None = None
    info: dict = field(default_factory=dict)

    @property
    def in_chans(self) -> int:
        return self.train.images.shape[1]

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.train.images.shape[2:])  # type: ignore[return-value]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_chans, *self.image_size)

    def to(self, device: torch.device | str) -> "Dataset":
        return Dataset(self.name, self.train.to(device), self.test.to(device), self.num_classes,
                       self.mean, self.std, self.crop_padding, self.hflip, self.classes,
                       dict(self.info))


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The CPU generator that fixes one epoch's order and augmentation.

    Derived from (seed, epoch) alone, so a resumed run draws exactly what an uninterrupted one
    would, with no generator state to save.
    """
    g = torch.Generator()
    g.manual_seed((int(seed) * 1_000_003 + int(epoch) * 7919 + 17) % (2**63 - 1))
    return g


class Normalizer:
    """uint8 (N, C, H, W) → float, normalised by per-channel mean and std."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device):
        c = len(mean)
        self.scale = (1.0 / (255.0 * torch.tensor(std, device=device))).view(1, c, 1, 1)
        self.shift = (torch.tensor(mean, device=device) / torch.tensor(std, device=device)).view(1, c, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return images.float() * self.scale - self.shift


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Random crop of the original size from a zero-padded batch, one offset per image.

    The same as torchvision's ``RandomCrop(size, padding)`` applied per image (fill 0), done as
    one gather over the whole batch.
    """
    if padding <= 0:
        return images
    n, c, h, w = images.shape
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator).to(images.device)
    rows = offsets[0].view(n, 1) + torch.arange(h, device=images.device).view(1, h)
    cols = offsets[1].view(n, 1) + torch.arange(w, device=images.device).view(1, w)
    batch = torch.arange(n, device=images.device).view(n, 1, 1)
    # advanced indexing on dims 0, 2, 3 gives (n, h, w, c): move channels back
    out = padded.permute(0, 2, 3, 1)[batch, rows.view(n, h, 1), cols.view(n, 1, w)]
    return out.permute(0, 3, 1, 2).contiguous()


def random_hflip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each image horizontally with probability 1/2."""
    flip = torch.rand(images.shape[0], generator=generator).to(images.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(3), images)


class BatchLoader:
    """Batches of a device-resident split: (normalised float images, labels, sample indices).

    ``shuffle`` and ``augment`` draw from :func:`epoch_generator` (seed, epoch). A trailing batch
    of one sample is dropped in training (BatchNorm cannot train on it).
    """

    def __init__(self, dataset: Dataset, split: str, batch_size: int, *, train: bool,
                 augment: bool = True, seed: int = 0, device: torch.device | str = "cpu",
                 channels_last: bool = False):
        self.dataset = dataset
        self.split: Split = getattr(dataset, split)
        self.batch_size = batch_size
        self.train, self.augment, self.seed = train, augment and train, seed
        self.device = torch.device(device)
        self.normalize = Normalizer(dataset.mean, dataset.std, self.device)
        self.channels_last = channels_last

    def __len__(self) -> int:
        n = len(self.split)
        batches = -(-n // self.batch_size)
        if self.train and n % self.batch_size == 1 and batches > 1:
            batches -= 1
        return batches

    @property
    def num_samples(self) -> int:
        n = len(self.split)
        return n - 1 if self.train and n % self.batch_size == 1 and n > 1 else n

    def epoch(self, epoch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        n = len(self.split)
        g = epoch_generator(self.seed, epoch)
        order = torch.randperm(n, generator=g) if self.train else torch.arange(n)
        order = order.to(self.split.images.device)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            images = self.split.images.index_select(0, idx)
            if self.augment:
                images = random_crop(images, self.dataset.crop_padding, g)
                if self.dataset.hflip:
                    images = random_hflip(images, g)
            x = self.normalize(images.to(self.device, non_blocking=True))
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.split.labels.index_select(0, idx).to(self.device), idx.to(self.device)

    __iter__ = epoch
