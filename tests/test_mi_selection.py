"""Algorithm 1 on fixed inputs (hand-computed) and the selection table on fixed records."""

from __future__ import annotations

import io
import json

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


def test_minmax_by_hand():
    assert minmax([3.0, 2.5, 2.0, 1.0]) == [1.0, 0.75, 0.5, 0.0]
    assert minmax([0.5, 1.5, 2.0, 2.1]) == pytest.approx([0.0, 0.625, 0.9375, 1.0])
    assert minmax([5.0, 5.0, 5.0]) == [0.0, 0.0, 0.0]  # a constant series says nothing


def test_algorithm1_by_hand():
    """Normalised I(X;T) = [1, .75, .5, 0], normalised I(T;Y) = [0, .625, .9375, 1]; their sum
    [1, 1.375, 1.4375, 1] peaks at epoch 60."""
    sel = algorithm1(EPOCHS, I_XT, I_TY)
    assert sel.scores == pytest.approx([1.0, 1.375, 1.4375, 1.0])
    assert sel.chosen == 60
    # neither series alone would choose 60: I(X;T) alone picks 20, I(T;Y) alone picks 80
    assert algorithm1(EPOCHS, I_XT, [0.0] * 4).chosen == 20
    assert algorithm1(EPOCHS, [0.0] * 4, I_TY).chosen == 80


def test_algorithm1_invariant_to_estimator_offset_and_scale():
    """An estimator's additive constant (e.g. recon's Gaussian H(X)) and unit cancel."""
    shifted = algorithm1(EPOCHS, [7.0 * v + 100.0 for v in I_XT], [0.1 * v - 3.0 for v in I_TY])
    assert shifted.scores == pytest.approx(algorithm1(EPOCHS, I_XT, I_TY).scores)
    assert shifted.chosen == 60


def test_algorithm1_ties_and_bad_input():
    assert algorithm1([10, 20], [1.0, 2.0], [2.0, 1.0]).chosen == 10  # tie: the cheaper teacher
    assert algorithm1([10, 20, 30], [5.0, 5.0, 5.0], [1.0, 3.0, 2.0]).chosen == 20
    with pytest.raises(KDBenchError, match="two or more checkpoints.*epoch 20: seed 0: boom"):
        algorithm1([10], [1.0], [1.0], excluded={20: "seed 0: boom"})
    with pytest.raises(ValueError):
        algorithm1([10, 20], [1.0], [1.0, 2.0])


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
    cache.write_text(json.dumps({
        "version": CACHE_VERSION,
        "request": {"estimator": "recon", "layer": "embedding", "samples": 100},
        "epochs": {str(e): {"i_xt": a, "i_ty": b, "seconds": 1.5}
                   for e, a, b in zip(EPOCHS, I_XT, I_TY)}}))
    _record(results, "selected", 80, 0, 99.0, 50.0, selection={
        "estimator": "kde", "layer": "stage-2", "samples": 64, "epochs": EPOCHS,
        "i_xt": [1.0, 2.0, 3.0, 4.0], "i_ty": [1.0, 2.0, 3.0, 4.0], "chosen": 80,
        "estimate_seconds": 8.0})
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
    text = cli_runner("table", "--layout", "selection", "--results-dir", curve).output
    assert "Spearman" in text and "0.74" in text and "brute force s" in text


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


def test_flat_series_are_flagged():
    """kde/binning saturate at log N; Algorithm 1 would stretch a spread of 1e-4 to 0..1."""
    import math
    import warnings as w

    from kdbench.mi.analysis import CheckpointMI, MIRequest, TrajectoryMI

    rows = [CheckpointMI(e, math.log(500) - d, 2.0 + e / 10, [], [], 1.0, "")
            for e, d in ((2, 1e-4), (4, 0.0), (6, 2e-4))]
    result = TrajectoryMI("key", MIRequest("kde", samples=500), {}, "nats", "upper bound", rows,
                          None)
    with w.catch_warnings(record=True) as caught:
        w.simplefilter("always")
        # the 1e-4 differences decide: normalised I(X;T) [.5, 1, 0] + I(T;Y) [0, .5, 1]
        assert result.select().chosen == 4
    messages = [str(c.message) for c in caught]
    assert len(messages) == 1 and "I(X;T) by 'kde' varies by only 0.0002" in messages[0]
    assert "log N = 6.215" in messages[0]
