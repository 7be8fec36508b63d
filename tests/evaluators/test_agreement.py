"""The ``agreement`` evaluator (student–teacher top-1 agreement and KL(teacher ‖ student)), the
teacher's outputs reaching evaluators, and the check of a loss's terms against its weights made
before any teacher trains."""

from __future__ import annotations

import math
import textwrap

import pytest
import torch

import kdbench
from kdbench.errors import ConfigError
from kdbench.evaluators.agreement import agreement


def test_agreement_against_hand_computed_values():
    s = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    out = agreement(s, t, batch_size=2)  # chunks of 2 and 1 sum as one
    assert out["agreement"] == pytest.approx(100.0 * 2 / 3)  # argmax ties go to class 0

    def kl(p_logits, q_logits):
        p = [math.exp(v) / sum(math.exp(w) for w in p_logits) for v in p_logits]
        q = [math.exp(v) / sum(math.exp(w) for w in q_logits) for v in q_logits]
        return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    want = sum(kl(ti.tolist(), si.tolist()) for si, ti in zip(s, t)) / 3
    assert out["teacher_kl"] == pytest.approx(want, rel=1e-6)
    same = agreement(s, s)
    assert same["agreement"] == 100.0 and same["teacher_kl"] == pytest.approx(0.0, abs=1e-7)
    hot = agreement(s, t, temperature=4.0)["teacher_kl"]
    assert 0 < hot < out["teacher_kl"]  # softer distributions are closer
    with pytest.raises(ConfigError, match=r"differ in shape"):
        agreement(s, t[:, :1])


def test_agreement_in_a_run_with_a_teacher(tiny):
    cfg = tiny(**{"loss.name": "kd", "eval.evaluators": [{"name": "accuracy"},
                                                          {"name": "agreement", "T": 2.0}]})
    record = kdbench.run(cfg, progress=False)
    m = record["metrics"]
    assert 0 <= m["agreement_last"] <= 100 and m["teacher_kl_last"] > 0
    assert all("agreement" in row and "teacher_kl" in row for row in m["curve"])
    # the agreement of the kept student with the teacher the run distilled from, recomputed
    from kdbench.data import load_data
    from kdbench.evaluators import EvalContext, build_suite
    from kdbench.runner.keep import load_kept
    from kdbench.store import Store
    from kdbench.teachers.base import TeacherContext

    rcfg = kdbench.config.resolve(cfg)
    data = load_data(rcfg.data)
    teacher = kdbench.plugins.get("teacher_source", "full").create(
        TeacherContext(rcfg, data, torch.device("cpu"), Store(rcfg.results_dir), False))
    student, _ = load_kept(Store(rcfg.results_dir).runs / record["weights"]["last"]["file"])
    suite = build_suite([{"name": "agreement", "T": 2.0}],
                        EvalContext(data, teacher=teacher.module), epochs=1)
    again = suite.evaluate(student, 1)
    assert again["agreement"] == m["agreement_last"]
    assert again["teacher_kl"] == pytest.approx(m["teacher_kl_last"], rel=1e-6)


@pytest.mark.parametrize("over", [{"loss.name": "ce"},
                                  {"loss.name": "dml", "teacher.source": "peers"}])
def test_agreement_without_a_fixed_teacher_is_bad_input_before_training(tiny, results, over):
    cfg = tiny(**over, **{"eval.evaluators": ["accuracy", "agreement"]})
    with pytest.raises(ConfigError, match=r"evaluator 'agreement' compares the student with "
                                          r"its teacher"):
        kdbench.run(cfg, progress=False)
    assert not (results / "teachers").exists() or not any((results / "teachers").iterdir())
    assert not list((results / "runs").glob("*.json"))


def test_a_term_without_a_weight_is_found_before_the_teacher_trains(tiny, local_plugin,
                                                                    results, cli_runner):
    local_plugin(textwrap.dedent("""
        import kdbench
        from kdbench.losses import Distiller
        class Mine(Distiller):
            def forward(self, student, teacher, target, index=None, epoch=0):
                return {"mine": (student.logits - teacher.logits).pow(2).mean()}
        @kdbench.hookimpl
        def register_losses(register):
            register("mine", Mine, defaults={"w_ce": 1.0, "w_mse": 1.0}, taps=("logits",))
    """), "mine.py")
    cfg = tiny(**{"loss.name": "mine"})
    with pytest.raises(ConfigError) as err:
        kdbench.run(cfg, progress=False)
    assert str(err.value).startswith("loss 'mine' returns term 'mine' but has no weight w_mine "
                                     "(its weights: w_ce, w_mse; terms returned: mine)")
    assert not (results / "teachers").exists() or not any((results / "teachers").iterdir())
    assert not (results / "runs").exists() or not list((results / "runs").glob("*.json"))
