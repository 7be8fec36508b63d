"""Built-in datasets: embedded digits, synthetic, CIFAR-10/100 and Fashion-MNIST from a data dir.

Each factory is registered beside its definition (``@register_dataset``: the registry name is the
function's name, the description its docstring's first line).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .base import Dataset, Split
from .registry import register_dataset

CIFAR_STATS = {
    # per-channel mean/std of the official training sets, as the field normalises
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


def _stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    x = images.float().div(255).transpose(0, 1).reshape(images.shape[1], -1)
    return tuple(x.mean(1).tolist()), tuple(x.std(1).clamp_min(1e-3).tolist())


@register_dataset
def digits(data_dir: str | None = None, test_fraction: float = 0.25) -> Dataset:
    """scikit-learn's bundled 8×8 handwritten digits (1,797 images, 10 classes), the default.

    A fixed stratified split (random_state 0): 1,347 train / 450 test. Pixels 0..16 are scaled
    to 0..255. Augmentation: random crop with 1-pixel padding, no flips (digits are not
    mirror-symmetric).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    x_tr, x_te, y_tr, y_te = train_test_split(images, bunch.target, test_size=test_fraction,
                                              stratify=bunch.target, random_state=0)
    train = Split(torch.from_numpy(x_tr), torch.from_numpy(y_tr))
    mean, std = _stats(train.images)
    return Dataset("digits", train, Split(torch.from_numpy(x_te), torch.from_numpy(y_te)), 10,
                   mean, std, crop_padding=1, hflip=False,
                   classes=[str(i) for i in range(10)])


@register_dataset
def synthetic(data_dir: str | None = None, num_classes: int = 4, size: int = 8, channels: int = 3,
              train_size: int = 256, test_size: int = 128, seed: int = 0) -> Dataset:
    """Tiny random images for unit tests: one smooth prototype per class plus noise (learnable)."""
    from ..errors import ConfigError

    for name, value, low in (("num_classes", num_classes, 2), ("size", size, 1),
                             ("channels", channels, 1), ("train_size", train_size, 1),
                             ("test_size", test_size, 1)):
        if not isinstance(value, int) or value < low:
            raise ConfigError(f"dataset 'synthetic' option {name} must be an integer >= {low}, "
                              f"got {value!r}")
    g = torch.Generator().manual_seed(seed)
    protos = torch.rand(num_classes, channels, max(size // 2, 1), max(size // 2, 1), generator=g)
    protos = torch.nn.functional.interpolate(protos, size=(size, size), mode="bilinear",
                                             align_corners=False)

    def make(n: int) -> Split:
        labels = torch.arange(n) % num_classes
        labels = labels[torch.randperm(n, generator=g)]
        noise = torch.rand(n, channels, size, size, generator=g)
        images = (0.6 * protos[labels] + 0.4 * noise).mul(255).round().clamp(0, 255)
        return Split(images.to(torch.uint8), labels)

    train = make(train_size)
    mean, std = _stats(train.images)
    return Dataset("synthetic", train, make(test_size), num_classes, mean, std,
                   crop_padding=1, hflip=True)


def _need_dir(name: str, data_dir: str | None, expected: str) -> Path:
    if not data_dir:
        raise DataError(f"dataset {name!r} needs --data-dir (a folder holding {expected})")
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise DataError(f"data dir {str(path)!r} for dataset {name!r} does not exist "
                        f"(expected a folder holding {expected})")
    return path


def _load_npz(path: Path, num_classes: int) -> Split:
    try:
        with np.load(path) as d:
            images, labels = d["images"], d["labels"]
    except Exception as exc:  # noqa: BLE001 - zip/pickle/key errors all mean "unreadable"
        raise DataError(f"cannot read {str(path)!r}: {type(exc).__name__}: {exc} "
                        f"(expected arrays 'images' uint8 (N, H, W, C) and 'labels')") from exc
    if images.dtype != np.uint8 or images.ndim != 4:
        raise DataError(f"{str(path)!r}: 'images' must be uint8 (N, H, W, C), got "
                        f"{images.dtype} {images.shape}")
    if labels.shape != (images.shape[0],) or labels.min() < 0 or labels.max() >= num_classes:
        raise DataError(f"{str(path)!r}: 'labels' must be ({images.shape[0]},) with values in "
                        f"0..{num_classes - 1}")
    return Split(torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))),
                 torch.from_numpy(labels.astype(np.int64)))


