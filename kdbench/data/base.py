"""Datasets as device-resident uint8 tensors, the batched, seeded loader over them, and the
checks and seeding the data transforms share."""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from ..errors import ConfigError


@dataclass
class Split:
    """One split: ``images`` uint8 (N, C, H, W), ``labels`` int64 (N,), and ``meta``: other
    per-sample tensors a data transform keeps for evaluation (e.g. the clean labels and the
    noisy mask of a label-noise transform)."""

    images: torch.Tensor
    labels: torch.Tensor
    meta: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels shape {tuple(self.labels.shape)} does not match "
                             f"{self.images.shape[0]} images")
        for key, value in self.meta.items():
            if value.shape[:1] != self.labels.shape:
                raise ValueError(f"meta {key!r} has {tuple(value.shape)} rows for "
                                 f"{self.images.shape[0]} images")
        self.labels = self.labels.long()

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device | str) -> Split:
        return Split(self.images.to(device), self.labels.to(device),
                     {k: v.to(device) for k, v in self.meta.items()})

    def subset(self, index: torch.Tensor) -> Split:
        """The samples at ``index`` (in that order), meta included."""
        index = index.to(self.images.device)
        return Split(self.images.index_select(0, index), self.labels.index_select(0, index),
                     {k: v.index_select(0, index.to(v.device)) for k, v in self.meta.items()})

    def class_counts(self, num_classes: int) -> list[int]:
        return torch.bincount(self.labels.cpu(), minlength=num_classes).tolist()


@dataclass
class Dataset:
    """Train and test splits plus what the loader needs to normalise and augment them.

    ``mean``/``std`` are per channel in [0, 1] pixel units. ``crop_padding`` and ``hflip`` are
    the dataset's own settings for the default batch augmentation (``crop_flip``: a random crop
    with that zero padding and, if ``hflip``, a random horizontal flip — the CIFAR recipe of the
    field); which augmentation a run uses is its config's (``data.augmentation``). ``info`` says
    where the data came from and what the data transforms did.
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

    def to(self, device: torch.device | str) -> Dataset:
        return dataclasses.replace(self, train=self.train.to(device), test=self.test.to(device),
                                   info=dict(self.info))


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
        std_t = torch.tensor(std, dtype=torch.float64)
        # (x / 255 - mean) / std == x * scale - shift, computed in float64 once
        self.scale = (1.0 / (255.0 * std_t)).float().view(1, c, 1, 1).to(device)
        self.shift = (torch.tensor(mean, dtype=torch.float64) / std_t).float().view(
            1, c, 1, 1).to(device)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        # in place on the fresh float copy: one allocation per batch
        return images.float().mul_(self.scale).sub_(self.shift)


def crop_flip(images: torch.Tensor, padding: int, offsets: torch.Tensor,
              flip: torch.Tensor | None = None) -> torch.Tensor:
    """Crop each image of the zero-padded batch at its own offset, then mirror the flagged ones.

    ``offsets`` is (2, N): the top and left corner of each crop in the padded image
    (``0..2·padding``); ``flip`` is a bool (N,) or None. Both steps are one gather over the
    whole batch (no per-image Python), equal to torchvision's ``RandomCrop(size, padding)``
    followed by ``RandomHorizontalFlip`` at the same draws.
    """
    n, c, h, w = images.shape
    dev = images.device
    offsets = offsets.to(dev)
    padded = torch.nn.functional.pad(images, (padding,) * 4) if padding > 0 else images
    width = w + 2 * padding
    rows = offsets[0].view(n, 1, 1) + torch.arange(h, device=dev).view(1, h, 1)
    cols = torch.arange(w, device=dev).view(1, 1, w).expand(n, 1, w)
    if flip is not None:
        cols = torch.where(flip.to(dev).view(n, 1, 1), cols.flip(2), cols)
    index = (rows * width + offsets[1].view(n, 1, 1) + cols).view(n, 1, h * w)
    # gather on the flattened padded images keeps NCHW and needs no permute
    return padded.reshape(n, c, -1).gather(2, index.expand(n, c, h * w)).view(n, c, h, w)


def _draw_offsets(n: int, padding: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2 * padding + 1, (2, n), generator=generator)


def _draw_flips(n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=generator) < 0.5


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Random crop of the original size from a zero-padded batch, one offset per image.

    The same as torchvision's ``RandomCrop(size, padding)`` applied per image (fill 0), done as
    one gather over the whole batch.
    """
    if padding <= 0:
        return images
    return crop_flip(images, padding, _draw_offsets(images.shape[0], padding, generator))


