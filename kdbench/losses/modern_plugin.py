"""Modern logit losses plugin: registers DIST, MLKD, NKD, TTM, WTTM and RLD with their official
CIFAR-100 defaults, and describes the two *modifiers* of logit losses, ``ls`` (logit
standardisation) and ``ctkd`` (curriculum temperature), that a loss name carries as a suffix
(``kd+ls``, ``dkd+ls+ctkd``, ``kd+crd+ctkd``: :func:`kdbench.losses.entry` and
:func:`kdbench.losses.resolve`).

Every registration carries ``paper``, ``year``, ``repo`` (the official code the defaults come
from), ``family`` and ``defaults`` (every weight and option). A modifier is not a loss: it is a
set of weights and options it puts on the losses it applies to (:func:`modifier_settings`), with
per-pair values where the official runs used them (LS: :data:`LS_TABLE`), under the user's own
values and over a preset's (:func:`modifier_keys`). On a composite it changes only the parts it
applies to: CTKD's official scripts run PKT, SP, VID, CRD with the learnable temperature on
their KD term (``kd+pkt+ctkd`` is ``--distill pkt -r 0.1 -a 0.9 -b 30000``), and LS's copy of
them standardises that KD term alone (``CTKD/train_student.py`` line 314,
``CTKD/helper/loops.py`` line 174), so ``crd+kd+ls`` standardises the KD part and leaves CRD
as it is. Modifier names are reserved: a loss plugin named ``ls`` or ``ctkd`` is read as the
modifier in a composite name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..hookspecs import hookimpl
from . import combine
from .logit import arch_key
from .modern_logit import DIST, MLKD, NKD, RLD, TTM, WTTM, MLKDNoAug

__all__ = ["LOSSES", "LS_TABLE", "MODIFIERS", "Modifier", "apply_modifier", "ls_values",
           "modifier_keys", "modifier_settings", "modifiers_settings", "register_losses",
           "split_modifiers"]

_MLKD_WEIGHTS = {"w_ce": 0.1, "w_mlkd_instance": 0.9, "w_mlkd_class": 0.9, "w_mlkd_batch": 0.9}
_MLKD_OPTIONS = {"T": 4.0, "variant": "official", "standardize": False}

#: name -> (factory, registration metadata)
LOSSES: dict[str, tuple[type, dict[str, Any]]] = {
    "dist": (DIST, {
        "description": "DIST: Pearson relations of softened predictions, inter- and intra-class",
        "paper": "Huang et al., Knowledge Distillation from A Stronger Teacher, NeurIPS 2022",
        "year": 2022, "repo": "https://github.com/hunto/DIST_KD",
        # dist_cifar.yaml: ori_loss_weight 1, kd_loss_weight 2, kd dist_t4 (β = γ = 1, τ = 4)
        "defaults": {"w_ce": 1.0, "w_dist": 2.0, "beta": 1.0, "gamma": 1.0, "T": 4.0}}),
    "mlkd": (MLKD, {
        "description": "multi-level logit distillation: instance, class and batch alignment at "
                       "five temperatures on a weak and a strong (RandAugment) view",
        "paper": "Jin et al., Multi-Level Logit Distillation, CVPR 2023",
        "year": 2023, "repo": "https://github.com/Jin-Ying/Multi-Level-Logit-Distillation",
        # cfg.py KD: T 4, CE 0.1, KD 0.9 (on every level); CE on both views
        "defaults": {**_MLKD_WEIGHTS, "w_mlkd_ce_strong": 0.1, **_MLKD_OPTIONS}}),
    "mlkd_noaug": (MLKDNoAug, {
        "description": "MLKD on one (ordinary) view, as RLD's authors compare it",
        "paper": "Jin et al., Multi-Level Logit Distillation, CVPR 2023 (single-view form of "
                 "Sun et al., Knowledge Distillation with Refined Logits, ICCV 2025)",
        "year": 2023, "repo": "https://github.com/zju-SWJ/RLD",
        "defaults": {**_MLKD_WEIGHTS, **_MLKD_OPTIONS}}),
    "nkd": (NKD, {
        "description": "normalized KD: target-class term plus normalised non-target term",
        "paper": "Yang et al., From Knowledge Distillation to Self-Knowledge Distillation: A "
                 "Unified Approach with Normalized Loss and Customized Soft Labels, ICCV 2023",
        "year": 2023, "repo": "https://github.com/yzd-v/cls_KD",
        # configs/distillers/cifar100/res34_distill_res18_cifar.py: temp 3.0, gamma 3.5
        "defaults": {"w_ce": 1.0, "w_nkd": 1.0, "T": 3.0, "gamma": 3.5}}),
    "ttm": (TTM, {
        "description": "transformed teacher matching: power-transformed teacher, plain student",
        "paper": "Zheng & Yang, Knowledge Distillation Based on Transformed Teacher Matching, "
                 "ICLR 2024",
        "year": 2024, "repo": "https://github.com/zkxufo/TTM",
        # README: --distill ttm --ttm_l 0.1 -r 1 -b 45 -a 0 (vgg13 -> vgg8)
        "defaults": {"w_ce": 1.0, "w_ttm": 45.0, "gamma": 0.1}}),
    "wttm": (WTTM, {
        "description": "weighted TTM: TTM weighted per sample by the teacher's power sum",
        "paper": "Zheng & Yang, Knowledge Distillation Based on Transformed Teacher Matching, "
                 "ICLR 2024",
        "year": 2024, "repo": "https://github.com/zkxufo/TTM",
        # README's only WTTM setting: --add wttm --ttm_l 0.2 -a 4 (with CRD -b 0.8)
        "defaults": {"w_ce": 1.0, "w_wttm": 4.0, "gamma": 0.2}, "combo": {"w_wttm": 4.0}}),
    "rld": (RLD, {
        "description": "refined logit distillation: sample confidence + masked correlation",
        "paper": "Sun et al., Knowledge Distillation with Refined Logits, ICCV 2025",
        "year": 2025, "repo": "https://github.com/zju-SWJ/RLD",
        # cfg.py RLD: CE 1, α 1, β 8, T 4, ALPHA_T 1, warm-up 20; README runs --same-t
        "defaults": {"w_ce": 1.0, "w_rld": 1.0, "alpha": 1.0, "beta": 8.0, "T": 4.0,
                     "same_T": True, "scd_T": 1.0, "warmup": 20, "standardize": False}}),
}
for _factory, _meta in LOSSES.values():
    _meta.update(family="logit", taps=("logits",), finalize=_factory.finalize)


@hookimpl
def register_losses(register):
    for name, (factory, meta) in LOSSES.items():
        register(name, factory, **meta)


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
    """What ``+ls`` sets on one loss, following LS's ``tools/train.py`` (lines 110-121; RLD's
    ``tools/train.py`` lines 170-192 for rld and mlkd_noaug): KD's weight and temperature
    replaced, DKD's and RLD's α and β multiplied by the KD weight (here: their own weight set
    to it), every MLKD level weighted by it. The CE weights stay the method's (0.1 for KD and
    MLKD: LS's configuration default, 1 for DKD and RLD). With ``ctkd`` as well, KD takes the
    defaults 2 and 9 for every pair, as LS's CTKD logs (``logs/CTKD/ctkd,T,S,2,9.txt``)."""
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
    official DKD has none (``helper/loops.py`` line 170). The weights stay the loss's (CTKD's
    scripts run KD with ``-r 0.1 -a 0.9``, kdbench's KD defaults)."""
    return {}, ({"ctkd": True, "warmup": 0} if part == "dkd" else {"ctkd": True})


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
    parts = combine.split(name)
    mods = [p for p in parts if p in MODIFIERS]
    losses = [p for p in parts if p not in MODIFIERS]
    if not losses:
        raise ConfigError(f"loss {name!r} names only modifiers ({', '.join(mods)}); "
                          f"add a loss, e.g. kd+{mods[0]}")
    return combine.SEPARATOR.join(losses), mods


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
    parts = combine.split(loss)
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
    parts = combine.split(loss)
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
