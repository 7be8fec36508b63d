"""Algorithm 1 on fixed inputs (hand-computed) and the selection table on fixed records."""

from __future__ import annotations

import io
import json
import math

import pandas as pd
import pytest

from conftest import tiny_overrides
from kdbench.config import build_config
from kdbench.errors import KDBenchError
from kdbench.mi.analysis import CACHE_VERSION
from kdbench.mi.selection import algorithm1, minmax

EPOCHS = [20, 40, 60, 80]
I_XT = [3.0, 2.5, 2.0, 1.0]
I_TY = [0.5, 1.5, 2.0, 2.1]
#: shifts shared by every checkpoint (a deterministic estimator's half-samples, blocks)
SHIFTS = (0.3, -0.2, 0.1)


def _resampled(xt, ty, shifts=SHIFTS):
    """Half-sample values that differ from the full estimate only by a shift shared by all
    checkpoints: no residual, so the resolution is the round-off floor τ."""
    return [[[x + b, y + b] for b in shifts] for x, y in zip(xt, ty)]


def test_minmax_by_hand():
    assert minmax([3.0, 2.5, 2.0, 1.0]) == [1.0, 0.75, 0.5, 0.0]
    assert minmax([0.5, 1.5, 2.0, 2.1]) == pytest.approx([0.0, 0.625, 0.9375, 1.0])
    assert minmax([5.0, 5.0, 5.0]) == [0.0, 0.0, 0.0]  # a constant series says nothing


def test_algorithm1_by_hand():
    """Normalised I(X;T) = [1, .75, .5, 0], normalised I(T;Y) = [0, .625, .9375, 1]; their sum
    [1, 1.375, 1.4375, 1] peaks at epoch 60, 0.0625 above the runner-up (40) — far above the
    resolution of estimates whose half-samples differ only by a shared shift (the round-off
    floor: 1e-6·3/2 + 1e-6·2.1/1.6 ≈ 2.8e-6)."""
    sel = algorithm1(EPOCHS, I_XT, I_TY, resamples=_resampled(I_XT, I_TY))
    assert sel.scores == pytest.approx([1.0, 1.375, 1.4375, 1.0])
    assert sel.chosen == sel.argmax == 60
    d = sel.decision
    assert d["can_choose"] and d["reason"] is None and d["runner_up"] == 40
    assert d["gap"] == pytest.approx(0.0625)
    assert d["score_resolution"] == pytest.approx(1e-6 * 3.0 / 2.0 + 1e-6 * 2.1 / 1.6)
    assert d["noise_model"] == "the same halves at every checkpoint" and d["blocks"] == 3
    assert d["gap_raw"] == pytest.approx({"i_xt": -0.5, "i_ty": 0.5})
    assert d["tied"] == [60]
    # neither series alone would choose 60: I(X;T) alone points at 20, I(T;Y) alone at 80 — but
    # a constant series is no information, so Algorithm 1 (which needs both) makes no choice
    alone = algorithm1(EPOCHS, I_XT, [0.0] * 4, resamples=_resampled(I_XT, [0.0] * 4))
    assert alone.argmax == 20 and alone.chosen is None
    assert "I(T;Y) varies by 0 across checkpoints" in alone.decision["reason"]
    assert algorithm1(EPOCHS, [0.0] * 4, I_TY).argmax == 80


def test_algorithm1_invariant_to_estimator_offset_and_scale():
    """An estimator's additive constant (e.g. recon's Gaussian H(X)) and unit cancel."""
    xt, ty = [7.0 * v + 100.0 for v in I_XT], [0.1 * v - 3.0 for v in I_TY]
    shifted = algorithm1(EPOCHS, xt, ty, resamples=_resampled(xt, ty))
    assert shifted.scores == pytest.approx(algorithm1(EPOCHS, I_XT, I_TY).scores)
    assert shifted.chosen == 60


def test_algorithm1_ties_and_bad_input():
    """An exact tie is no choice (it used to go to the earliest checkpoint)."""
    tie = algorithm1([10, 20], [1.0, 2.0], [2.0, 1.0],
                     resamples=_resampled([1.0, 2.0], [2.0, 1.0]))
    assert tie.chosen is None and tie.argmax == 10 and tie.decision["tied"] == [10, 20]
    assert "epochs 10, 20 are indistinguishable" in tie.decision["reason"]
    flat = algorithm1([10, 20, 30], [5.0, 5.0, 5.0], [1.0, 3.0, 2.0])
    assert flat.chosen is None and flat.argmax == 20
    with pytest.raises(KDBenchError, match="two or more checkpoints.*epoch 20: seed 0: boom"):
        algorithm1([10], [1.0], [1.0], excluded={20: "seed 0: boom"})
    with pytest.raises(ValueError):
        algorithm1([10, 20], [1.0], [1.0, 2.0])


