"""``mlkd`` and ``mlkd_noaug``: Jin et al., "Multi-Level Logit Distillation" (CVPR 2023).

Instance-, class- and batch-level alignment of the softened predictions, each summed over five
temperatures (the paper's prediction augmentation), on a weak and a strong (RandAugment) view
(``mlkd``) or on the ordinary view alone (``mlkd_noaug``, as RLD's authors compare it). Official
code Jin-Ying/Multi-Level-Logit-Distillation (and, with one view, zju-SWJ/RLD); official
CIFAR-100 defaults T = 4 (plus 3, 5, 2, 6), CE weight 0.1, every level weighted 0.9. The
official code's quirks, which ``variant="official"`` (the default) reproduces:
``docs/fidelity/mlkd.md``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .base import Checked, DistillContext, Temperature, choice, option, register_loss
from .modifiers import standardize, standardize_option

__all__ = ["MLKD", "MLKD_TEMPERATURES", "MLKDNoAug", "confidence_fractions", "mlkd",
           "mlkd_batch", "mlkd_class", "mlkd_instance"]

#: the temperatures MLKD adds to its base T (official ``KD_ours.py``: T, 3, 5, 2, 6 in this order;
#: with LS's base temperature 2, the official code thus uses T = 2 twice and 4 not at all)
MLKD_TEMPERATURES = (3.0, 5.0, 2.0, 6.0)


def _kd_batchmean(s: torch.Tensor, t: torch.Tensor, T: Temperature) -> torch.Tensor:
    log_p_s = F.log_softmax(s / T, dim=1)
    log_p_t = F.log_softmax(t / T, dim=1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(1).mean() * (T * T)


def mlkd_instance(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: Temperature,
                  standardize_logits: bool = False) -> torch.Tensor:
    """MLKD's instance-level term at one temperature: ``T² · mean_i KL(p_t,i ‖ p_s,i)`` (no T² is
    missing: the official ``kd_loss`` multiplies by T²). With ``standardize_logits`` the logits
    are Z-scored first (LS applies it to this level only)."""
    s, t = student_logits.float(), teacher_logits.float()
    if standardize_logits:
        s, t = standardize(s), standardize(t)
    return _kd_batchmean(s, t, T)


def mlkd_class(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
               T: Temperature) -> torch.Tensor:
    """MLKD's class-level term: ``‖P_tᵀP_t − P_sᵀP_s‖²_F / C`` with ``P = softmax(z/T)`` (B × C),
    i.e. the C × C class-correlation matrices (official ``cc_loss``; no T² factor)."""
    p_s = F.softmax(student_logits.float() / T, dim=1)
    p_t = F.softmax(teacher_logits.float() / T, dim=1)
    return (p_t.t() @ p_t - p_s.t() @ p_s).pow(2).sum() / p_s.shape[1]


def mlkd_batch(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
               T: Temperature) -> torch.Tensor:
    """MLKD's batch-level term: ``‖P_tP_tᵀ − P_sP_sᵀ‖²_F / B``, the B × B input-correlation
    matrices (official ``bc_loss``; no T² factor)."""
    p_s = F.softmax(student_logits.float() / T, dim=1)
    p_t = F.softmax(teacher_logits.float() / T, dim=1)
    return (p_t @ p_t.t() - p_s @ p_s.t()).pow(2).sum() / p_s.shape[0]


def confidence_fractions(teacher_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The factors by which MLKD's official confidence masks *scale* its weak-view terms.

    The official code builds ``mask = conf ≤ median(conf)`` over the samples (conf = the teacher's
    top-1 probability) and ``class_mask = Σ_i p_t,ic ≤ median`` over the classes (the median as
    ``np.percentile(·, 50)``, linear interpolation, which ``torch.quantile`` reproduces), then
    multiplies a loss that is *already a batch mean* by the mask and takes ``.mean()``: the
    result is the loss times the fraction of ones in the mask, not a selection of samples. This
    returns those two fractions (sample mask, class mask), each ≥ ½. Fidelity:
    ``docs/fidelity/mlkd.md``.
    """
    p_t = F.softmax(teacher_logits.detach().float(), dim=1)
    conf = p_t.max(dim=1).values
    per_class = p_t.sum(dim=0)
    sample = (conf <= torch.quantile(conf, 0.5)).float().mean()
    klass = (per_class <= torch.quantile(per_class, 0.5)).float().mean()
    return sample, klass


