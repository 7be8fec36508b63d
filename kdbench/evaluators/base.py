"""The evaluator machinery: what an evaluator is built with (:class:`EvalContext`), what it
reads (:class:`Outputs`), a run's evaluators (:class:`Suite`, :func:`build_suite`) and the
record's summary of their metrics (:func:`summarize`).

An evaluator declares what it needs (test or un-augmented training logits and/or penultimate
embeddings), how often it runs (every epoch, every N epochs, or only after the last one) and the
metrics it returns. The engine collects the needed outputs once per evaluation point and hands
them to every evaluator that is due; the record keeps ``<metric>_last``, ``<metric>_best`` and
the per-epoch curve of every metric (:func:`summarize`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .. import ranks
from ..data import BatchLoader, Dataset
from ..data.registry import Catalogue
from ..data.stream import make_loader
from ..device import autocast
from ..errors import ConfigError

#: ``@register_evaluator(name, every=..., ...)`` on an evaluator class registers it beside its
#: code; ``kdbench.evaluators.plugin`` adds the class's declared ``needs`` and ``metrics``.
register_evaluator = Catalogue("evaluator")


@dataclass
class EvalContext:
    """What an evaluator is built with: the run's (device-resident, transformed) dataset, and
    the run's fixed teacher (None: the run has none) for evaluators that compare with it."""

    dataset: Dataset
    batch_size: int = 256
    teacher: nn.Module | None = None

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes


@dataclass
class Outputs:
    """A model's outputs on the splits the due evaluators need (float32, on the device).

    ``train_*`` come from the training split without augmentation, with the labels the model
    was trained on (a label-noise transform's noisy ones; its clean labels are in
    ``train_meta``). ``batch_size`` is the chunking of the pass, so sums can be made per chunk
    exactly as a batched evaluation loop makes them.
    """

    epoch: int
    last: bool
    batch_size: int
    test_labels: torch.Tensor
    test_logits: torch.Tensor | None = None
    test_embedding: torch.Tensor | None = None
    test_meta: dict[str, torch.Tensor] = field(default_factory=dict)
    train_labels: torch.Tensor | None = None
    train_logits: torch.Tensor | None = None
    train_embedding: torch.Tensor | None = None
    train_meta: dict[str, torch.Tensor] = field(default_factory=dict)
    #: the fixed teacher's test logits (for an evaluator that needs ``teacher_test_logits``)
    teacher_test_logits: torch.Tensor | None = None


@torch.no_grad()
def model_outputs(model: nn.Module, loader: BatchLoader, precision: str, embedding: bool,
                  logits: bool = True) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Logits and/or penultimate embeddings of a whole split, in eval mode (float32)."""
    was_training = model.training
    model.eval()
    out_logits, out_emb = [], []
    try:
        for x, _, _ in loader:
            with autocast(loader.device, precision):
                if embedding:
                    feats = model.features(x)
                    if feats.embedding is None:
                        raise ConfigError(f"an evaluator needs the penultimate embedding, but "
                                          f"{type(model).__name__} gives none")
                    out_emb.append(feats.embedding.float())
                    z = feats.logits
                else:
                    z = model(x)
            if logits:
                out_logits.append(z.float())
    finally:
        model.train(was_training)
    out = (torch.cat(out_logits) if logits else None, torch.cat(out_emb) if embedding else None)
    if getattr(loader, "sharded", False):  # each rank's contiguous part, gathered in order
        n = len(loader.split)
        out = tuple(None if t is None else ranks.gather_rows(t, n) for t in out)
    return out


class Suite:
    """A run's evaluators: which are due at an epoch, and one evaluation of a model."""

    def __init__(self, items: list[tuple[Any, Any, dict[str, Any]]], ctx: EvalContext, *,
                 epochs: int, precision: str = "fp32", channels_last: bool = False,
                 best_metric: str = "top1", only_at: set[int] | None = None):
        self.items = items  # (spec, evaluator, options)
        self.ctx, self.epochs, self.precision = ctx, epochs, precision
        self.only_at = only_at
        self.best_metric = best_metric
        self.channels_last = channels_last
        self.lower_is_better = {m for spec, _, _ in items for m in spec.lower_is_better}
        data, dev = ctx.dataset, ctx.dataset.train.images.device
        # a distributed run evaluates each rank's part of a split and gathers the outputs
        dist = ranks.world()
        self.loaders = {split: make_loader(data, split, ctx.batch_size, train=False, device=dev,
                                           channels_last=channels_last,
                                           **({"dist": dist} if dist else {}))
                        for split in ("train", "test")}
        self._teacher_logits: torch.Tensor | None = None  # the frozen teacher's: computed once
        if ctx.teacher is None:
            for spec, _, _ in items:
                if "teacher_test_logits" in spec.needs:
                    raise ConfigError(f"evaluator {spec.name!r} needs the teacher's outputs, "
                                      f"but there is no fixed teacher here (valid: a run with "
                                      f"a teacher; not a CE-only run, an online cohort or a "
                                      f"kept student evaluated alone)")

    @property
    def metrics(self) -> list[str]:
        """Every metric the suite's evaluators return, in order."""
        return [m for spec, _, _ in self.items for m in spec.metrics]

    @staticmethod
    def every(spec: Any, options: dict[str, Any]) -> int:
        return int(options.get("every", spec.every))

    def due(self, epoch: int) -> list[tuple[Any, Any, dict[str, Any]]]:
        """The evaluators that run after ``epoch`` (1-based): every epoch, every N, or last;
        with ``only_at`` (a teacher evaluated at its checkpoints only) those epochs and the
        last."""
        last = epoch == self.epochs
        if self.only_at is not None:
            return list(self.items) if last or epoch in self.only_at else []
        out = []
        for spec, evaluator, options in self.items:
            n = self.every(spec, options)
            if last or (n > 0 and epoch % n == 0):
                out.append((spec, evaluator, options))
        return out

    def evaluate(self, model: nn.Module, epoch: int) -> dict[str, float]:
        due = self.due(epoch)
        if not due:
            return {}
        needs = {n for spec, _, _ in due for n in spec.needs}
        data = self.ctx.dataset
        out = Outputs(epoch=epoch, last=epoch == self.epochs, batch_size=self.ctx.batch_size,
                      test_labels=data.test.labels, test_meta=data.test.meta)
        for split in ("test", "train"):
            logits, emb = f"{split}_logits" in needs, f"{split}_embedding" in needs
            if not (logits or emb):
                continue
            z, e = model_outputs(model, self.loaders[split], self.precision, emb, logits)
            setattr(out, f"{split}_logits", z)
            setattr(out, f"{split}_embedding", e)
        out.train_labels, out.train_meta = data.train.labels, data.train.meta
        if "teacher_test_logits" in needs:
            if self._teacher_logits is None:
                self._teacher_logits, _ = model_outputs(self.ctx.teacher, self.loaders["test"],
                                                        self.precision, False)
            out.teacher_test_logits = self._teacher_logits
        metrics: dict[str, float] = {}
        for spec, evaluator, _ in due:
            values = evaluator(out)
            missing = set(spec.metrics) - set(values)
            if missing:
                raise ConfigError(f"evaluator {spec.name!r} returned no {sorted(missing)[0]!r} "
                                  f"(it declares {', '.join(spec.metrics)})")
            metrics.update({k: float(v) for k, v in values.items()})
        return metrics


