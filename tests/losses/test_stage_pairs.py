"""Feature losses that pair stages (at, nst) choose the pairs: option ``stages``, so AT between a
3-stage CIFAR ResNet and a timm ResNet of 5 feature stages works; a pair that cannot be made is a
one-line error."""

from __future__ import annotations

import pytest
import torch

from kdbench.config import build_config
from kdbench.errors import ConfigError
from kdbench.losses import DistillContext, build, resolve
from kdbench.losses.at import at
from kdbench.losses.base import stage_pairs
from kdbench.losses.nst import nst
from kdbench.models import create_model


def context(student, teacher, **options):
    weights, opts = resolve("at", {}, options)
    return DistillContext(student, teacher, 10, (3, 32, 32), 100, weights, opts)


def test_stage_pairs_are_read_and_checked():
    s, t = [torch.zeros(1)] * 3, [torch.zeros(1)] * 5
    assert stage_pairs("0:2, 1:3,2:4", s, t, "at") == [(0, 2), (1, 3), (2, 4)]
    assert stage_pairs([[2, 4]], s, t, "at") == [(2, 4)]
    assert stage_pairs(None, s, s, "at") == [(0, 0), (1, 1), (2, 2)]
    with pytest.raises(ConfigError, match=r"pairs stages one to one, but the student has 3 and "
                                          r"the teacher 5"):
        stage_pairs(None, s, t, "at")
    with pytest.raises(ConfigError, match=r"option stages pairs teacher stage 5, but the teacher "
                                          r"has stages 0..4"):
        stage_pairs("0:5", s, t, "at")
    with pytest.raises(ConfigError, match=r"must be pairs of stage indices.*got 'first'"):
        stage_pairs("first", s, t, "at")


@pytest.mark.parametrize(("name", "term"), [("at", at), ("nst", nst)])
def test_at_between_a_cifar_resnet_and_a_timm_resnet_pairs_the_chosen_stages(name, term):
    torch.manual_seed(0)
    student, teacher = create_model("resnet8", 10).eval(), \
        create_model("timm/resnet10t", 10).eval()
    with pytest.raises(ConfigError, match=r"one to one, but the student has 3 and the teacher 5"):
        build(name, context(student, teacher))
    distiller = build(name, context(student, teacher, stages="0:2,1:3,2:4"))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        fs, ft = student.features(x), teacher.features(x)
        got = distiller(fs, ft, torch.zeros(2, dtype=torch.long))[name]
    want = sum(term(fs.stages[i], ft.stages[j]) for i, j in [(0, 2), (1, 3), (2, 4)])
    assert got.item() == pytest.approx(want.item(), rel=1e-6) and want.item() > 0


def test_the_stages_option_keeps_old_ids_and_enters_new_ones():
    base = {"loss.name": "at", "student": "resnet8", "teacher.arch": "resnet20"}
    plain = build_config(base)
    assert plain.run_id == build_config({**base, "loss.options.stages": None}).run_id
    chosen = build_config({**base, "loss.options.stages": "0:0,2:2"})
    assert chosen.run_id != plain.run_id
