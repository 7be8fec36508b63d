"""The ``imagefolder`` dataset: a class-per-folder tree (``train/`` and ``val/``, torchvision's
``ImageFolder`` layout, ImageNet's and Tiny-ImageNet's) decoded from disk.

Two ways to feed it, one numerics:

- **stream** (what does not fit in memory): the splits hold file paths (:class:`FileImages`)
  and DataLoader workers decode each batch (:mod:`.stream`);
- **resident** (what fits): the images are decoded once, by the same workers, into the uint8
  tensor every other dataset is, and train on the fast path.

``augment="batch"`` (the default for images of at most 64 pixels) decodes every image to
``size``×``size`` uint8 and leaves augmentation to the run's batch augmentation (the CIFAR
recipe's crop and flip, on the batch): streamed and resident then train on exactly the same
pixels, so the automatic choice between them (``load="auto"``: resident when the decoded
training set takes less than half the available memory) never moves a number.
``augment="timm"`` (the default for larger images: ImageNet) builds timm's ImageNet transforms
per image in the workers — ``RandomResizedCrop(size, scale) + flip`` for training,
``Resize(size / crop_pct) + CenterCrop(size)`` for evaluation — and always streams.

Bad trees stop before anything is written, with a one-line error naming the path: no
``train/`` or ``val/``, a class folder without images, class sets that differ between the
splits, an unreadable image (``on_error="stop"``; ``"skip"`` leaves it out and the record
counts it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..errors import DataError
from .base import Dataset, Split
from .registry import register_dataset
from .stream import FileImages, decode_all

#: the file endings read as images (torchvision's IMG_EXTENSIONS)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
#: timm's IMAGENET_DEFAULT_MEAN / _STD (kept here so that loading a dataset needs no timm import)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
AUGMENTS = ("auto", "batch", "timm")
LOADS = ("auto", "stream", "resident")
ON_ERROR = ("stop", "skip")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "lanczos")


# ============================== reading the tree ================================================


def _images_under(folder: Path) -> list[str]:
    """Every image file under ``folder`` (recursively: Tiny-ImageNet keeps them in images/),
    sorted, as ImageFolder orders them."""
    out = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs.sort()
        out += [os.path.join(root, f) for f in sorted(files)
                if f.lower().endswith(IMAGE_EXTENSIONS)]
    return out


def _class_tree(split_dir: Path) -> dict[str, list[str]]:
    classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir())
    if not classes:
        raise DataError(f"{str(split_dir)!r} has no class folders (expected "
                        f"{split_dir.name}/<class>/<image files>)")
    tree = {}
    for c in classes:
        files = _images_under(split_dir / c)
        if not files:
            raise DataError(f"class folder {str(split_dir / c)!r} has no images (valid "
                            f"endings: {', '.join(IMAGE_EXTENSIONS)})")
        tree[c] = files
    return tree


def _tiny_imagenet_val(val_dir: Path) -> dict[str, list[str]]:
    """Tiny-ImageNet's val/: images/ plus val_annotations.txt (file, class, box)."""
    tree: dict[str, list[str]] = {}
    ann = val_dir / "val_annotations.txt"
    for n, line in enumerate(ann.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2:
            raise DataError(f"{str(ann)!r} line {n}: expected 'file<TAB>class...', got "
                            f"{line[:60]!r}")
        path = val_dir / "images" / parts[0]
        if not path.is_file():
            raise DataError(f"{str(ann)!r} line {n}: no image {str(path)!r}")
        tree.setdefault(parts[1], []).append(str(path))
    if not tree:
        raise DataError(f"{str(ann)!r} lists no images")
    return {c: sorted(v) for c, v in sorted(tree.items())}


def scan(root: str | os.PathLike[str]) -> tuple[list[str], dict[str, dict[str, list[str]]]]:
    """The classes and each split's files per class of an image-folder tree (``train/`` and
    ``val/``), or a one-line DataError naming what is wrong."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder {str(root)!r} does not exist")
    splits = {}
    for name in ("train", "val"):
        d = root / name
        if not d.is_dir():
            raise DataError(f"image folder {str(root)!r} has no {name}/ folder (expected "
                            f"train/<class>/<images> and val/<class>/<images>)")
        if name == "val" and (d / "val_annotations.txt").is_file():
            splits[name] = _tiny_imagenet_val(d)
        else:
            splits[name] = _class_tree(d)
    classes = list(splits["train"])
    if set(splits["val"]) != set(classes):
        only_val = sorted(set(splits["val"]) - set(classes))
        only_train = sorted(set(classes) - set(splits["val"]))
        raise DataError(f"class folders of {str(root / 'train')!r} and {str(root / 'val')!r} "
                        f"differ: only in val: {only_val[:5]}, only in train: {only_train[:5]}")
    return classes, splits


def _readable(path: str) -> str | None:
    """None if the image's header reads, else why not (one line)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.size[0] < 1 or im.size[1] < 1:
                return "empty image"
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


def _check_files(files: list[str], on_error: str) -> tuple[list[int], list[str]]:
    """Indices of the files whose header reads; with ``stop``, the first that does not is a
    DataError."""
    keep, bad = [], []
    for i, f in enumerate(files):
        why = _readable(f)
        if why is None:
            keep.append(i)
        elif on_error == "stop":
            raise DataError(f"cannot read image {f!r} ({why}); pass --data-option "
                            f"on_error=skip to leave unreadable images out")
        else:
            bad.append(f)
    return keep, bad


def available_memory() -> int:
    """Bytes of memory available to a new allocation (MemAvailable; else free pages)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def _choice(value: Any, valid: tuple, what: str) -> Any:
    if value not in valid:
        raise DataError(f"imagefolder {what} {value!r} is unknown (valid: "
                        f"{', '.join(map(str, valid))})")
    return value


def _stats(value: Any, default: tuple[float, ...], what: str, channels: int
           ) -> tuple[float, ...]:
    if value is None or value == "imagenet":
        return default if channels == 3 else (sum(default) / 3,)
    if isinstance(value, str):
        value = [float(v) for v in value.replace("/", ",").split(",")]
    value = tuple(float(v) for v in value)
    if len(value) != channels or (what == "std" and min(value) <= 0):
        raise DataError(f"imagefolder {what} {list(value)} must have {channels} values"
                        f"{' > 0' if what == 'std' else ''} (or 'imagenet')")
    return value


@register_dataset
def imagefolder(data_dir: str | None = None, size: int = 224, augment: str = "auto",
                load: str = "auto", interpolation: str = "bilinear", crop_pct: float = 0.875,
                scale: tuple[float, float] = (0.08, 1.0), padding: int = 4,
                mean: Any = None, std: Any = None, channels: int = 3, on_error: str = "stop",
                check: bool = True) -> Dataset:
    """A class-per-folder tree from --data-dir (train/ and val/, ImageNet and Tiny-ImageNet
    layouts), decoded by DataLoader workers: streamed from disk, or resident when it fits.

    ``size``: the side the models see. ``augment``: ``batch`` (each image resized to ``size``,
    the run's batch augmentation with ``padding``, as CIFAR), ``timm`` (timm's ImageNet
    transforms: RandomResizedCrop(``scale``) + flip, eval resize to ``size / crop_pct`` +
    center crop, with ``interpolation``) or ``auto`` (batch up to 64 pixels, else timm).
    ``load``: ``auto`` (resident when the decoded training set takes under half the available
    memory and the augmentation is batch), ``stream`` or ``resident``. ``mean``/``std``:
    per-channel (default ImageNet's). ``on_error``: an unreadable image stops the run
    (``stop``) or is left out and counted (``skip``); ``check`` reads every header first.
    """
    if data_dir is None:
        raise DataError("dataset 'imagefolder' needs --data-dir DIR (a folder with train/ and "
                        "val/, one sub-folder per class)")
    size, channels = int(size), int(channels)
    if size < 1:
        raise DataError(f"imagefolder size {size} must be >= 1")
    if channels not in (1, 3):
        raise DataError(f"imagefolder channels {channels} is not valid (valid: 1, 3)")
    if not 0 < float(crop_pct) <= 1:
        raise DataError(f"imagefolder crop_pct {crop_pct} must be in (0, 1]")
    _choice(load, LOADS, "load")
    _choice(on_error, ON_ERROR, "on_error")
    _choice(interpolation, INTERPOLATIONS, "interpolation")
    mode = _choice(augment, AUGMENTS, "augment")
    if mode == "auto":
        mode = "batch" if size <= 64 else "timm"
    if mode == "timm" and load == "resident":
        raise DataError("imagefolder load 'resident' needs augment 'batch' (timm's per-image "
                        "transforms run on files as they stream)")
    mean = _stats(mean, IMAGENET_MEAN, "mean", channels)
    std = _stats(std, IMAGENET_STD, "std", channels)
    classes, tree = scan(data_dir)
    splits, skipped = {}, {}
    for name, split in (("train", "train"), ("test", "val")):
        files = [f for c in classes for f in tree[split][c]]
        labels = torch.tensor([k for k, c in enumerate(classes) for _ in tree[split][c]],
                              dtype=torch.int64)
        if check:
            keep, bad = _check_files(files, on_error)
            if bad:
                files = [files[i] for i in keep]
                labels = labels[torch.tensor(keep, dtype=torch.long)]
            skipped[name] = len(bad)
        splits[name] = (files, labels)
    decoded = len(splits["train"][0]) * channels * size * size
    available = available_memory()
    resident = load == "resident" or (load == "auto" and mode == "batch"
                                      and decoded < available // 2)
    settings: dict[str, Any] = {
        "augment": mode, "size": size, "interpolation": interpolation,
        "crop_pct": float(crop_pct), "scale": tuple(float(s) for s in scale),
        "mean": mean, "std": std, "channels": channels, "on_error": on_error}
    out = {}
    for name, (files, labels) in splits.items():
        images = FileImages(files, (channels, size, size), settings=settings)
        out[name] = Split(images, labels)
    info = {"source": "imagefolder", "load": "resident" if resident else "stream",
            "load_asked": load, "augment": mode, "size": size,
            "decoded_train_bytes": decoded, "available_bytes": available,
            "unreadable_skipped": skipped}
    dataset = Dataset("imagefolder", out["train"], out["test"], len(classes), mean, std,
                      crop_padding=int(padding) if mode == "batch" else 0,
                      hflip=mode == "batch", classes=classes, info=info)
    if resident:
        dataset.train = decode_all(dataset.train)
        dataset.test = decode_all(dataset.test)
    return dataset