def mlkd(student_weak: torch.Tensor, teacher_weak: torch.Tensor,
         student_strong: torch.Tensor | None = None, teacher_strong: torch.Tensor | None = None,
         *, T: float = 4.0, standardize_logits: bool = False,
         variant: str = "official") -> dict[str, torch.Tensor]:
    """Jin et al., "Multi-Level Logit Distillation" (CVPR 2023): ``{instance, class, batch}``.

    Each level sums its term (:func:`mlkd_instance`, :func:`mlkd_class`, :func:`mlkd_batch`) over
    the temperatures ``𝒯 = (T, 3, 5, 2, 6)`` (the paper's prediction augmentation). Official
    code: Jin-Ying/Multi-Level-Logit-Distillation ``mdistiller/distillers/KD_ours.py`` (two
    views) and, with one view, zju-SWJ/RLD ``mdistiller/distillers/MLKD_NOAUG.py``.

    ``variant="official"`` reproduces that code, quirks included: the confidence masks *scale*
    the weak-view terms (instance and batch by the sample-mask fraction, class by the class-mask
    fraction, :func:`confidence_fractions`); the strong-view instance term at T, 3, 5 uses the
    strong logits but at 2 and 6 the *weak* ones, unmasked; strong-view class and batch terms
    are not part of the loss (the official code computes them and never adds them).
    ``variant="paper"`` is the method as the paper's equations state it: no confidence masks,
    and with a strong view every level is summed over both views, each on its own logits.
    Without a strong view (``mlkd_noaug``) the two variants differ only by the masks. The CE of
    the strong view (also in the official loss) belongs to the distiller. Fidelity, with the
    official line numbers: ``docs/fidelity/mlkd.md``.
    """
    if variant not in ("official", "paper"):
        raise ValueError(f"variant must be 'official' or 'paper', got {variant!r}")
    if (student_strong is None) != (teacher_strong is None):
        raise ValueError("give both strong-view logits or neither")
    temps = (float(T), *MLKD_TEMPERATURES)
    sw, tw = student_weak.float(), teacher_weak.float()

    def level(fn, s, t, **kw):
        return sum(fn(s, t, tau, **kw) for tau in temps)

    instance = level(mlkd_instance, sw, tw, standardize_logits=standardize_logits)
    klass = level(mlkd_class, sw, tw)
    batch = level(mlkd_batch, sw, tw)
    if variant == "official":
        sample_fraction, class_fraction = confidence_fractions(tw)
        instance, klass, batch = (instance * sample_fraction, klass * class_fraction,
                                  batch * sample_fraction)
    if student_strong is not None:
        ss, ts = student_strong.float(), teacher_strong.float()
        if variant == "official":
            instance = instance + sum(
                mlkd_instance(*((ss, ts) if i < 3 else (sw, tw)), tau, standardize_logits)
                for i, tau in enumerate(temps))
        else:
            instance = instance + level(mlkd_instance, ss, ts,
                                        standardize_logits=standardize_logits)
            klass = klass + level(mlkd_class, ss, ts)
            batch = batch + level(mlkd_batch, ss, ts)
    return {"instance": instance, "class": klass, "batch": batch}


_MLKD_WEIGHTS = {"w_ce": 0.1, "w_mlkd_instance": 0.9, "w_mlkd_class": 0.9, "w_mlkd_batch": 0.9}
_MLKD_OPTIONS = {"T": 4.0, "variant": "official", "standardize": False}


@register_loss(
    "mlkd_noaug", family="logit", year=2023, repo="https://github.com/zju-SWJ/RLD",
    description="MLKD on one (ordinary) view, as RLD's authors compare it",
    paper="Jin et al., Multi-Level Logit Distillation, CVPR 2023 (single-view form of "
          "Sun et al., Knowledge Distillation with Refined Logits, ICCV 2025)",
    defaults={**_MLKD_WEIGHTS, **_MLKD_OPTIONS}, taps=("logits",))
