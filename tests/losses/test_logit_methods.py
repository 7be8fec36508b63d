"""The modern logit losses (DIST, MLKD, NKD, TTM/WTTM, RLD) and the LS and CTKD modifiers: every
functional form against numpy written here from the official code's formulas, or a hand-worked
case; each official quirk reproduced (and its paper variant); the modifiers off leave KD and DKD
bit-identical; bad values refused in one line; every loss trains through ``kdbench.runner.run``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import tiny_overrides
from kdbench.config import build_config
from kdbench.errors import ConfigError
from kdbench.losses import DistillContext, build, resolve
from kdbench.losses.catalogue import LOSSES
from kdbench.losses.dist import dist, dist_relations
from kdbench.losses.dkd import dkd as dkd_loss
from kdbench.losses.kd import kd as kd_loss
from kdbench.losses.mlkd import confidence_fractions, mlkd_batch, mlkd_class
from kdbench.losses.mlkd import mlkd as mlkd_loss
from kdbench.losses.modifiers import (
    MODIFIERS,
    apply_modifier,
    ctkd_lambda,
    curriculum_temperature,
    gradient_reversal,
    ls_values,
    modifier_settings,
    split_modifiers,
    standardize,
)
from kdbench.losses.nkd import nkd
from kdbench.losses.rld import rld, rld_mcd, rld_scd
from kdbench.losses.ttm import ttm as ttm_loss
from kdbench.losses.ttm import wttm
from kdbench.models import Features, create_model
from kdbench.runner import run

rng = np.random.default_rng(7)


def t(a) -> torch.Tensor:
    return torch.tensor(np.asarray(a), dtype=torch.float32)


def softmax(z):
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max())
    return e / e.sum()


def kl(p, q):
    return float(sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0))


def logits(b=6, c=5, scale=3.0):
    return rng.normal(size=(b, c)) * scale


def ctx_for(name: str, weights=None, options=None, student=None, teacher=None):
    w, o = resolve(name, weights, options)
    s = student or create_model("resnet8", 4, 3)
    return DistillContext(s, teacher or s, 4, (3, 32, 32), 64, w, o)


def feats(z) -> Features:
    return Features(logits=t(z) if not isinstance(z, torch.Tensor) else z)


# ============================== logit standardisation ==========================================


def test_standardize_hand_worked_uses_unbiased_std_and_eps():
    # [1, 2, 3]: mean 2, unbiased std 1 (population std would be √(2/3)), so [-1, 0, 1]/(1+1e-7)
    got = standardize(t([[1.0, 2.0, 3.0]]))
    assert got.tolist()[0] == pytest.approx([-1 / (1 + 1e-7), 0.0, 1 / (1 + 1e-7)], abs=1e-7)
    # a constant row: 0 / (0 + ε) = 0, finite
    assert torch.equal(standardize(t([[5.0, 5.0]])), torch.zeros(1, 2))


def test_standardize_against_numpy_and_shift_scale_invariance():
    z = logits(4, 7)
    want = (z - z.mean(1, keepdims=True)) / (1e-7 + z.std(1, ddof=1, keepdims=True))
    got = standardize(t(z)).numpy()
    assert np.allclose(got, want, atol=1e-5)
    assert np.allclose(standardize(t(3 * z + 11)).numpy(), want, atol=1e-5)


def test_kd_and_dkd_with_the_modifiers_off_are_bit_identical():
    s, te = t(logits()), t(logits())
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    kd = build("kd", ctx_for("kd"))
    assert torch.equal(kd(feats(s), feats(te), y)["kd"], kd_loss(s, te, 4.0))
    assert not list(kd.parameters()) and not kd.state_dict()  # old checkpoints still load
    dkd = build("dkd", ctx_for("dkd"))
    got = dkd(feats(s), feats(te), y, epoch=3)["dkd"]
    assert torch.equal(got, (4 / 20) * dkd_loss(s, te, y, 1.0, 8.0, 4.0))
    assert not list(dkd.parameters())


def test_kd_standardize_is_kd_on_z_scores_at_the_base_temperature():
    s, te = logits(5, 6), logits(5, 6)
    kd = build("kd", ctx_for("kd", options={"standardize": True, "T": 2.0}))

    def z(a):
        return (a - a.mean(1, keepdims=True)) / (1e-7 + a.std(1, ddof=1, keepdims=True))

    want = np.mean([kl(softmax(z(te)[i] / 2), softmax(z(s)[i] / 2)) for i in range(5)]) * 4
    assert kd(feats(s), feats(te), None)["kd"].item() == pytest.approx(want, rel=1e-5)
    # the teacher's scale no longer matters: only its logit relations do
    again = kd(feats(s), feats(5 * te + 2), None)["kd"].item()
    assert again == pytest.approx(want, rel=1e-4)


def test_dkd_standardize_standardises_before_decoupling():
    s, te = logits(), logits()
    y = np.array([0, 1, 2, 3, 4, 0])
    dkd = build("dkd", ctx_for("dkd", options={"standardize": True, "T": 2.0, "warmup": 0}))
    zs, zt = standardize(t(s)), standardize(t(te))
    want = dkd_loss(zs, zt, torch.tensor(y), 1.0, 8.0, 2.0).item()
    assert dkd(feats(s), feats(te), torch.tensor(y))["dkd"].item() == pytest.approx(want, rel=1e-6)


# ============================== CTKD ============================================================


def official_cosine_decay(i, loops=10, vmax=0.0, vmin=-1.0):
    """CTKD's CosineDecay.get_value as its train_student.py defines it, 1-based epoch i."""
    i = min(max(i, 0), loops)
    return (math.cos(i * math.pi / loops) + 1.0) * 0.5 * (vmax - vmin) + vmin


