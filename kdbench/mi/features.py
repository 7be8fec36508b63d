"""Probe samples and the features of a checkpoint on them (the T that estimators see)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..data import Dataset
from ..data.base import Normalizer, Split
from ..data.stream import decode_all
from ..errors import ConfigError, UnknownNameError


def layer_names(model: nn.Module) -> list[str]:
    """Layers an estimator can read: the pooled embedding, the logits and every stage."""
    stages = [f"stage-{i + 1}" for i in range(len(getattr(model, "stage_info", [])))]
    if not getattr(model, "has_features", True):
        return ["logits"]
    return ["embedding", *stages, "logits"]


def check_layer(model: nn.Module, layer: str, arch: str) -> None:
    names = layer_names(model)
    if layer not in names:
        raise UnknownNameError("layer", layer, names, hint=f"model {arch!r} has these")


@dataclass
class Probe:
    """N probe samples of the training split: normalised inputs X, labels Y, their indices."""

    x: torch.Tensor
    y: torch.Tensor
    indices: torch.Tensor

    def __len__(self) -> int:
        return self.y.shape[0]


def probe_set(dataset: Dataset, samples: int, seed: int, device: torch.device) -> Probe:
    """A seeded subset of ``samples`` training images (no augmentation), normalised as the model
    sees them. The training split, so that choosing a teacher never looks at the test set."""
    n = len(dataset.train)
    if samples < 2:
        raise ConfigError(f"--samples must be at least 2, got {samples}")
    if samples > n:
        raise ConfigError(f"--samples {samples} exceeds the {n} training images of dataset "
                          f"{dataset.name!r}")
    g = torch.Generator().manual_seed(int(seed))
    idx = torch.randperm(n, generator=g)[:samples].sort().values
    images = dataset.train.images.index_select(0, idx.to(dataset.train.images.device))
    if not isinstance(images, torch.Tensor):  # a streamed split: decode the probe set once
        images = decode_all(Split(images, dataset.train.labels[idx])).images
    x = Normalizer(dataset.mean, dataset.std, device)(images.to(device))
    return Probe(x, dataset.train.labels.index_select(0, idx.to(dataset.train.labels.device))
                 .to(device), idx)


@torch.no_grad()
def extract(model: nn.Module, x: torch.Tensor, layer: str, batch_size: int = 256
            ) -> torch.Tensor:
    """The ``layer`` features of ``model`` on inputs ``x``: (N, D) or (N, C, H, W)."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start:start + batch_size]
        if layer == "logits":
            out.append(model(xb).float())
            continue
        feats = model.features(xb)
        if layer == "embedding":
            out.append(feats.embedding.float())
        else:
            out.append(feats.stages[int(layer.split("-", 1)[1]) - 1].float())
    model.train(was_training)
    return torch.cat(out)