class MLKDNoAug(Checked):
    """MLKD on the ordinary single view (``mlkd_noaug``, as RLD's authors run it for a fair
    comparison: zju-SWJ/RLD ``mdistiller/distillers/MLKD_NOAUG.py``): instance, class and batch
    levels over five temperatures, weak-view confidence masks as in the official code.

    Official defaults (``mdistiller/engine/cfg.py`` KD section): T = 4 (plus 3, 5, 2, 6), CE
    weight 0.1, every level weighted 0.9. ``variant`` "official" (default) or "paper" (no
    masks), see :func:`mlkd`; ``standardize`` Z-scores the instance level only, as LS's code.
    """

    name = "mlkd_noaug"

    @classmethod
    def check(cls, options):
        option(options, "T", cls.name, positive=True)
        choice(options, "variant", cls.name, ("official", "paper"))
        standardize_option(options, cls.name)

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        o = self.options
        self.T, self.variant, self.standardize = o["T"], o["variant"], o["standardize"]

    def levels(self, s_weak, t_weak, s_strong=None, t_strong=None) -> dict[str, torch.Tensor]:
        out = mlkd(s_weak, t_weak, s_strong, t_strong, T=self.T,
                   standardize_logits=self.standardize, variant=self.variant)
        return {f"mlkd_{level}": value for level, value in out.items()}

    def forward(self, student, teacher, target, index=None, epoch=0):
        return self.levels(student.logits, teacher.logits)


@register_loss(
    "mlkd", family="logit", year=2023,
    repo="https://github.com/Jin-Ying/Multi-Level-Logit-Distillation",
    description="multi-level logit distillation: instance, class and batch alignment at "
                "five temperatures on a weak and a strong (RandAugment) view",
    paper="Jin et al., Multi-Level Logit Distillation, CVPR 2023",
    # cfg.py KD: T 4, CE 0.1, KD 0.9 (on every level); CE on both views
    defaults={**_MLKD_WEIGHTS, "w_mlkd_ce_strong": 0.1, **_MLKD_OPTIONS}, taps=("logits",))
class MLKD(MLKDNoAug):
    """MLKD with its weak and strong augmented views (CE on both views, as the official loss).

    The engine gives it ``forward(..., views=[(student_strong, teacher_strong)])``: for each
    batch a second augmentation of the *same* images (the ``strong`` augmentation, as the
    official ``get_cifar100_train_transform_strong``: its own RandomCrop(32, pad 4) + flip, then
    RandAugment(N=2, M=10); the ordinary batch is the weak view), the student forwarded on it
    separately in training mode and the teacher in eval mode (as the official ``AugTrainer``),
    the two ``Features`` passed as one pair. Train accuracy stays the weak view's. The strong
    view's CE is the term ``mlkd_ce_strong`` (weight 0.1 like ``w_ce``). The strong view is the
    loss's own, made whatever the data's augmentation: with ``data.augment`` false the weak view
    is the plain image and MLKD still trains on both. Only an online cohort (``--teacher
    peers``) has no second view: refused when the config is resolved
    (:mod:`kdbench.teachers.peers`). Official defaults as :class:`MLKDNoAug`; the official
    recipes are longer (480 or 960 epochs, lr 0.025 or 0.01) - recipe, not loss. Fidelity:
    ``docs/fidelity/mlkd.md``.
    """

    name = "mlkd"
    #: the extra augmented view the engine makes of each batch (an augmentation's name)
    views = ("strong",)

    def forward(self, student, teacher, target, index=None, epoch=0, views=None):
        if not views:
            raise ConfigError("loss 'mlkd' needs a second, strongly augmented view of each batch "
                              "(views=[(student, teacher)]); use mlkd_noaug for one view")
        s_strong, t_strong = views[0]
        terms = self.levels(student.logits, teacher.logits, s_strong.logits, t_strong.logits)
        terms["mlkd_ce_strong"] = F.cross_entropy(s_strong.logits.float(), target)
        return terms