def test_ctkd_lambda_schedule_hand_values_and_official_curve():
    assert ctkd_lambda(0) == pytest.approx((1 - math.cos(math.pi / 10)) / 2)  # ≈ 0.0245
    assert ctkd_lambda(0) == pytest.approx(0.0244717, abs=1e-6)
    assert ctkd_lambda(4) == pytest.approx(0.5)      # official epoch 5 of 10: half way
    assert ctkd_lambda(9) == 1.0 and ctkd_lambda(239) == 1.0
    curve = [ctkd_lambda(e) for e in range(30)]
    assert curve == sorted(curve) and all(0 < v <= 1 for v in curve)
    # the official GRL multiplies the gradient by CosineDecay's value (0 → −1) at epoch e + 1
    for e in range(15):
        assert -ctkd_lambda(e) == pytest.approx(official_cosine_decay(e + 1), abs=1e-12)
    assert ctkd_lambda(2, loops=4) == pytest.approx((1 - math.cos(3 * math.pi / 4)) / 2)


def test_ctkd_temperature_range_and_initial_value():
    theta = torch.tensor([1.0])
    assert curriculum_temperature(theta, 0.5).item() == pytest.approx(
        1 + 20 / (1 + math.exp(-1)), rel=1e-6)  # ≈ 15.62
    for v in (-50.0, -3.0, 0.0, 3.0, 50.0):
        T = curriculum_temperature(torch.tensor([v]), 1.0).item()
        assert 1.0 <= T <= 21.0
    assert curriculum_temperature(torch.tensor([-50.0]), 1.0).item() == pytest.approx(1.0)
    assert curriculum_temperature(torch.tensor([50.0]), 1.0).item() == pytest.approx(21.0)
    assert curriculum_temperature(torch.tensor([0.0]), 1.0, 2.0, 10.0).item() == 7.0


def test_gradient_reversal_is_identity_forward_and_minus_lambda_backward():
    x = torch.tensor([0.3, -1.7], requires_grad=True)
    y = gradient_reversal(x, 0.25)
    assert torch.equal(y.detach(), x.detach())
    (y * torch.tensor([2.0, 3.0])).sum().backward()
    assert x.grad.tolist() == pytest.approx([-0.5, -0.75])


def test_ctkd_kd_theta_gradient_is_the_reversed_plain_gradient():
    zs, zt = logits(), logits()
    s, te = t(zs), t(zt)
    kd = build("kd", ctx_for("kd", options={"ctkd": True}))
    theta = kd.temperature.theta
    assert [p is theta for p in kd.parameters()] == [True] and theta.item() == 1.0
    epoch = 2
    kd(feats(s), feats(te), None, epoch=epoch)["kd"].backward()
    # the same loss with T = 1 + 20σ(θ) and no reversal, differentiated by hand:
    # dL/dθ = dL/dT · 20σ(1−σ), dL/dT by a float64 central difference of the numpy KD
    sig = 1 / (1 + math.exp(-1.0))
    T0, h = 1 + 20 * sig, 1e-4
    dL_dT = (kd_np(zs, zt, T0 + h) - kd_np(zs, zt, T0 - h)) / (2 * h)
    plain = dL_dT * 20 * sig * (1 - sig)
    assert theta.grad.item() == pytest.approx(-ctkd_lambda(epoch) * plain, rel=1e-3)
    # the forward value is KD at that temperature
    value = kd(feats(s), feats(te), None, epoch=epoch)["kd"].item()
    assert value == pytest.approx(kd_loss(s, te, T0).item(), rel=1e-5)


def test_ctkd_dkd_uses_the_learnable_temperature_in_both_parts():
    s, te = t(logits()), t(logits())
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    dkd = build("dkd", ctx_for("dkd", options={"ctkd": True, "warmup": 0}))
    T0 = 1 + 20 / (1 + math.exp(-1))
    got = dkd(feats(s), feats(te), y, epoch=5)["dkd"].item()
    assert got == pytest.approx(dkd_loss(s, te, y, 1.0, 8.0, T0).item(), rel=1e-5)


# ============================== DIST ============================================================


