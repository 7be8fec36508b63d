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

from kdbench.errors import ConfigError, DataError
from kdbench.mi.base import UNITS, Estimate, EstimatorDiverged
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


# -- the contract, for every registered estimator ------------------------------------------------

@pytest.mark.parametrize("name", ["recon", "binning", "kde", "infonce", "hsic"])
def test_builtin_estimators_are_registered(name):
    assert name in names("mi_estimator")
    entry = get("mi_estimator", name)
    assert entry.metadata["unit"] in UNITS and entry.metadata["paper"]


def _fast(name: str) -> dict:
    return {"epochs": 2, "patience": 1} if name in ("recon", "infonce") else {}


@pytest.mark.parametrize("name", ["recon", "binning", "kde", "infonce", "hsic"])
def test_contract_settings_and_bad_input(name):
    x, t = correlated(64, RHO, seed=0)
    y = quadrant(t)
    est = get("mi_estimator", name).create(**_fast(name))
    out = est.estimate(t, x, y, seed=3)
    assert isinstance(out, Estimate) and out.unit in UNITS
    assert math.isfinite(out.i_xt) and math.isfinite(out.i_ty)
    assert out.settings["seed"] == 3
    assert set(est.defaults) <= set(out.settings)  # every setting that shaped it is reported
    with pytest.raises(ConfigError, match="needs at least"):
        est.estimate(t[:est.min_samples - 1], x[:est.min_samples - 1], y[:est.min_samples - 1])
    bad = t.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        est.estimate(bad, x, y)
    with pytest.raises(DataError, match="same samples"):
        est.estimate(t, x[:-1], y)
    with pytest.raises(ConfigError, match="no setting 'bogus'.*valid"):
        get("mi_estimator", name).create(bogus=1)


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


# -- hsic: a dependence score, so the test is the ordering -----------------------------------------

def test_hsic_orders_dependence():
    scores = []
    for rho in (0.0, 0.3, 0.6, 0.9):
        x, t = correlated(400, torch.full((4,), rho), seed=9)
        scores.append(get("mi_estimator", "hsic").create().estimate(t, x, quadrant(t)))
    xt = [s.i_xt for s in scores]
    assert scores[0].unit == "score" and scores[0].kind == "dependence"
    assert xt == sorted(xt) and xt[0] < 0.05 and xt[-1] > 0.5
    assert all(0.0 <= v <= 1.0 for v in xt)
    x, t = correlated(400, torch.full((4,), 0.9), seed=9)
    est = get("mi_estimator", "hsic").create()
    assert est.estimate(mixing(t), x, quadrant(t)).i_xt > xt[2]
    identical = est.estimate(x, x, quadrant(x))
    assert identical.i_xt == pytest.approx(1.0, abs=1e-9)  # nHSIC(X, X) = 1
    random_labels = torch.randint(0, 4, (400,), generator=torch.Generator().manual_seed(1))
    assert est.estimate(t, x, random_labels).i_ty < 0.05 < identical.i_ty


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
