"""Datasets, data transforms, the tensor-resident loader and batched augmentation.

One file per catalogue item or family, each registered beside its definition
(:mod:`.registry`) and handed to the plugin registry by :mod:`.plugin`: the datasets
(:mod:`.datasets`), the batch augmentations (:mod:`.augment`) and the data transforms
(:mod:`.subset`, :mod:`.label_noise`, :mod:`.imbalance`). :mod:`.base` holds the splits, the
dataset and the loader.

Data transforms are what is done to a split after the dataset plugin loads it. A run's
``data.transforms`` is an ordered list of ``{name: ..., option: value}``; each transform is a
plugin (``register_data_transforms``) applied to the splits it declares (the training split
unless it says otherwise) and reports what it really did (realised noise rate, per-class
counts), which the record keeps (:func:`apply_transforms`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .base import Augment, BatchLoader, Dataset, Split, epoch_generator, random_crop, random_hflip

__all__ = ["Augment", "BatchLoader", "Dataset", "Split", "apply_transforms", "epoch_generator",
           "load_data", "load_dataset", "random_crop", "random_hflip"]

#: old module paths (kdbench < 0.3) -> where their names live now (see kdbench.compat)
MOVED: dict[str, str | tuple[str, ...]] = {
    "builtin": "kdbench.data.datasets",
    "corrupt": ("kdbench.data.label_noise", "kdbench.data.imbalance"),
    "robust": ("kdbench.data.label_noise", "kdbench.data.imbalance"),
    "transforms": ("kdbench.data", "kdbench.data.subset"),
}


def load_dataset(name: str, data_dir: str | None = None,
                 transforms: list[dict[str, Any]] | None = None, **options: Any) -> Dataset:
    """Load a registered dataset by name (options are its factory's keyword arguments), then
    apply ``transforms`` in order (:func:`apply_transforms`)."""
    from ..errors import ConfigError
    from ..plugins import get

    entry = get("dataset", name)
    try:
        dataset = entry.create(data_dir=data_dir, **options)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise ConfigError(f"dataset {name!r}: {exc}") from exc
        raise
    return apply_transforms(dataset, transforms) if transforms else dataset


def load_data(config: Any, device: Any = "cpu") -> Dataset:
    """The dataset a ``DataConfig`` describes (transforms applied), on ``device``."""
    return load_dataset(config.name, config.dir, config.transforms, **config.options).to(device)


def apply_transforms(dataset: Dataset, transforms: list[dict[str, Any]]) -> Dataset:
    """``dataset`` with each transform applied in order (to its declared splits); the reports go
    to ``dataset.info["transforms"]`` as ``[{name, options, split, report}]``."""
    from ..errors import ConfigError
    from ..plugins import get

    reports = []
    for item in transforms:
        options = {k: v for k, v in item.items() if k != "name"}
        spec = get("data_transform", item["name"])
        transform = spec.create(**options)
        splits = {}
        for split_name in spec.splits:
            split = getattr(dataset, split_name)
            if spec.needs_labels and split.labels.numel() == 0:
                raise ConfigError(f"data transform {item['name']!r} needs labels, but the "
                                  f"{split_name} split of {dataset.name!r} has none")
            new, report = transform.apply(split, num_classes=dataset.num_classes,
                                          split_name=split_name)
            splits[split_name] = new
            reports.append({"name": item["name"], "options": options, "split": split_name,
                            "report": report})
        dataset = dataclasses.replace(dataset, **splits)
    dataset.info = {**dataset.info, "transforms": reports}
    return dataset
