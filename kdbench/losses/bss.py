"""``bss``: KD with adversarial samples supporting the decision boundary.

Heo, Lee, Yun & Choi, "Knowledge Distillation with Adversarial Samples Supporting Decision
Boundary", AAAI 2019 (arXiv 1805.05532); official code bhheo/BSS_distillation
(``train_BSS_distillation.py``, ``attacks/attack_BSS.py``). The method adds to CE and Hinton KD
a KD term on *boundary supporting samples*: training images pushed by an iterative attack on the
teacher from their class towards another class's decision boundary, so that the student learns
where the teacher's boundary lies, not only its outputs on the data.

Per batch:

1. *Base samples*: those both the teacher and the student classify correctly; if there are more
   than ``sample_ratio``·B, the ones with the largest ``Σ_{c≠y} (p_t,c − p_s,c)²`` (softmax at
   T = 1) are kept (:func:`bss_select`).
2. *Target class*: drawn for each base sample among the teacher's non-top-1 classes with
   probability ∝ the teacher's softmax (:func:`bss_target_classes`).
3. *Attack* (:func:`bss_attack`): from the teacher's top-1 class b towards the target k,
   ``steps`` times:
   ``x ← clamp(x + η · (z_b − z_k + 1e-4) · ∇_x(z_k − z_b) / ‖∇_x(z_k − z_b)‖₂, −2.5, 2.5)``
   — a step proportional to the remaining logit margin; a sample whose teacher top-1 is no
   longer b stops moving but stays in the loss.
4. *Loss*: ``CE + α(e)·KL_T(clean) + β(e)·KL_T(x_adv)`` with T = 3 and *no T² factor*
   (:func:`bss_kd`), and the schedules over epochs e = 1..E ``α(e) = 1 + 3·max(1 − e/E, 0)``
   (4 → 1, :func:`kd_schedule`) and ``β(e) = 2·max(1 − (4/3)·e/E, 0)`` (2 → 0, zero from 3/4
   of training on, :func:`bss_schedule`).

The schedules take the run's epoch count (``DistillContext.epochs``; the option
``schedule_epochs`` overrides it: set it to the main stage's length when a warm-up takes epochs
from the run's budget). As in the official code, the student's forward on the adversarial
samples runs in training mode and the teacher runs in eval mode. The official run, the
line-by-line reading of the official code and every deliberate difference from it:
``docs/fidelity/bss.md``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .base import DistillContext, Distiller, option, register_loss, require_teacher

__all__ = ["BSS", "bss_attack", "bss_kd", "bss_schedule", "bss_select",
           "bss_target_classes", "kd_schedule"]


# ============================== pure functions ==================================================


def bss_attack(teacher: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
               target_class: torch.Tensor, *, steps: int = 10, eta: float = 0.3,
               clamp: float | None = 2.5, base_class: torch.Tensor | None = None) -> torch.Tensor:
    """Boundary supporting samples: ``x`` moved towards the teacher's boundary with
    ``target_class`` (the BSS attack, ``AttackBSS.run`` with ``norm=2``).

    Each of ``steps`` iterations computes the teacher's logits z at the current point and, for
    every sample still classified as its base class b (the teacher's top-1 at the start, or
    ``base_class``), moves it by ``η · (z_b − z_k + 1e-4) · g / ‖g‖₂`` with
    ``g = ∇_x (z_k − z_b)``, then clamps to ``[−clamp, clamp]`` (the official ±2.5 in
    normalised-input units; None: no clamp). Samples that crossed stop; the loop ends when all
    have. On a linear teacher the margin shrinks by the factor ``1 − η‖w_b − w_k‖`` per step.

    Only the input receives gradients (``torch.autograd.grad`` w.r.t. x): the teacher's
    parameters get none, whatever their ``requires_grad``. The teacher's train/eval mode is the
    caller's (the official attack runs it in eval mode). Returns a detached tensor like ``x``.
    Cost: ``steps`` teacher forward+backward passes (to the input) on ``x``, fewer if all cross.
    """
    x_adv = x.detach().clone()
    k = target_class.view(-1, 1)
    b = None if base_class is None else base_class.view(-1, 1)
    shape = (-1,) + (1,) * (x.dim() - 1)
    with torch.enable_grad():
        for _ in range(steps):
            xv = x_adv.requires_grad_(True)
            logits = teacher(xv).float()
            if b is None:
                b = logits.detach().argmax(dim=1, keepdim=True)
            z_b, z_k = logits.gather(1, b), logits.gather(1, k)
            active = logits.detach().argmax(dim=1, keepdim=True).eq(b)
            if not bool(active.any()):
                break
            (grad,) = torch.autograd.grad((z_k - z_b).sum(), xv)
            norm = grad.flatten(1).norm(dim=1)
            margin = (z_b - z_k).detach().view(-1)
            scale = eta * active.view(-1).float() * (margin + 1e-4)
            scale = torch.where(norm > 0, scale / norm.clamp_min(1e-30), torch.zeros_like(scale))
            x_adv = (xv.detach() + scale.view(shape).to(grad.dtype) * grad).detach()
            if clamp is not None:
                x_adv = x_adv.clamp(-clamp, clamp)
    return x_adv.detach()


def bss_select(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
               target: torch.Tensor, max_count: int) -> torch.Tensor:
    """Indices of the base samples to attack: both networks right, at most ``max_count``.

    When more qualify, those with the largest ``Σ_{c≠y} (p_t,c − p_s,c)²`` (softmax at T = 1:
    where the student's non-target distribution is furthest from the teacher's) are kept, in
    that order (official lines 106-117); otherwise they come in batch order.
    """
    with torch.no_grad():
        s, t = student_logits.float(), teacher_logits.float()
        ok = (t.argmax(dim=1) == target) & (s.argmax(dim=1) == target)
        idx = torch.nonzero(ok).flatten()
        if idx.numel() <= max_count:
            return idx
        diff = (t[idx].softmax(dim=1) - s[idx].softmax(dim=1)) ** 2
        score = diff.sum(dim=1) - diff.gather(1, target[idx].view(-1, 1)).view(-1)
        order = torch.sort(score, descending=True, stable=True).indices
        return idx[order[:max_count]]


def bss_target_classes(teacher_logits: torch.Tensor,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """One target class per sample, drawn among the teacher's non-top-1 classes with
    probability ``p_c / Σ_{c'≠top} p_c'`` (official lines 120-131).

    Computed as the softmax of the logits with the top-1 class masked out, so it never has a
    zero sum even when the teacher is saturated.
    """
    with torch.no_grad():
        z = teacher_logits.float()
        top = z.argmax(dim=1, keepdim=True)
        probs = z.scatter(1, top, float("-inf")).softmax(dim=1)
        return torch.multinomial(probs, 1, generator=generator).view(-1)


def bss_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
           T: float = 3.0) -> torch.Tensor:
    """``KL(softmax(t/T) ‖ softmax(s/T))`` summed over classes, averaged over the samples, *no*
    T² factor (BSS's weighting, official lines 102 and 141). The official code computes the
    soft-target cross-entropy ``−Σ p_t log p_s``, which is this plus the teacher's entropy: the
    same gradient for the student. The teacher's side is treated as a constant."""
    log_p_s = F.log_softmax(student_logits.float() / T, dim=1)
    log_p_t = F.log_softmax(teacher_logits.detach().float() / T, dim=1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1).mean()


def kd_schedule(epoch: int, epochs: int, start: float = 4.0, end: float = 1.0) -> float:
    """BSS's weight of the clean KD term at ``epoch`` (1-based) of ``epochs``:
    ``end + (start − end)·max(1 − epoch/epochs, 0)`` (official line 197: 4 → 1)."""
    return end + (start - end) * max(1.0 - epoch / epochs, 0.0)


def bss_schedule(epoch: int, epochs: int, start: float = 2.0, stop: float = 0.75) -> float:
    """BSS's weight of the adversarial KD term at ``epoch`` (1-based) of ``epochs``:
    ``start·max(1 − epoch/(stop·epochs), 0)`` (official line 198: 2 → 0 at 3/4 of training)."""
    return start * max(1.0 - epoch / (stop * epochs), 0.0)


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


# ============================== the distiller ===================================================


@register_loss(
    "bss", family="decision boundary", year=2019,
    repo="https://github.com/bhheo/BSS_distillation",
    description="KD plus KD on adversarial samples pushed to the teacher's decision "
                "boundary (phased out at 3/4 of training)",
    paper="Heo et al., Knowledge Distillation with Adversarial Samples Supporting Decision "
          "Boundary, AAAI 2019",
    defaults={"w_ce": 1.0, "w_kd": 1.0, "w_bss": 1.0, "T": 3.0, "steps": 10, "eta": 0.3,
              "sample_ratio": 0.25, "kd_start": 4.0, "kd_end": 1.0, "bss_start": 2.0,
              "bss_stop": 0.75, "clamp": 2.5, "schedule_epochs": None},
    types={"clamp": float | None, "schedule_epochs": int | None},
    taps=("logits",),
    cost="while the BSS weight is > 0 (the first 3/4 of training), per batch on the "
         "<= sample_ratio·B attacked samples: `steps` (10) teacher forward+backward passes "
         "to the input, 1 teacher forward, 1 student forward+backward; measured: an epoch "
         "costs 2.3x KD's (CIFAR-10, resnet20 -> resnet8, batch 128, 1 CPU thread)")
class BSS(Distiller):
    """BSS distillation: ``w_ce·CE + w_kd·α(e)·KL_T(clean) + w_bss·β(e)·KL_T(x_adv)``.

    Terms (unweighted by ``w_*``, the schedules included): ``kd`` = α(e)·KL on the batch,
    ``bss`` = β(e)·KL on the boundary supporting samples (0 once β(e) = 0 or when no sample
    qualifies). ``e = epoch + 1`` (the engine counts from 0, the official code from 1).
    Formulas and official defaults: the module docstring; the differences from the official
    code: ``docs/fidelity/bss.md``.

    Seams: ``forward`` takes the engine's ``batch=`` (:class:`kdbench.stages.Batch`) and
    attacks ``batch.x`` (the normalised images the student and teacher saw). The teacher and
    student *modules* come from the :class:`DistillContext` at construction and are kept as
    plain references (not submodules: they are not in this module's parameters or state_dict).
    The schedules need the run's epoch count: option ``schedule_epochs``, else ``ctx.epochs``
    (the runner's ``recipe.epochs``).

    Cost per batch while β(e) > 0, on the ≤ ``sample_ratio``·B attacked samples: ``steps``
    teacher forward+backward passes (to the input), 1 teacher forward and 1 student
    forward+backward; nothing extra afterwards.
    """

    taps = frozenset({"logits"})
    needs_teacher = True

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        teacher = require_teacher(ctx, "bss")
        o = self.options
        self.T = option(o, "T", "bss", positive=True)
        self.steps = option(o, "steps", "bss", nonneg=True, integer=True)
        self.eta = option(o, "eta", "bss", positive=True)
        self.sample_ratio = option(o, "sample_ratio", "bss", positive=True)
        if self.sample_ratio > 1:
            raise ConfigError(f"loss 'bss' option sample_ratio must be in (0, 1], got "
                              f"{self.sample_ratio!r}")
        self.kd_start = option(o, "kd_start", "bss", nonneg=True)
        self.kd_end = option(o, "kd_end", "bss", nonneg=True)
        self.bss_start = option(o, "bss_start", "bss", nonneg=True)
        self.bss_stop = option(o, "bss_stop", "bss", positive=True)
        if self.bss_stop > 1:
            raise ConfigError(f"loss 'bss' option bss_stop must be in (0, 1], got "
                              f"{self.bss_stop!r}")
        self.clamp = o.get("clamp")
        if self.clamp is not None:
            self.clamp = option(o, "clamp", "bss", positive=True)
        epochs = o.get("schedule_epochs") or getattr(ctx, "epochs", None)
        if epochs is None:
            raise ConfigError("loss 'bss' needs the number of training epochs for its "
                              "schedules: set option schedule_epochs (the official run: 80)")
        if isinstance(epochs, bool) or int(epochs) != epochs or epochs < 1:
            raise ConfigError(f"loss 'bss' option schedule_epochs must be an integer >= 1, "
                              f"got {epochs!r}")
        self.epochs = int(epochs)
        # a tuple hides the modules from nn.Module's registration: no double counting of their
        # parameters, nothing of theirs in this module's state_dict
        self._models: tuple[nn.Module, nn.Module] = (ctx.student, teacher)
        device = next(ctx.student.parameters()).device
        # the loss's own generator (as CRD's): fixed by the run's seed, saved with the distiller
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(int(torch.randint(0, 2**62, (1,)).item()))

    def get_extra_state(self) -> Any:
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state: Any) -> None:
        self.generator.set_state(state["generator"].cpu())

    def weights_at(self, epoch: int) -> tuple[float, float]:
        """(α, β) at the engine's 0-based ``epoch``."""
        e = epoch + 1
        return (kd_schedule(e, self.epochs, self.kd_start, self.kd_end),
                bss_schedule(e, self.epochs, self.bss_start, self.bss_stop))

    def forward(self, student, teacher, target, index=None, epoch=0, *, batch=None):
        if batch is None:
            raise ConfigError("loss 'bss' needs the batch inputs: the engine must call the "
                              "distiller with batch=<kdbench.stages.Batch>")
        inputs = batch.x
        alpha, beta = self.weights_at(epoch)
        terms = {"kd": alpha * bss_kd(student.logits, teacher.logits, self.T)}
        zero = torch.zeros((), device=student.logits.device)
        if beta <= 0 or self.steps == 0:
            terms["bss"] = zero
            return terms
        limit = max(1, int(self.sample_ratio * target.shape[0]))
        idx = bss_select(student.logits, teacher.logits, target, limit)
        if idx.numel() == 0:
            terms["bss"] = zero
            return terms
        s_model, t_model = self._models
        classes = bss_target_classes(teacher.logits[idx], self.generator)
        with _eval_mode(t_model):
            x_adv = bss_attack(t_model, inputs[idx], classes, steps=self.steps, eta=self.eta,
                               clamp=self.clamp)
            with torch.no_grad():
                t_adv = t_model(x_adv)
        s_adv = s_model(x_adv)
        terms["bss"] = beta * bss_kd(s_adv, t_adv, self.T)
        return terms
