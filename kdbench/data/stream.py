"""Batches of a split on disk: DataLoader workers decode the files of each batch
(:class:`StreamLoader`), with the interface of the resident :class:`~kdbench.data.BatchLoader`.

The batch order is the resident loader's: one permutation per epoch from
:func:`~kdbench.data.base.epoch_generator` (seed, epoch), cut into batches, the trailing
incomplete one dropped in training. With ``augment="batch"`` the workers only decode (to
``size``×``size`` uint8) and the batch augmentation then draws from the same generator, in the
same order, as on the resident path: a streamed epoch is the resident epoch, pixel for pixel.
With ``augment="timm"`` each worker applies timm's per-image transforms, seeded per epoch.

:func:`make_loader` picks the loader a split needs; :func:`shard` is the part of each batch
one rank of a distributed run takes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from .base import (
    Augment,
    BatchLoader,
    Dataset,
    Normalizer,
    Split,
    crop_flip_augment,
    epoch_generator,
)


class FileImages:
    """Images on disk in the place of a split's uint8 tensor: file paths with the (N, C, H, W)
    shape the decoded batches will have.

    It answers what the data transforms and the engine ask of a split's images (``shape``,
    ``dtype``, ``dim()``, ``device``, ``index_select``, ``to``), so label noise, imbalance and
    subsets work on a streamed split unchanged: they select and relabel, never read pixels.
    ``device`` is where the decoded batches go. ``settings`` are how they are decoded (shared
    by both splits of a dataset and set by the runner: workers, pinned memory).
    """

    dtype = torch.uint8

    def __init__(self, paths: list[str], chw: tuple[int, int, int], *, device: Any = "cpu",
                 settings: dict[str, Any] | None = None):
        self.paths = list(paths)
        self.chw = tuple(chw)
        self.device = torch.device(device)
        self.settings = settings if settings is not None else {}

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.paths), *self.chw))

    def dim(self) -> int:
        return 4

    def __len__(self) -> int:
        return len(self.paths)

    def index_select(self, dim: int, index: torch.Tensor) -> FileImages:
        if dim != 0:
            raise ValueError("FileImages selects samples only (dim 0)")
        return FileImages([self.paths[i] for i in index.tolist()], self.chw, device=self.device,
                          settings=self.settings)

    def to(self, device: Any, non_blocking: bool = False) -> FileImages:
        return FileImages(self.paths, self.chw, device=device, settings=self.settings)


def is_streamed(split: Split) -> bool:
    return isinstance(split.images, FileImages)


def default_workers() -> int:
    """DataLoader workers when none are asked for: the cores this process may use, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


def configure(dataset: Dataset, *, workers: int = 0, pin_memory: bool | None = None) -> None:
    """How a streamed dataset's batches are decoded (speed only): ``workers`` (0: one per
    core, at most 8), ``pin_memory`` (None: on CUDA)."""
    for split in (dataset.train, dataset.test):
        if is_streamed(split):
            split.images.settings.update(workers=workers or default_workers(),
                                         pin_memory=pin_memory)


class _Decode(torch.utils.data.Dataset):
    """One image per index: (pixels, index, error). Pixels are uint8 ``size``×``size``
    (``batch``) or timm's normalised float tensor (``timm``); a file that cannot be decoded
    gives zeros and its error, which the loader turns into a one-line stop or a skip."""

    def __init__(self, images: FileImages, transform: Any = None):
        self.paths, self.s = images.paths, images.settings
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int, str]:
        from PIL import Image

        # (index, seed): a per-image transform's draws are a function of the epoch's seed and
        # the image alone, whichever worker or rank decodes it and whether the run resumed
        i, seed = item if isinstance(item, tuple) else (item, None)
        s = self.s
        size, channels = s["size"], s["channels"]
        try:
            with Image.open(self.paths[i]) as im:
                im = im.convert("RGB" if channels == 3 else "L")
                if self.transform is not None:
                    if seed is not None:
                        _seed_image(seed, i)
                    return self.transform(im), i, ""
                if im.size != (size, size):
                    im = im.resize((size, size), _pil_interpolation(s["interpolation"]))
                a = np.asarray(im, dtype=np.uint8)
        except Exception as exc:  # noqa: BLE001 - PIL raises many kinds
            shape = (channels, size, size)
            blank = torch.zeros(shape, dtype=torch.float32 if self.transform else torch.uint8)
            why = str(exc).splitlines()[0] if str(exc) else ""
            return blank, i, f"{type(exc).__name__}: {why}"
        a = a[:, :, None] if a.ndim == 2 else a
        return torch.from_numpy(a.copy()).permute(2, 0, 1), i, ""


