"""The two modifiers of logit losses, named by a ``+name`` suffix of a loss name: ``ls`` (logit
standardisation, Sun et al. CVPR 2024) and ``ctkd`` (curriculum temperature, Li et al. AAAI 2023).

``kd+ls``, ``dkd+ls+ctkd``, ``kd+crd+ctkd``: :func:`kdbench.losses.entry` and
:func:`kdbench.losses.resolve` read them. A modifier is not a loss: it is a set of weights and
options it puts on the losses it applies to (:func:`modifier_settings`), with per-pair values
where the official runs used them (LS: :data:`LS_TABLE`), under the user's own values and over a
preset's (:func:`modifier_keys`). On a composite it changes only the parts it applies to
(``crd+kd+ls`` standardises the KD part and leaves CRD as it is). Modifier names are reserved: a
loss plugin named ``ls`` or ``ctkd`` is read as the modifier in a composite name.

The losses they apply to carry their options (:data:`STANDARDIZE_DEFAULTS`,
:data:`CTKD_DEFAULTS`), off by default, and off they leave the computation unchanged; this
module holds the pure parts (:func:`standardize`, :func:`ctkd_lambda`,
:func:`gradient_reversal`, :func:`curriculum_temperature`) and CTKD's learnable temperature
(:class:`CurriculumTemperature`). Fidelity notes: ``docs/fidelity/ls.md``,
``docs/fidelity/ctkd.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from . import compose
from .base import arch_key, option

__all__ = ["CTKD_DEFAULTS", "LS_DEFAULT", "LS_TABLE", "MODIFIERS", "MODIFIER_DEFAULTS",
           "MODIFIER_OPTIONS", "STANDARDIZE_DEFAULTS", "CurriculumTemperature", "Modified",
           "Modifier", "apply_modifier", "check_modifier_options", "ctkd_lambda",
           "curriculum_from_options", "curriculum_temperature",
           "gradient_reversal", "ls_values", "modifier_keys", "modifier_settings",
           "modifiers_settings", "split_modifiers", "standardize", "standardize_option"]

#: the option a loss gains from the logit-standardisation modifier (off: the loss unchanged)
STANDARDIZE_DEFAULTS: dict[str, Any] = {"standardize": False}
#: the options a loss gains from the CTKD modifier, with CTKD's official values
CTKD_DEFAULTS: dict[str, Any] = {"ctkd": False, "ctkd_t_start": 1.0, "ctkd_t_end": 20.0,
                                 "ctkd_loops": 10}
#: the options of both modifiers, off, as the losses they apply to register them
MODIFIER_DEFAULTS: dict[str, Any] = {**STANDARDIZE_DEFAULTS, **CTKD_DEFAULTS}
#: the LS and CTKD modifiers' options, newer than kd's and dkd's first records
MODIFIER_OPTIONS = (*STANDARDIZE_DEFAULTS, *CTKD_DEFAULTS)


# ============================== logit standardisation (LS) =====================================


def standardize(logits: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Sun et al., "Logit Standardization in Knowledge Distillation" (CVPR 2024): the Z-score.

    ``(z − mean_c z) / (ε + std_c z)`` per sample, with the *unbiased* standard deviation
    (``torch.std``'s default, divisor C − 1) and ε = 1e-7 added to it, as the official
    ``normalize`` (sunshangquan/logit-standardization-KD). Applied to student and teacher alike,
    before the temperature; the paper's "base temperature" is then the ordinary ``T`` of the loss
    (2 in the official runs). The student's side is differentiated through, as in the official
    code. Fidelity: ``docs/fidelity/ls.md``.
    """
    z = logits.float()
    return (z - z.mean(dim=1, keepdim=True)) / (eps + z.std(dim=1, keepdim=True))


def standardize_option(options: dict[str, Any], loss: str) -> bool:
    """The ``standardize`` option (absent: False), which must be a bool."""
    value = options.get("standardize", False)
    if not isinstance(value, bool):
        raise ConfigError(f"loss {loss!r} option standardize must be true or false, got {value!r}")
    return value


# ============================== CTKD: curriculum temperature ====================================