def build_suite(evaluators: list[dict[str, Any]], ctx: EvalContext, *, epochs: int,
                precision: str = "fp32", channels_last: bool = False,
                best_metric: str = "top1", only_at: set[int] | None = None) -> Suite:
    """The resolved ``eval.evaluators`` list built into a :class:`Suite`."""
    from ..plugins import get

    items = []
    for item in evaluators:
        spec = get("evaluator", item["name"])
        options = {k: v for k, v in item.items() if k not in ("name", "every")}
        items.append((spec, spec.create(ctx, **options), item))
    return Suite(items, ctx, epochs=epochs, precision=precision, channels_last=channels_last,
                 best_metric=best_metric, only_at=only_at)


def test_accuracy(model: nn.Module, dataset: Dataset, precision: str = "fp32"
                  ) -> dict[str, float]:
    """Test-split top-1 and top-5 (%) of a model, as the ``accuracy`` evaluator measures them."""
    metrics = build_suite([{"name": "accuracy"}], EvalContext(dataset), epochs=1,
                          precision=precision).evaluate(model, 1)
    return {"top1": metrics["top1"], "top5": metrics["top5"]}


# ============================== the record's metrics ===========================================


def summarize(history: list[dict[str, Any]], metrics: list[str], best_metric: str = "top1",
              lower_is_better: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
    """Last and best values of every evaluated metric, from a per-epoch history.

    The best epoch is the one with the best ``best_metric`` (the earliest on a tie); every
    metric's ``_best`` is its value at that epoch, as RepDistiller reports top-5 at the best
    top-1 epoch, or, for a metric not evaluated then (one measured only after the last epoch),
    its last value. ``<best_metric>_last10_best`` is Checkpoint KD's metric: the best value in
    the last 10 epochs (its reference code evaluates only those).
    """
    last = history[-1]
    sign = -1.0 if best_metric in lower_is_better else 1.0
    scored = [h for h in history if _finite(h.get(best_metric))]
    best = max(scored, key=lambda h: (sign * h[best_metric], -h["epoch"])) if scored else last
    out: dict[str, Any] = {}
    for m in metrics:
        seen = [h for h in history if m in h]
        if not seen:
            continue
        out[f"{m}_last"] = seen[-1][m]
        out[f"{m}_best"] = best[m] if m in best else seen[-1][m]
    out["best_epoch"] = best["epoch"]
    recent = [h[best_metric] for h in history[-10:] if _finite(h.get(best_metric))]
    if recent:
        out[f"{best_metric}_last10_best"] = (min(recent) if sign < 0 else max(recent))
    out["epochs"] = last["epoch"]
    out["curve"] = history
    return out


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


# ============================== helpers of the metric functions ================================


def predicted_classes(predictions: torch.Tensor, what: str) -> torch.Tensor:
    """Class indices (N,) on the CPU from class indices (N,) or logits/scores (N, C) (argmax)."""
    if not isinstance(predictions, torch.Tensor) or predictions.dim() not in (1, 2):
        shape = tuple(predictions.shape) if isinstance(predictions, torch.Tensor) else None
        raise ConfigError(f"{what}: predictions must be class indices (N,) or logits (N, C), "
                          f"got shape {shape}")
    p = predictions.argmax(dim=1) if predictions.dim() == 2 else predictions
    return p.detach().to("cpu", torch.int64)


def check_same_length(what: str, **vectors: torch.Tensor) -> None:
    """A ConfigError naming every length unless all ``vectors`` have the same first dimension."""
    lengths = {name: int(v.shape[0]) for name, v in vectors.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{k}={v}" for k, v in lengths.items())
        raise ConfigError(f"{what}: lengths differ ({shown})")
