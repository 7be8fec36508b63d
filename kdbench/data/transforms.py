"""Data transforms: what is done to a split after the dataset plugin loads it.

A run's ``data.transforms`` is an ordered list of ``{name: ..., option: value}``; each transform
is a plugin (``register_data_transforms``) applied to the splits it declares (the training split
unless it says otherwise) and reports what it really did (realised noise rate, per-class counts),
which the record keeps. The built-in ``subset`` keeps a seeded, class-balanced part of the
training split — the documented subsets the CPU-scale studies use.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError
from .base import Dataset, Split


def apply_transforms(dataset: Dataset, transforms: list[dict[str, Any]]) -> Dataset:
    """``dataset`` with each transform applied in order (to its declared splits); the reports go
    to ``dataset.info["transforms"]`` as ``[{name, options, split, report}]``."""
    import dataclasses

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


class Subset:
    """A seeded class-balanced subset of a split: ``per_class`` samples of every class (or all
    of a class that has fewer, which the report says), in the split's order."""

    def __init__(self, per_class: int, seed: int = 0):
        if per_class < 1:
            raise ConfigError(f"data transform 'subset' per_class must be >= 1, got {per_class}")
        self.per_class, self.seed = per_class, seed

    def apply(self, split: Split, *, num_classes: int, split_name: str) -> tuple[Split, dict]:
        g = torch.Generator().manual_seed(self.seed)
        labels = split.labels.cpu()
        keep, counts = [], []
        for c in range(num_classes):
            members = torch.nonzero(labels == c).flatten()
            chosen = members[torch.randperm(len(members), generator=g)[:self.per_class]]
            keep.append(chosen)
            counts.append(len(chosen))
        index = torch.sort(torch.cat(keep)).values
        short = [c for c, n in enumerate(counts) if n < self.per_class]
        report = {"per_class": self.per_class, "seed": self.seed, "size": int(len(index)),
                  "class_counts": counts, "short_classes": short}
        return split.subset(index), report