def ctkd_lambda(epoch: int, loops: int = 10) -> float:
    """CTKD's gradient-reversal strength λ ∈ [0, 1] for a 0-based ``epoch``.

    ``λ = (1 − cos(π · min(epoch + 1, loops) / loops)) / 2``: a cosine ramp from 0 that reaches 1
    after ``loops`` epochs and stays there (official ``CosineDecay(max 0, min −1, loops 10)``,
    zhengli97/CTKD, whose −λ the reversal layer multiplies the gradient by: the net effect is the
    gradient reversed with strength λ, split here between this function and
    :func:`gradient_reversal`). The first epoch already has λ = (1 − cos(π/10))/2 ≈ 0.024.
    Fidelity: ``docs/fidelity/ctkd.md``.
    """
    i = min(max(epoch + 1, 0), loops)
    return (1.0 - math.cos(math.pi * i / loops)) / 2.0


def gradient_reversal(x: torch.Tensor, strength: float) -> torch.Tensor:
    """Identity forward, gradient multiplied by ``−strength`` backward (Ganin & Lempitsky 2015).

    Written as ``x̄ − s·(x − x̄)`` with ``x̄ = x.detach()``: the forward value is exactly ``x``
    (``x − x̄`` is exactly 0), the derivative is ``−s``; no custom autograd function needed.
    """
    base = x.detach()
    return base - strength * (x - base)


def curriculum_temperature(theta: torch.Tensor, strength: float, t_start: float = 1.0,
                           t_end: float = 20.0) -> torch.Tensor:
    """Li et al., "Curriculum Temperature for Knowledge Distillation" (AAAI 2023), global form.

    ``T = t_start + t_end · σ(GRL_λ(θ))`` (zhengli97/CTKD): T ∈ (1, 21) with the official
    t_start = 1, t_end = 20; θ is one learnable scalar (``Global_T``, initialised to 1, so T
    starts at 1 + 20·σ(1) ≈ 15.6). Through the reversal the student's optimiser moves θ to
    *increase* the distillation loss, with strength λ. Returned as a 0-dim tensor.
    Fidelity: ``docs/fidelity/ctkd.md``.
    """
    return (t_start + t_end * torch.sigmoid(gradient_reversal(theta, strength))).reshape(())


class CurriculumTemperature(nn.Module):
    """CTKD's global learnable temperature ``T = t_start + t_end · σ(θ)``, θ trained with the
    student through a gradient-reversal layer of strength λ(epoch) (:func:`ctkd_lambda`).

    Li et al., "Curriculum Temperature for Knowledge Distillation" (AAAI 2023); official code
    zhengli97/CTKD. Official defaults: θ₀ = 1, t_start = 1, t_end = 20, cosine λ from 0 to 1 over
    10 epochs. θ is a distiller parameter, so it is in the student's optimiser with the student's
    learning rate, momentum and weight decay, as in the official ``trainable_list``. The
    instance-wise variant the README mentions is not in the official repository; this is the
    global one its scripts run. Fidelity: ``docs/fidelity/ctkd.md``.
    """

    def __init__(self, t_start: float = 1.0, t_end: float = 20.0, loops: int = 10,
                 init: float = 1.0):
        super().__init__()
        self.t_start, self.t_end, self.loops = float(t_start), float(t_end), int(loops)
        self.theta = nn.Parameter(torch.full((1,), float(init)))

    def strength(self, epoch: int) -> float:
        return ctkd_lambda(epoch, self.loops)

    def forward(self, epoch: int) -> torch.Tensor:
        return curriculum_temperature(self.theta, self.strength(epoch), self.t_start,
                                      self.t_end)

    def extra_repr(self) -> str:
        return f"t_start={self.t_start}, t_end={self.t_end}, loops={self.loops}"


def curriculum_from_options(options: dict[str, Any], loss: str) -> CurriculumTemperature | None:
    """The CTKD temperature when option ``ctkd`` is on (else None), from ``ctkd_t_start``,
    ``ctkd_t_end`` and ``ctkd_loops``; a loss's fixed ``T`` is then unused (as in the official
    code, where ``--kd_T`` is ignored once ``--have_mlp 1``)."""
    on = options.get("ctkd", False)
    if not isinstance(on, bool):
        raise ConfigError(f"loss {loss!r} option ctkd must be true or false, got {on!r}")
    if not on:
        return None
    o = {**CTKD_DEFAULTS, **options}
    return CurriculumTemperature(option(o, "ctkd_t_start", loss, positive=True),
                                 option(o, "ctkd_t_end", loss, positive=True),
                                 option(o, "ctkd_loops", loss, positive=True, integer=True))