def _repeats(means_xt, means_ty, a, signs=(1, -1, 0)):
    """Two repeats per checkpoint at mean ∓ s_e·a with s = (1, −1, 0): repeat 1 minus repeat 0
    is d = (2a, −2a, 0) (mean 0), so the two-way residual is ±d_e/2, SS = Σ d_e²/2 = 4a² over
    (3−1)(2−1) = 2 dof: residual sd a·√2."""
    return [[[x - c * a, y - c * a], [x + c * a, y + c * a]]
            for x, y, c in zip(means_xt, means_ty, signs)]


@pytest.mark.parametrize("a, chosen", [(0.1, None), (0.01, 30)])
def test_decision_rule_with_repeats_by_hand(a, chosen):
    """Means I(X;T) [1.1, 2.1, 3.1] (range 2), I(T;Y) [0.5, 1.5, 1.3] (range 1): normalised
    [0, .5, 1] + [0, 1, .8] = scores [0, 1.5, 1.8]; best 30, runner-up 20, gap 0.3.
    Resolution per series δ = z·sd·√(2/R) = 2·a√2·1 = 2√2·a (sd the blocked residual's);
    score resolution δ/2 + δ/1.
    a = 0.1: δ = 0.2828, δ_s = 0.4243 > 0.3: no choice, epochs 20 and 30 tied.
    a = 0.01: δ = 0.02828, δ_s = 0.04243 < 0.3: epoch 30."""
    xt, ty = [1.1, 2.1, 3.1], [0.5, 1.5, 1.3]
    sel = algorithm1([10, 20, 30], xt, ty, repeats=_repeats(xt, ty, a), stochastic=True)
    d = sel.decision
    assert sel.scores == pytest.approx([0.0, 1.5, 1.8])
    assert d["noise_sd"]["i_xt"] == pytest.approx(a * 2 ** 0.5)
    assert d["resolution"]["i_ty"] == pytest.approx(2 * 2 ** 0.5 * a)
    assert d["score_resolution"] == pytest.approx(2 * 2 ** 0.5 * a * 1.5)
    assert d["gap"] == pytest.approx(0.3) and d["runner_up"] == 20
    assert sel.chosen == chosen and sel.argmax == 30
    if chosen is None:
        assert d["tied"] == [20, 30] and "indistinguishable" in d["reason"]
    # the record holds the inputs: recomputing from them gives the same decision
    again = algorithm1([10, 20, 30], sel.i_xt, sel.i_ty, repeats=d["values"], stochastic=True,
                       ceilings=d["ceilings"], saturated=d["saturated"])
    assert again.chosen == sel.chosen and again.decision["gap"] == pytest.approx(d["gap"])


def test_stochastic_estimator_needs_two_repeats():
    sel = algorithm1(EPOCHS, I_XT, I_TY, stochastic=True)  # one repeat each: spread unmeasured
    assert sel.chosen is None and sel.argmax == 60
    assert "give repeats >= 2" in sel.decision["reason"]


def test_values_at_the_ceiling_are_censored():
    """The audit's kde case: I(X;T) and I(T;Y) of epochs 20 and 30 differ by 4e-4 nats, all
    within 1 % of their ceilings log 500 and log 4: censored to the ceilings, the two tie exactly
    and there is no choice. Without the ceilings the 4e-4 nats would decide."""
    c_xt, c_ty = math.log(500), math.log(4)
    xt, ty = [6.0, c_xt - 4e-4, c_xt], [1.0, c_ty, c_ty - 4e-4]
    resamples = _resampled(xt, ty)
    plain = algorithm1([10, 20, 30], xt, ty, resamples=resamples)
    assert plain.chosen in (20, 30)
    sel = algorithm1([10, 20, 30], xt, ty, ceilings=[(c_xt, c_ty)] * 3, resamples=resamples)
    assert sel.decision["censored"] == {"i_xt": [20, 30], "i_ty": [20, 30]}
    assert sel.decision["used"]["i_xt"] == [6.0, c_xt, c_xt]
    assert sel.scores == pytest.approx([0.0, 2.0, 2.0])
    assert sel.chosen is None and sel.decision["tied"] == [20, 30]
    # a flat saturated series (binning at d >= 16: log N everywhere) says why
    flat = algorithm1([10, 20, 30], [c_xt] * 3, [c_ty] * 3, ceilings=[(c_xt, c_ty)] * 3,
                      resamples=_resampled([c_xt] * 3, [c_ty] * 3))
    assert flat.chosen is None and "3 of 3 checkpoints at the estimator's ceiling" in \
        flat.decision["reason"]
    # the estimator's own flag censors too; without a ceiling the series is unusable
    flagged = algorithm1([10, 20, 30], [1.0, 2.0, 3.0], [1.0, 2.0, 3.5],
                         saturated=[(False, False), (False, False), (True, False)])
    assert flagged.chosen is None
    assert "I(X;T) is in the estimator's saturated regime at epochs 30" in \
        flagged.decision["reason"]