def dist_numpy(s, te, beta, gamma, T):
    ys = np.stack([softmax(r / T) for r in s])
    yt = np.stack([softmax(r / T) for r in te])
    inter = 1 - np.mean([np.corrcoef(ys[i], yt[i])[0, 1] for i in range(len(s))])
    intra = 1 - np.mean([np.corrcoef(ys[:, c], yt[:, c])[0, 1] for c in range(s.shape[1])])
    return T * T * (beta * inter + gamma * intra)


def test_dist_against_numpy_pearson():
    s, te = logits(8, 6), logits(8, 6)
    for beta, gamma, T in ((1.0, 1.0, 4.0), (2.0, 0.5, 1.0)):
        got = dist(t(s), t(te), beta, gamma, T).item()
        assert got == pytest.approx(dist_numpy(s, te, beta, gamma, T), rel=1e-4)


def test_dist_hand_worked_perfect_and_shifted_predictions():
    s = logits(4, 5)
    assert dist(t(s), t(s)).item() == pytest.approx(0.0, abs=1e-4)  # ε and float32 only
    # Pearson ignores the offset: two-class rows [p, 1−p] and [q, 1−q] are perfectly
    # correlated (inter = 0) whenever p ≠ ½; across the batch, p and q co-vary (intra = 0)
    a, b = t([[2.0, 0.0], [0.0, 1.0]]), t([[3.0, 0.0], [0.0, 2.0]])
    assert dist(a, b, T=1.0).item() == pytest.approx(0.0, abs=1e-5)
    # reversed rankings: ρ = −1 everywhere, so each relation is 2, times T² = 16
    inter, intra = dist_relations(a, b.flip(1), T=4.0)
    assert inter.item() == pytest.approx(32.0, rel=1e-4)
    assert intra.item() == pytest.approx(32.0, rel=1e-4)


def test_dist_registration_matches_the_official_cifar_config():
    w, o = resolve("dist")
    assert w == {"w_ce": 1.0, "w_dist": 2.0} and o == {"beta": 1.0, "gamma": 1.0, "T": 4.0}


# ============================== MLKD ============================================================

TEMPS = (3.0, 5.0, 2.0, 6.0)


def kd_np(s, te, T):
    return T * T * np.mean([kl(softmax(te[i] / T), softmax(s[i] / T)) for i in range(len(s))])


def probs(z, T):
    return np.stack([softmax(r / T) for r in z])


def cc_np(s, te, T):  # class correlation, C × C
    ps, pt = probs(s, T), probs(te, T)
    return float(((pt.T @ pt - ps.T @ ps) ** 2).sum() / s.shape[1])


def bc_np(s, te, T):  # batch correlation, B × B
    ps, pt = probs(s, T), probs(te, T)
    return float(((pt @ pt.T - ps @ ps.T) ** 2).sum() / s.shape[0])


def masks_np(te):
    pt = probs(te, 1.0)
    conf, per_class = pt.max(1), pt.sum(0)
    return (conf <= np.percentile(conf, 50)), (per_class <= np.percentile(per_class, 50))


def mlkd_official_np(sw, tw, ss=None, ts=None, T=4.0):
    """KD_ours.forward_train as written: masks multiply batch-mean scalars, strong T = 2, 6 on the
    weak logits, strong cc/bc left out of the loss."""
    temps = (T, *TEMPS)
    mask, cmask = masks_np(tw)
    inst = sum(kd_np(sw, tw, u) * mask.mean() for u in temps)
    klass = sum(cc_np(sw, tw, u) * cmask.mean() for u in temps)
    batch = sum(bc_np(sw, tw, u) * mask.mean() for u in temps)
    if ss is not None:
        inst += kd_np(ss, ts, T) + kd_np(ss, ts, 3.0) + kd_np(ss, ts, 5.0)
        inst += kd_np(sw, tw, 2.0) + kd_np(sw, tw, 6.0)
    return inst, klass, batch


def test_mlkd_single_view_official_against_numpy():
    sw, tw = logits(8, 6), logits(8, 6)
    got = mlkd_loss(t(sw), t(tw), T=4.0)
    want = mlkd_official_np(sw, tw)
    for key, w in zip(("instance", "class", "batch"), want):
        assert got[key].item() == pytest.approx(w, rel=1e-4), key


def test_mlkd_two_views_official_against_numpy():
    sw, tw, ss, ts = (logits(6, 5) for _ in range(4))
    got = mlkd_loss(t(sw), t(tw), t(ss), t(ts), T=4.0)
    want = mlkd_official_np(sw, tw, ss, ts)
    for key, w in zip(("instance", "class", "batch"), want):
        assert got[key].item() == pytest.approx(w, rel=1e-4), key


