"""Every MI estimator on synthetic data whose mutual information is known in closed form.

Closed forms used (nats):
- jointly Gaussian pairs with per-dimension correlation ρ_j: I = −½·Σ_j log(1 − ρ_j²);
- an invertible map g leaves MI unchanged: I(X; g(T)) = I(X; T);
- independent variables: I = 0;
- labels that are a function of the features: I(T;Y) = H(Y).
Tolerances are stated per test; the trained estimators use small, seeded networks.
"""

from __future__ import annotations

import math

import pytest
import torch

from kdbench.errors import ConfigError
from kdbench.mi.base import UNITS, EstimatorDiverged
from kdbench.plugins import get, names

pytestmark = pytest.mark.usefixtures("single_thread")

RHO = torch.tensor([0.9, 0.7, 0.5, 0.0])
GAUSS_MI = float(-0.5 * torch.log(1 - RHO ** 2).sum())  # 1.3109 nats


def correlated(n: int, rho: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, rho.numel(), generator=g)
    return x, rho * x + (1 - rho ** 2).sqrt() * torch.randn(n, rho.numel(), generator=g)


def quadrant(t: torch.Tensor) -> torch.Tensor:
    """Four balanced classes that are a deterministic function of T: H(Y) = log 4."""
    return (t[:, 0] > 0).long() + 2 * (t[:, 1] > 0).long()


def mixing(t: torch.Tensor) -> torch.Tensor:
    """An invertible nonlinear map: a monotone cubic per dimension, then a rotation."""
    q, _ = torch.linalg.qr(torch.randn(t.shape[1], t.shape[1],
                                       generator=torch.Generator().manual_seed(5)))
    return (t + t ** 3 / 3) @ q.T


# -- the built-ins; the contract every registered estimator keeps (settings, units, bad input) is
# in tests/test_contract.py, walked over the registry ------------------------------------------

ALL = ["recon", "binning", "kde", "infonce", "cka", "nhsic", "hsic"]


@pytest.mark.parametrize("name", ALL)
def test_builtin_estimators_are_registered(name):
    assert name in names("mi_estimator")
    entry = get("mi_estimator", name)
    assert entry.metadata["unit"] in UNITS and entry.metadata["paper"]


# -- recon: the paper's estimator ------------------------------------------------------------------

RECON = {"epochs": 40, "patience": 10, "lr": 3e-3, "hidden": 64}


def test_recon_correlated_gaussians_and_labels():
    """I(X;T) within 0.15 nats of −½Σlog(1−ρ²) = 1.311; I(T;Y) within 0.12 of log 4."""
    x, t = correlated(1500, RHO, seed=1)
    out = get("mi_estimator", "recon").create(**RECON).estimate(t, x, quadrant(t), seed=0)
    assert out.unit == "nats"
    assert out.i_xt == pytest.approx(GAUSS_MI, abs=0.15)
    assert out.i_ty == pytest.approx(math.log(4), abs=0.12)
    # H(X) is the Gaussian baseline: per dimension ½·log(2πe·MSE0) with MSE0 ≈ 1 (z-scores)
    assert out.details["h_x"] == pytest.approx(4 * 0.5 * math.log(2 * math.pi * math.e), abs=0.2)


def test_recon_invariant_to_invertible_map():
    x, t = correlated(1500, RHO, seed=1)
    out = get("mi_estimator", "recon").create(**RECON).estimate(mixing(t), x, quadrant(t))
    assert out.i_xt == pytest.approx(GAUSS_MI, abs=0.2)
    assert out.i_ty == pytest.approx(math.log(4), abs=0.15)


def test_recon_independent_is_zero():
    g = torch.Generator().manual_seed(2)
    x, t = torch.randn(1000, 4, generator=g), torch.randn(1000, 4, generator=g)
    y = torch.randint(0, 4, (1000,), generator=g)
    out = get("mi_estimator", "recon").create(**RECON).estimate(t, x, y)
    assert abs(out.i_xt) < 0.05 and abs(out.i_ty) < 0.05