def _cifar(name: str, num_classes: int, data_dir: str | None, download: bool) -> Dataset:
    tv_folder = "cifar-10-batches-py" if num_classes == 10 else "cifar-100-python"
    expected = f"train.npz + test.npz, or torchvision's {tv_folder}/"
    root = _need_dir(name, data_dir, expected) if not download else Path(data_dir or ".")
    if (root / "train.npz").is_file() and (root / "test.npz").is_file():
        train = _load_npz(root / "train.npz", num_classes)
        test = _load_npz(root / "test.npz", num_classes)
        source = "npz"
    elif (root / tv_folder).is_dir() or download:
        import torchvision

        cls = torchvision.datasets.CIFAR10 if num_classes == 10 else torchvision.datasets.CIFAR100
        try:
            splits = [cls(str(root), train=t, download=download) for t in (True, False)]
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"cannot load {name} from {str(root)!r}: {type(exc).__name__}: "
                            f"{exc}") from exc
        train, test = (Split(torch.from_numpy(s.data).permute(0, 3, 1, 2).contiguous(),
                             torch.tensor(s.targets)) for s in splits)
        source = "torchvision"
    else:
        raise DataError(f"no {name} data in {str(root)!r}: expected {expected} "
                        f"(pass --download to fetch it with torchvision when online)")
    classes = None
    if (root / "classes.txt").is_file():
        classes = (root / "classes.txt").read_text().split()
    mean, std = CIFAR_STATS[name]
    return Dataset(name, train, test, num_classes, mean, std, crop_padding=4, hflip=True,
                   classes=classes, info={"source": source})


@register_dataset
def cifar10(data_dir: str | None = None, download: bool = False) -> Dataset:
    """CIFAR-10 (50k/10k, 32×32 RGB) from --data-dir: train.npz/test.npz or torchvision's files."""
    return _cifar("cifar10", 10, data_dir, download)


@register_dataset
def cifar100(data_dir: str | None = None, download: bool = False) -> Dataset:
    """CIFAR-100 (50k/10k, 32×32 RGB) from --data-dir: train.npz/test.npz or torchvision's files."""
    return _cifar("cifar100", 100, data_dir, download)


_IDX = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _read_idx(folder: Path, stem: str) -> np.ndarray:
    for candidate in (folder / stem, folder / (stem + ".gz"), folder / "raw" / stem,
                      folder / "raw" / (stem + ".gz"), folder / "FashionMNIST" / "raw" / stem,
                      folder / "FashionMNIST" / "raw" / (stem + ".gz")):
        if candidate.is_file():
            opener = gzip.open if candidate.suffix == ".gz" else open
            with opener(candidate, "rb") as f:
                data = f.read()
            ndim = data[3]
            dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
            return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)
    raise DataError(f"no {stem}[.gz] in {str(folder)!r} (Fashion-MNIST IDX files; on Debian: "
                    f"apt-get install dataset-fashion-mnist, then dpkg -L it for the folder)")


#: how :func:`fit_size` brings square images to another size
FITS = ("pad", "resize")


def fit_size(images: torch.Tensor, size: int, fit: str) -> torch.Tensor:
    """uint8 (N, C, H, W) square images brought to ``size``×``size``.

    ``"pad"``: zero (black) borders, ``(size − H) // 2`` on the top and left and the rest on the
    bottom and right, pixels unchanged (needs ``size ≥ H``). ``"resize"``: bilinear resampling
    (``align_corners=False``, antialiased when shrinking), rounded back to uint8.
    """
    h = images.shape[-1]
    if fit not in FITS:
        raise DataError(f"fit {fit!r} is unknown (valid: {', '.join(FITS)})")
    if size < 1 or (fit == "pad" and size < h):
        raise DataError(f"cannot {fit} {h}×{h} images to {size}×{size} (valid sizes: "
                        f"{h} or more to pad, 1 or more to resize)")
    if size == h:
        return images
    if fit == "pad":
        lo = (size - h) // 2
        return torch.nn.functional.pad(images, (lo, size - h - lo, lo, size - h - lo))
    out = torch.nn.functional.interpolate(images.float(), size=(size, size), mode="bilinear",
                                          align_corners=False, antialias=size < h)
    return out.round().clamp(0, 255).to(torch.uint8)


@register_dataset
def fashion_mnist(data_dir: str | None = None, size: int = 28, fit: str = "pad") -> Dataset:
    """Fashion-MNIST (60k/10k, 28×28 grey) from the official IDX files in --data-dir.

    ``size`` and ``fit`` bring the images to ``size``×``size`` (:func:`fit_size`): e.g.
    ``--data-option size=32`` zero-pads them to 32×32 (2 pixels each side) for the 32×32
    models (InDistill's Cnn32), ``fit=resize`` resamples instead. InDistill's code has no
    Fashion-MNIST preprocessing; padding keeps every pixel. The normalisation statistics are
    those of the 28×28 images either way; ``dataset.info`` (and the record) says what was done.
    """
    root = _need_dir("fashion_mnist", data_dir, "the Fashion-MNIST IDX files")
    splits = {}
    for split, (img, lab) in _IDX.items():
        images, labels = _read_idx(root, img), _read_idx(root, lab)
        splits[split] = Split(fit_size(torch.from_numpy(images.copy())[:, None], size, fit),
                              torch.from_numpy(labels.astype(np.int64)))
    info = {} if size == 28 else {"size": {"from": 28, "to": size, "fit": fit}}
    # official training-set statistics
    return Dataset("fashion_mnist", splits["train"], splits["test"], 10, (0.2860,), (0.3530,),
                   crop_padding=2, hflip=True,
                   classes=["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                            "sneaker", "bag", "boot"], info=info)