def test_mlkd_masks_scale_by_the_fraction_not_select():
    # teacher top-1 confidences strictly increasing over 5 samples: the median is the 3rd,
    # conf ≤ median keeps 3 of 5, so the official weak terms are 3/5 of the unmasked ones
    tw = np.array([[0.0, 0.0, 0.0, 0.0], [1.0, 0, 0, 0], [2.0, 0, 0, 0], [3.0, 0, 0, 0],
                   [4.0, 0, 0, 0]])
    sw = logits(5, 4)
    sample, _ = confidence_fractions(t(tw))
    assert sample.item() == pytest.approx(3 / 5)
    official = mlkd_loss(t(sw), t(tw), variant="official")
    paper = mlkd_loss(t(sw), t(tw), variant="paper")
    assert official["instance"].item() == pytest.approx(0.6 * paper["instance"].item(), rel=1e-5)
    assert official["batch"].item() == pytest.approx(0.6 * paper["batch"].item(), rel=1e-5)
    # a selection would have kept only the three least confident samples' KL: not what happens
    selected = sum(np.mean([kl(softmax(tw[i] / u), softmax(sw[i] / u)) * u * u
                            for i in range(3)]) for u in (4.0, *TEMPS))
    assert abs(official["instance"].item() - selected) > 1e-3
    # even batch: the median lies between the middle two, exactly half the samples count
    assert confidence_fractions(t(tw[:4]))[0].item() == 0.5


def test_mlkd_official_strong_terms_at_2_and_6_use_the_weak_logits():
    sw, tw, ss, ts = (logits(6, 5) for _ in range(4))
    one = mlkd_loss(t(sw), t(tw))["instance"].item()
    two = mlkd_loss(t(sw), t(tw), t(ss), t(ts))["instance"].item()
    strong_part = sum(kd_np(ss, ts, u) for u in (4.0, 3.0, 5.0))
    weak_again = kd_np(sw, tw, 2.0) + kd_np(sw, tw, 6.0)
    assert two - one == pytest.approx(strong_part + weak_again, rel=1e-4)
    # the paper variant uses the strong logits at every temperature instead
    paper = mlkd_loss(t(sw), t(tw), t(ss), t(ts), variant="paper")["instance"].item()
    assert paper == pytest.approx(sum(kd_np(sw, tw, u) + kd_np(ss, ts, u)
                                      for u in (4.0, *TEMPS)), rel=1e-4)


def test_mlkd_official_drops_the_strong_class_and_batch_terms():
    sw, tw, ss, ts = (logits(6, 5) for _ in range(4))
    s_weak, s_strong = t(sw).requires_grad_(), t(ss).requires_grad_()
    out = mlkd_loss(s_weak, t(tw), s_strong, t(ts))
    one = mlkd_loss(t(sw), t(tw))
    assert out["class"].item() == one["class"].item()
    assert out["batch"].item() == one["batch"].item()
    (out["class"] + out["batch"]).backward()
    assert s_weak.grad.abs().sum() > 0 and s_strong.grad is None
    paper = mlkd_loss(t(sw), t(tw), t(ss), t(ts), variant="paper")
    assert paper["class"].item() == pytest.approx(
        sum(cc_np(sw, tw, u) + cc_np(ss, ts, u) for u in (4.0, *TEMPS)), rel=1e-4)
    assert paper["batch"].item() == pytest.approx(
        sum(bc_np(sw, tw, u) + bc_np(ss, ts, u) for u in (4.0, *TEMPS)), rel=1e-4)


def test_mlkd_hand_worked_class_and_batch_terms():
    # B = 1, C = 2 at T = 1: p_s = [½, ½], p_t = [¾, ¼]
    s, te = t([[0.0, 0.0]]), t([[math.log(3.0), 0.0]])
    # pᵀp: teacher [[9, 3], [3, 1]]/16, student all ¼ → squared differences (5², 1², 1², 3²)/16²
    assert mlkd_class(s, te, 1.0).item() == pytest.approx((25 + 1 + 1 + 9) / 256 / 2)
    # ppᵀ: 10/16 vs ½ → (1/8)² / B
    assert mlkd_batch(s, te, 1.0).item() == pytest.approx(1 / 64, rel=1e-5)


def test_mlkd_standardize_touches_the_instance_level_only():
    sw, tw = logits(6, 5), logits(6, 5)
    plain = mlkd_loss(t(sw), t(tw))
    ls = mlkd_loss(t(sw), t(tw), standardize_logits=True, T=2.0)
    plain2 = mlkd_loss(t(sw), t(tw), T=2.0)
    assert ls["class"].item() == plain2["class"].item()
    assert ls["batch"].item() == plain2["batch"].item()
    z = lambda a: (a - a.mean(1, keepdims=True)) / (1e-7 + a.std(1, ddof=1, keepdims=True))  # noqa: E731
    mask, _ = masks_np(tw)  # the masks still come from the raw teacher logits
    want = sum(kd_np(z(sw), z(tw), u) for u in (2.0, *TEMPS)) * mask.mean()
    assert ls["instance"].item() == pytest.approx(want, rel=1e-4)
    assert ls["instance"].item() != pytest.approx(plain["instance"].item(), rel=1e-3)


