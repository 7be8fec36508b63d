"""Built-in loss plugin: registers every method with its paper, taps and reference defaults.

Weights (``w_*``) and options are RepDistiller's CIFAR-100 ones (``scripts/run_cifar_distill.sh``,
``train_student.py``; ``-r`` is ``w_ce``, ``-b`` the method's weight) and mdistiller's for DKD.
Each registration names its ``family`` (logit, feature, relation, online; ``baseline`` for CE),
``year`` and ``repo``: the code its defaults come from (RepDistiller for its thirteen methods).
"""

from __future__ import annotations

from ..hookspecs import hookimpl
from . import bss
from .contrastive import CRD
from .feature import AB, AT, FSP, FT, NST, SP, VID, FitNet
from .logit import CE, DKD, DML, KD, arch_key, finalize_dkd, finalize_kd
from .modern_logit import CTKD_DEFAULTS, STANDARDIZE_DEFAULTS
from .relation import CC, PKT, RKD

__all__ = ["CE", "KD", "LOSSES", "register_losses"]

#: the LS and CTKD modifiers' options, newer than kd's and dkd's first records
MODIFIER_OPTIONS = (*STANDARDIZE_DEFAULTS, *CTKD_DEFAULTS)

_INIT = {"init_epochs": 30, "init_lr": None}

#: where the defaults of RepDistiller's thirteen methods come from (the CRD authors' benchmark
#: code; several methods have older official code of their own, with other recipes)
_REPDISTILLER = "https://github.com/HobbitLong/RepDistiller"


#: the students for which RepDistiller pre-trains FT's paraphraser at lr 0.01 (helper/pretrain.py)
FT_LOW_LR = {"resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
             "resnet8x4", "resnet32x4", "wrn161", "wrn162", "wrn401", "wrn402"}


def finalize_ft(weights, options, *, student=None, teacher=None) -> None:
    """RepDistiller pre-trains FT's paraphraser at lr 0.01 for its CIFAR ResNet/WRN students,
    else at the base lr; an explicit ``init_lr`` wins."""
    if options.get("init_lr") is None and arch_key(student) in FT_LOW_LR:
        options["init_lr"] = 0.01


