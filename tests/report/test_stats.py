"""The statistics layer against hand-worked cases.

With 2 degrees of freedom Student's t has a closed form — F(t) = 1/2 + t / (2·sqrt(2 + t²)) and
its 97.5% quantile is 0.95 / sqrt(2·0.975·0.025) = 4.302652… — so a three-seed paired comparison
can be worked by hand. Welch's degrees of freedom are the Welch–Satterthwaite formula, Holm's
adjustment the step-down rule, and the minimum detectable effect is checked against statsmodels'
power solver (an independent implementation) and against the normal approximation for large n.
"""

from __future__ import annotations

import math

import pytest

from kdbench.report import stats
from kdbench.report.stats import NotComparable

T975_DF2 = 0.95 / math.sqrt(2 * 0.975 * 0.025)


def t2_two_sided_p(t: float) -> float:
    return 1.0 - abs(t) / math.sqrt(2.0 + t * t)


def test_t_quantile_closed_form_is_right():
    from scipy import stats as st

    assert T975_DF2 == pytest.approx(st.t.ppf(0.975, 2), rel=1e-12)
    assert t2_two_sided_p(3.0) == pytest.approx(2 * st.t.sf(3.0, 2), rel=1e-12)


def test_paired_three_seeds_by_hand():
    # differences 1, 2, 3: mean 2, sd 1, SE 1/sqrt(3), t = 2·sqrt(3), df 2
    c = stats.paired([11.0, 12.0, 13.0], [10.0, 10.0, 10.0])
    se = 1 / math.sqrt(3)
    assert c.test == "paired" and c.df == 2
    assert c.diff == pytest.approx(2.0)
    assert c.se == pytest.approx(se)
    assert c.p == pytest.approx(t2_two_sided_p(2 * math.sqrt(3)), rel=1e-9)  # 0.074180
    assert c.p == pytest.approx(0.0741799, abs=1e-6)
    assert c.low == pytest.approx(2 - T975_DF2 * se) and c.high == pytest.approx(2 + T975_DF2 * se)
    assert (c.low, c.high) == pytest.approx((-0.484138, 4.484138), abs=1e-5)
    assert not c.detected


def test_pairing_removes_the_seed_effect():
    # seed effects of ±5 shared by both sides; the difference is always +1
    a = {0: 51.0, 1: 56.0, 2: 46.0, 3: 50.5}
    b = {0: 50.0, 1: 55.2, 2: 44.8, 3: 49.5}
    p = stats.compare(a, b)
    w = stats.compare(a, b, pairing="welch")
    assert p.test == "paired" and w.test == "welch"
    assert p.diff == pytest.approx(w.diff)
    assert p.detected and not w.detected
    assert p.mde < w.mde


def test_welch_by_hand():
    a, b = [1.0, 2.0, 3.0], [4.0, 6.0, 8.0]  # variances 1 and 4
    c = stats.welch(a, b)
    va, vb = 1 / 3, 4 / 3
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2)  # 2.941176...
    assert c.test == "welch"
    assert c.diff == pytest.approx(-4.0)
    assert c.se == pytest.approx(math.sqrt(5 / 3))
    assert c.df == pytest.approx(df) and df == pytest.approx(2.9411765, abs=1e-6)
    from scipy import stats as st

    t = -4.0 / math.sqrt(5 / 3)
    assert c.p == pytest.approx(2 * st.t.sf(abs(t), df), rel=1e-9)
    ref = st.ttest_ind(a, b, equal_var=False)
    assert c.p == pytest.approx(ref.pvalue, rel=1e-9)


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 -> 3·0.01 = 0.03, 2·0.03 = 0.06, max(0.06, 1·0.04) = 0.06
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert stats.holm([]) == []


def test_holm_changes_the_mark():
    c = stats.paired([10.0, 10.4, 10.2, 10.1], [9.0, 9.1, 9.3, 9.0])
    assert c.detected
    family = stats.with_holm([c, *[stats.welch([0.0, 1.0], [0.5, 1.5])] * 40])
    assert family[0].p_holm == pytest.approx(min(1.0, 41 * c.p))
    assert family[0].detected == (41 * c.p < 0.05)


def test_mde_agrees_with_statsmodels():
    from statsmodels.stats.power import TTestPower

    for n, sd in ((3, 1.0), (5, 2.5), (10, 0.7)):
        se = sd / math.sqrt(n)
        d = TTestPower().solve_power(nobs=n, alpha=0.05, power=0.8, alternative="two-sided")
        assert stats.minimum_detectable_effect(se, n - 1) == pytest.approx(d * sd, rel=1e-4)


def test_mde_large_n_is_the_normal_approximation():
    from scipy.stats import norm

    se = 0.1
    z = norm.ppf(0.975) + norm.ppf(0.8)  # 2.8016
    assert stats.minimum_detectable_effect(se, 100000) == pytest.approx(z * se, rel=1e-3)


def test_three_seed_mde_is_large():
    # the review of the Checkpoint-KD study: sd ≈ 1.7 of the paired differences at n = 3
    c = stats.paired([53.2, 55.1, 52.9], [53.0, 52.0, 55.6])
    assert c.mde > 3 * abs(c.diff)
    assert "MDE" in stats.format_difference(c)


def test_zero_spread():
    same = stats.paired([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert (same.diff, same.p, same.low, same.high, same.mde) == (0.0, 1.0, 0.0, 0.0, 0.0)
    shifted = stats.paired([2.0, 3.0, 4.0], [1.0, 2.0, 3.0])
    assert shifted.p == 0.0 and shifted.detected


def test_not_comparable_cases():
    with pytest.raises(NotComparable, match="at least 2 runs a side, got 1 and 3"):
        stats.welch([1.0], [1.0, 2.0, 3.0])
    with pytest.raises(NotComparable, match="same seeds on both sides, got seeds 0,1,2 and "
                                            "seeds 0,1"):
        stats.compare({0: 1.0, 1: 2.0, 2: 3.0}, {0: 1.0, 1: 2.0}, pairing="paired")
    with pytest.raises(NotComparable, match="non-finite"):
        stats.paired([1.0, math.nan], [1.0, 2.0])
    with pytest.raises(NotComparable, match="unknown pairing 'both'"):
        stats.compare({0: 1.0}, {0: 1.0}, pairing="both")
    # unmatched seeds fall back to Welch under auto, and say so
    assert stats.compare({0: 1.0, 1: 2.0, 2: 3.0}, {0: 1.0, 1: 2.5}).test == "welch"


def test_format_difference():
    c = stats.paired([11.0, 12.0, 13.0], [10.0, 10.0, 10.0])
    assert stats.format_difference(c) == f"+2.00 (−0.48 to +4.48) p=0.074, MDE {c.mde:.2f}"
    # differences 1.0, 1.1, 1.0: mean 1.0333, SE 0.0333, t = 31, p = 1 - 31/sqrt(963) = 0.00104
    d = stats.paired([2.0, 3.1, 4.0], [1.0, 2.0, 3.0])
    assert d.p == pytest.approx(t2_two_sided_p(31.0), rel=1e-6)
    assert stats.format_difference(d, 1) == "+1.0 (+0.9 to +1.2) p=0.001"