# -- the selection table on fixed records ---------------------------------------------------------

KEY = "resnet8-synthetic-s0-0123456789"
ACC = {20: (70.0, 72.0), 40: (74.0, 76.0), 60: (73.0, 75.0), 80: (70.0, 70.0)}  # two seeds


def _record(results, run_id: str, epoch: int, seed: int, acc: float, wall: float,
            selection: dict | None = None) -> None:
    cfg = build_config(tiny_overrides(results, **{"teacher.source": "intermediate",
                                                  "teacher.epoch": epoch, "seed": seed}))
    teacher = {"source": "intermediate", "arch": "resnet8", "trajectory": KEY, "epochs": [epoch]}
    if selection:
        teacher["selection"] = selection
    rec = {"schema": 1, "run_id": run_id, "status": "done", "config": cfg.to_dict(),
           "metrics": {"top1_last": acc, "top1_best": acc}, "teacher": teacher,
           "cost": {"wall_seconds": wall}}
    (results / "runs").mkdir(parents=True, exist_ok=True)
    (results / "runs" / f"{run_id}.json").write_text(json.dumps(rec))


@pytest.fixture
def curve(results):
    """Eight students (4 checkpoints × 2 seeds, 10 s each), a recon cache (1.5 s/checkpoint)
    and one `--select kde` run whose own accuracy must not enter the curve."""
    for epoch, accs in ACC.items():
        for seed, acc in enumerate(accs):
            _record(results, f"e{epoch}s{seed}", epoch, seed, acc, 10.0)
    cache = results / "teachers" / KEY / "mi" / "recon-embedding-n100-abcdef0123.json"
    cache.parent.mkdir(parents=True)
    # two repeats at ∓0.01, ±0.01, ∓0.01, ±0.01 (the repeat effect differs by checkpoint):
    # residual ±0.01 in all 8 cells, SS 8e-4 over 3 dof: sd 0.0163, resolution 2·0.0163·1 =
    # 0.0327 per series, score resolution 0.0327/2 + 0.0327/1.6 = 0.037 < the gap 0.0625
    # between epochs 60 and 40
    cache.write_text(json.dumps({
        "version": CACHE_VERSION, "stochastic": True,
        "request": {"estimator": "recon", "layer": "embedding", "samples": 100},
        "epochs": {str(e): {"i_xt": a, "i_ty": b, "seconds": 1.5,
                            "values": [[a - c, b - c], [a + c, b + c]]}
                   for e, a, b, c in zip(EPOCHS, I_XT, I_TY, (0.01, -0.01, 0.01, -0.01))}}))
    # binning saturated at log N = log 100 everywhere: no choice
    flat = cache.parent / "binning-embedding-n100-0123abcdef.json"
    flat.write_text(json.dumps({
        "version": CACHE_VERSION, "stochastic": False,
        "request": {"estimator": "binning", "layer": "embedding", "samples": 100},
        "epochs": {str(e): {"i_xt": math.log(100), "i_ty": math.log(4), "seconds": 0.1,
                            "values": [[math.log(100), math.log(4)]],
                            "details": {"ceiling_xt": math.log(100), "ceiling_ty": math.log(4),
                                        "saturated_xt": True, "saturated_ty": True}}
                   for e in EPOCHS}}))
    _record(results, "selected", 80, 0, 99.0, 50.0, selection={
        "estimator": "kde", "layer": "stage-2", "samples": 64, "epochs": EPOCHS,
        "i_xt": [1.0, 2.0, 3.0, 4.0], "i_ty": [1.0, 2.0, 3.0, 4.0], "chosen": 80,
        "estimate_seconds": 8.0,
        # kde is deterministic: its noise comes from two half-sample resamples per checkpoint
        # (∓0.01, ±0.01 as for recon: residual sd 0.0163, far below the gap of 1 per epoch)
        "decision": {"stochastic": False, "resamples": [
            [[v - c, v - c], [v + c, v + c]]
            for v, c in zip([1.0, 2.0, 3.0, 4.0], (0.01, -0.01, 0.01, -0.01))]}})
    return results