def test_recon_feature_maps_use_the_conv_decoder():
    """Images and maps: X is a function of T up to a small noise, so I(X;T) is large; with T
    independent of X it is ≈ 0."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(200, 1, 4, 4, generator=g)
    t_dep = torch.cat([x, x ** 2], dim=1) + 0.05 * torch.randn(200, 2, 4, 4, generator=g)
    t_ind = torch.randn(200, 2, 4, 4, generator=g)
    y = (x.mean((1, 2, 3)) > 0).long()
    est = get("mi_estimator", "recon").create(epochs=30, patience=10, lr=1e-2)
    dep, ind = est.estimate(t_dep, x, y), est.estimate(t_ind, x, y)
    assert dep.i_xt > 8.0  # 16 dims, ≈ ½·log(1/0.05²) ≈ 3 each ideally
    assert abs(ind.i_xt) < 0.5
    assert dep.i_ty > ind.i_ty


def test_recon_diverging_training_is_reported():
    x, t = correlated(100, RHO, seed=0)
    with pytest.raises(EstimatorDiverged, match="recon decoder diverged.*lr 1e\\+06"):
        get("mi_estimator", "recon").create(lr=1e6, epochs=3).estimate(t, x, quadrant(t))


# -- infonce: lower bound --------------------------------------------------------------------------

INFONCE = {"epochs": 40, "patience": 10, "lr": 2e-3, "hidden": 64, "layers": 1}


def test_infonce_correlated_gaussians_lower_bound():
    """A lower bound: at most the true 1.311 nats (+ 0.05 split noise), within 0.25 of it."""
    x, t = correlated(1500, RHO, seed=1)
    out = get("mi_estimator", "infonce").create(**INFONCE).estimate(t, x, quadrant(t))
    assert out.kind == "lower bound"
    assert GAUSS_MI - 0.25 < out.i_xt < GAUSS_MI + 0.05
    assert math.log(4) - 0.15 < out.i_ty < math.log(4) + 0.05
    assert out.details["log_batch"] == pytest.approx(math.log(300))


def test_infonce_invertible_map_and_independence():
    x, t = correlated(1500, RHO, seed=1)
    est = get("mi_estimator", "infonce").create(**INFONCE)
    assert est.estimate(mixing(t), x, quadrant(t)).i_xt == pytest.approx(GAUSS_MI, abs=0.3)
    g = torch.Generator().manual_seed(2)
    ind = est.estimate(torch.randn(600, 4, generator=g), x[:600],
                       torch.randint(0, 4, (600,), generator=g))
    assert abs(ind.i_xt) < 0.05 and abs(ind.i_ty) < 0.05


def test_infonce_diverging_critic_is_reported():
    x, t = correlated(100, RHO, seed=0)
    with pytest.raises(EstimatorDiverged, match="critic diverged"):
        get("mi_estimator", "infonce").create(lr=1e6, epochs=3).estimate(t, x, quadrant(t))


# -- kde: Kolchinsky–Tracey upper bound ------------------------------------------------------------

def kde_bound_population(sigma_t: torch.Tensor, var: float) -> tuple[float, float]:
    """For Gaussian T = A·X (covariance Σ_T) read with noise σ²: the true I(X; T+ε) and the
    large-N value of the KL pairwise bound. With E_j exp(−‖t_i−t_j‖²/2σ²) =
    det(I+Σ/σ²)^(−½)·exp(−½ t_iᵀ(Σ+σ²I)⁻¹t_i), the bound is the true value + ½·tr(Σ(Σ+σ²I)⁻¹)."""
    eye = torch.eye(sigma_t.shape[0], dtype=torch.float64)
    true = 0.5 * float(torch.logdet(eye + sigma_t / var))
    return true, true + 0.5 * float(torch.trace(sigma_t @ torch.linalg.inv(sigma_t + var * eye)))


@pytest.mark.parametrize("case", ["correlated", "invertible mixing"])
def test_kde_gaussian_upper_bound(case):
    """Correlated case: T = a·X with a_j chosen so that corr(X_j, T_j + ε_j) = ρ_j, i.e. the
    true I is −½Σlog(1−ρ²); mixing case: T = A·X with a full-rank A. The estimate is at least
    the true MI (an upper bound) and within 0.08 nats of the bound's closed form."""
    var = 0.1
    g = torch.Generator().manual_seed(4)
    rho = torch.tensor([0.9, 0.6], dtype=torch.float64)
    if case == "correlated":
        a = torch.diag(math.sqrt(var) * rho / (1 - rho ** 2).sqrt())
    else:
        a = torch.tensor([[1.0, 0.5], [-0.3, 0.8]], dtype=torch.float64)
    x = torch.randn(2000, 2, generator=g, dtype=torch.float64)
    true, bound = kde_bound_population(a @ a.T, var)
    if case == "correlated":
        assert true == pytest.approx(float(-0.5 * torch.log(1 - rho ** 2).sum()), rel=1e-9)
    out = get("mi_estimator", "kde").create(noise_variance=var).estimate(x @ a.T, x,
                                                                        (x[:, 0] > 0).long())
    assert out.kind == "upper bound"
    assert out.i_xt > true
    assert out.i_xt == pytest.approx(bound, abs=0.08)


