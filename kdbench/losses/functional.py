"""Pure functional core of the KD losses: tensors in, the *unweighted* term out.

Each function states its formula and paper. Loss plugins (``kdbench.losses.*``) are thin modules
around these that own the connectors and the weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["kd"]


def kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float = 4.0) -> torch.Tensor:
    """Hinton et al., "Distilling the Knowledge in a Neural Network" (NIPS-W 2015).

    ``T² · KL(softmax(t/T) ‖ softmax(s/T))``, the KL divergence summed over classes and averaged
    over the batch ("batchmean"); the T² factor keeps gradient magnitudes comparable across
    temperatures, as in the paper and RepDistiller's ``DistillKL``.
    """
    log_p_s = F.log_softmax(student_logits.float() / T, dim=1)
    log_p_t = F.log_softmax(teacher_logits.float() / T, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1).mean()
    return kl * (T * T)
