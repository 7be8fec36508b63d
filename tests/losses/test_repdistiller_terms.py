"""Every functional KD term against a value derived independently here: a numpy loop over the
formula, or a small case worked by hand. Includes the points where implementations differ."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kdbench.losses.ab import ab
from kdbench.losses.at import at
from kdbench.losses.cc import cc
from kdbench.losses.crd import crd, nce_contrast
from kdbench.losses.dkd import dkd
from kdbench.losses.dml import dml
from kdbench.losses.fitnet import hint
from kdbench.losses.fsp import fsp
from kdbench.losses.ft import ft as ft_loss
from kdbench.losses.kd import kd
from kdbench.losses.nst import nst
from kdbench.losses.pkt import pkt
from kdbench.losses.rkd import rkd as rkd_loss
from kdbench.losses.rkd import rkd_angle, rkd_distance
from kdbench.losses.sp import sp
from kdbench.losses.vid import vid

rng = np.random.default_rng(0)


def t(a) -> torch.Tensor:
    return torch.tensor(np.asarray(a), dtype=torch.float32)


def softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def kl(p, q):
    return float(sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0))


def avgpool(f, size):  # (B, C, H, W) -> (B, C, size, size), H divisible by size
    b, c, h, _ = f.shape
    k = h // size
    return f.reshape(b, c, size, k, size, k).mean(axis=(3, 5))


# ============================== logits ==========================================================


def test_kd_hand_worked_batchmean_and_T_squared():
    # p_t = [3/4, 1/4], p_s = [1/2, 1/2] at T = 1: KL = 3/4 ln(3/2) + 1/4 ln(1/2)
    s = t([[0.0, 0.0], [0.0, 0.0]])
    te = t([[math.log(3), 0.0], [math.log(3), 0.0]])
    per_sample = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert kd(s, te, T=1.0).item() == pytest.approx(per_sample, rel=1e-5)  # mean, not sum
    # T = 2 divides the logits by 2 and multiplies the KL by 4
    p_t = softmax(np.array([math.log(3) / 2, 0.0]))
    assert kd(s, te, T=2.0).item() == pytest.approx(4 * kl(p_t, [0.5, 0.5]), rel=1e-5)


def test_kd_against_numpy():
    s, te = rng.normal(size=(5, 7)) * 3, rng.normal(size=(5, 7)) * 3
    T = 4.0
    want = np.mean([kl(softmax(te[i] / T), softmax(s[i] / T)) for i in range(5)]) * T * T
    assert kd(t(s), t(te), T).item() == pytest.approx(want, rel=1e-5)
    assert dml(t(s), t(te)).item() == pytest.approx(
        np.mean([kl(softmax(te[i]), softmax(s[i])) for i in range(5)]), rel=1e-5)


def dkd_numpy(s, te, y, alpha, beta, T):
    out = []
    for i in range(len(y)):
        ps, pt = softmax(s[i] / T), softmax(te[i] / T)
        tckd = kl([pt[y[i]], 1 - pt[y[i]]], [ps[y[i]], 1 - ps[y[i]]])
        others = [j for j in range(len(s[i])) if j != y[i]]
        nckd = kl(softmax(te[i, others] / T), softmax(s[i, others] / T))
        out.append((alpha * tckd + beta * nckd) * T * T)
    return float(np.mean(out))


def test_dkd_against_numpy_loop():
    s, te = rng.normal(size=(6, 5)) * 2, rng.normal(size=(6, 5)) * 2
    y = np.array([0, 1, 2, 3, 4, 0])
    got = dkd(t(s), t(te), torch.tensor(y), alpha=1.0, beta=8.0, T=4.0).item()
    assert got == pytest.approx(dkd_numpy(s, te, y, 1.0, 8.0, 4.0), rel=1e-5)


def test_dkd_masking_nckd_ignores_the_target_logit():
    s, te = rng.normal(size=(3, 6)), rng.normal(size=(3, 6))
    y = torch.tensor([2, 0, 5])
    nckd = dkd(t(s), t(te), y, alpha=0.0, beta=1.0, T=2.0).item()
    s2 = s.copy()
    s2[np.arange(3), y.numpy()] += 7.0  # only the target logits move
    assert dkd(t(s2), t(te), y, alpha=0.0, beta=1.0, T=2.0).item() == pytest.approx(nckd,
                                                                                       rel=1e-5)
    # mdistiller's -1000 trick on the target logit gives the same value
    gt = np.zeros_like(s)
    gt[np.arange(3), y.numpy()] = 1
    want = np.mean([kl(softmax(te[i] / 2 - 1000 * gt[i]), softmax(s[i] / 2 - 1000 * gt[i]))
                    for i in range(3)]) * 4
    assert nckd == pytest.approx(want, rel=1e-4)


def test_dkd_reformulates_kd():
    # the DKD paper's identity, per sample: KD = TCKD + (1 − p_t^gt) · NCKD
    s, te = rng.normal(size=(1, 8)) * 2, rng.normal(size=(1, 8)) * 2
    y = torch.tensor([3])
    T = 3.0
    p_gt = softmax(te[0] / T)[3]
    got = dkd(t(s), t(te), y, alpha=1.0, beta=1 - p_gt, T=T).item()
    assert got == pytest.approx(kd(t(s), t(te), T).item(), rel=1e-4)


def test_dkd_gradient_is_finite_despite_masking():
    s = t(rng.normal(size=(4, 5))).requires_grad_()
    dkd(s, t(rng.normal(size=(4, 5))), torch.tensor([0, 1, 2, 3])).backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


# ============================== feature maps ====================================================


def test_hint_is_elementwise_mse():
    a, b = rng.normal(size=(2, 3, 4, 4)), rng.normal(size=(2, 3, 4, 4))
    assert hint(t(a), t(b)).item() == pytest.approx(np.mean((a - b) ** 2), rel=1e-5)


def at_numpy(fs, ft, p=2):
    def amap(f):
        m = (f ** p).mean(axis=1).reshape(len(f), -1)
        return m / np.linalg.norm(m, axis=1, keepdims=True)
    return float(np.mean((amap(fs) - amap(ft)) ** 2))


def test_at_normalisation_and_mean_over_batch_and_space():
    fs, ft = np.abs(rng.normal(size=(3, 4, 4, 4))), np.abs(rng.normal(size=(3, 8, 4, 4)))
    got = at(t(fs), t(ft), 2.0).item()
    assert got == pytest.approx(at_numpy(fs, ft), rel=1e-5)
    # the L2 normalisation makes the term blind to a feature's scale
    assert at(t(fs * 10), t(ft), 2.0).item() == pytest.approx(got, rel=1e-4)


def test_at_pools_the_larger_map():
    fs, ft = np.abs(rng.normal(size=(2, 4, 8, 8))), np.abs(rng.normal(size=(2, 6, 4, 4)))
    want = at_numpy(avgpool(fs, 4), ft)
    assert at(t(fs), t(ft)).item() == pytest.approx(want, rel=1e-5)
    assert at(t(ft), t(fs)).item() == pytest.approx(at_numpy(ft, avgpool(fs, 4)), rel=1e-5)


def test_sp_hand_worked():
    # G_s = I; G_t = all ones, rows normalised to 1/√2; ‖G̃_t − G̃_s‖² = 2((1/√2 − 1)² + 1/2); /B²
    fs, ft = t([[1.0, 0.0], [0.0, 1.0]]), t([[1.0, 0.0], [1.0, 0.0]])
    want = 2 * ((1 / math.sqrt(2) - 1) ** 2 + 0.5) / 4
    assert sp(fs, ft).item() == pytest.approx(want, rel=1e-5)


def test_sp_against_numpy():
    fs, ft = rng.normal(size=(5, 3, 2, 2)), rng.normal(size=(5, 7, 2, 2))

    def g(f):
        f = f.reshape(5, -1)
        m = f @ f.T
        return m / np.linalg.norm(m, axis=1, keepdims=True)  # row normalisation
    assert sp(t(fs), t(ft)).item() == pytest.approx(np.sum((g(ft) - g(fs)) ** 2) / 25,
                                                       rel=1e-5)


def test_nst_against_numpy_loops():
    fs, ft = rng.normal(size=(2, 3, 4, 4)), rng.normal(size=(2, 5, 4, 4))

    def norm(f):
        f = f.reshape(f.shape[0], f.shape[1], -1)
        return f / np.linalg.norm(f, axis=2, keepdims=True)
    s, te = norm(fs), norm(ft)

    def k(a, b):  # mean over batch and channel pairs of (a_i · b_j)²
        return np.mean([(a[n, i] @ b[n, j]) ** 2 for n in range(2)
                        for i in range(a.shape[1]) for j in range(b.shape[1])])
    want = k(te, te) + k(s, s) - 2 * k(s, te)
    assert nst(t(fs), t(ft)).item() == pytest.approx(want, rel=1e-4)


def test_vid_gaussian_nll():
    mu, target = rng.normal(size=(2, 3, 2, 2)), rng.normal(size=(2, 3, 2, 2))
    var = np.array([0.5, 2.0, 5.0])
    want = np.mean(0.5 * ((target - mu) ** 2 / var[None, :, None, None]
                          + np.log(var)[None, :, None, None]))
    assert vid(t(mu), t(target), t(var)).item() == pytest.approx(want, rel=1e-5)


def test_ab_hinge_masks_stage_weights_and_scaling():
    m = 1.0
    s = [rng.normal(size=(2, 2, 3, 3)) for _ in range(3)]
    te = [rng.normal(size=(2, 2, 3, 3)) for _ in range(3)]
    total = 0.0
    for i, (a, b) in enumerate(zip(s, te)):
        loss = 0.0
        for x, y in zip(a.ravel(), b.ravel()):
            if y <= 0 and x > -m:
                loss += (x + m) ** 2
            if y > 0 and x <= m:
                loss += (x - m) ** 2
        total += 2.0 ** (i - 2) * loss / 2  # weights 1/4, 1/2, 1; divided by the batch
    want = total * 3 / 1000
    assert ab([t(a) for a in s], [t(b) for b in te], m).item() == pytest.approx(want, rel=1e-5)


def test_ft_l1_of_normalised_factors():
    fs, ft = rng.normal(size=(2, 3, 4, 4)), rng.normal(size=(2, 5, 2, 2))

    def f(x):
        m = (x ** 2).mean(axis=1).reshape(len(x), -1)
        return m / np.linalg.norm(m, axis=1, keepdims=True)
    want = np.mean(np.abs(f(avgpool(fs, 2)) - f(ft)))
    assert ft_loss(t(fs), t(ft)).item() == pytest.approx(want, rel=1e-5)


def test_fsp_matrices_of_consecutive_layers():
    shapes = [(2, 3, 4, 4), (2, 3, 4, 4), (2, 2, 2, 2)]  # the last pair at half resolution
    s = [rng.normal(size=shape) for shape in shapes]
    te = [rng.normal(size=shape) for shape in shapes]

    def g(bot, top):
        if bot.shape[2] > top.shape[2]:
            bot = avgpool(bot, top.shape[2])
        out = np.zeros((bot.shape[0], top.shape[1], bot.shape[1]))
        for n in range(bot.shape[0]):
            for i in range(top.shape[1]):
                for j in range(bot.shape[1]):
                    out[n, i, j] = np.mean(top[n, i] * bot[n, j])
        return out
    want = sum(np.mean((g(s[i], s[i + 1]) - g(te[i], te[i + 1])) ** 2) for i in range(2))
    assert fsp([t(a) for a in s], [t(b) for b in te]).item() == pytest.approx(want, rel=1e-5)


# ============================== embeddings and relations =======================================


def test_cc_consecutive_pairs():
    es, et = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    d = np.abs(es - et)
    want = np.mean([np.sum(d[i] * d[i + 1]) for i in range(3)])
    assert cc(t(es), t(et)).item() == pytest.approx(want, rel=1e-5)


def huber(x, y):
    d = abs(x - y)
    return 0.5 * d * d if d < 1 else d - 0.5


def test_rkd_distance_mean_normalisation_and_huber():
    es, et = rng.normal(size=(5, 3)), rng.normal(size=(5, 3)) * 4
    n = 5

    def psi(e):
        d = np.array([[np.linalg.norm(e[i] - e[j]) for j in range(n)] for i in range(n)])
        return d / d[d > 0].mean()  # mean of the non-zero (off-diagonal) distances
    ps, pt = psi(es), psi(et)
    want = np.mean([huber(ps[i, j], pt[i, j]) for i in range(n) for j in range(n)])
    assert rkd_distance(t(es), t(et)).item() == pytest.approx(want, rel=1e-4)
    # normalised by the mean distance: a scaled student gives the same term
    assert rkd_distance(t(es * 3), t(et)).item() == pytest.approx(want, rel=1e-4)


def test_rkd_angle_over_all_triplets():
    es, et = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))

    def cosines(e):
        out = []
        for i in range(4):
            for j in range(4):
                for k in range(4):
                    a, b = e[j] - e[i], e[k] - e[i]
                    na, nb = np.linalg.norm(a), np.linalg.norm(b)
                    out.append(0.0 if na == 0 or nb == 0 else a @ b / (na * nb))
        return out
    want = np.mean([huber(a, b) for a, b in zip(cosines(es), cosines(et))])
    assert rkd_angle(t(es), t(et)).item() == pytest.approx(want, rel=1e-4)
    rkd = rkd_loss(t(es), t(et), 25.0, 50.0).item()
    assert rkd == pytest.approx(25 * rkd_distance(t(es), t(et)).item() + 50 * want, rel=1e-4)


def test_rkd_teacher_side_has_no_gradient():
    es = t(rng.normal(size=(4, 3))).requires_grad_()
    et = t(rng.normal(size=(4, 3))).requires_grad_()
    rkd_loss(es, et).backward()
    assert et.grad is None and es.grad is not None


def test_pkt_mean_over_all_pairs():
    es, et = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    eps = 1e-7

    def p(e):
        e = e / (np.linalg.norm(e, axis=1, keepdims=True) + eps)
        k = (e @ e.T + 1) / 2
        return k / k.sum(axis=1, keepdims=True)
    ps, pt = p(es), p(et)
    total = sum(pt[i, j] * math.log((pt[i, j] + eps) / (ps[i, j] + eps))
                for i in range(4) for j in range(4))
    assert pkt(t(es), t(et)).item() == pytest.approx(total / 16, rel=1e-4)  # /B², not /B


# ============================== contrastive =====================================================


def test_nce_contrast_hand_worked():
    # N = 4, K = 2: K·P_n = 1/2. Positive 1/2 → log(1/2 / 1); negatives 1/2 → log(1/2 / 1) each
    p = t([[0.5, 0.5, 0.5]])
    assert nce_contrast(p, n_data=4).item() == pytest.approx(3 * math.log(2), rel=1e-5)


def test_crd_against_numpy_loops():
    b, k, n, d, T = 3, 4, 10, 5, 0.07
    vs = rng.normal(size=(b, d))
    vt = rng.normal(size=(b, d))
    vs /= np.linalg.norm(vs, axis=1, keepdims=True)
    vt /= np.linalg.norm(vt, axis=1, keepdims=True)
    ms, mt = rng.normal(size=(n, d)) * 0.3, rng.normal(size=(n, d)) * 0.3
    idx = np.stack([rng.choice(n, k + 1, replace=False) for _ in range(b)])
    zs, zt = 7.0, 3.0

    def side(anchor, memory, z):
        loss = 0.0
        for r in range(b):
            ps = [math.exp(memory[idx[r, c]] @ anchor[r] / T) / z for c in range(k + 1)]
            loss -= math.log(ps[0] / (ps[0] + k / n + 1e-7))
            loss -= sum(math.log((k / n) / (q + k / n + 1e-7)) for q in ps[1:])
        return loss / b
    want = side(vs, mt, zs) + side(vt, ms, zt)
    got = crd(t(vs), t(vt), t(ms), t(mt), torch.tensor(idx), T, zs, zt, n).item()
    assert got == pytest.approx(want, rel=1e-4)