def test_kde_matches_a_direct_loop_and_limits():
    """On 12 points the estimator equals a loop over the formula; a constant T carries 0 nats;
    classes 100σ apart give I(T;Y) = H(Y); labels independent of T give ≈ 0."""
    var = 0.5
    g = torch.Generator().manual_seed(6)
    t = torch.randn(12, 3, generator=g, dtype=torch.float64)
    n, d = t.shape
    lp = []
    for i in range(n):
        dens = sum(math.exp(-float(((t[i] - t[j]) ** 2).sum()) / (2 * var)) for j in range(n))
        lp.append(math.log(dens / n) - d / 2 * math.log(2 * math.pi * var))
    h_upper = d / 2 - sum(lp) / n
    expected = h_upper - d / 2 * (math.log(2 * math.pi * var) + 1)
    est = get("mi_estimator", "kde").create(noise_variance=var)
    y = torch.zeros(12, dtype=torch.long)
    assert est.estimate(t, t, y).i_xt == pytest.approx(expected, rel=1e-9)
    assert est.estimate(torch.ones(12, 3), t, y).i_xt == pytest.approx(0.0, abs=1e-9)
    labels = torch.arange(400) % 4
    centres = 100.0 * torch.randn(4, 3, generator=g)
    tt = centres[labels] + torch.randn(400, 3, generator=g)
    assert est.estimate(tt, tt, labels).i_ty == pytest.approx(math.log(4), abs=1e-6)
    # labels independent of T: ≈ 0; the bound's finite-sample bias (each class has a quarter of
    # the points) is about 0.09 nats at N = 400 and 0.03 at N = 2000 for σ² = 0.5
    labels = torch.arange(2000) % 4
    noise = torch.randn(2000, 3, generator=g)
    assert 0 <= est.estimate(noise, noise, labels).i_ty < 0.05


# -- binning ---------------------------------------------------------------------------------------

def test_binning_invertible_map_of_discrete_inputs():
    """X: 8 binary input patterns (the paper's setting), 100 samples each; T = an invertible
    map onto 8 points of a circle: I(X;T) = H(X) = log 8 exactly, and labels that are a
    function of T give I(T;Y) = H(Y) = log 2 exactly."""
    sym = torch.arange(800) % 8
    x = torch.stack([(sym >> k) & 1 for k in range(3)], 1).float()
    angle = sym.float() * (2 * math.pi / 8)
    t = torch.stack([angle.cos(), angle.sin()], 1)
    out = get("mi_estimator", "binning").create().estimate(t, x, sym % 2)
    assert out.i_xt == pytest.approx(math.log(8), abs=1e-9)
    assert out.i_ty == pytest.approx(math.log(2), abs=1e-9)


@pytest.mark.parametrize("rho", [0.0, 0.8, 0.95])
def test_binning_gaussian_histogram(rho):
    """1-D Gaussian pair, 5000 samples, 30 bins: within 0.1 nats of −½·log(1−ρ²) (the plug-in
    bias is about (30−1)²/(2·5000) ≈ 0.08 nats)."""
    x, t = correlated(5000, torch.tensor([rho]), seed=7)
    out = get("mi_estimator", "binning").create().estimate(t, x, (t[:, 0] > 0).long())
    assert out.i_xt == pytest.approx(-0.5 * math.log(1 - rho ** 2), abs=0.1)


