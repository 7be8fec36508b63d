"""Dataset plugins, the tensor-resident loader and batched augmentation."""

from __future__ import annotations

from .base import BatchLoader, Dataset, Split, epoch_generator, random_crop, random_hflip

__all__ = ["BatchLoader", "Dataset", "Split", "epoch_generator", "load_dataset", "random_crop",
           "random_hflip"]


def load_dataset(name: str, data_dir: str | None = None, **options) -> Dataset:
    """Load a registered dataset by name; options are the dataset factory's keyword arguments."""
    from ..errors import ConfigError
    from ..plugins import get

    entry = get("dataset", name)
    try:
        return entry.create(data_dir=data_dir, **options)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise ConfigError(f"dataset {name!r}: {exc}") from exc
        raise