def test_mlkd_distiller_needs_the_strong_view_and_adds_its_ce():
    sw, tw, ss, ts = (logits(6, 4) for _ in range(4))
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    mlkd = build("mlkd", ctx_for("mlkd"))
    with pytest.raises(ConfigError, match="strongly augmented view.*mlkd_noaug"):
        mlkd(feats(sw), feats(tw), y)
    terms = mlkd(feats(sw), feats(tw), y, views=[(feats(ss), feats(ts))])
    assert set(terms) == {"mlkd_instance", "mlkd_class", "mlkd_batch", "mlkd_ce_strong"}
    ce = np.mean([-math.log(softmax(ss[i])[y[i]]) for i in range(6)])
    assert terms["mlkd_ce_strong"].item() == pytest.approx(ce, rel=1e-5)
    want = mlkd_official_np(sw, tw, ss, ts)
    assert terms["mlkd_instance"].item() == pytest.approx(want[0], rel=1e-4)
    noaug = build("mlkd_noaug", ctx_for("mlkd_noaug"))(feats(sw), feats(tw), y)
    assert set(noaug) == {"mlkd_instance", "mlkd_class", "mlkd_batch"}
    assert build("mlkd", ctx_for("mlkd")).views == ("strong",)  # the engine makes that view


# ============================== NKD =============================================================


def nkd_numpy(s, te, y, T, gamma):
    target, non = [], []
    for i in range(len(y)):
        target.append(softmax(te[i])[y[i]] * math.log(softmax(s[i])[y[i]]))
        others = [c for c in range(s.shape[1]) if c != y[i]]
        q_t, q_s = softmax(te[i, others] / T), softmax(s[i, others] / T)
        non.append(float(np.sum(q_t * np.log(q_s))))
    return -np.mean(target) - gamma * T * T * np.mean(non)


def test_nkd_against_numpy_loop():
    s, te = logits(7, 6), logits(7, 6)
    y = np.array([0, 5, 2, 3, 1, 4, 2])
    for T, gamma in ((1.0, 1.5), (3.0, 3.5)):
        got = nkd(t(s), t(te), torch.tensor(y), T, gamma).item()
        assert got == pytest.approx(nkd_numpy(s, te, y, T, gamma), rel=1e-5)


def test_nkd_hand_worked_three_classes():
    # y = 0; teacher [ln 2, 0, 0] → p_t,y = ½; student zeros → p_s,y = ⅓; non-target: both
    # uniform over 2 classes → −Σ ½ ln ½ = ln 2 (a cross-entropy, not a KL, so not 0)
    got = nkd(t([[0.0, 0.0, 0.0]]), t([[math.log(2.0), 0.0, 0.0]]), torch.tensor([0]),
                 T=1.0, gamma=1.5).item()
    assert got == pytest.approx(-0.5 * math.log(1 / 3) + 1.5 * math.log(2), rel=1e-6)
    # the target logits do not enter the non-target part
    a = nkd(t([[9.0, 1.0, 2.0]]), t([[0.0, 1.0, 3.0]]), torch.tensor([0]), 2.0, 1.0)
    b = nkd(t([[-4.0, 1.0, 2.0]]), t([[0.0, 1.0, 3.0]]), torch.tensor([0]), 2.0, 1.0)
    target_a = -softmax([0.0, 1, 3])[0] * math.log(softmax([9.0, 1, 2])[0])
    target_b = -softmax([0.0, 1, 3])[0] * math.log(softmax([-4.0, 1, 2])[0])
    assert a.item() - target_a == pytest.approx(b.item() - target_b, rel=1e-5)


# ============================== TTM / WTTM ======================================================


def ttm_numpy(s, te, gamma, weighted):
    out = []
    for i in range(len(s)):
        p = softmax(te[i]) ** gamma
        u = p.sum()
        val = kl(p / u, softmax(s[i]))
        out.append(u * val if weighted else val)
    return float(np.mean(out))


def test_ttm_and_wttm_against_numpy():
    s, te = logits(6, 7), logits(6, 7)
    for gamma in (0.1, 0.25, 1.0):
        assert ttm_loss(t(s), t(te), gamma).item() == pytest.approx(
            ttm_numpy(s, te, gamma, False), rel=1e-5)
        assert wttm(t(s), t(te), gamma).item() == pytest.approx(
            ttm_numpy(s, te, gamma, True), rel=1e-5)


def test_ttm_is_kd_with_the_temperature_on_the_teacher_only():
    # p_t^(1/T) normalised = softmax(z_t / T); the student stays at temperature 1, no T²
    s, te = logits(5, 6), logits(5, 6)
    want = np.mean([kl(softmax(te[i] / 4), softmax(s[i])) for i in range(5)])
    assert ttm_loss(t(s), t(te), 0.25).item() == pytest.approx(want, rel=1e-5)
    # γ = 1 is plain KL at T = 1
    assert ttm_loss(t(s), t(te), 1.0).item() == pytest.approx(kd_loss(t(s), t(te), 1.0).item(),
                                                            rel=1e-5)