def test_binning_matches_numpy_plug_in():
    """Distinct inputs (64-dim, so no two share a bin): I(X;T) is the plug-in entropy of the
    binned T, counted here with numpy."""
    import numpy as np

    _, t = correlated(300, RHO[:2], seed=8)
    x = torch.randn(300, 64, generator=torch.Generator().manual_seed(8))
    out = get("mi_estimator", "binning").create(bin_size=0.5).estimate(t, x, quadrant(t))
    binned = np.floor(t.numpy() / 0.5).astype(int)
    _, counts = np.unique(binned, axis=0, return_counts=True)
    p = counts / counts.sum()
    assert out.i_xt == pytest.approx(float(-(p * np.log(p)).sum()), rel=1e-9)


# -- cka: a dependence score, so the test is the ordering and an independent computation ----------

def test_cka_orders_dependence():
    scores = []
    for rho in (0.0, 0.3, 0.6, 0.9):
        x, t = correlated(400, torch.full((4,), rho), seed=9)
        scores.append(get("mi_estimator", "cka").create().estimate(t, x, quadrant(t)))
    xt = [s.i_xt for s in scores]
    assert scores[0].unit == "score" and scores[0].kind == "dependence"
    assert xt == sorted(xt) and xt[0] < 0.05 and xt[-1] > 0.5
    assert all(0.0 <= v <= 1.0 for v in xt)
    x, t = correlated(400, torch.full((4,), 0.9), seed=9)
    est = get("mi_estimator", "cka").create()
    assert est.estimate(mixing(t), x, quadrant(t)).i_xt > xt[2]
    identical = est.estimate(x, x, quadrant(x))
    assert identical.i_xt == pytest.approx(1.0, abs=1e-9)  # CKA(X, X) = 1
    random_labels = torch.randint(0, 4, (400,), generator=torch.Generator().manual_seed(1))
    assert est.estimate(t, x, random_labels).i_ty < 0.05 < identical.i_ty


def _np_gauss_gram(v, width):
    """exp(−‖a−b‖²/width) by explicit differences (numpy, not the Gram trick)."""
    import numpy as np

    diff = v[:, None, :] - v[None, :, :]
    return np.exp(-(diff ** 2).sum(-1) / width)


def _np_median_width(v):
    """2·(median pairwise distance)² over i < j."""
    import numpy as np

    diff = v[:, None, :] - v[None, :, :]
    dist = np.sqrt((diff ** 2).sum(-1))
    return 2.0 * np.median(dist[np.triu_indices(len(v), 1)]) ** 2


def _np_ucenter(k):
    """Székely–Rizzo U-centring (Kornblith et al.'s debiased CKA): zero diagonal, row and
    column sums over n−2, grand sum over (n−1)(n−2)."""
    import numpy as np

    n = len(k)
    a = k.copy()
    np.fill_diagonal(a, 0.0)
    r = a.sum(1)
    u = a - r[:, None] / (n - 2) - r[None, :] / (n - 2) + a.sum() / ((n - 1) * (n - 2))
    np.fill_diagonal(u, 0.0)
    return u


def test_hsic_unbiased_is_the_u_statistic():
    """On 7 points: Song et al.'s closed form equals the average of
    k_ij·l_ij + k_ij·l_qr − 2·k_ij·l_iq over all ordered 4-tuples of distinct indices (the
    U-statistic of HSIC), and ⟨U(K), U(L)⟩ / (n(n−3)) with U-centred Gram matrices."""
    import itertools

    import numpy as np

    from kdbench.mi.cka import hsic_unbiased

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(7, 2)), rng.normal(size=(7, 3))
    k, l = _np_gauss_gram(a, 2.0), _np_gauss_gram(b, 3.0)
    terms = [k[i, j] * l[i, j] + k[i, j] * l[q, r] - 2 * k[i, j] * l[i, q]
             for i, j, q, r in itertools.permutations(range(7), 4)]
    u_stat = sum(terms) / len(terms)
    ours = hsic_unbiased(torch.from_numpy(k), torch.from_numpy(l))
    assert ours == pytest.approx(u_stat, rel=1e-10)
    assert ours == pytest.approx((_np_ucenter(k) * _np_ucenter(l)).sum() / (7 * 4), rel=1e-10)


