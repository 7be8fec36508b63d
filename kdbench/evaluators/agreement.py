"""The ``agreement`` evaluator: how closely the student follows its teacher on the test split —
top-1 agreement and KL(teacher ‖ student)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import EvalContext, Outputs, register_evaluator


def agreement(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *,
              temperature: float = 1.0, batch_size: int = 256) -> dict[str, float]:
    """Top-1 agreement (%): the share of inputs whose student and teacher argmax are the same
    class; ``teacher_kl``: the mean over inputs of KL(p_T ‖ p_S) = Σ_c p_T,c (log p_T,c − log
    p_S,c) in nats, both softmaxes at ``temperature`` (summed per chunk of ``batch_size``, as an
    evaluation loop sums it)."""
    if student_logits.shape != teacher_logits.shape:
        from ..errors import ConfigError

        raise ConfigError(f"agreement: student logits {tuple(student_logits.shape)} and teacher "
                          f"logits {tuple(teacher_logits.shape)} differ in shape")
    same = int(student_logits.argmax(1).eq(teacher_logits.argmax(1)).sum())
    kl = 0.0
    for i in range(0, len(student_logits), batch_size):
        log_s = F.log_softmax(student_logits[i:i + batch_size].float() / temperature, dim=1)
        log_t = F.log_softmax(teacher_logits[i:i + batch_size].float() / temperature, dim=1)
        kl += float(F.kl_div(log_s, log_t, log_target=True, reduction="sum"))
    n = len(student_logits)
    return {"agreement": 100.0 * same / n, "teacher_kl": kl / n}


@register_evaluator("agreement", every=1, lower_is_better=("teacher_kl",),
                    units={"teacher_kl": "KL(teacher ‖ student), nats"},
                    defaults={"T": 1.0}, types={"T": float})
class Agreement:
    """Student–teacher top-1 agreement (%) and KL(teacher ‖ student) on the test split, every
    epoch (option ``T``: the softmax temperature of the KL, default 1). Needs a run with a fixed
    teacher; its test logits are computed once and reused."""

    needs = ("test_logits", "teacher_test_logits")
    metrics = ("agreement", "teacher_kl")

    def __init__(self, ctx: EvalContext, T: float = 1.0):
        from ..errors import ConfigError

        if not T > 0:
            raise ConfigError(f"evaluator 'agreement' T must be > 0, got {T!r}")
        self.ctx, self.T = ctx, float(T)

    def __call__(self, out: Outputs) -> dict[str, float]:
        assert out.test_logits is not None and out.teacher_test_logits is not None
        return agreement(out.test_logits, out.teacher_test_logits, temperature=self.T,
                         batch_size=out.batch_size)