def test_wttm_weight_hand_worked_uniform_teacher():
    # uniform teacher over C classes: U = C · (1/C)^γ = C^(1−γ); p̃ uniform
    C, gamma = 4, 0.5
    s = t([[1.0, 0.0, 0.0, 0.0]])
    te = torch.zeros(1, C)
    u = C ** (1 - gamma)
    ttm = ttm_loss(s, te, gamma).item()
    assert wttm(s, te, gamma).item() == pytest.approx(u * ttm, rel=1e-6)
    ps = softmax([1.0, 0, 0, 0])
    assert ttm == pytest.approx(kl([0.25] * 4, ps), rel=1e-6)


# ============================== RLD =============================================================


def rld_numpy(s, te, y, alpha, beta, T, scd_T):
    scd, mcd = [], []
    for i in range(len(y)):
        ps, pt = softmax(s[i] / scd_T), softmax(te[i] / scd_T)
        m = int(np.argmax(te[i]))
        scd.append(kl([pt[m], 1 - pt[m]], [ps[y[i]], 1 - ps[y[i]]]))
        keep = [c for c in range(s.shape[1]) if te[i, c] < te[i, y[i]]]
        mcd.append(kl(softmax(te[i, keep] / T), softmax(s[i, keep] / T)) if keep else 0.0)
    return alpha * scd_T ** 2 * np.mean(scd) + beta * T * T * np.mean(mcd)


def test_rld_against_numpy_loop_with_wrong_teachers():
    s, te = logits(8, 6), logits(8, 6)
    y = np.array([0, 1, 2, 3, 4, 5, 0, 1])
    assert (te.argmax(1) != y).sum() >= 3  # several samples the teacher gets wrong
    for T, scd_T in ((4.0, 4.0), (4.0, 1.0), (2.0, 3.0)):
        got = rld(t(s), t(te), torch.tensor(y), 1.0, 8.0, T, scd_T).item()
        assert got == pytest.approx(rld_numpy(s, te, y, 1.0, 8.0, T, scd_T), rel=1e-4)


def test_rld_with_a_correct_teacher_is_dkd_shaped():
    # teacher's top class = target: MCD masks only the target, which is DKD's NCKD, and SCD's
    # binary split is DKD's TCKD
    te = logits(5, 6)
    y = torch.tensor(te.argmax(1))
    s = logits(5, 6)
    mcd = rld_mcd(t(s), t(te), y, 4.0).item()
    assert mcd == pytest.approx(dkd_loss(t(s), t(te), y, 0.0, 1.0, 4.0).item(), rel=1e-5)
    scd = rld_scd(t(s), t(te), y, 4.0).item()
    assert scd == pytest.approx(dkd_loss(t(s), t(te), y, 1.0, 0.0, 4.0).item(), rel=1e-5)


def test_rld_masks_classes_the_teacher_ranks_at_or_above_the_target():
    # teacher prefers class 2 over the target 0: MCD runs over classes {1, 3} only
    te, s = t([[1.0, 0.0, 2.0, -1.0]]), t([[0.3, -0.2, 5.0, 0.7]])
    got = rld_mcd(s, te, torch.tensor([0]), 1.0).item()
    assert got == pytest.approx(kl(softmax([0.0, -1.0]), softmax([-0.2, 0.7])), rel=1e-6)
    # a target the teacher ranks last masks every class: two uniforms, a zero (finite) term
    s2 = t([[0.3, -0.2, 5.0, 0.7]]).requires_grad_()
    worst = rld_mcd(s2, t([[1.0, 2.0, 3.0, 4.0]]), torch.tensor([0]), 4.0)
    assert worst.item() == 0.0
    worst.backward()
    assert torch.isfinite(s2.grad).all()


def test_rld_distiller_warmup_and_scd_temperature_choice():
    s, te = logits(), logits()
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    same = build("rld", ctx_for("rld"))  # README: --same-t, so SCD at T = 4
    want = rld(t(s), t(te), y, 1.0, 8.0, 4.0, 4.0).item()
    assert same(feats(s), feats(te), y, epoch=19)["rld"].item() == pytest.approx(want, rel=1e-6)
    assert same(feats(s), feats(te), y, epoch=0)["rld"].item() == pytest.approx(want / 20,
                                                                                rel=1e-6)
    cfg_default = build("rld", ctx_for("rld", options={"same_T": False}))  # ALPHA_T 1.0
    want1 = rld(t(s), t(te), y, 1.0, 8.0, 4.0, 1.0).item()
    assert cfg_default(feats(s), feats(te), y, epoch=30)["rld"].item() == pytest.approx(
        want1, rel=1e-6)
    assert want1 != pytest.approx(want, rel=1e-3)


def test_rld_standardize_applies_to_both_parts():
    s, te = logits(), logits()
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    got = rld(t(s), t(te), y, 1.0, 8.0, 2.0, 2.0, standardize_logits=True).item()
    want = rld(standardize(t(s)), standardize(t(te)), y, 1.0, 8.0, 2.0, 2.0).item()
    assert got == pytest.approx(want, rel=1e-6)


