"""Every shipped sweep runs every method with its official weights and options, per pair.

The test expands each shipped sweep file (``kdbench.sweep.shipped()``) exactly as ``kdbench
sweep`` does and compares each run's *resolved* loss weights and options with a table written
here by hand from the official code, each value with the file and line it comes from. The table
does not import kdbench's own tables (``DKD_BETA``, ``LS_TABLE``, ``REVIEWKD_WEIGHT``): a wrong
per-pair value in kdbench fails here instead of shipping.

Two protocols: the Checkpoint KD sweeps run the paper's KD (its own weights); every other
sweep runs RepDistiller's protocol and the official CIFAR-100 values of each method. Pairs an
official table does not list run at the method's default (``"*"``).
"""

from __future__ import annotations

from typing import Any

import pytest

from kdbench.sweep import expand, load_sweep, shipped

# RepDistiller (HobbitLong/RepDistiller): R = scripts/run_cifar_distill.sh, TS = train_student.py.
# -r is w_ce (TS line 73: default 1), -a the KD weight, -b the method's weight; T = --kd_T 4
# (TS line 78).
# mdistiller (megvii-research/mdistiller): CFG = mdistiller/engine/cfg.py, DKD pair configs
# configs/cifar100/dkd/<pair>.yaml line 19 (BETA), no BETA line: CFG line 165 (8.0).
# LS (sunshangquan/logit-standardization-KD): values in the log names logs/<M>/<m>,T,S,
# <base temp>,<kd weight>[,<beta>].txt; tools/train.py lines 103-104 (defaults 2 and 9) for the
# pairs without a log, lines 110-121 (what the flag changes).

_W402, _R32x4 = "wrn_40_2", "resnet32x4"
#: RepDistiller's 13 CIFAR-100 pairs (README tables 1 and 2)
PAIRS = [(_W402, "wrn_16_2"), (_W402, "wrn_40_1"), ("resnet56", "resnet20"),
         ("resnet110", "resnet20"), ("resnet110", "resnet32"), (_R32x4, "resnet8x4"),
         ("vgg13", "vgg8"), ("vgg13", "mobilenetv2"), ("resnet50", "mobilenetv2"),
         ("resnet50", "vgg8"), (_R32x4, "shufflev1"), (_R32x4, "shufflev2"), (_W402, "shufflev1")]