@pytest.mark.parametrize("unbiased", [False, True])
def test_cka_matches_numpy(unbiased):
    """CKA with explicit H = I − 11ᵀ/n (biased) or U-centring (unbiased), median-heuristic
    Gaussian kernels and the one-hot linear kernel on labels, all in numpy."""
    import numpy as np

    x, t = correlated(60, RHO, seed=12)
    y = quadrant(t)
    out = get("mi_estimator", "cka").create(unbiased=unbiased).estimate(t, x, y)
    tn, xn = t.double().numpy(), x.double().numpy()
    kt, kx = (_np_gauss_gram(v, _np_median_width(v)) for v in (tn, xn))
    onehot = np.eye(4)[y.numpy()]
    ly = onehot @ onehot.T
    h = np.eye(60) - np.ones((60, 60)) / 60

    def hs(a, b):
        return (_np_ucenter(a) * _np_ucenter(b)).sum() if unbiased else np.trace(a @ h @ b @ h)

    def cka(a, b):
        return hs(a, b) / np.sqrt(hs(a, a) * hs(b, b))

    assert out.i_xt == pytest.approx(cka(kx, kt), rel=1e-9)
    assert out.i_ty == pytest.approx(cka(kt, ly), rel=1e-9)


def test_cka_under_independence_biased_vs_unbiased():
    """Independent Gaussians at d = 64, N = 500: the biased score sits at 0.18 (it grows with
    d/N), the unbiased one at 0 (|·| < 0.02)."""
    g = torch.Generator().manual_seed(13)
    x, t = torch.randn(500, 64, generator=g), torch.randn(500, 64, generator=g)
    y = torch.randint(0, 4, (500,), generator=g)
    biased = get("mi_estimator", "cka").create().estimate(t, x, y)
    unbiased = get("mi_estimator", "cka").create(unbiased=True).estimate(t, x, y)
    assert 0.15 < biased.i_xt < 0.21
    assert abs(unbiased.i_xt) < 0.02 and abs(unbiased.i_ty) < 0.02


def test_hsic_is_a_deprecated_alias_of_cka():
    entry = get("mi_estimator", "hsic")
    assert "CKA" in entry.description and "alias" in entry.description
    with pytest.warns(FutureWarning, match="now named 'cka'"):
        est = entry.create()
    x, t = correlated(100, RHO, seed=9)
    old = est.estimate(t, x, quadrant(t))
    new = get("mi_estimator", "cka").create().estimate(t, x, quadrant(t))
    assert (old.i_xt, old.i_ty) == (new.i_xt, new.i_ty)


# -- nhsic: the HSIC bottleneck's normalised HSIC (NOCCO) -----------------------------------------

@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # σ = 0 at n = 50: the saturated regime
@pytest.mark.parametrize("settings", [{}, {"sigma": 0.0}, {"unbiased": True, "epsilon": 1e-3}])
def test_nhsic_matches_numpy(settings):
    """tr(R_T R_X) with R = G (G + εnI)⁻¹ by an explicit numpy inverse, G = H K H, kernels
    exp(−‖a−b‖²/(2σ²d)) (σ = 5: the official default) or the median heuristic, labels one-hot;
    the unbiased option as n²·⟨U(R_A), U(R_B)⟩ / (n(n−3))."""
    import numpy as np

    n = 50
    x, t = correlated(n, RHO, seed=14)
    y = quadrant(t)
    est = get("mi_estimator", "nhsic").create(**settings)
    out = est.estimate(t, x, y)
    sigma, eps = est.settings["sigma"], est.settings["epsilon"]
    h = np.eye(n) - np.ones((n, n)) / n

    def r(v):
        width = 2 * sigma ** 2 * v.shape[1] if sigma > 0 else _np_median_width(v)
        g = h @ _np_gauss_gram(v, width) @ h
        return g @ np.linalg.inv(g + eps * n * np.eye(n))

    rt, rx = r(t.double().numpy()), r(x.double().numpy())
    ry = r(np.eye(4)[y.numpy()])

    def score(a, b):
        if est.settings["unbiased"]:
            return n * n * (_np_ucenter(a) * _np_ucenter(b)).sum() / (n * (n - 3))
        return np.trace(a @ b)

    assert out.unit == "score" and out.kind == "dependence"
    assert out.i_xt == pytest.approx(score(rt, rx), rel=1e-6)
    if not est.settings["unbiased"]:
        # the official code centres on one side only, R = K·H (K·H + εnI)⁻¹, and sums
        # R_A ∘ R_Bᵀ: the same number
        def r_official(v):
            width = 2 * sigma ** 2 * v.shape[1] if sigma > 0 else _np_median_width(v)
            kc = _np_gauss_gram(v, width) @ h
            return kc @ np.linalg.inv(kc + eps * n * np.eye(n))

        official = (r_official(t.double().numpy()) * r_official(x.double().numpy()).T).sum()
        assert out.i_xt == pytest.approx(official, rel=1e-6)
    assert out.i_ty == pytest.approx(score(rt, ry), rel=1e-6)
    assert out.details["trace_r_t"] == pytest.approx(np.trace(rt), rel=1e-6)