# ============================== modifiers =======================================================


def test_split_modifiers():
    assert split_modifiers("kd+ls") == ("kd", ["ls"])
    assert split_modifiers("crd+kd+ctkd+ls") == ("crd+kd", ["ctkd", "ls"])
    assert split_modifiers("dist") == ("dist", [])
    with pytest.raises(ConfigError, match="names ls twice"):
        split_modifiers("kd+ls+ls")
    with pytest.raises(ConfigError, match="only modifiers"):
        split_modifiers("ls")


def test_ls_settings_follow_the_official_per_pair_runs():
    w, o = modifier_settings("kd", "ls", student="resnet20", teacher="resnet110")
    assert w == {"w_ce": 0.1, "w_kd": 12.0} and o == {"standardize": True, "T": 4.0}
    w, o = modifier_settings("kd", "ls", student="resnet8x4", teacher="resnet32x4")
    assert w["w_kd"] == 9.0 and o["T"] == 2.0
    w, o = modifier_settings("dkd", "ls", student="vgg8", teacher="vgg13")
    # LS's own beta, with mdistiller's per-pair table off (it would say 6 for this pair)
    assert w == {"w_dkd": 15.0} and o == {"standardize": True, "T": 2.0, "beta": 2.0,
                                          "beta_table": False}
    w, o = modifier_settings("mlkd", "ls", student="ShuffleV2", teacher="resnet32x4")
    assert set(w.values()) == {6.0} and len(w) == 3 and o["T"] == 2.0
    # a pair LS did not run, or per_pair off: the command-line defaults 2 and 9
    assert ls_values("kd", "resnet8", "resnet8") == (2.0, 9.0)
    assert ls_values("kd", "resnet110", "resnet20", per_pair=False) == (2.0, 9.0)
    w, o = modifier_settings("rld", "ls")
    assert w == {"w_rld": 9.0} and o == {"standardize": True, "T": 2.0, "scd_T": 2.0}
    w, o = modifier_settings("dkd", "ls", student="resnet8", teacher="resnet8")
    assert "beta" not in o  # LS kept the configured β where its logs name none
    # LS with CTKD: every pair logged at 2 and 9 (the learnable T makes the 2 moot)
    w, _ = modifier_settings("kd", "ls", student="resnet20", teacher="resnet110",
                                others=["ctkd"])
    assert w == {"w_ce": 0.1, "w_kd": 9.0}


def test_modifier_settings_go_under_user_values_through_resolve():
    w_mod, o_mod = modifier_settings("kd", "ls", student="resnet8x4", teacher="resnet32x4")
    w, o = resolve("kd", {**w_mod, "w_kd": 5.0}, o_mod)
    assert w == {"w_ce": 0.1, "w_kd": 5.0} and o["standardize"] is True and o["T"] == 2.0
    weights, options = resolve("dkd")
    apply_modifier("dkd", "ctkd", weights, options)
    assert options["ctkd"] is True and options["warmup"] == 0 and weights == {"w_ce": 1.0,
                                                                                "w_dkd": 1.0}


def test_modifiers_on_composites_touch_only_the_parts_they_apply_to():
    w, o = modifier_settings("crd+kd", "ls", student="resnet8x4", teacher="resnet32x4")
    assert w == {"w_kd": 9.0} and o == {"standardize": True, "T": 2.0}  # crd keeps its w_ce
    w, o = modifier_settings("pkt+kd", "ctkd")  # CTKD's "+PKT" rows: KD carries the learnable T
    assert w == {} and o == {"ctkd": True}


def test_modifier_on_a_loss_it_does_not_apply_to_is_a_one_line_error():
    for loss, mod in (("at", "ls"), ("crd", "ctkd"), ("dist", "ctkd"), ("pkt", "ctkd")):
        with pytest.raises(ConfigError) as err:
            modifier_settings(loss, mod)
        msg = str(err.value)
        assert "\n" not in msg and f"'{loss}'" in msg and f"'{mod}'" in msg
        assert ", ".join(MODIFIERS[mod].applies_to) in msg
    with pytest.raises(ConfigError, match=r"unknown modifier 'xx' \(valid: ls, ctkd\)"):
        modifier_settings("kd", "xx")


# ============================== bad values ======================================================


