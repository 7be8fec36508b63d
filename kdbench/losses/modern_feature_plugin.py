"""Loss plugin: registers ReviewKD, OFD and KD-SVD with their papers, official repositories and
official CIFAR-100 defaults.

Sources of the defaults: ReviewKD — dvlab-research/ReviewKD ``CIFAR-100/train.py`` (weight 1,
warm-up 20 epochs, CE 1) and ``CIFAR-100/script/reviewKD.sh`` (per-pair weights, below);
mdistiller ``mdistiller/engine/cfg.py`` lines 150-159 agree (and ``configs/cifar100/
reviewkd.yaml``: 5.0 for resnet32x4 → resnet8x4). OFD — clovaai/overhaul-distillation
``CIFAR-100/train_with_distillation.py`` line 91 (CE 1, distillation ÷ B ÷ 1000); mdistiller
``cfg.py`` lines 99-105 (FEAT_WEIGHT 0.001). KD-SVD — sseung0703/SSKD_SVD ``nets/VGG.py``
(``num_DFV = 1``) and mdistiller ``cfg.py`` lines 92-97 (K 1, weights 1 and 1).
"""

from __future__ import annotations

from typing import Any

from ..hookspecs import hookimpl
from .logit import arch_key
from .modern_feature import KDSVD, OFD, ReviewKD

__all__ = ["LOSSES", "REVIEWKD_WEIGHT", "finalize_reviewkd", "register_losses"]

#: the official ReviewKD weight per CIFAR-100 pair (``CIFAR-100/script/reviewKD.sh`` lines
#: 1-15), keyed by (teacher, student) as :func:`~kdbench.losses.logit.arch_key` spells them
REVIEWKD_WEIGHT = {
    ("wrn402", "wrn162"): 5.0, ("wrn402", "wrn401"): 5.0, ("wrn402", "shufflev1"): 5.0,
    ("resnet32x4", "resnet8x4"): 5.0, ("resnet32x4", "shufflev1"): 5.0,
    ("resnet32x4", "shufflev2"): 8.0, ("resnet56", "resnet20"): 0.6,
    ("resnet110", "resnet32"): 1.0,
}


def finalize_reviewkd(weights: dict[str, float], options: dict[str, Any], *,
                      student: str | None = None, teacher: str | None = None) -> None:
    """With ``weight_table``, ``w_reviewkd`` becomes the official weight of the pair (pairs not
    in the table keep theirs), so the record holds the value used."""
    if options.get("weight_table"):
        key = (arch_key(teacher), arch_key(student))
        weights["w_reviewkd"] = REVIEWKD_WEIGHT.get(key, weights["w_reviewkd"])


_COMMON = {"family": "feature"}

#: name -> (factory, registration metadata)
LOSSES: dict[str, tuple[type, dict]] = {
    "reviewkd": (ReviewKD, {
        "description": "knowledge review: ABF-fused student stages vs teacher pre-activations, "
                       "hierarchical context loss",
        "paper": "Chen et al., Distilling Knowledge via Knowledge Review, CVPR 2021",
        "year": 2021, "repo": "https://github.com/dvlab-research/ReviewKD",
        "defaults": {"w_ce": 1.0, "w_reviewkd": 1.0, "warmup": 20, "max_mid_channels": 512,
                     "student_preact": False, "weight_table": False},
        "finalize": finalize_reviewkd, "taps": ("logits", "stages", "preact", "embedding"),
        **_COMMON}),
    "ofd": (OFD, {
        "description": "overhaul of feature distillation: pre-ReLU partial L2 above BN margins",
        "paper": "Heo et al., A Comprehensive Overhaul of Feature Distillation, ICCV 2019",
        "year": 2019, "repo": "https://github.com/clovaai/overhaul-distillation",
        "defaults": {"w_ce": 1.0, "w_ofd": 0.001}, "taps": ("logits", "preact"), **_COMMON}),
    "kdsvd": (KDSVD, {
        "description": "KD-SVD: RBF correlations of consecutive stages' leading singular vectors",
        "paper": "Lee et al., Self-supervised Knowledge Distillation Using Singular Value "
                 "Decomposition, ECCV 2018",
        "year": 2018, "repo": "https://github.com/sseung0703/SSKD_SVD",
        "defaults": {"w_ce": 1.0, "w_kdsvd": 1.0, "k": 1, "extra": 1, "connector": False},
        "taps": ("logits", "stages"), **_COMMON}),
}


@hookimpl
def register_losses(register):
    for name, (factory, meta) in LOSSES.items():
        register(name, factory, **meta)