def test_nhsic_independence_bias_and_its_correction():
    """Independent Gaussians, d = 16, N = 400, official σ = 5, ε = 1e-5: the biased value sits at
    its permutation mean tr(R_T)·tr(R_X)/(N−1) (within 15 %); the corrected one at 0 (|·| below
    5 % of that level). Dependent data stay far above."""
    g = torch.Generator().manual_seed(15)
    x, t = torch.randn(400, 16, generator=g), torch.randn(400, 16, generator=g)
    y = torch.randint(0, 4, (400,), generator=g)
    biased = get("mi_estimator", "nhsic").create().estimate(t, x, y)
    fixed = get("mi_estimator", "nhsic").create(unbiased=True).estimate(t, x, y)
    null = biased.details["null_xt"]
    assert null > 1.0 and biased.i_xt == pytest.approx(null, rel=0.15)
    assert abs(fixed.i_xt) < 0.05 * null
    dep = get("mi_estimator", "nhsic").create(unbiased=True).estimate(x + 0.5 * t, x, y)
    assert dep.i_xt > 10 * abs(fixed.i_xt) + 1.0


def test_units_dead_on_the_training_split_do_not_break_the_estimate():
    """A ReLU unit that is 0 on every training sample but fires on held-out ones carries
    nothing learnable; it must not blow up the held-out predictions (it once sent recon's
    decoder back to its untrained baseline, I(X;T) = 0)."""
    from kdbench.mi.base import split_indices

    x, t = correlated(600, RHO, seed=11)
    _, held = split_indices(600, 0.2, 0)
    dead = torch.zeros(600, 1)
    dead[held[:5]] = 3.0
    out = get("mi_estimator", "recon").create(**RECON).estimate(torch.cat([t, dead], 1), x,
                                                                quadrant(t))
    assert out.i_xt == pytest.approx(GAUSS_MI, abs=0.3) and out.details["decoder_epoch"] > 0


# -- where the estimators work: regime warnings ----------------------------------------------------

def patterns(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """X: one of 16 random ±1 patterns in d dimensions per sample; T = tanh(W·X) (injective on
    the patterns); Y = pattern id mod 2. Closed form: I(X;T) = H(X) ≈ log 16, I(T;Y) = log 2."""
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 2, (16, d), generator=g).double() * 2 - 1
    ids = torch.arange(n) % 16
    w = torch.randn(d, d, generator=g, dtype=torch.float64) / d ** 0.5
    x = codes[ids]
    return x, torch.tanh(x @ w.T) * 3.0, ids % 2


