"""Recipe presets: the published protocols a run can start from (``--preset NAME``).

A preset is nested config overrides, plus ``arch`` (student-architecture prefix -> extra
overrides) and ``loss_defaults`` (loss name -> weights/options replacing the plugin's defaults).
Layers, lowest first: dataclass defaults < preset < spec file < flags.

A loss's ``loss_defaults`` reach it wherever it is a part: ``checkpointkd``'s KD (α 0.5, T 5)
is the KD of ``kd+at`` and of ``at+kd`` too (``w_ce`` only when KD comes first: it belongs to
the base loss), and a modifier's own values win over the preset's (``kd+ls`` is LS's KD); see
:func:`kdbench.losses.preset_values`.
"""

from __future__ import annotations

from typing import Any

#: name -> nested overrides. ``arch`` maps a student-architecture prefix to extra overrides;
#: ``loss_defaults`` maps a loss name to weights/options that replace the plugin's defaults.
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {
        "description": "minutes on a 2-core CPU: 30 epochs, lr 0.05 ×0.1 at 18/24/28, batch 128",
        "recipe": {"epochs": 30, "batch_size": 128, "lr": 0.05, "schedule": "multistep",
                   "milestones": [18, 24, 28], "weight_decay": 5e-4},
        "teacher": {"recipe": {"epochs": 30, "batch_size": 128, "lr": 0.05,
                               "schedule": "multistep", "milestones": [18, 24, 28]},
                    "save_every": 3},
    },
    "repdistiller": {
        "description": "RepDistiller/CRD CIFAR-100 protocol: 240 epochs, lr 0.05 ×0.1 at "
                       "150/180/210, wd 5e-4, batch 64",
        "recipe": {"epochs": 240, "batch_size": 64, "lr": 0.05, "momentum": 0.9,
                   "schedule": "multistep", "milestones": [150, 180, 210], "weight_decay": 5e-4},
        "teacher": {"recipe": {"epochs": 240, "batch_size": 64, "lr": 0.05, "momentum": 0.9,
                               "schedule": "multistep", "milestones": [150, 180, 210],
                               "weight_decay": 5e-4},
                    "save_every": 20},
        # RepDistiller uses lr 0.01 for MobileNetV2 and ShuffleNet students
        "arch": {"mobilenetv2": {"recipe": {"lr": 0.01}}, "shufflev": {"recipe": {"lr": 0.01}}},
        # the official per-pair values of the methods run under this protocol since: DKD's β
        # (mdistiller configs/cifar100/dkd/*.yaml), ReviewKD's weight (dvlab-research/ReviewKD
        # CIFAR-100/script/reviewKD.sh); pairs the official runs lack keep the defaults. They
        # reach composites and modified losses too (dkd+ctkd; dkd+ls takes LS's own β instead)
        "loss_defaults": {"dkd": {"beta_table": True}, "reviewkd": {"weight_table": True}},
    },
    "checkpointkd": {
        "description": "Checkpoint KD (NeurIPS 2022): 200 epochs, SGD Nesterov lr 0.1 ÷10 every "
                       "60, wd 5e-4, batch 128, checkpoints every 20; KD α 0.5, T 5",
        "recipe": {"epochs": 200, "batch_size": 128, "lr": 0.1, "momentum": 0.9, "nesterov": True,
                   "schedule": "step", "step_size": 60, "gamma": 0.1, "weight_decay": 5e-4},
        "teacher": {"recipe": {"epochs": 200, "batch_size": 128, "lr": 0.1, "momentum": 0.9,
                               "nesterov": True, "schedule": "step", "step_size": 60,
                               "gamma": 0.1, "weight_decay": 5e-4},
                    "save_every": 20},
        "loss_defaults": {"kd": {"w_ce": 0.5, "w_kd": 0.5, "T": 5.0}},
    },
    # The ImageNet protocol of RepDistiller/CRD and mdistiller (torchvision's reference recipe):
    # mdistiller configs/imagenet/r34_r18/*.yaml, SOLVER 100 epochs, ×0.1 at 30/60/90, wd 1e-4,
    # momentum 0.9; batch 256 at lr 0.1 (reviewkd.yaml, crd.yaml; kd/dkd/at.yaml run 512 at 0.2,
    # the same per-sample lr). The standard pair is torchvision's ResNet34 → ResNet18 through
    # the timm adapter (a local torchvision/timm ResNet34 state dict: --teacher-weights).
    # Data: an image-folder tree streamed with timm's transforms at 224 (resize 256 + center
    # crop 224 for evaluation). Per-method ImageNet values where the official code has them:
    # KD T 1, CE 0.5, KD 0.5 (kd.yaml); DKD β 0.5, T 1, warm-up 1 (dkd.yaml); ReviewKD warm-up
    # 1 (reviewkd.yaml); DIST CE 1, DIST 2, β = γ = τ = 1 (hunto/image_classification_sota
    # configs/strategies/distill/resnet_dist.yaml, lib/models/losses/kd_loss.py line 68).
    "imagenet": {
        "description": "ImageNet protocol (RepDistiller/mdistiller): 100 epochs, batch 256, SGD "
                       "lr 0.1 momentum 0.9, wd 1e-4, ×0.1 at 30/60/90; timm/resnet34 → "
                       "timm/resnet18 on an image folder streamed at 224",
        "recipe": {"epochs": 100, "batch_size": 256, "lr": 0.1, "momentum": 0.9,
                   "schedule": "multistep", "milestones": [30, 60, 90], "weight_decay": 1e-4},
        "teacher": {"arch": "timm/resnet34",
                    "recipe": {"epochs": 100, "batch_size": 256, "lr": 0.1, "momentum": 0.9,
                               "schedule": "multistep", "milestones": [30, 60, 90],
                               "weight_decay": 1e-4},
                    "save_every": 10},
        "student": "timm/resnet18",
        "data": {"name": "imagefolder", "options": {"size": 224, "augment": "timm"}},
        "loss_defaults": {
            "kd": {"w_ce": 0.5, "w_kd": 0.5, "T": 1.0},
            "dkd": {"w_ce": 1.0, "w_dkd": 1.0, "alpha": 1.0, "beta": 0.5, "T": 1.0,
                    "warmup": 1},
            "reviewkd": {"w_ce": 1.0, "w_reviewkd": 1.0, "warmup": 1},
            "dist": {"w_ce": 1.0, "w_dist": 2.0, "beta": 1.0, "gamma": 1.0, "T": 1.0},
        },
    },
    # InDistill (Sarridis et al., WACV 2025; github.com/gsarridis/InDistill), CIFAR-10 Cnn32
    # pipeline. Student (kd_from_aux_to_student.py): Adam 1e-3 for 60 epochs then 1e-4 for 10,
    # batch 128, no weight decay, and a NEW Adam EVERY EPOCH (line 22) — reset_optimizer
    # "epoch" does the same (kdbench's default, "never", keeps one Adam per stage). Teachers
    # (train_baselines.py: the large teacher and the auxiliary's baseline): Adam 1e-3 for 50
    # epochs then 1e-4 for 30, a new Adam per lr phase ("lr_change"). The auxiliary's own
    # distillation (Adam 1e-3, 50 epochs) is teacher.options.distill_recipe of --teacher
    # auxiliary. The warm-up (--warmup indistill) takes its 12 epochs from the 60 + 10.
    "indistill": {
        "description": "InDistill (WACV 2025) CIFAR-10 recipe: Adam 1e-3 for 60 epochs then "
                       "1e-4 for 10, batch 128, no wd, a new Adam every epoch; teachers Adam "
                       "1e-3 50 + 1e-4 30",
        "recipe": {"epochs": 70, "batch_size": 128, "lr": 1e-3, "optimizer": "adam",
                   "schedule": "multistep", "milestones": [60], "gamma": 0.1,
                   "weight_decay": 0.0, "reset_optimizer": "epoch"},
        "teacher": {"recipe": {"epochs": 80, "batch_size": 128, "lr": 1e-3, "optimizer": "adam",
                               "schedule": "multistep", "milestones": [50], "gamma": 0.1,
                               "weight_decay": 0.0, "reset_optimizer": "lr_change"},
                    "save_every": 10},
    },
}