def check_modifier_options(options: dict[str, Any], loss: str) -> None:
    """The ``standardize`` and ``ctkd`` options checked (a bad value is a one-line error)."""
    standardize_option(options, loss)
    curriculum_from_options(options, loss)


class Modified:
    """The two modifiers on a KD-style distiller (``kd``, ``dkd``): ``standardize`` Z-scores
    both logit sets first, ``ctkd`` replaces the distiller's fixed ``T`` by CTKD's learnable
    temperature (its θ a parameter of the distiller). Off, the logits and ``T`` pass through."""

    def _setup_modifiers(self, loss: str) -> None:
        options = self.options  # type: ignore[attr-defined]
        self.standardize = standardize_option(options, loss)
        self.temperature = curriculum_from_options(options, loss)

    def modified(self, student: Any, teacher: Any, epoch: int
                 ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """(student logits, teacher logits, temperature) with the modifiers applied."""
        s, t = student.logits, teacher.logits
        if self.standardize:
            s, t = standardize(s), standardize(t)
        return s, t, self.T if self.temperature is None else self.temperature(epoch)


# ============================== logit standardisation: per-pair values ==========================

#: LS's official CIFAR-100 runs per (teacher, student), names as :func:`arch_key` spells them:
#: (base temperature, KD weight) for kd and mlkd, (base temperature, KD weight, DKD β) for dkd.
#: From the log file names the README links (``logs/<METHOD>/<method>,TEACHER,STUDENT,BASE_TEMP,
#: KD_WEIGHT[,BETA].txt``), β for the two dkd logs without it from the dkd configs (8).
#: kd (resnet50, mobilenetv2) is logged with weight 1, not 9: kept as logged.
LS_TABLE: dict[str, dict[tuple[str, str], tuple[float, ...]]] = {
    "kd": {
        ("resnet32x4", "resnet8x4"): (2, 9), ("vgg13", "vgg8"): (3, 9),
        ("wrn402", "wrn401"): (2, 9), ("wrn402", "wrn162"): (2, 9),
        ("resnet56", "resnet20"): (2, 9), ("resnet110", "resnet32"): (2, 9),
        ("resnet110", "resnet20"): (4, 12), ("resnet32x4", "shufflev2"): (2, 9),
        ("resnet32x4", "wrn162"): (3, 9), ("resnet32x4", "wrn402"): (3, 9),
        ("wrn402", "resnet8x4"): (2, 9), ("wrn402", "mobilenetv2"): (3, 9),
        ("vgg13", "mobilenetv2"): (3, 9), ("resnet50", "mobilenetv2"): (3, 1)},
    "dkd": {
        ("resnet32x4", "resnet8x4"): (2, 9, 8), ("vgg13", "vgg8"): (2, 15, 2),
        ("wrn402", "wrn401"): (2, 12, 2), ("wrn402", "wrn162"): (2, 12, 2),
        ("resnet56", "resnet20"): (3, 18, 2), ("resnet110", "resnet32"): (2, 15, 2),
        ("resnet110", "resnet20"): (2, 15, 2), ("resnet32x4", "shufflev2"): (2, 9, 8),
        ("resnet32x4", "wrn162"): (2, 9, 2), ("resnet32x4", "wrn402"): (2, 9, 8),
        ("wrn402", "resnet8x4"): (2, 18, 2), ("wrn402", "mobilenetv2"): (2, 15, 2),
        ("vgg13", "mobilenetv2"): (3, 9, 2), ("resnet50", "mobilenetv2"): (2, 15, 2)},
    "mlkd": {
        ("resnet32x4", "resnet8x4"): (2, 9), ("vgg13", "vgg8"): (2, 6),
        ("wrn402", "wrn401"): (2, 9), ("wrn402", "wrn162"): (2, 9),
        ("resnet110", "resnet32"): (2, 9), ("resnet110", "resnet20"): (2, 9),
        ("resnet32x4", "shufflev2"): (2, 6), ("resnet32x4", "wrn162"): (2, 9),
        ("resnet32x4", "wrn402"): (2, 9), ("wrn402", "resnet8x4"): (2, 9),
        ("vgg13", "mobilenetv2"): (2, 6), ("resnet50", "mobilenetv2"): (2, 9)},
}
#: LS's command-line defaults (``tools/train.py``: ``--base-temp 2 --kd-weight 9``)
LS_DEFAULT = (2.0, 9.0)


def ls_values(loss: str, teacher: str | None, student: str | None,
              per_pair: bool = True) -> tuple[float, ...]:
    """LS's (base temperature, KD weight[, β]) for ``loss`` and the pair, else the defaults
    (2, 9; β left as configured)."""
    table = LS_TABLE.get(loss, {}) if per_pair else {}
    return tuple(float(v) for v in table.get((arch_key(teacher), arch_key(student)), LS_DEFAULT))


def _ls_settings(part: str, teacher: str | None, student: str | None, per_pair: bool,
                 others: tuple[str, ...]) -> tuple[dict[str, float], dict[str, Any]]:
    """What ``+ls`` sets on one loss, following LS's (and, for rld and mlkd_noaug, RLD's)
    ``tools/train.py``: KD's weight and temperature replaced, DKD's and RLD's α and β multiplied
    by the KD weight (here: their own weight set to it), every MLKD level weighted by it. The CE
    weights stay the method's (0.1 for KD and MLKD: LS's configuration default, 1 for DKD and
    RLD). With ``ctkd`` as well, KD takes the defaults 2 and 9 for every pair, as LS's CTKD logs.
    Fidelity: ``docs/fidelity/ls.md``."""
    T, w, *beta = ls_values(part, teacher, student, per_pair and "ctkd" not in others)
    options: dict[str, Any] = {"standardize": True, "T": T}
    if part == "kd":
        weights = {"w_ce": 0.1, "w_kd": w}
    elif part == "dkd":
        # LS's own β per pair, never mdistiller's table: LS ran vgg13 -> vgg8 at β 2 where
        # mdistiller's config says 6 (pairs LS did not run keep the configured β)
        weights = {"w_dkd": w}
        options.update({"beta": beta[0]} if beta else {}, beta_table=False)
    elif part == "rld":
        weights = {"w_rld": w}
        options["scd_T"] = T
    else:  # mlkd, mlkd_noaug: KD.LOSS.KD_WEIGHT multiplies every level
        weights = {f"w_mlkd_{level}": w for level in ("instance", "class", "batch")}
    return weights, options


def _ctkd_settings(part: str, teacher: str | None, student: str | None, per_pair: bool,
                   others: tuple[str, ...]) -> tuple[dict[str, float], dict[str, Any]]:
    """What ``+ctkd`` sets: the learnable temperature on; for DKD also no warm-up, as CTKD's
    official DKD has none. The weights stay the loss's (CTKD's scripts run KD with
    ``-r 0.1 -a 0.9``, kdbench's KD defaults). Fidelity: ``docs/fidelity/ctkd.md``."""
    return {}, ({"ctkd": True, "warmup": 0} if part == "dkd" else {"ctkd": True})


# ============================== the modifiers ===================================================


@dataclass(frozen=True)
class Modifier:
    """A change to some logit losses named by a ``+name`` suffix (``kd+ls``, ``dkd+ctkd``)."""

    name: str
    description: str
    paper: str
    year: int
    repo: str
    applies_to: tuple[str, ...]
    #: (loss part, teacher, student, per_pair, the other modifiers) -> (weights, options)
    settings: Callable[[str, str | None, str | None, bool, tuple[str, ...]],
                       tuple[dict[str, float], dict[str, Any]]]
    #: loss part -> its per-pair table, keyed by (teacher, student) (:func:`arch_key` names)
    tables: dict[str, dict[tuple[str, str], Any]] = field(default_factory=dict)


MODIFIERS: dict[str, Modifier] = {
    "ls": Modifier(
        "ls", "logit standardisation: Z-scored logits, base temperature, LS's KD weight",
        "Sun et al., Logit Standardization in Knowledge Distillation, CVPR 2024", 2024,
        "https://github.com/sunshangquan/logit-standardization-KD",
        ("kd", "dkd", "mlkd", "mlkd_noaug", "rld"), _ls_settings, LS_TABLE),
    "ctkd": Modifier(
        "ctkd", "curriculum temperature: learnable T through gradient reversal, cosine λ",
        "Li et al., Curriculum Temperature for Knowledge Distillation, AAAI 2023", 2023,
        "https://github.com/zhengli97/CTKD", ("kd", "dkd"), _ctkd_settings),
}


def split_modifiers(name: str) -> tuple[str, list[str]]:
    """``"crd+kd+ctkd+ls"`` → ``("crd+kd", ["ctkd", "ls"])``: the loss and its modifiers, in the
    order written (a modifier twice, or only modifiers, is a ConfigError)."""
    parts = compose.split(name)
    mods = [p for p in parts if p in MODIFIERS]
    losses = [p for p in parts if p not in MODIFIERS]
    if not losses:
        raise ConfigError(f"loss {name!r} names only modifiers ({', '.join(mods)}); "
                          f"add a loss, e.g. kd+{mods[0]}")
    return compose.SEPARATOR.join(losses), mods


def modifier_settings(loss: str, modifier: str, *, student: str | None = None,
                      teacher: str | None = None, per_pair: bool = True,
                      others: tuple[str, ...] | list[str] = ()
                      ) -> tuple[dict[str, float], dict[str, Any]]:
    """The weights and options ``modifier`` puts on ``loss`` (a registered name or a composite);
    ``per_pair`` uses the official per-pair values where there are some, ``others`` names the
    other modifiers on the same loss (their combination may have its own official values).

    Apply them as defaults *under* the user's own values, e.g.
    ``resolve(loss, {**w_mod, **user_w}, {**o_mod, **user_o}, ...)``. For a composite only the
    parts the modifier applies to are changed, and ``w_ce`` only when that part comes first.
    A loss it does not apply to (a feature loss) is a one-line ConfigError.
    """
    mod = MODIFIERS.get(modifier)
    if mod is None:
        raise ConfigError(f"unknown modifier {modifier!r} (valid: {', '.join(MODIFIERS)})")
    parts = compose.split(loss)
    targets = [p for p in parts if p in mod.applies_to]
    if not targets:
        raise ConfigError(f"modifier {modifier!r} does not apply to loss {loss!r} "
                          f"(it applies to: {', '.join(mod.applies_to)})")
    weights: dict[str, float] = {}
    options: dict[str, Any] = {}
    for part in targets:
        w, o = mod.settings(part, teacher, student, per_pair, tuple(others))
        weights.update({k: v for k, v in w.items() if k != "w_ce" or part == parts[0]})
        options.update(o)
    return weights, options


def modifiers_settings(loss: str, modifiers: list[str] | tuple[str, ...], *,
                       student: str | None = None, teacher: str | None = None,
                       per_pair: bool = True) -> tuple[dict[str, float], dict[str, Any]]:
    """What several modifiers on one loss set together (``kd+ls+ctkd``): each one's
    :func:`modifier_settings`, with the others named, applied in the order written."""
    weights: dict[str, float] = {}
    options: dict[str, Any] = {}
    for mod in modifiers:
        others = tuple(m for m in modifiers if m != mod)
        w, o = modifier_settings(loss, mod, student=student, teacher=teacher,
                                 per_pair=per_pair, others=others)
        weights.update(w)
        options.update(o)
    return weights, options


def modifier_keys(loss: str, modifiers: list[str] | tuple[str, ...]) -> dict[str, set[str]]:
    """Loss part -> every weight and option key ``modifiers`` may set on it, whatever the pair
    (the union over the pairs of the modifiers' tables and an unknown pair): the keys a
    preset's values for that part must leave to the modifier."""
    keys: dict[str, set[str]] = {}
    parts = compose.split(loss)
    for mod in modifiers:
        spec = MODIFIERS[mod]
        others = tuple(m for m in modifiers if m != mod)
        for part in (p for p in parts if p in spec.applies_to):
            pairs = [(None, None), *spec.tables.get(part, {})]
            for teacher, student in pairs:
                w, o = spec.settings(part, teacher, student, True, others)
                keys.setdefault(part, set()).update(
                    k for k in (*w, *o) if k != "w_ce" or part == parts[0])
    return keys


def apply_modifier(loss: str, modifier: str, weights: dict[str, float], options: dict[str, Any],
                   *, student: str | None = None, teacher: str | None = None,
                   per_pair: bool = True, others: tuple[str, ...] | list[str] = ()) -> None:
    """Put :func:`modifier_settings` into already resolved ``weights`` and ``options``."""
    w, o = modifier_settings(loss, modifier, student=student, teacher=teacher,
                             per_pair=per_pair, others=others)
    weights.update(w)
    options.update(o)
