"""The ``subset`` data transform: a seeded, class-balanced part of the training split — the
documented subsets the CPU-scale studies use. The shipped studies list it first in
``data.transforms``: it defines the base set the other transforms work on.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from .base import Split
from .registry import register_data_transform


@register_data_transform(
    "subset", defaults={"per_class": 100, "seed": 0},
    description="a seeded class-balanced subset: per_class samples of every class")
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