def _regime(name: str, t, x, y, **settings):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = get("mi_estimator", name).create(**settings).estimate(t, x, y)
    return out, [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


@pytest.mark.parametrize("name", ["kde", "binning"])
def test_regime_warnings_fire_where_density_estimators_saturate(name):
    """Independent Gaussians at d = 16 and 64, N = 500: true I(X;T) = I(T;Y) = 0, yet both
    estimators give log N and H(Y) (plug-in) — and say so."""
    g = torch.Generator().manual_seed(16)
    for d in (16, 64):
        x, t = torch.randn(500, d, generator=g), torch.randn(500, d, generator=g)
        y = torch.randint(0, 4, (500,), generator=g)
        out, messages = _regime(name, t, x, y)
        assert out.i_xt == pytest.approx(math.log(500), abs=0.01)
        assert out.details["saturated_xt"] and out.details["saturated_ty"]
        assert any("log N = 6.2146" in m for m in messages)
        assert any("project=pca" in m for m in messages)


@pytest.mark.parametrize("name", ["kde", "binning"])
def test_regime_warnings_stay_silent_where_the_estimators_work(name):
    """A 2-d Gaussian pair (N = 2000) and the 16-pattern deterministic map at d = 64 (I(X;T) =
    log 16 far below log N): no flag, no warning, and the closed forms hold where they should."""
    x, t = correlated(2000, RHO[:2], seed=17)
    out, messages = _regime(name, t, x, quadrant(t))
    assert not messages and not out.details["saturated_xt"] and not out.details["saturated_ty"]
    x, t, y = patterns(500, 64, seed=18)
    out, messages = _regime(name, t, x, y)
    assert not messages and not out.details["saturated_xt"]
    assert out.i_xt == pytest.approx(math.log(16), abs=0.05)
    assert out.i_ty == pytest.approx(math.log(2), abs=0.05)


def test_recon_regime_warning_on_discrete_inputs():
    """16 discrete codes at d = 16: the decoder reconstructs X to the error floor and I(X;T)
    (true log 16) is ≈ ½·log(1e6) per dimension — flagged; a Gaussian pair is not."""
    x, t, y = patterns(400, 16, seed=22)
    out, messages = _regime("recon", t, x, y)  # the defaults train long enough to hit it
    assert out.details["saturated_xt"] and out.details["floor_dims"] > 8
    assert out.i_xt > 50 and any("error floor" in m for m in messages)
    assert out.details["ceiling_xt"] == pytest.approx(16 * 0.5 * math.log(1e6), rel=0.01)
    x, t = correlated(600, RHO, seed=22)
    out, messages = _regime("recon", t, x, quadrant(t), **RECON)
    assert not messages and not out.details["saturated_xt"]


def test_nhsic_regime_warning():
    """The median heuristic at d = 64, N = 300: R_T passes most centred directions (flagged);
    the official σ = 5 at d = 2 does not."""
    g = torch.Generator().manual_seed(19)
    x, t = torch.randn(300, 64, generator=g), torch.randn(300, 64, generator=g)
    y = torch.randint(0, 4, (300,), generator=g)
    out, messages = _regime("nhsic", t, x, y, sigma=0.0)
    assert out.details["saturated_xt"] and out.details["trace_r_t"] > 150
    assert any("raise sigma or epsilon" in m for m in messages)
    x2, t2 = correlated(300, RHO[:2], seed=19)
    out, messages = _regime("nhsic", t2, x2, quadrant(t2))
    assert not messages and not out.details["saturated_xt"]


# -- remedies: projections and scale-relative noise ------------------------------------------------

def test_kde_noise_relative_is_scale_invariant():
    """With noise_relative=true σ² is scaled with the mean feature variance, so T and 10·T give
    the same estimate (exactly: all distances and σ² scale by 100); without it they do not."""
    x, t = correlated(300, RHO, seed=20)
    t = t.double()  # ×10 is exact in float64 to the last bits that matter here
    rel = get("mi_estimator", "kde").create(noise_relative=True)
    a, b = rel.estimate(t, x, quadrant(t)), rel.estimate(10 * t, x, quadrant(t))
    assert (b.i_xt, b.i_ty) == pytest.approx((a.i_xt, a.i_ty), rel=1e-9)
    assert b.details["noise_variance_used"] == pytest.approx(
        100 * a.details["noise_variance_used"], rel=1e-9)
    assert a.details["noise_variance_used"] == pytest.approx(0.1 * float(t.double().var(0).mean()))
    fixed = get("mi_estimator", "kde").create()  # the scale alone pushes it to log N
    with pytest.warns(RuntimeWarning) as caught:
        big = fixed.estimate(10 * t, x, quadrant(t))
    assert any("within 1% of its ceiling" in str(w.message) for w in caught)
    assert big.i_xt == pytest.approx(math.log(300), abs=1e-3)
    assert fixed.estimate(t, x, quadrant(t)).i_xt < math.log(300) - 0.4


def test_pca_projection_recovers_a_low_dimensional_signal():
    """T = [Z, 1e-4·noise] with Z 2-d and 62 noise dimensions: kde and binning on the 2-d PCA
    projection equal their value on Z itself (PCA is then a rotation of Z up to 1e-4 terms;
    binning, whose bins follow the axes, checked on Z already aligned with them)."""
    g = torch.Generator().manual_seed(21)
    x = torch.randn(400, 2, generator=g, dtype=torch.float64)
    z = torch.stack([2.0 * x[:, 0], 0.5 * x[:, 1]], 1)  # distinct variances: unique axes
    t = torch.cat([z, 1e-4 * torch.randn(400, 62, generator=g, dtype=torch.float64)], 1)
    y = quadrant(z)
    for name in ("kde", "binning"):
        on_z = get("mi_estimator", name).create().estimate(z, x, y)
        proj = get("mi_estimator", name).create(project="pca", project_dim=2).estimate(t, x, y)
        assert proj.details["dims"] == 2 and proj.details["dims_in"] == 64
        assert proj.details["pca_variance_kept"] > 0.999
        tol = 1e-3 if name == "kde" else 0.05  # binning: the range of each axis moves a bin edge
        assert proj.i_xt == pytest.approx(on_z.i_xt, abs=tol)
        assert proj.i_ty == pytest.approx(on_z.i_ty, abs=tol)


def test_random_projection_is_orthonormal_seeded_and_stochastic():
    import numpy as np

    from kdbench.mi.project import project

    t = torch.eye(64, dtype=torch.float64)  # projecting the identity reads out Q itself
    q, info = project(t, "random", 5, seed=3, name="kde")
    assert info == {"dims_in": 64, "dims": 5}
    assert np.allclose(q.numpy().T @ q.numpy(), np.eye(5), atol=1e-12)
    assert torch.equal(q, project(t, "random", 5, seed=3, name="kde")[0])
    assert not torch.equal(q, project(t, "random", 5, seed=4, name="kde")[0])
    assert get("mi_estimator", "kde").create(project="random").stochastic
    assert not get("mi_estimator", "kde").create(project="pca").stochastic
    with pytest.raises(ConfigError, match="project_dim=80 must be between 1 and the feature "
                                          "dimension 64"):
        get("mi_estimator", "kde").create(project="pca", project_dim=80).estimate(
            t, t, torch.zeros(64, dtype=torch.long))


@pytest.mark.parametrize("name, settings, message", [
    ("kde", {"noise_variance": 0}, "noise_variance=0.0 must be > 0"),
    ("kde", {"project": "umap"}, "project='umap' is not one of none, pca, random"),
    ("kde", {"project_dim": 0}, "project_dim=0 must be >= 1"),
    ("kde", {"noise_relative": "maybe"},
     "setting noise_relative must be true or false, got 'maybe'"),
    ("binning", {"bins": 1}, "needs bins >= 2 or bin_size > 0"),
    ("cka", {"sigma_factor": -1}, "sigma_factor=-1.0 must be > 0"),
    ("nhsic", {"epsilon": 0}, "epsilon=0.0 must be > 0"),
    ("nhsic", {"sigma": -2}, "sigma=-2.0 must be >= 0"),
])
def test_bad_settings_fail_at_creation(name, settings, message):
    """Before any estimate (so `--select` fails before a teacher is trained)."""
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        get("mi_estimator", name).create(**settings)


def test_boolean_settings_parse_words():
    for text, value in (("false", False), ("True", True), ("0", False), ("yes", True)):
        assert get("mi_estimator", "cka").create(unbiased=text).settings["unbiased"] is value


def test_recon_linear_decoder():
    """hidden=0: an affine decoder, exact for Gaussian pairs (within 0.1 nats of 1.311)."""
    x, t = correlated(1500, RHO, seed=1)
    out = get("mi_estimator", "recon").create(**{**RECON, "hidden": 0}).estimate(
        t, x, quadrant(t))
    assert out.i_xt == pytest.approx(GAUSS_MI, abs=0.1)