def random_hflip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each image horizontally with probability 1/2."""
    flip = _draw_flips(images.shape[0], generator).to(images.device)
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(3), images)


def augment(images: torch.Tensor, padding: int, hflip: bool,
            generator: torch.Generator) -> torch.Tensor:
    """The training augmentation in one pass: ``random_hflip(random_crop(x))`` with the same
    draws from ``generator`` (crop offsets first, then flips), as one gather."""
    n = images.shape[0]
    offsets = _draw_offsets(n, padding, generator) if padding > 0 else None
    flip = _draw_flips(n, generator) if hflip else None
    if offsets is None:
        if flip is None:
            return images
        offsets = torch.zeros(2, n, dtype=torch.long)
    return crop_flip(images, max(padding, 0), offsets, flip)


#: A batch augmentation: uint8 images (N, C, H, W) and the epoch's generator → uint8 images.
Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def crop_flip_augment(padding: int, hflip: bool) -> Augment:
    """The default augmentation: :func:`augment` with the given padding and flips."""
    def run(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return augment(images, padding, hflip, generator)
    return run


class BatchLoader:
    """Batches of a device-resident split: (normalised float images, labels, sample indices).

    ``shuffle`` and ``augment`` draw from :func:`epoch_generator` (seed, epoch); ``augment`` is a
    batch augmentation (default: the dataset's crop-and-flip) or False. ``extra_views`` are
    further augmentations of the same un-augmented batch (a loss's strong view); with them each
    batch is a 4-tuple whose last item is the list of extra views, drawn from a generator of
    their own so the first view is the same as without them.

    In training an incomplete trailing batch is dropped (as timm's training loader does): a
    handful of samples makes batch-relational losses (SP, PKT, RKD, CC) and BatchNorm
    statistics erratic — on digits a 3-sample tail batch took PKT's term from ~1 to 20–64. The
    shuffle puts different samples in the dropped tail each epoch. A split smaller than one
    batch is one batch.
    """

    def __init__(self, dataset: Dataset, split: str, batch_size: int, *, train: bool,
                 augment: bool | Augment = True, seed: int = 0,
                 device: torch.device | str = "cpu", channels_last: bool = False,
                 extra_views: tuple[Augment, ...] = ()):
        self.dataset = dataset
        self.split: Split = getattr(dataset, split)
        self.batch_size = batch_size
        self.train, self.seed = train, seed
        if augment is True:
            augment = crop_flip_augment(dataset.crop_padding, dataset.hflip)
        self.augment: Augment | None = augment if (train and augment) else None
        self.extra_views = tuple(extra_views)
        self.device = torch.device(device)
        self.normalize = Normalizer(dataset.mean, dataset.std, self.device)
        self.channels_last = channels_last

    def __len__(self) -> int:
        n = len(self.split)
        if self.train:
            return max(n // self.batch_size, 1)
        return -(-n // self.batch_size)

    @property
    def num_samples(self) -> int:
        n = len(self.split)
        return min(len(self) * self.batch_size, n) if self.train else n

    def _to_input(self, images: torch.Tensor) -> torch.Tensor:
        x = self.normalize(images.to(self.device, non_blocking=True))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def epoch(self, epoch: int = 0) -> Iterator[tuple]:
        n = len(self.split)
        g = epoch_generator(self.seed, epoch)
        views_g = epoch_generator(self.seed + 7_777_777, epoch) if self.extra_views else None
        order = torch.randperm(n, generator=g) if self.train else torch.arange(n)
        order = order.to(self.split.images.device)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            raw = self.split.images.index_select(0, idx)
            images = self.augment(raw, g) if self.augment is not None else raw
            batch = (self._to_input(images), self.split.labels.index_select(0, idx).to(
                self.device), idx.to(self.device))
            if self.extra_views:
                batch += ([self._to_input(view(raw, views_g)) for view in self.extra_views],)
            yield batch

    __iter__ = epoch


# ============================== what the data transforms share ==================================


def check_labels(labels: torch.Tensor, num_classes: int, what: str) -> torch.Tensor:
    """The labels as a CPU int64 vector, after checking C ≥ 2 and every label in 0..C−1."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) \
            or num_classes < 2:
        raise ConfigError(f"{what}: num_classes must be an integer >= 2, got {num_classes!r}")
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 \
            or labels.dtype.is_floating_point or labels.dtype.is_complex \
            or labels.dtype == torch.bool:
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ConfigError(f"{what}: labels must be a 1-D integer tensor, got {shape}")
    y = labels.detach().to("cpu", torch.int64)
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
        raise ConfigError(f"{what}: label {bad} is outside the valid range 0..{num_classes - 1}")
    return y


def check_seed(seed: int, what: str) -> int:
    """A pure function's ``seed`` argument: a non-negative integer."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ConfigError(f"{what}: seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def transform_seed(value: object, name: str) -> int:
    """The ``seed`` option of the data transform ``name``: an integer >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ConfigError(f"data transform {name!r} seed must be an integer >= 0, got {value!r}")
    return int(value)


def salted_generator(seed: int, salt: int) -> torch.Generator:
    """A CPU generator of its own for one transform; the global generators are never touched."""
    # a salt per transform, so noise and imbalance with the same run seed draw independent streams
    g = torch.Generator()
    g.manual_seed((int(seed) * 1_000_003 + salt) % (2**63 - 1))
    return g