@pytest.mark.parametrize("name, options, match", [
    ("dist", {"T": -1.0}, "'dist' option T must be > 0, got -1.0"),
    ("dist", {"gamma": -0.5}, "'dist' option gamma must be >= 0, got -0.5"),
    ("nkd", {"T": 0.0}, "'nkd' option T must be > 0, got 0.0"),
    ("ttm", {"gamma": -0.1}, "'ttm' option gamma must be > 0, got -0.1"),
    ("wttm", {"gamma": 0.0}, "'wttm' option gamma must be > 0, got 0.0"),
    ("rld", {"scd_T": -2.0}, "'rld' option scd_T must be > 0, got -2.0"),
    ("rld", {"warmup": 2.5}, "'rld' option warmup must be an integer, got 2.5"),
    ("mlkd", {"T": -4.0}, "'mlkd' option T must be > 0, got -4.0"),
    ("mlkd_noaug", {"variant": "fixed"},
     "'mlkd_noaug' option variant='fixed' is not one of official, paper"),
])
def test_bad_option_values_fail_at_resolve_in_one_line(name, options, match):
    with pytest.raises(ConfigError) as err:
        resolve(name, options=options)
    assert match in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("name, weight", [("dist", "w_dist"), ("rld", "w_ce"),
                                          ("mlkd_noaug", "w_mlkd_class"), ("crd+wttm", "w_wttm")])
def test_negative_weights_fail_at_resolve(name, weight):
    with pytest.raises(ConfigError, match=f"weight {weight} must be >= 0, got -1.0"):
        resolve(name, weights={weight: -1.0})


def test_bad_modifier_options_on_kd_and_dkd():
    with pytest.raises(ConfigError, match="'kd' option ctkd_loops must be > 0, got 0"):
        build("kd", ctx_for("kd", options={"ctkd": True, "ctkd_loops": 0}))
    with pytest.raises(ConfigError, match="'dkd' option ctkd_t_end must be > 0, got -20.0"):
        build("dkd", ctx_for("dkd", options={"ctkd": True, "ctkd_t_end": -20.0}))
    with pytest.raises(ConfigError, match="option standardize must be true or false"):
        resolve("kd", options={"standardize": 3})


#: the logit methods of 2022-2025 (the second built-in plugin of kdbench 0.2)
LOGIT_METHODS = ("dist", "mlkd", "mlkd_noaug", "nkd", "ttm", "wttm", "rld")


def test_registrations_carry_paper_year_repo_family_and_every_default():
    for name in LOGIT_METHODS:
        _, meta = LOSSES[name]
        assert meta["family"] == "logit" and meta["repo"].startswith("https://github.com/")
        assert isinstance(meta["year"], int) and 2022 <= meta["year"] <= 2025
        assert meta["paper"] and meta["taps"] == ("logits",)
        assert f"w_{name.split('_')[0]}" in meta["defaults"] or name.startswith("mlkd")


# ============================== end to end ======================================================


@pytest.mark.usefixtures("single_thread")
def test_ctkd_theta_is_optimised_with_the_student():
    from kdbench import device, engine
    from kdbench.config import Recipe
    from kdbench.data import load_dataset

    data = load_dataset("synthetic", None, train_size=64, test_size=16)
    device.seed_everything(0)
    student = create_model("resnet8", data.num_classes, data.in_chans)
    teacher = create_model("resnet8", data.num_classes, data.in_chans)
    w, o = resolve("kd", options={"ctkd": True})
    ctx = DistillContext(student, teacher, data.num_classes, data.input_shape, len(data.train),
                         w, o)
    trainee = engine.Trainee("student", student, build("kd", ctx), Recipe(epochs=2, lr=0.05))
    theta = trainee.distiller.temperature.theta
    main = trainee.optimizer(trainee.stages[-1])
    assert any(p is theta for g in main.param_groups for p in g["params"])
    engine.fit([trainee], data, engine.FitOptions(
        batch_size=32, seed=0, device=torch.device("cpu"), teacher=teacher, progress=False,
        augment=False))
    assert theta.item() != 1.0 and math.isfinite(theta.item())
    assert "temperature.theta" in trainee.distiller.state_dict()  # saved and resumed with it


E2E = [("dist", {}), ("mlkd", {}), ("mlkd_noaug", {}), ("nkd", {}), ("ttm", {}), ("wttm", {}),
       ("rld", {}),
       ("kd", {"standardize": True, "T": 2.0}), ("kd", {"ctkd": True}),
       ("dkd", {"standardize": True, "ctkd": True, "warmup": 0}),
       ("mlkd_noaug", {"standardize": True, "variant": "paper"}), ("crd+wttm", {"nce_k": 16})]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One results store for the module: the tiny teacher is trained once."""
    return tmp_path_factory.mktemp("modern") / "results"


@pytest.mark.usefixtures("single_thread")
@pytest.mark.parametrize("name, options", E2E)
def test_trains_two_epochs_through_the_runner(store, name, options):
    extra = {f"loss.options.{k}": v for k, v in options.items()}
    config = build_config(tiny_overrides(store, **{"loss.name": name, **extra}))
    record = run(config, progress=False)
    assert record["status"] == "done" and record["metrics"]["epochs"] == 2
    curve = record["metrics"]["curve"]
    terms = [k for k in curve[0] if k.startswith("train_") and k not in ("train_top1",
                                                                          "train_loss")]
    assert terms and all(math.isfinite(row[k]) for row in curve for k in terms)
    for key, value in options.items():
        assert record["config"]["loss"]["options"][key] == value