#: name -> (factory, registration metadata)
LOSSES: dict[str, tuple[type, dict]] = {
    "ce": (CE, {
        "family": "baseline",
        "description": "cross-entropy only: the vanilla student (no teacher)", "paper": "-",
        "defaults": {"w_ce": 1.0}, "taps": ("logits",)}),
    "kd": (KD, {
        "family": "logit", "year": 2015, "repo": _REPDISTILLER,
        "description": "Hinton KD: softened-logit KL with T² scaling",
        "paper": "Hinton et al., Distilling the Knowledge in a Neural Network, NIPS-W 2015",
        "defaults": {"w_ce": 0.1, "w_kd": 0.9, "T": 4.0, **STANDARDIZE_DEFAULTS,
                     **CTKD_DEFAULTS}, "combo": {"w_kd": 1.0}, "later": MODIFIER_OPTIONS,
        "finalize": finalize_kd, "taps": ("logits",)}),
    "dkd": (DKD, {
        "family": "logit", "year": 2022, "repo": "https://github.com/megvii-research/mdistiller",
        "description": "decoupled KD: α·target-class + β·non-target-class KL, linear warm-up",
        "paper": "Zhao et al., Decoupled Knowledge Distillation, CVPR 2022",
        "defaults": {"w_ce": 1.0, "w_dkd": 1.0, "alpha": 1.0, "beta": 8.0, "T": 4.0, "warmup": 20,
                  "beta_table": False, **STANDARDIZE_DEFAULTS, **CTKD_DEFAULTS},
        "later": MODIFIER_OPTIONS,
        "finalize": finalize_dkd, "taps": ("logits",)}),
    "dml": (DML, {
        "family": "online", "year": 2018,
        "repo": "https://github.com/YingZhangDUT/Deep-Mutual-Learning",
        "description": "deep mutual learning: KL to each peer's prediction (use --teacher peers)",
        "paper": "Zhang et al., Deep Mutual Learning, CVPR 2018",
        "defaults": {"w_ce": 1.0, "w_dml": 1.0}, "taps": ("logits",)}),
    "fitnet": (FitNet, {
        "family": "feature", "year": 2015, "repo": _REPDISTILLER,
        "description": "FitNet hint: MSE of a conv-regressed student stage to the teacher's",
        "paper": "Romero et al., FitNets: Hints for Thin Deep Nets, ICLR 2015",
        "defaults": {"w_ce": 1.0, "w_hint": 100.0, "hint_stage": 2, "two_stage": False, **_INIT},
        "taps": ("logits", "stages")}),
    "at": (AT, {
        "family": "feature", "year": 2017, "repo": _REPDISTILLER,
        "description": "attention transfer: L2-normalised spatial attention maps, every stage",
        "paper": "Zagoruyko & Komodakis, Paying More Attention to Attention, ICLR 2017",
        "defaults": {"w_ce": 1.0, "w_at": 1000.0, "p": 2.0}, "taps": ("logits", "stages")}),
    "sp": (SP, {
        "family": "relation", "year": 2019, "repo": _REPDISTILLER,
        "description": "similarity-preserving: batch Gram matrices of the last stage",
        "paper": "Tung & Mori, Similarity-Preserving Knowledge Distillation, ICCV 2019",
        "defaults": {"w_ce": 1.0, "w_sp": 3000.0}, "taps": ("logits", "stages")}),
    "cc": (CC, {
        "family": "relation", "year": 2019, "repo": _REPDISTILLER,
        "description": "correlation congruence on 128-d linear embeddings",
        "paper": "Peng et al., Correlation Congruence for Knowledge Distillation, ICCV 2019",
        "defaults": {"w_ce": 1.0, "w_cc": 0.02, "feat_dim": 128}, "taps": ("logits", "embedding")}),
    "vid": (VID, {
        "family": "feature", "year": 2019, "repo": _REPDISTILLER,
        "description": "variational information distillation: Gaussian regressor per stage",
        "paper": "Ahn et al., Variational Information Distillation for Knowledge Transfer, "
              "CVPR 2019",
        "defaults": {"w_ce": 1.0, "w_vid": 1.0, "init_var": 5.0, "eps": 1e-5},
        "taps": ("logits", "stages")}),
    "rkd": (RKD, {
        "family": "relation", "year": 2019, "repo": _REPDISTILLER,
        "description": "relational KD: distance and angle potentials of the embeddings",
        "paper": "Park et al., Relational Knowledge Distillation, CVPR 2019",
        "defaults": {"w_ce": 1.0, "w_rkd": 1.0, "distance": 25.0, "angle": 50.0},
        "taps": ("logits", "embedding")}),
    "pkt": (PKT, {
        "family": "relation", "year": 2018, "repo": _REPDISTILLER,
        "description": "probabilistic knowledge transfer: cosine-kernel conditional KL",
        "paper": "Passalis & Tefas, Learning Deep Representations with Probabilistic Knowledge "
              "Transfer, ECCV 2018",
        "defaults": {"w_ce": 1.0, "w_pkt": 30000.0}, "taps": ("logits", "embedding")}),
    "ab": (AB, {
        "family": "feature", "year": 2019, "repo": _REPDISTILLER,
        "description": "activation boundaries of pre-activations, in a 30-epoch init stage",
        "paper": "Heo et al., Knowledge Transfer via Distillation of Activation Boundaries Formed "
              "by Hidden Neurons, AAAI 2019",
        "defaults": {"w_ce": 1.0, "w_ab": 1.0, "margin": 1.0, "main_term": False, **_INIT},
        "taps": ("logits", "preact")}),
    "ft": (FT, {
        "family": "feature", "year": 2018, "repo": _REPDISTILLER,
        "description": "factor transfer: paraphraser (30-epoch init stage) and translator",
        "paper": "Kim et al., Paraphrasing Complex Network: Network Compression via Factor "
              "Transfer, NeurIPS 2018",
        "defaults": {"w_ce": 1.0, "w_ft": 200.0, "k": 0.5, "p1": 2.0, "p2": 1.0, **_INIT},
        "finalize": finalize_ft, "taps": ("logits", "stages")}),
    "fsp": (FSP, {
        "family": "relation", "year": 2017, "repo": _REPDISTILLER,
        "description": "flow of solution procedure matrices, in a 30-epoch init stage",
        "paper": "Yim et al., A Gift from Knowledge Distillation: Fast Optimization, Network "
              "Minimization and Transfer Learning, CVPR 2017",
        "defaults": {"w_ce": 1.0, "w_fsp": 50.0, "main_term": False, **_INIT},
        "taps": ("logits", "stages")}),
    "nst": (NST, {
        "family": "feature", "year": 2017, "repo": _REPDISTILLER,
        "description": "neuron selectivity transfer: polynomial-kernel MMD, every stage",
        "paper": "Huang & Wang, Like What You Like: Knowledge Distill via Neuron Selectivity "
              "Transfer, 2017",
        "defaults": {"w_ce": 1.0, "w_nst": 50.0}, "taps": ("logits", "stages")}),
    "crd": (CRD, {
        "family": "feature", "year": 2020, "repo": _REPDISTILLER,
        "description": "contrastive representation distillation: NCE over a memory bank",
        "paper": "Tian et al., Contrastive Representation Distillation, ICLR 2020",
        "defaults": {"w_ce": 1.0, "w_crd": 0.8, "feat_dim": 128, "nce_k": 16384, "nce_t": 0.07,
                  "nce_m": 0.5, "negatives": "class"},
        "taps": ("logits", "embedding", "index")}),
}


@hookimpl
def register_losses(register):
    for name, (factory, meta) in LOSSES.items():
        register(name, factory, **meta)
    # the decision-boundary family (Heo et al., AAAI 2019): its registration lives with it
    register(*bss.REGISTRATION[:2], **bss.REGISTRATION[2])
