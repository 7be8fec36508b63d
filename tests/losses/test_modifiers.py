"""Modifiers by name (``kd+ls``, ``dkd+ls+ctkd``, ``crd+kd+ls``), presets reaching composites,
``kdbench losses``' columns, and bad input refused through the CLI before anything is written.

The official values below are typed from the official logs and scripts (cited), never read
from kdbench's own tables.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import tiny_overrides
from kdbench.config import build_config, identity, resolve
from kdbench.errors import ConfigError
from kdbench.losses import DistillContext, build, entry, preset_values
from kdbench.losses import resolve as resolve_loss
from kdbench.models import create_model
from kdbench.models.base import Features
from kdbench.runner import run

pytestmark = pytest.mark.usefixtures("single_thread")


def resolved(**over):
    return resolve(build_config(over))


# ============================== names resolve to the official settings ========================


@pytest.mark.parametrize("loss, teacher, student, weights, options", [
    # logit-standardization-KD logs/KD/kd,resnet110,resnet20,4,12.txt
    ("kd+ls", "resnet110", "resnet20", {"w_ce": 0.1, "w_kd": 12.0},
     {"T": 4.0, "standardize": True, "ctkd": False}),
    # logs/DKD/dkd,vgg13,vgg8,2,15,2.0.txt: LS's beta 2 (mdistiller's own config says 6)
    ("dkd+ls", "vgg13", "vgg8", {"w_ce": 1.0, "w_dkd": 15.0},
     {"T": 2.0, "beta": 2.0, "alpha": 1.0, "standardize": True, "beta_table": False}),
    # logs/MLKD/mlkd,resnet32x4,ShuffleV2,2,6.txt
    ("mlkd+ls", "resnet32x4", "shufflev2",
     {"w_ce": 0.1, "w_mlkd_instance": 6.0, "w_mlkd_class": 6.0, "w_mlkd_batch": 6.0,
      "w_mlkd_ce_strong": 0.1}, {"T": 2.0, "standardize": True}),
    # zhengli97/CTKD scripts/run_cifar_distill.sh lines 18-22: -r 0.1 -a 0.9, T learnable
    ("kd+ctkd", "resnet56", "resnet20", {"w_ce": 0.1, "w_kd": 0.9},
     {"ctkd": True, "standardize": False, "ctkd_t_start": 1.0, "ctkd_t_end": 20.0}),
    # LS with CTKD: its own defaults 2 and 9 whatever the pair; CTKD's DKD has no warm-up
    ("dkd+ls+ctkd", "resnet56", "resnet20", {"w_ce": 1.0, "w_dkd": 9.0},
     {"T": 2.0, "standardize": True, "ctkd": True, "warmup": 0, "beta_table": False}),
    # LS's CTKD/train_student.py line 314 and helper/loops.py line 174: the KD term of a
    # composite standardised, the other term untouched; CRD keeps its CE weight
    ("crd+kd+ls", "resnet32x4", "resnet8x4", {"w_ce": 1.0, "w_crd": 0.8, "w_kd": 9.0},
     {"T": 2.0, "standardize": True, "nce_t": 0.07}),
    # CTKD's "+CRD" row: --distill crd -r 0.1 -a 0.9 -b 0.8 with the learnable T on the KD term
    ("kd+crd+ctkd", "resnet56", "resnet20", {"w_ce": 0.1, "w_kd": 0.9, "w_crd": 0.8},
     {"ctkd": True, "standardize": False}),
])
def test_a_modifier_name_sets_its_options_and_official_weights(loss, teacher, student, weights,
                                                               options):
    c = resolved(**{"loss.name": loss, "teacher.arch": teacher, "student": student})
    assert c.loss.name == loss  # the record keeps the name as written
    assert c.loss.weights == weights
    assert {k: c.loss.options[k] for k in options} == options


def test_explicit_values_win_over_the_modifier():
    c = resolved(**{"loss.name": "kd+ls", "teacher.arch": "resnet110", "student": "resnet20",
                    "loss.weights.w_kd": 5.0, "loss.options.T": 3.0})
    assert c.loss.weights == {"w_ce": 0.1, "w_kd": 5.0} and c.loss.options["T"] == 3.0
    assert c.loss.options["standardize"] is True
    off = resolved(**{"loss.name": "kd+ls", "loss.options.standardize": False})
    assert off.loss.options["standardize"] is False


def test_what_a_modifier_sets_is_part_of_the_run_id():
    ls = resolved(**{"loss.name": "kd+ls"})
    plain = resolved(**{"loss.name": "kd"})
    assert identity(ls)["loss"]["options"]["standardize"] is True
    assert "standardize" not in identity(plain)["loss"]["options"]  # a later option at default
    assert ls.run_id != plain.run_id


def test_modifiers_reach_the_distiller():
    """kd+ls's term is KL of the z-scored logits (unbiased std, LS's ``normalize``) at its base
    temperature, times T²: numpy, written apart from kdbench's functional core."""
    w, o = resolve_loss("kd+ls", student="resnet8", teacher="resnet8")
    assert o["T"] == 2.0 and w["w_kd"] == 9.0  # a pair LS did not run: tools/train.py defaults
    model = create_model("resnet8", 5, 3)
    d = build("kd+ls", DistillContext(model, model, 5, (3, 8, 8), 10, w, o))
    s = np.array([[1.0, 2.0, 0.5, -1.0, 0.0], [0.3, -0.2, 2.0, 1.0, 4.0]])
    t = np.array([[2.0, 1.0, 0.0, 0.0, -3.0], [1.0, 1.0, 1.0, 5.0, 0.0]])

    def z(x):
        return (x - x.mean(1, keepdims=True)) / (x.std(1, ddof=1, keepdims=True) + 1e-7)

    def softmax(x):
        e = np.exp(x - x.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    ps, pt = softmax(z(s) / 2.0), softmax(z(t) / 2.0)
    want = (pt * (np.log(pt) - np.log(ps))).sum(1).mean() * 4.0
    got = d(Features(logits=torch.tensor(s, dtype=torch.float32)),
            Features(logits=torch.tensor(t, dtype=torch.float32)), torch.tensor([0, 1]))["kd"]
    assert got.item() == pytest.approx(want, rel=1e-4)


def test_a_modified_name_has_the_modifiers_paper_year_and_repository():
    e = entry("kd+ls")
    assert e.year == 2024 and e.repo == "https://github.com/sunshangquan/logit-standardization-KD"
    assert "Logit Standardization" in e.paper and "Hinton" in e.paper and e.family == "logit"
    assert entry("crd+wttm").year == 2024 and "TTM" in entry("crd+wttm").repo


# ============================== presets reach composites ======================================


def test_checkpointkd_kd_values_reach_kd_inside_composites():
    """The preset's KD is alpha 0.5 on CE and T 5 (CheckpointKD args.py, student.py): as the
    base of kd+at it gives CE and KD weights and T; added to at (at+kd) its KD weight and T,
    while CE stays AT's."""
    base = resolved(**{"preset": "checkpointkd", "loss.name": "kd+at"})
    assert base.loss.weights == {"w_ce": 0.5, "w_kd": 0.5, "w_at": 1000.0}
    assert base.loss.options["T"] == 5.0
    added = resolved(**{"preset": "checkpointkd", "loss.name": "at+kd"})
    assert added.loss.weights == {"w_ce": 1.0, "w_at": 1000.0, "w_kd": 0.5}
    assert added.loss.options["T"] == 5.0
    # explicit values still win
    mine = resolved(**{"preset": "checkpointkd", "loss.name": "kd+at", "loss.options.T": 2.0})
    assert mine.loss.options["T"] == 2.0


def test_a_modifier_wins_over_the_preset_on_the_keys_it_sets():
    ls = resolved(**{"preset": "checkpointkd", "loss.name": "kd+ls"})
    assert ls.loss.weights == {"w_ce": 0.1, "w_kd": 9.0} and ls.loss.options["T"] == 2.0
    ctkd = resolved(**{"preset": "checkpointkd", "loss.name": "kd+ctkd"})  # CTKD sets no weight
    assert ctkd.loss.weights == {"w_ce": 0.5, "w_kd": 0.5} and ctkd.loss.options["ctkd"]
    # repdistiller's DKD table reaches dkd+ctkd, not dkd+ls (LS's own beta)
    pair = {"preset": "repdistiller", "teacher.arch": "vgg13", "student": "vgg8"}
    assert resolved(**pair, **{"loss.name": "dkd+ctkd"}).loss.options["beta"] == 6.0
    assert resolved(**pair, **{"loss.name": "dkd+ls"}).loss.options["beta"] == 2.0
    assert resolved(**pair, **{"loss.name": "dkd"}).loss.options["beta"] == 6.0


def test_preset_values_by_part():
    table = {"kd": {"w_ce": 0.5, "w_kd": 0.5, "T": 5.0}, "dkd": {"beta_table": True}}
    assert preset_values("kd", table) == ({"w_ce": 0.5, "w_kd": 0.5}, {"T": 5.0})
    assert preset_values("crd+kd", table) == ({"w_kd": 0.5}, {"T": 5.0})
    assert preset_values("kd+ls", table) == ({}, {})
    assert preset_values("dkd+ls", table) == ({}, {})
    assert preset_values("dkd+ctkd", table) == ({}, {"beta_table": True})
    assert preset_values("at", table) == ({}, {})
    # an entry for the exact name wins over the parts'
    assert preset_values("kd+ls", {"kd+ls": {"T": 3.0}, **table}) == ({}, {"T": 3.0})


# ============================== bad input: one line, exit 2, nothing written ==================


def _nothing_written(results) -> bool:
    return not results.exists() or not any(p.is_file() for p in results.rglob("*"))


@pytest.mark.parametrize("args, words", [
    (["--loss", "at+ls"], ["'ls'", "'at'", "kd, dkd, mlkd, mlkd_noaug, rld"]),
    (["--loss", "pkt+ls"], ["'ls'", "'pkt'", "kd, dkd, mlkd"]),
    (["--loss", "pkt+ctkd"], ["'ctkd'", "'pkt'", "kd, dkd"]),
    (["--loss", "kd+ls+ls"], ["names ls twice"]),
    (["--loss", "ls"], ["only modifiers", "kd+ls"]),
    (["--loss", "kd+lss"], ["unknown loss 'lss'", "ls, ctkd"]),
    (["--loss", "kd+ls", "--opt", "T=-1"], ["option T must be > 0", "-1.0"]),
    (["--loss", "kd", "--opt", "T=0"], ["option T must be > 0", "0.0"]),
    (["--loss", "kd", "--opt", "T=inf"], ["T must be a finite number", "inf"]),
    (["--loss", "dkd+ls", "--w", "w_dkd=-1"], ["weight w_dkd must be >= 0", "-1.0"]),
    (["--loss", "dkd", "--opt", "beta=-2"], ["option beta must be >= 0", "-2.0"]),
    (["--loss", "dkd", "--opt", "warmup=2.5"], ["warmup must be an integer", "2.5"]),
    (["--loss", "kd+ctkd", "--opt", "ctkd_t_start=0"], ["ctkd_t_start must be > 0"]),
    (["--loss", "kd", "--opt", "standardize=maybe"], ["standardize must be true or false"]),
    (["--loss", "mlkd", "--teacher", "peers"], ["'mlkd'", "second augmented view",
                                                 "mlkd_noaug"]),
])
def test_bad_input_is_one_line_exit_2_nothing_written(cli_runner, results, args, words):
    res = cli_runner("run", *args, "--dataset", "synthetic", "--student", "resnet8",
                     "--teacher-arch", "resnet8", "--results-dir", results, "--quiet")
    assert res.exit_code == 2, res.output
    message = res.output.strip()
    assert message.count("\n") == 0, message
    for word in words:
        assert word in message
    assert _nothing_written(results)


def test_a_modifier_it_does_not_apply_to_is_refused_at_resolve():
    with pytest.raises(ConfigError, match=r"modifier 'ls' does not apply to loss 'sp\+at'"):
        resolve_loss("sp+at+ls")


# ============================== runs: records keep the name and the values ====================


def test_modified_runs_train_and_record_the_values_used(results):
    """kd+ls and mlkd (its strong view made by the loss's own augmentation, so it also runs
    with data.augment false: the weak view is then the plain image) on synthetic data."""
    records = [run(build_config(tiny_overrides(results, **{"loss.name": name, **extra})),
                   progress=False)
               for name, extra in (("kd+ls", {}), ("mlkd", {"data.augment": False}))]
    for r in records:
        assert r["status"] == "done", r.get("error")
        assert all(math.isfinite(row["train_loss"]) for row in r["metrics"]["curve"])
    ls, mlkd = records
    assert ls["config"]["loss"]["name"] == "kd+ls"
    assert ls["config"]["loss"]["weights"] == {"w_ce": 0.1, "w_kd": 9.0}
    assert ls["config"]["loss"]["options"]["standardize"] is True
    assert ls["config"]["loss"]["options"]["T"] == 2.0
    assert mlkd["config"]["data"]["augment"] is False
    assert "train_mlkd_ce_strong" in mlkd["metrics"]["curve"][-1]


# ============================== kdbench losses ================================================


def test_losses_lists_paper_year_family_and_repo_of_every_method(cli_runner):
    rows = json.loads(cli_runner("losses", "--json").output)
    assert len(rows) >= 25
    for r in rows:
        assert r["paper"] and r["family"], r["name"]
        if r["name"] != "ce":  # the CE-only baseline has no paper, year or code of its own
            assert isinstance(r["year"], int) and 2014 <= r["year"] <= 2025, r["name"]
            assert r["repo"].startswith("https://github.com/"), r["name"]
    by_name = {r["name"]: r for r in rows}
    assert (by_name["crd"]["year"], by_name["crd"]["family"]) == (2020, "feature")
    assert by_name["dkd"]["repo"] == "https://github.com/megvii-research/mdistiller"
    text = cli_runner("losses").output
    header = text.splitlines()[0].split()
    assert header[:4] == ["loss", "family", "year", "taps"] and "repo" in header
    line = next(x for x in text.splitlines() if x.startswith("dkd "))
    assert "2022" in line and "megvii-research/mdistiller" in line and "logit" in line
    assert "+ls" in text and "+ctkd" in text  # the modifiers, under the losses
    detail = cli_runner("losses", "kd+ls").output
    assert "logit-standardization-KD" in detail and "T=2.0" in detail and "w_kd=9.0" in detail
