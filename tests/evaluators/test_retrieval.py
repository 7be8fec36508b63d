"""Retrieval mAP and precision@k: hand-worked rankings, the reference's truncated interpolation,
a per-query numpy implementation of the definition, chunking, and the two distances."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kdbench.errors import ConfigError
from kdbench.evaluators.retrieval import (
    ascending_order,
    average_precision_11pt,
    precision_at,
    reference_windows,
    retrieval_metrics,
)

# Ranked relevance of one query (rank 1 first), 4 relevant items among 10.
# Precision rises after rank 5, so interpolation matters.
RISING = [0, 1, 0, 0, 1, 1, 1, 0, 0, 0]
# Precision only falls at the relevant items, so interpolation changes nothing at them.
FALLING = [1, 0, 1, 0, 1, 0, 0, 0, 0, 1]


def _rel(*rows):
    return torch.tensor(rows, dtype=torch.bool)


def test_ap_of_a_falling_ranking_by_hand():
    """Relevant at ranks 1, 3, 5, 10: precision 1, 2/3, 3/5, 4/10; recall .25, .5, .75, 1.
    Levels 0–0.3 → recall .25 (rank 1): 1; 0.4–0.6 → .5 (rank 3): 2/3; 0.7–0.8 → .75 (rank 5):
    3/5; 0.9–1 → 1 (rank 10): 0.4. AP = (4·1 + 3·2/3 + 2·3/5 + 2·0.4)/11 = 8/11."""
    ap = average_precision_11pt(_rel(FALLING), torch.tensor([4]))
    assert ap.item() == pytest.approx(8 / 11, rel=1e-12)
    # the reference's truncated interpolation changes nothing here (window of 2 ranks)
    ap_w = average_precision_11pt(_rel(FALLING), torch.tensor([4]), torch.tensor([2]))
    assert ap_w.item() == pytest.approx(8 / 11, rel=1e-12)


def test_ap_of_a_rising_ranking_by_hand_both_interpolations():
    """Relevant at ranks 2, 5, 6, 7: precision 1/2, 2/5, 1/2, 4/7.

    All ranks: every interpolated value up to rank 7 is 4/7, so AP = 4/7.
    First 3 ranks only (the reference with a batch of 3 queries): rank 1 → max(0, 1/2, 1/3) =
    1/2, rank 2 → 1/2, later ranks raw. Levels 0, 0.1 → rank 1 (recall 0): 1/2; 0.2, 0.3 →
    rank 2: 1/2; 0.4–0.6 → rank 5: 2/5; 0.7, 0.8 → rank 6: 1/2; 0.9, 1 → rank 7: 4/7.
    AP = (4·1/2 + 3·2/5 + 2·1/2 + 2·4/7)/11 = 187/385."""
    rel, n = _rel(RISING), torch.tensor([4])
    assert average_precision_11pt(rel, n).item() == pytest.approx(4 / 7, rel=1e-12)
    ap_w = average_precision_11pt(rel, n, torch.tensor([3])).item()
    assert ap_w == pytest.approx(187 / 385, rel=1e-12)
    # precision@5: raw 2/5; the reference's array at rank 5 with a 6-rank window: max(2/5, 1/2)
    assert precision_at(rel, 5).item() == pytest.approx(2 / 5)
    assert precision_at(rel, 5, torch.tensor([6])).item() == pytest.approx(1 / 2)
    assert precision_at(rel, 5, torch.tensor([4])).item() == pytest.approx(2 / 5)


def test_reference_windows_are_the_evaluation_batches():
    w = reference_windows(300, 128)
    assert w.tolist() == [128] * 256 + [44] * 44
    assert reference_windows(10_000, 128)[-16:].tolist() == [16] * 16
    assert reference_windows(10_000, 128)[-17].item() == 128


def _line_database(relevance):
    """Three copies of a query near the origin and database items at growing distance and
    angle, so both distances rank them in index order; label 0 = relevant."""
    n = len(relevance)
    angles = np.linspace(0.05, 1.5, n)
    radius = np.linspace(1.0, 3.0, n)
    db = np.stack([radius * np.cos(angles), radius * np.sin(angles)], 1)
    # the query direction is angle 0: cosine falls and distance grows along the list
    labels = np.array([0 if r else 1 for r in relevance])
    return db, labels, np.array([[1e-3, 0.0]] * 3), np.array([0] * 3)


@pytest.mark.parametrize("interpolation,window,expected", [
    ("all_ranks", 128, 4 / 7), ("first_batch_ranks", 3, 187 / 385)])
def test_end_to_end_on_embeddings_with_a_known_ranking(interpolation, window, expected):
    db, labels, q, ql = _line_database(RISING)
    out = retrieval_metrics(db, labels, q, ql, top_k=5, interpolation=interpolation,
                            reference_batch_size=window)
    assert set(out) == {"map_cosine", "p5_cosine", "map_euclidean", "p5_euclidean"}
    for d in ("cosine", "euclidean"):
        assert out[f"map_{d}"] == pytest.approx(expected, rel=1e-12)
    # three queries: the window is 3 ranks, below rank 5, so p@5 is raw in both modes
    assert out["p5_cosine"] == pytest.approx(2 / 5)


def test_a_single_query_batch_is_not_interpolated_by_the_reference():
    """One query: the reference's loop runs over range(0) and leaves raw precision. Levels 0,
    0.1 → rank 1 (precision 0); 0.2, 0.3 → rank 2: 1/2; 0.4–0.6 → rank 5: 2/5; 0.7, 0.8 →
    rank 6: 1/2; 0.9, 1 → rank 7: 4/7. AP = (0 + 2·1/2 + 3·2/5 + 2·1/2 + 2·4/7)/11 = 152/385."""
    db, labels, q, ql = _line_database(RISING)
    out = retrieval_metrics(db, labels, q[:1], ql[:1], top_k=5,
                            interpolation="first_batch_ranks", reference_batch_size=128)
    assert out["map_euclidean"] == pytest.approx(152 / 385, rel=1e-12)


def test_perfect_ranking_gives_one():
    rng = np.random.default_rng(0)
    centres = np.eye(3, 8) * 10
    db_y = np.repeat(np.arange(3), 40)
    q_y = np.repeat(np.arange(3), 5)
    db = centres[db_y] + rng.normal(scale=0.1, size=(120, 8))
    q = centres[q_y] + rng.normal(scale=0.1, size=(15, 8))
    for interpolation in ("all_ranks", "first_batch_ranks"):
        out = retrieval_metrics(db, db_y, q, q_y, top_k=30, interpolation=interpolation)
        assert out == pytest.approx({"map_cosine": 1.0, "p30_cosine": 1.0,
                                     "map_euclidean": 1.0, "p30_euclidean": 1.0})
    # precision@k beyond the class size cannot be 1: 40 relevant in the first 60
    out = retrieval_metrics(db, db_y, q, q_y, top_k=60, distances=("cosine",))
    assert out["p60_cosine"] == pytest.approx(40 / 60)


def _numpy_reference(db, db_y, q, q_y, distance, k, window=None):
    """The definition query by query with full precision arrays, as the reference computes it:
    np.argmin over |recall − level|, and (window) its row-count-bounded interpolation loop."""
    aps, pks = [], []
    levels = np.arange(0, 1.01, 0.1)
    for i in range(len(q)):
        if distance == "cosine":
            qn = q[i] / np.linalg.norm(q[i])
            dn = db / np.linalg.norm(db, axis=1, keepdims=True)
            order = np.argsort(-(dn @ qn), kind="stable")
        else:
            order = np.argsort(((db - q[i]) ** 2).sum(1), kind="stable")
        rel = (db_y[order] == q_y[i]).astype(np.int64)
        prec = np.cumsum(rel) / np.arange(1, len(db) + 1)
        raw_k = prec[k - 1]
        w = len(db) if window is None else window[i]
        for j in reversed(range(w - 1)):
            prec[j] = max(prec[j], prec[j + 1])
        recall = np.cumsum(rel) / (db_y == q_y[i]).sum()
        aps.append(np.mean([prec[np.argmin(np.abs(recall - lv))] for lv in levels]))
        # precision@k: raw by the definition; the reference reads its interpolated array
        pks.append(raw_k if window is None else prec[k - 1])
    return float(np.mean(aps)), float(np.mean(pks))


def test_equals_a_numpy_implementation_chunked_or_not():
    rng = np.random.default_rng(1)
    db_y, q_y = rng.integers(0, 5, 300), rng.integers(0, 5, 70)
    centres = rng.normal(size=(5, 8))
    db = centres[db_y] + rng.normal(scale=1.2, size=(300, 8))
    q = centres[q_y] + rng.normal(scale=1.2, size=(70, 8))
    windows = reference_windows(70, 16).numpy()
    for interpolation, win in (("all_ranks", None), ("first_batch_ranks", windows)):
        whole = retrieval_metrics(db, db_y, q, q_y, top_k=10, interpolation=interpolation,
                                  reference_batch_size=16, chunk_size=1000)
        chunked = retrieval_metrics(db, db_y, q, q_y, top_k=10, interpolation=interpolation,
                                    reference_batch_size=16, chunk_size=7)
        assert chunked == pytest.approx(whole, rel=1e-12)
        for d in ("cosine", "euclidean"):
            m, p = _numpy_reference(db, db_y, q, q_y, d, 10, win)
            assert whole[f"map_{d}"] == pytest.approx(m, rel=1e-9)
            assert whole[f"p10_{d}"] == pytest.approx(p, rel=1e-9)
    # the truncated interpolation really differs on this data
    a = retrieval_metrics(db, db_y, q, q_y, top_k=10)
    b = retrieval_metrics(db, db_y, q, q_y, top_k=10, interpolation="first_batch_ranks",
                          reference_batch_size=16)
    assert b["map_cosine"] < a["map_cosine"] - 1e-3 and b["p10_cosine"] > a["p10_cosine"]


def test_cosine_and_euclidean_agree_on_normalised_embeddings():
    rng = np.random.default_rng(2)
    db_y, q_y = rng.integers(0, 4, 200), rng.integers(0, 4, 40)
    centres = rng.normal(size=(4, 16))
    db = centres[db_y] + rng.normal(size=(200, 16))
    q = centres[q_y] + rng.normal(size=(40, 16))
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    out = retrieval_metrics(db.astype(np.float32), db_y, q.astype(np.float32), q_y, top_k=20)
    assert out["map_cosine"] == pytest.approx(out["map_euclidean"], rel=1e-9)
    assert out["p20_cosine"] == pytest.approx(out["p20_euclidean"], rel=1e-9)
    assert 0.3 < out["map_cosine"] < 1.0


def test_bad_inputs_are_one_line_config_errors():
    db, y = np.zeros((10, 4)), np.arange(10) % 2
    cases = [
        (dict(distances=("l1",)), r"distance 'l1' is unknown \(valid: cosine, euclidean\)"),
        (dict(interpolation="first"), r"interpolation 'first' .*all_ranks, first_batch_ranks"),
        (dict(top_k=11), r"top_k 11 is out of range \(valid: 1 to the database size 10\)"),
        (dict(chunk_size=0), r"chunk_size 0"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ConfigError, match=match) as info:
            retrieval_metrics(db, y, db[:2], y[:2], **{"top_k": 1, **kwargs})
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r"query classes \[5\] have no item"):
        retrieval_metrics(db, y, db[:1], np.array([5]), top_k=1)
    with pytest.raises(ConfigError, match=r"database \(10, 4\) and queries \(2, 3\)"):
        retrieval_metrics(db, y, np.zeros((2, 3)), y[:2], top_k=1)


def test_zero_embeddings_rank_last_by_cosine_and_nothing_is_nan():
    db = np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 0.1]])
    out = retrieval_metrics(db, np.array([0, 0, 1]), np.array([[1.0, 0.0]]), np.array([0]),
                            top_k=1, distances=("cosine",))
    assert all(math.isfinite(v) for v in out.values())
    # ranking: item 0 (cos 1), item 2 (cos .995, irrelevant), item 1 (cos 0, relevant)
    # precision 1, 1/2, 2/3 → interpolated 1, 2/3, 2/3; recall .5, .5, 1 → levels 0–0.7 are
    # closest to recall .5 (rank 1): 1; 0.8–1 to recall 1 (rank 3): 2/3
    assert out["map_cosine"] == pytest.approx((8 * 1 + 3 * 2 / 3) / 11)


def test_ascending_order_is_a_stable_argsort_with_ties_signs_and_zeros():
    rng = np.random.default_rng(3)
    costs = np.round(rng.normal(size=(9, 500)), 1).astype(np.float32)  # many exact ties
    costs[0, :5] = [0.0, -0.0, 0.0, -0.0, -1e-30]
    costs[1, :4] = [np.float32(3.4e38), np.float32(-3.4e38), 1e-40, -1e-40]  # extremes,
    # subnormals
    got = ascending_order(torch.from_numpy(costs))
    assert torch.equal(got, torch.from_numpy(np.argsort(costs, axis=1, kind="stable")))
    with pytest.raises(ConfigError, match="NaN or infinite"):
        retrieval_metrics(np.array([[np.nan, 0.0]]), np.array([0]), np.zeros((1, 2)),
                          np.array([0]), top_k=1)
