"""The ``accuracy`` evaluator: top-1/top-5 accuracy and mean cross-entropy on the test split."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import EvalContext, Outputs, register_evaluator


def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks=(1, 5)) -> list[int]:
    """How many rows have the target among their k highest logits, for each k."""
    maxk = min(max(ks), logits.shape[1])
    top = logits.topk(maxk, dim=1).indices
    hit = top.eq(target.view(-1, 1))
    return [int(hit[:, :min(k, maxk)].any(dim=1).sum()) for k in ks]


@register_evaluator("accuracy", every=1, lower_is_better=("test_loss",),
                    units={"test_loss": "cross-entropy, nats"})
class Accuracy:
    """Test-split top-1 and top-5 accuracy (%) and mean cross-entropy, every epoch."""

    needs = ("test_logits",)
    metrics = ("top1", "top5", "test_loss")

    def __init__(self, ctx: EvalContext):
        self.ctx = ctx

    def __call__(self, out: Outputs) -> dict[str, float]:
        logits, labels = out.test_logits, out.test_labels
        assert logits is not None
        c1, c5 = topk_correct(logits, labels)
        # the cross-entropy summed per evaluation batch, as an evaluation loop sums it
        loss = sum(float(F.cross_entropy(logits[i:i + out.batch_size],
                                         labels[i:i + out.batch_size], reduction="sum"))
                   for i in range(0, len(labels), out.batch_size))
        n = labels.numel()
        return {"top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n, "test_loss": loss / n}