#: RepDistiller's helper/pretrain.py lines 22-27: FT's paraphraser at lr 0.01 for these students
FT_LR_001 = {"resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
             "resnet8x4", "resnet32x4", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2"}

_KD = {"w_ce": 0.1, "w_kd": 0.9, "T": 4.0, "standardize": False, "ctkd": False}  # R line 5
_CTKD = {"ctkd": True, "ctkd_t_start": 1.0, "ctkd_t_end": 20.0, "ctkd_loops": 10}
# zhengli97/CTKD train_student.py lines 89-90 (t_start 1, t_end 20), scripts/run_cifar_distill.sh
# line 22 (--decay_loops 10)
_CRD = {"w_crd": 0.8, "feat_dim": 128, "nce_k": 16384, "nce_t": 0.07, "nce_m": 0.5}
# R line 29 (-b 0.8); TS lines 81-85
_MLKD_LEVELS = ("w_mlkd_instance", "w_mlkd_class", "w_mlkd_batch")


def _ls_kd(T: float, w: float) -> dict[str, Any]:
    return {"w_ce": 0.1, "w_kd": w, "T": T, "standardize": True, "ctkd": False}


def _ls_dkd(T: float, w: float, beta: float) -> dict[str, Any]:
    return {"w_ce": 1.0, "w_dkd": w, "alpha": 1.0, "beta": beta, "T": T, "standardize": True}


def _ls_mlkd(T: float, w: float) -> dict[str, Any]:
    return {"w_ce": 0.1, **dict.fromkeys(_MLKD_LEVELS, w), "w_mlkd_ce_strong": 0.1, "T": T,
            "standardize": True}


#: method -> {"*": values on every pair, (teacher, student): values on that pair}
OFFICIAL: dict[str, dict[Any, dict[str, Any]]] = {
    "ce": {"*": {"w_ce": 1.0}},  # TS line 73 (-r 1), no other term
    "kd": {"*": _KD},
    "fitnet": {"*": {"w_ce": 1.0, "w_hint": 100.0, "hint_stage": 2}},  # R line 7; TS line 88
    "at": {"*": {"w_ce": 1.0, "w_at": 1000.0, "p": 2.0}},  # R line 9; distiller_zoo/AT.py l. 11
    "sp": {"*": {"w_ce": 1.0, "w_sp": 3000.0}},  # R line 11
    "cc": {"*": {"w_ce": 1.0, "w_cc": 0.02, "feat_dim": 128}},  # R line 13; TS line 81
    "vid": {"*": {"w_ce": 1.0, "w_vid": 1.0, "init_var": 5.0, "eps": 1e-5}},
    # R line 15; distiller_zoo/VID.py lines 16-17
    "rkd": {"*": {"w_ce": 1.0, "w_rkd": 1.0, "distance": 25.0, "angle": 50.0}},
    # R line 17; distiller_zoo/RKD.py line 10
    "pkt": {"*": {"w_ce": 1.0, "w_pkt": 30000.0}},  # R line 19
    "ab": {"*": {"w_ce": 1.0, "w_ab": 1.0, "init_epochs": 30}},  # R line 21; TS line 47
    "ft": {"*": {"w_ce": 1.0, "w_ft": 200.0, "init_epochs": 30, "init_lr": None},  # R line 23
           **{(t, s): {"init_lr": 0.01} for t, s in PAIRS + [("resnet56", "resnet20"),
                                                                ("resnet20", "resnet8")]
              if s in FT_LR_001}},
    "fsp": {"*": {"w_ce": 1.0, "w_fsp": 50.0, "init_epochs": 30}},  # R line 25
    "nst": {"*": {"w_ce": 1.0, "w_nst": 50.0}},  # R line 27
    "crd": {"*": {"w_ce": 1.0, **_CRD}},
    "crd+kd": {"*": {"w_ce": 1.0, **_CRD, "w_kd": 1.0, "T": 4.0}},  # R line 32 (-a 1 -b 0.8)
    # DKD: CFG lines 163-167 (CE 1, alpha 1, beta 8, T 4, warm-up 20); beta per pair below
    "dkd": {"*": {"w_ce": 1.0, "w_dkd": 1.0, "alpha": 1.0, "beta": 8.0, "T": 4.0, "warmup": 20,
                  "standardize": False, "ctkd": False},
            ("resnet56", "resnet20"): {"beta": 2.0},  # configs/cifar100/dkd/res56_res20.yaml
            ("resnet110", "resnet32"): {"beta": 2.0},  # .../dkd/res110_res32.yaml
            ("vgg13", "vgg8"): {"beta": 6.0},  # .../dkd/vgg13_vgg8.yaml
            ("vgg13", "mobilenetv2"): {"beta": 6.0},  # .../dkd/vgg13_mv2.yaml
            (_W402, "wrn_16_2"): {"beta": 6.0},  # .../dkd/wrn40_2_wrn_16_2.yaml
            (_W402, "wrn_40_1"): {"beta": 6.0}},  # .../dkd/wrn40_2_wrn_40_1.yaml
    # ReviewKD: dvlab-research/ReviewKD CIFAR-100/train.py lines 48-50, 59 (weight 1, warm-up
    # 20, CE 1); per pair CIFAR-100/script/reviewKD.sh (line numbers below)
    "reviewkd": {"*": {"w_ce": 1.0, "w_reviewkd": 1.0, "warmup": 20},
                 (_W402, "wrn_16_2"): {"w_reviewkd": 5.0},  # line 1
                 (_W402, "wrn_40_1"): {"w_reviewkd": 5.0},  # line 3
                 (_W402, "shufflev1"): {"w_reviewkd": 5.0},  # line 5
                 (_R32x4, "resnet8x4"): {"w_reviewkd": 5.0},  # line 7
                 (_R32x4, "shufflev1"): {"w_reviewkd": 5.0},  # line 9
                 (_R32x4, "shufflev2"): {"w_reviewkd": 8.0},  # line 11
                 ("resnet56", "resnet20"): {"w_reviewkd": 0.6},  # line 13
                 ("resnet110", "resnet32"): {"w_reviewkd": 1.0}},  # line 15
    "ofd": {"*": {"w_ce": 1.0, "w_ofd": 0.001}},  # CFG lines 102-103
    "kdsvd": {"*": {"w_ce": 1.0, "w_kdsvd": 1.0, "k": 1}},  # CFG lines 94-97
    # DIST: hunto/image_classification_sota configs/strategies/distill/dist_cifar.yaml (CE 1,
    # DIST 2, beta = gamma = 1, tau 4), as kdbench.losses.dist cites it
    "dist": {"*": {"w_ce": 1.0, "w_dist": 2.0, "beta": 1.0, "gamma": 1.0, "T": 4.0}},
    # MLKD: Jin-Ying/Multi-Level-Logit-Distillation mdistiller/engine/cfg.py lines 61-64 (T 4,
    # CE 0.1, KD 0.9 on every level), mdistiller/distillers/KD_ours.py (CE on both views)
    "mlkd": {"*": {"w_ce": 0.1, **dict.fromkeys(_MLKD_LEVELS, 0.9), "w_mlkd_ce_strong": 0.1,
                   "T": 4.0, "standardize": False}},
    # zju-SWJ/RLD mdistiller/engine/cfg.py lines 63-66, distillers/MLKD_NOAUG.py
    "mlkd_noaug": {"*": {"w_ce": 0.1, **dict.fromkeys(_MLKD_LEVELS, 0.9), "T": 4.0}},
    # yzd-v/cls_KD configs/distillers/cifar100/res34_distill_res18_cifar.py (NKDLoss: temp 3.0,
    # gamma 3.5)
    "nkd": {"*": {"w_ce": 1.0, "w_nkd": 1.0, "T": 3.0, "gamma": 3.5}},
    "ttm": {"*": {"w_ce": 1.0, "w_ttm": 45.0, "gamma": 0.1}},  # zkxufo/TTM README lines 21-22
    "wttm": {"*": {"w_ce": 1.0, "w_wttm": 4.0, "gamma": 0.2}},  # TTM README lines 40-41
    "crd+wttm": {"*": {"w_ce": 1.0, **_CRD, "w_wttm": 4.0, "gamma": 0.2}},  # README 39-41
    # zju-SWJ/RLD mdistiller/engine/cfg.py lines 179-185 (CE 1, alpha 1, beta 8, T 4, warm-up
    # 20); README line 22 runs --same-t (the SCD temperature = T)
    "rld": {"*": {"w_ce": 1.0, "w_rld": 1.0, "alpha": 1.0, "beta": 8.0, "T": 4.0,
                  "same_T": True, "warmup": 20}},
    # LS on KD: logs/KD/kd,T,S,<T>,<w>.txt; unlisted pairs tools/train.py lines 103-104
    "kd+ls": {"*": _ls_kd(2.0, 9.0),
              (_R32x4, "resnet8x4"): _ls_kd(2.0, 9.0), ("vgg13", "vgg8"): _ls_kd(3.0, 9.0),
              (_W402, "wrn_40_1"): _ls_kd(2.0, 9.0), (_W402, "wrn_16_2"): _ls_kd(2.0, 9.0),
              ("resnet56", "resnet20"): _ls_kd(2.0, 9.0),
              ("resnet110", "resnet32"): _ls_kd(2.0, 9.0),
              ("resnet110", "resnet20"): _ls_kd(4.0, 12.0),
              (_R32x4, "shufflev2"): _ls_kd(2.0, 9.0), ("vgg13", "mobilenetv2"): _ls_kd(3.0, 9.0),
              ("resnet50", "mobilenetv2"): _ls_kd(3.0, 1.0)},
    # LS on DKD: logs/DKD/dkd,T,S,<T>,<w>,<beta>.txt (the two logs without a beta: the pair's
    # configs/cifar100/dkd/*.yaml has none, so DKD's default 8); CE stays DKD's 1
    "dkd+ls": {"*": _ls_dkd(2.0, 9.0, 8.0),
               (_R32x4, "resnet8x4"): _ls_dkd(2.0, 9.0, 8.0),
               ("vgg13", "vgg8"): _ls_dkd(2.0, 15.0, 2.0),
               (_W402, "wrn_40_1"): _ls_dkd(2.0, 12.0, 2.0),
               (_W402, "wrn_16_2"): _ls_dkd(2.0, 12.0, 2.0),
               ("resnet56", "resnet20"): _ls_dkd(3.0, 18.0, 2.0),
               ("resnet110", "resnet32"): _ls_dkd(2.0, 15.0, 2.0),
               ("resnet110", "resnet20"): _ls_dkd(2.0, 15.0, 2.0),
               (_R32x4, "shufflev2"): _ls_dkd(2.0, 9.0, 8.0),
               ("vgg13", "mobilenetv2"): _ls_dkd(3.0, 9.0, 2.0),
               ("resnet50", "mobilenetv2"): _ls_dkd(2.0, 15.0, 2.0)},
    # LS on MLKD: logs/MLKD/mlkd,T,S,<T>,<w>.txt (no resnet56 -> resnet20 log)
    "mlkd+ls": {"*": _ls_mlkd(2.0, 9.0),
                (_R32x4, "resnet8x4"): _ls_mlkd(2.0, 9.0), ("vgg13", "vgg8"): _ls_mlkd(2.0, 6.0),
                (_W402, "wrn_40_1"): _ls_mlkd(2.0, 9.0), (_W402, "wrn_16_2"): _ls_mlkd(2.0, 9.0),
                ("resnet110", "resnet32"): _ls_mlkd(2.0, 9.0),
                ("resnet110", "resnet20"): _ls_mlkd(2.0, 9.0),
                (_R32x4, "shufflev2"): _ls_mlkd(2.0, 6.0),
                ("vgg13", "mobilenetv2"): _ls_mlkd(2.0, 6.0),
                ("resnet50", "mobilenetv2"): _ls_mlkd(2.0, 9.0)},
    # CTKD on KD: zhengli97/CTKD scripts/run_cifar_distill.sh lines 18-22 (-r 0.1 -a 0.9)
    "kd+ctkd": {"*": {**_KD, **_CTKD}},
    # CTKD on DKD: the script's line 14 (-r 1 -b 1 --dkd_alpha 1 --dkd_beta 2 for resnet56 ->
    # resnet20: DKD's own per-pair beta, as above), no warm-up (CTKD helper/loops.py line 170)
    "dkd+ctkd": {"*": {"w_ce": 1.0, "w_dkd": 1.0, "alpha": 1.0, "beta": 8.0, "warmup": 0,
                       **_CTKD},
                 ("resnet56", "resnet20"): {"beta": 2.0}, ("resnet110", "resnet32"): {"beta": 2.0},
                 ("vgg13", "vgg8"): {"beta": 6.0}, ("vgg13", "mobilenetv2"): {"beta": 6.0},
                 (_W402, "wrn_16_2"): {"beta": 6.0}, (_W402, "wrn_40_1"): {"beta": 6.0}},
    # LS with CTKD: logs/CTKD/ctkd,T,S,2,9.txt for every pair LS ran
    "kd+ls+ctkd": {"*": {**_ls_kd(2.0, 9.0), **_CTKD}},
    # BSS: bhheo/BSS_distillation train_BSS_distillation.py lines 98-102, 137-141 (T 3), 197-198
    # (alpha 4 -> 1, beta 2 -> 0 by 3/4 of training); attacks/attack_BSS.py (10 steps, 0.3)
    "bss": {"*": {"w_ce": 1.0, "w_kd": 1.0, "w_bss": 1.0, "T": 3.0, "steps": 10, "eta": 0.3,
                  "kd_start": 4.0, "kd_end": 1.0, "bss_start": 2.0, "bss_stop": 0.75}},
    # DML: Zhang et al., CVPR 2018, eq. 1-2 (L = CE + KL(p_peer || p), weights 1)
    "dml": {"*": {"w_ce": 1.0, "w_dml": 1.0}},
}

#: Checkpoint KD (LeapLabTHU/CheckpointKD): student.py ``loss = alpha*ce + (1-alpha)*kd`` with
#: kd already times T*T; args.py ``--T`` default 5.0, ``--alpha`` default 0.5
CHECKPOINTKD: dict[str, dict[Any, dict[str, Any]]] = {
    "kd": {"*": {"w_ce": 0.5, "w_kd": 0.5, "T": 5.0, "standardize": False, "ctkd": False}},
}

#: The ImageNet protocol (preset imagenet) on ResNet34 -> ResNet18: mdistiller
#: configs/imagenet/r34_r18/<method>.yaml (MD = mdistiller/engine/cfg.py for what they leave out)
IMAGENET: dict[str, dict[Any, dict[str, Any]]] = {
    "ce": {"*": {"w_ce": 1.0}},
    "kd": {"*": {"w_ce": 0.5, "w_kd": 0.5, "T": 1.0, "standardize": False, "ctkd": False}},
    # kd.yaml lines 22-26 (TEMPERATURE 1, CE 0.5, KD 0.5)
    "at": {"*": {"w_ce": 1.0, "w_at": 1000.0, "p": 2.0}},  # at.yaml sets none: MD lines 67-71
    "crd": {"*": {"w_ce": 1.0, **_CRD}},  # crd.yaml sets the input dims only: MD lines 135-147
    "dkd": {"*": {"w_ce": 1.0, "w_dkd": 1.0, "alpha": 1.0, "beta": 0.5, "T": 1.0, "warmup": 1,
                  "standardize": False, "ctkd": False}},  # dkd.yaml lines 26-30; MD ALPHA 1
    "reviewkd": {"*": {"w_ce": 1.0, "w_reviewkd": 1.0, "warmup": 1}},  # reviewkd.yaml 25-28
    # hunto/image_classification_sota configs/strategies/distill/resnet_dist.yaml (ori 1,
    # kd 2), lib/models/losses/kd_loss.py line 68 (beta = gamma = tau = 1)
    "dist": {"*": {"w_ce": 1.0, "w_dist": 2.0, "beta": 1.0, "gamma": 1.0, "T": 1.0}},
}

#: which table each shipped sweep answers to (a new shipped sweep must be added here)
PROTOCOL = {
    "checkpointkd-cifar100": CHECKPOINTKD, "checkpointkd-cifar100-quick": CHECKPOINTKD,
    "repdistiller-cifar100": OFFICIAL, "repdistiller-cifar100-quick": OFFICIAL,
    "modern-kd-cifar100": OFFICIAL, "modern-kd-cifar100-quick": OFFICIAL,
    "kd-beyond-compression": OFFICIAL, "kd-beyond-compression-quick": OFFICIAL,
    "imagenet-kd": IMAGENET,
}


def expected(table: dict[str, dict[Any, dict[str, Any]]], method: str, teacher: str | None,
             student: str) -> dict[str, Any]:
    rows = table[method]
    return {**rows["*"], **rows.get((teacher, student), {})}


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    root = tmp_path_factory.mktemp("official")
    return {name: expand(load_sweep(name), results_dir=root / name) for name in shipped()}


def test_every_shipped_sweep_has_a_protocol(plans):
    assert set(plans) == set(PROTOCOL), "classify the new shipped sweep in PROTOCOL"


def test_every_run_of_every_shipped_sweep_has_the_official_values(plans):
    checked, wrong = 0, []
    for name, plan in plans.items():
        table = PROTOCOL[name]
        for run in plan.runs:
            c = run.config
            method = c.loss.name
            assert method in table, f"{name}: {method} has no official values in the test"
            teacher = c.teacher.arch if c.teacher is not None else None
            want = expected(table, method, teacher, c.student)
            got = {**c.loss.weights, **c.loss.options}
            # every weight the run trains with is listed: no term with an unchecked weight
            assert set(c.loss.weights) == {k for k in want if k.startswith("w_")}, (
                f"{name}: {method} weights {sorted(c.loss.weights)}")
            for key, value in want.items():
                if got.get(key, "missing") != value:
                    wrong.append(f"{name} {teacher}->{c.student} {method}: {key}={got.get(key)}"
                                 f" (official {value})")
            checked += 1
    assert not wrong, "\n".join(list(dict.fromkeys(wrong))[:20])
    assert checked > 3000  # all the runs, not a sample


def test_the_per_pair_values_differ_where_the_official_runs_differ(plans):
    """The table is not flat: the sweeps that run DKD, ReviewKD and LS on RepDistiller's pairs
    really get more than one value (a per-pair switch left off would give one)."""
    values: dict[str, set] = {}
    for name in ("repdistiller-cifar100", "modern-kd-cifar100"):
        for run in plans[name].runs:
            c = run.config
            for method, key in (("dkd", "beta"), ("reviewkd", "w_reviewkd"), ("kd+ls", "w_kd"),
                                ("kd+ls", "T"), ("dkd+ls", "w_dkd"), ("mlkd+ls", "w_mlkd_class")):
                if c.loss.name == method:
                    got = {**c.loss.weights, **c.loss.options}[key]
                    values.setdefault(f"{name}:{method}:{key}", set()).add(got)
    assert values["repdistiller-cifar100:dkd:beta"] == {2.0, 6.0, 8.0}
    assert values["modern-kd-cifar100:reviewkd:w_reviewkd"] == {0.6, 1.0, 5.0, 8.0}
    assert values["modern-kd-cifar100:kd+ls:w_kd"] == {1.0, 9.0, 12.0}
    assert values["modern-kd-cifar100:kd+ls:T"] == {2.0, 3.0, 4.0}
    assert values["modern-kd-cifar100:dkd+ls:w_dkd"] == {9.0, 12.0, 15.0, 18.0}
    assert values["modern-kd-cifar100:mlkd+ls:w_mlkd_class"] == {6.0, 9.0}


def test_the_modern_sweep_runs_every_method_on_every_pair(plans):
    from kdbench.plugins import names

    plan = plans["modern-kd-cifar100"]
    cells: dict[str, set] = {}
    for run in plan.runs:
        c = run.config
        if c.teacher is not None:
            cells.setdefault(c.loss.name, set()).add((c.teacher.arch, c.student))
    left_out = {"pkt_indistill", "bss", "dml"}  # said in the sweep's description
    assert set(names("loss")) - left_out - {"ce"} <= set(cells)
    ce = {run.config.student for run in plan.runs if run.config.loss.name == "ce"}
    assert ce == {s for _, s in PAIRS}  # the CE-only student of every pair
    assert {m for m in cells if "+" in m} == {"crd+kd", "crd+wttm", "kd+ls", "dkd+ls", "mlkd+ls",
                                             "kd+ctkd", "dkd+ctkd", "kd+ls+ctkd"}
    equal_widths = set(PAIRS) - {(_W402, "wrn_40_1")} - set(PAIRS[7:])
    for method, pairs in cells.items():
        assert pairs == (equal_widths if method in ("fsp", "kdsvd") else set(PAIRS)), method
    seeds = {run.config.seed for run in plan.runs}
    assert seeds == {0, 1, 2, 3, 4}
