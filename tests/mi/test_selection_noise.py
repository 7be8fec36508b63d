"""Algorithm 1's noise modelled as it is made (issue: blocked repeats and resampled
deterministic estimates). Two properties for every registered estimator: ten equally good
checkpoints are chosen between in at most 1 of 8 trials, and a checkpoint better by 0.5 on both
series is chosen under a shared block effect of sd 1 with own noise of sd 0.02."""

from __future__ import annotations

import math
import warnings

import pytest

from kdbench.mi.calibration import equal_checkpoints, shared_block_effect
from kdbench.mi.selection import algorithm1, blocked_residual_sd, complete_blocks
from kdbench.plugins import get, names

#: cheap enough for the fast tier; the others run in the slow one
FAST = {"kde", "binning"}
#: the trained estimators with a smaller network and budget (the property is about the rule)
SMALL = {"recon": {"epochs": 60, "hidden": 64}, "infonce": {"epochs": 60, "hidden": 64}}


def _estimators():
    return [pytest.param(n, marks=() if n in FAST else pytest.mark.slow)
            for n in names("mi_estimator")]


def test_blocked_residual_by_hand():
    """Rows (checkpoints) [1, 2], [3, 5], [2, 2]: row means 1.5, 4, 2; column means 2, 3;
    grand mean 2.5; residuals 0, 0 / −.5, .5 / .5, −.5: SS 1 over (3−1)(2−1) = 2 dof."""
    sd, dof = blocked_residual_sd([[1.0, 2.0], [3.0, 5.0], [2.0, 2.0]])
    assert dof == 2 and sd == pytest.approx(math.sqrt(0.5))
    # a pure block effect (the same shift at every checkpoint) leaves no residual at all
    sd, dof = blocked_residual_sd([[1.0, 4.0], [2.0, 5.0], [7.0, 10.0]])
    assert dof == 2 and sd == pytest.approx(0.0, abs=1e-12)
    assert blocked_residual_sd([[1.0], [2.0]]) == (0.0, 0)


def test_complete_blocks_keeps_the_shared_seeds():
    ids = [[0, 1, 2], [0, 2], [0, 1, 2]]  # seed 1 diverged at the second checkpoint
    values = [[[1, 1], [2, 2], [3, 3]], [[4, 4], [6, 6]], [[7, 7], [8, 8], [9, 9]]]
    assert complete_blocks(ids, values) == [[[1, 1], [3, 3]], [[4, 4], [6, 6]],
                                            [[7, 7], [9, 9]]]


@pytest.mark.parametrize("name", names("mi_estimator"))
def test_shared_block_effect_is_not_noise(name):
    """Block effects of sd 1 shared by all checkpoints, own noise sd 0.02, one checkpoint 0.5
    better on both series: chosen in 8 of 8 trials, whichever noise model the estimator has."""
    stochastic = bool(getattr(get("mi_estimator", name).create(), "stochastic", True))
    chosen = [shared_block_effect(stochastic=stochastic, seed=s) for s in range(8)]
    assert [c.chosen for c in chosen] == [6] * 8
    assert all(c.decision["noise_sd"]["i_xt"] < 0.05 for c in chosen)


def test_unblocked_repeats_would_decline():
    """The same estimates with each checkpoint's repeats in another order (repeat r no longer
    the same block everywhere: the rule before blocking, which pooled the spread within each
    checkpoint) carry the block effect (sd 1) as noise and cannot choose: modelling the blocks
    is what makes the choice."""
    sel = shared_block_effect(stochastic=True, seed=0)
    values = sel.decision["values"]
    rotated = [r[k % len(r):] + r[:k % len(r)] for k, r in enumerate(values)]
    again = algorithm1(sel.epochs, sel.i_xt, sel.i_ty, repeats=rotated, stochastic=True)
    assert sel.chosen == 6 and again.chosen is None
    assert again.decision["noise_sd"]["i_xt"] > 10 * sel.decision["noise_sd"]["i_xt"]


@pytest.mark.parametrize("name", _estimators())
def test_equal_checkpoints_are_rarely_chosen(name):
    """Ten checkpoints whose features are draws from one distribution on one probe set: at
    most 1 of 8 trials may choose (the numerical-tolerance rule chose in every trial)."""
    estimator = get("mi_estimator", name).create(**SMALL.get(name, {}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trials = [equal_checkpoints(estimator, seed=s, samples=100, dim=2, resamples=6)
                  for s in range(8)]
    chosen = [t.selection.chosen for t in trials]
    assert sum(c is not None for c in chosen) <= 1, chosen


def test_deterministic_without_resamples_makes_no_choice():
    sel = algorithm1([10, 20, 30], [1.0, 2.0, 3.0], [1.0, 2.0, 3.5])
    assert sel.chosen is None and sel.argmax == 30
    assert "give resamples >= 2" in sel.decision["reason"]