def test_selection_layout_by_hand(curve, cli_runner):
    """recon: chosen 60 (74 %), brute-force best 40 (75 %), gap 1; Spearman of scores
    [1, 1.375, 1.4375, 1] with accuracies [71, 75, 74, 70]: ranks [1.5, 3, 4, 1.5] vs
    [2, 4, 3, 1] → 3.5/√(4.5·5) = 0.7379. kde (from the --select record): scores rise with the
    epoch, chosen 80 (70 %), gap 5, Spearman −0.4. Times: 4 × 1.5 s and 8 s vs 8 × 10 s."""
    result = cli_runner("table", "--layout", "selection", "--results-dir", curve,
                        "--format", "csv")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(io.StringIO(result.output)).set_index("estimator")
    recon = table.loc["recon (embedding, n=100)"]
    assert (recon.chosen, recon.acc_chosen, recon.best, recon.acc_best) == (60, 74.0, 40, 75.0)
    assert recon.gap == pytest.approx(1.0)
    assert recon.spearman == pytest.approx(3.5 / (4.5 * 5.0) ** 0.5)
    assert recon.selection_s == pytest.approx(6.0) and recon.brute_force_s == pytest.approx(80.0)
    assert (recon.checkpoints, recon.seeds) == (4, 2)
    kde = table.loc["kde (stage-2, n=64)"]
    assert (kde.chosen, kde.acc_chosen, kde.gap) == (80, 70.0, 5.0)
    assert kde.spearman == pytest.approx(-0.4)
    assert kde.selection_s == pytest.approx(8.0)
    binning = table.loc["binning (embedding, n=100)"]
    assert math.isnan(binning.chosen) and binning["argmax"] == 20
    assert "at the estimator's ceiling" in binning.reason
    text = cli_runner("table", "--layout", "selection", "--results-dir", curve).output
    assert "Spearman" in text and "0.74" in text and "brute force s" in text
    assert "no choice (argmax 20)" in text


def test_selection_layout_skips_outdated_caches(curve, cli_runner):
    cache = next((curve / "teachers" / KEY / "mi").glob("recon-*.json"))
    doc = json.loads(cache.read_text())
    cache.write_text(json.dumps({**doc, "version": CACHE_VERSION - 1}))
    result = cli_runner("table", "--layout", "selection", "--results-dir", curve,
                        "--format", "csv")
    assert result.exit_code == 0
    assert "recon" not in result.stdout and "kde (stage-2, n=64)" in result.stdout
    assert "made by an older kdbench" in result.output


def test_selection_layout_without_estimates(results, cli_runner):
    for epoch, accs in ACC.items():
        _record(results, f"e{epoch}", epoch, 0, accs[0], 10.0)
    result = cli_runner("table", "--layout", "selection", "--results-dir", results)
    assert result.exit_code == 2
    assert "no trajectory has both students" in result.output


def test_trajectory_selection_passes_repeats_ceilings_and_flags():
    """TrajectoryMI.select feeds the cached repeats, ceilings and flags to the rule: kde values
    1e-4 apart just below log N are censored and tie; epoch 6's I(T;Y) is flagged saturated."""
    from kdbench.mi.analysis import CheckpointMI, MIRequest, TrajectoryMI

    c = math.log(500)
    rows = [CheckpointMI(e, c - dx, ty, [[c - dx, ty]], [], 1.0, "",
                         {"ceiling_xt": c, "ceiling_ty": 2.3, "saturated_xt": False,
                          "saturated_ty": e == 6}, [0],
                         [[c - dx - 0.5 * b, ty + b] for b in SHIFTS])
            for e, dx, ty in ((2, 1.0, 1.0), (4, 1e-4, 2.0), (6, 0.0, 1.5))]
    result = TrajectoryMI("key", MIRequest("kde", samples=500), {}, "nats", "upper bound", rows,
                          None)
    sel = result.select()
    assert sel.decision["censored"] == {"i_xt": [4, 6], "i_ty": [6]}
    assert sel.decision["used"]["i_ty"] == [1.0, 2.0, 2.3]
    # normalised I(X;T) [0, 1, 1] + I(T;Y) [0, 1/1.3, 1] = [0, 1.769, 2]: epoch 6
    assert sel.scores == pytest.approx([0.0, 1 + 1 / 1.3, 2.0])
    assert sel.chosen == 6