def _seed_image(seed: int, index: int) -> None:
    import random

    s = (seed * 1_000_003 + index) % 2**63
    random.seed(s)
    torch.manual_seed(s)


def _pil_interpolation(name: str) -> Any:
    from PIL import Image

    return {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST,
            "lanczos": Image.LANCZOS}[name]


def _timm_transform(settings: dict[str, Any], train: bool) -> Any:
    from timm.data import create_transform

    s = settings
    if train:
        return create_transform(s["size"], is_training=True, scale=s["scale"],
                                interpolation=s["interpolation"], color_jitter=None,
                                mean=s["mean"], std=s["std"])
    return create_transform(s["size"], is_training=False, crop_pct=s["crop_pct"],
                            interpolation=s["interpolation"], mean=s["mean"], std=s["std"])


class _Batches:
    """The batch sampler: the index lists of the current epoch (set before each pass)."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def shard(index: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Rank ``rank``'s contiguous part of one global batch of indices (equal parts)."""
    n = index.shape[0] // world
    return index[rank * n:(rank + 1) * n]


class StreamLoader:
    """Batches of a split on disk: (normalised float images, labels, sample indices), as
    :class:`~kdbench.data.BatchLoader` gives them, decoded by DataLoader workers.

    ``dist`` is ``(rank, world)`` of a distributed run: in training each rank takes its part of
    every global batch (:func:`shard`); in evaluation its contiguous part of the split.
    """

    def __init__(self, dataset: Dataset, split: str, batch_size: int, *, train: bool,
                 augment: bool | Augment = True, seed: int = 0,
                 device: torch.device | str = "cpu", channels_last: bool = False,
                 extra_views: tuple[Augment, ...] = (), dist: tuple[int, int] | None = None):
        self.dataset = dataset
        self.split: Split = getattr(dataset, split)
        images: FileImages = self.split.images
        self.settings = images.settings
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.dist = dist
        self.sharded = dist is not None and dist[1] > 1
        self.timm = self.settings["augment"] == "timm"
        if self.timm and extra_views:
            raise DataError("extra augmented views (a loss's strong view) need imagefolder "
                            "augment=batch")
        if augment is True:
            augment = crop_flip_augment(dataset.crop_padding, dataset.hflip)
        self.augment: Augment | None = augment if (train and augment and not self.timm) \
            else None
        self.extra_views = tuple(extra_views)
        self.normalize = Normalizer(dataset.mean, dataset.std, self.device)
        self.workers = int(self.settings.get("workers") or default_workers())
        pin = self.settings.get("pin_memory")
        self.pin = self.device.type == "cuda" if pin is None else bool(pin)
        transform = _timm_transform(self.settings, train) if self.timm else None
        self._sampler = _Batches()
        self._loader = torch.utils.data.DataLoader(
            _Decode(images, transform), batch_sampler=self._sampler, num_workers=self.workers,
            pin_memory=self.pin, persistent_workers=self.workers > 0,
            prefetch_factor=4 if self.workers > 0 else None)
        #: files that could not be decoded and were left out (on_error=skip)
        self.skipped: set[str] = set()

    def __len__(self) -> int:
        n = len(self.split)
        if self.train:
            return max(n // self.batch_size, 1)
        return -(-self._eval_count() // self.batch_size)

    def _eval_range(self) -> tuple[int, int]:
        n = len(self.split)
        if self.dist is None:
            return 0, n
        rank, world = self.dist
        per = -(-n // world)
        return min(rank * per, n), min((rank + 1) * per, n)

    def _eval_count(self) -> int:
        lo, hi = self._eval_range()
        return hi - lo

    @property
    def num_samples(self) -> int:
        n = len(self.split)
        return min(len(self) * self.batch_size, n) if self.train else n

    def _to_input(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device, non_blocking=self.pin)
        x = x.float() if self.timm else self.normalize(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def epoch(self, epoch: int = 0) -> Iterator[tuple]:
        n = len(self.split)
        g = epoch_generator(self.seed, epoch)
        views_g = epoch_generator(self.seed + 7_777_777, epoch) if self.extra_views else None
        if self.train:
            order = torch.randperm(n, generator=g)
            batches = [order[b * self.batch_size:(b + 1) * self.batch_size]
                       for b in range(len(self))]
            if self.dist is not None:
                batches = [shard(b, *self.dist) for b in batches]
        else:
            lo, hi = self._eval_range()
            order = torch.arange(lo, hi)
            batches = list(order.split(self.batch_size)) if hi > lo else []
        if self.timm and self.train:
            image_seed = int(torch.randint(0, 2**62, (1,), generator=g))
            self._sampler.batches = [[(i, image_seed) for i in b.tolist()] for b in batches]
        else:
            self._sampler.batches = [b.tolist() for b in batches]
        labels = self.split.labels
        for raw, idx, errors in self._loader:
            bad = [k for k, e in enumerate(errors) if e]
            if bad:
                raw, idx = self._handle_errors(raw, idx, errors, bad)
                if idx.numel() == 0:
                    continue
            images = self.augment(raw, g) if self.augment is not None else raw
            idx_dev = idx.to(labels.device)
            batch = (self._to_input(images), labels.index_select(0, idx_dev).to(self.device),
                     idx.to(self.device))
            if self.extra_views:
                batch += ([self._to_input(view(raw, views_g)) for view in self.extra_views],)
            yield batch

    __iter__ = epoch

    def _handle_errors(self, raw: torch.Tensor, idx: torch.Tensor, errors: list[str],
                       bad: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        paths = self.split.images.paths
        first = bad[0]
        if self.settings.get("on_error", "stop") == "stop":
            raise DataError(f"cannot decode image {paths[int(idx[first])]!r} ({errors[first]}); "
                            f"pass --data-option on_error=skip to leave unreadable images out")
        self.skipped.update(paths[int(idx[k])] for k in bad)
        keep = torch.tensor([k for k in range(len(errors)) if k not in set(bad)],
                            dtype=torch.long)
        return raw.index_select(0, keep), idx.index_select(0, keep)


def make_loader(dataset: Dataset, split: str, batch_size: int, **kwargs: Any
                ) -> BatchLoader | StreamLoader:
    """The loader of ``dataset``'s ``split``: streamed from disk or resident.

    ``dist=(rank, world)`` shards it for one rank of a distributed run (a resident split's
    loader shards too: :class:`ShardedBatchLoader`)."""
    if is_streamed(getattr(dataset, split)):
        return StreamLoader(dataset, split, batch_size, **kwargs)
    dist = kwargs.pop("dist", None)
    if dist is not None and dist[1] > 1:
        return ShardedBatchLoader(dataset, split, batch_size, dist=dist, **kwargs)
    return BatchLoader(dataset, split, batch_size, **kwargs)


class ShardedBatchLoader(BatchLoader):
    """One rank's part of a resident split's batches (the DistributedSampler of resident data).

    Training: every rank draws the global batch's order and augmentation exactly as one
    process would, and keeps its contiguous part, so the union over ranks of a step's images
    is the one-process batch, pixel for pixel. Evaluation: the rank's contiguous part of the
    split (the gathered outputs are the whole split, in order).
    """

    def __init__(self, dataset: Dataset, split: str, batch_size: int, *,
                 dist: tuple[int, int], **kwargs: Any):
        super().__init__(dataset, split, batch_size, **kwargs)
        self.rank, self.world = dist
        self.sharded = True

    def _eval_range(self) -> tuple[int, int]:
        n = len(self.split)
        per = -(-n // self.world)
        return min(self.rank * per, n), min((self.rank + 1) * per, n)

    def __len__(self) -> int:
        if self.train:
            return super().__len__()
        lo, hi = self._eval_range()
        return -(-(hi - lo) // self.batch_size)

    def epoch(self, epoch: int = 0) -> Iterator[tuple]:
        if not self.train:
            lo, hi = self._eval_range()
            for idx in torch.arange(lo, hi, device=self.split.images.device).split(
                    self.batch_size):
                yield (self._to_input(self.split.images.index_select(0, idx)),
                       self.split.labels.index_select(0, idx).to(self.device),
                       idx.to(self.device))
            return
        for batch in super().epoch(epoch):
            n = batch[0].shape[0] // self.world
            part = slice(self.rank * n, (self.rank + 1) * n)
            out = tuple(t[part] for t in batch[:3])
            if len(batch) > 3:
                out += ([v[part] for v in batch[3]],)
            yield out

    __iter__ = epoch


def decode_all(split: Split) -> Split:
    """A streamed split decoded once into a resident uint8 split (``augment="batch"``), by the
    same workers and the same decoding as the streamed batches."""
    images: FileImages = split.images
    workers = int(images.settings.get("workers") or default_workers())
    loader = torch.utils.data.DataLoader(_Decode(images), batch_size=256, num_workers=workers,
                                         shuffle=False)
    out = torch.empty(tuple(images.shape), dtype=torch.uint8)
    for raw, idx, errors in loader:
        bad = [k for k, e in enumerate(errors) if e]
        if bad:
            k = bad[0]
            raise DataError(f"cannot decode image {images.paths[int(idx[k])]!r} ({errors[k]}); "
                            f"pass --data-option on_error=skip to leave unreadable images out")
        out[idx] = raw
    return Split(out, split.labels, dict(split.meta))
