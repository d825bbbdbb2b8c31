"""Metrics: hand-computed answers on tiny rankings."""

import csv
import json
import math

import numpy as np
import pytest

from m6gen.ranking.metrics import (
    catalog_coverage,
    duplicate_rate,
    evaluate_rankings,
    format_table,
    hit_rate_at_k,
    intra_list_diversity,
    mrr_at_k,
    ndcg_at_k,
    novelty,
    paired_bootstrap,
    per_user_scores,
    popularity_groups,
    seen_rate,
    target_ranks,
    validity,
    write_results,
)
from m6gen.ranking.rerank import ItemFeatures

# targets at rank 1, rank 3 and missing
RANKED = [[7, 1, 2], np.array([1, 2, 8]), [1, 2, 3]]
TARGETS = np.array([7, 8, 9])


def test_accuracy_known_answers():
    assert target_ranks(RANKED, TARGETS, 3).tolist() == [1, 3, 0]
    np.testing.assert_allclose(per_user_scores(RANKED, TARGETS, 3)["NDCG"], [1.0, 0.5, 0.0])
    assert ndcg_at_k(RANKED, TARGETS, 3) == pytest.approx(0.5)
    assert hit_rate_at_k(RANKED, TARGETS, 3) == pytest.approx(2 / 3)
    assert mrr_at_k(RANKED, TARGETS, 3) == pytest.approx((1 + 1 / 3 + 0) / 3)
    # k = 2 cuts the rank-3 hit
    assert hit_rate_at_k(RANKED, TARGETS, 2) == pytest.approx(1 / 3)
    assert ndcg_at_k(RANKED, TARGETS, 2) == pytest.approx(1 / 3)
    assert mrr_at_k(RANKED, TARGETS, 2) == pytest.approx(1 / 3)


def test_short_and_empty_lists_count_as_misses():
    ranked = [[5], [], [4, 6]]
    targets = np.array([5, 5, 6])
    assert target_ranks(ranked, targets, 10).tolist() == [1, 0, 2]
    assert ndcg_at_k(ranked, targets, 10) == pytest.approx((1 + 0 + 1 / math.log2(3)) / 3)
    with pytest.raises(ValueError, match="length"):
        hit_rate_at_k(ranked, np.array([1]), 10)
    with pytest.raises(ValueError, match="k"):
        hit_rate_at_k(ranked, targets, 0)


def test_intra_list_diversity_hand_genres():
    # item 0 {A, B}, item 1 {A}, item 2 {C}
    cos = ItemFeatures.from_genres([["A", "B"], ["A"], ["C"]])
    # cosine: sim(0,1) = 1/sqrt2, others 0 -> distances (1 - 1/sqrt2, 1, 1); the 1-item list is skipped
    expected = (3 - 1 / math.sqrt(2)) / 3
    assert intra_list_diversity([[0, 1, 2], [2]], cos, 3) == pytest.approx(expected)
    jac = ItemFeatures.from_genres([["A", "B"], ["A"], ["C"]], metric="jaccard")
    assert intra_list_diversity([[0, 1, 2]], jac, 3) == pytest.approx(2.5 / 3)
    assert intra_list_diversity([[0, 1, 2]], jac, 2) == pytest.approx(0.5)
    assert math.isnan(intra_list_diversity([[0], []], jac, 3))


def test_novelty_hand_frequencies():
    user_freq = np.array([8, 4, 2, 1, 0])  # item 4 unseen in train: clamped to 1 user
    # per item: 0, 1, 2, 3, 3 bits; lists average (0 + 1) / 2 and (2 + 3) / 2
    assert novelty([[0, 1], [2, 4]], user_freq, 8, 10) == pytest.approx(1.5)
    assert novelty([[0, 1], [3, 4]], user_freq, 8, 1) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="user_freq"):
        novelty([[0]], np.array([9]), 8, 1)


def test_coverage():
    assert catalog_coverage([[0, 1], [1, 2]], 10, 2) == pytest.approx(0.3)
    assert catalog_coverage([[0, 1], [1, 2]], 10, 1) == pytest.approx(0.2)


def test_validity_duplicates_seen():
    assert validity([[True, False], [True, True]]) == pytest.approx(0.75)
    assert math.isnan(validity([[], []]))
    assert duplicate_rate([[1, 1, 2], [3, 4]]) == pytest.approx(1 / 5)
    assert seen_rate([[1, 2], [3, 4]], [{1}, np.array([9])]) == pytest.approx(1 / 4)


def test_evaluate_rankings_keys_and_values():
    feats = ItemFeatures.from_genres([["A"]] * 10)
    out = evaluate_rankings(
        RANKED,
        TARGETS,
        ks=(2, 3),
        features=feats,
        user_freq=np.ones(10),
        n_users=4,
        seen=[set(), {2}, set()],
    )
    assert list(out) == [
        "HR@2",
        "HR@3",
        "NDCG@2",
        "NDCG@3",
        "MRR@2",
        "MRR@3",
        "ILD@2",
        "ILD@3",
        "Novelty@2",
        "Novelty@3",
        "Coverage@2",
        "Coverage@3",
        "SeenRate",
        "DuplicateRate",
    ]
    assert out["NDCG@3"] == pytest.approx(0.5)
    assert out["ILD@3"] == pytest.approx(0.0)  # every item has the same genre
    assert out["Novelty@3"] == pytest.approx(2.0)  # -log2(1/4)
    assert out["Coverage@3"] == pytest.approx(5 / 10)  # items 1, 2, 3, 7, 8
    assert out["SeenRate"] == pytest.approx(1 / 9)
    assert out["DuplicateRate"] == 0.0
    assert set(evaluate_rankings(RANKED, TARGETS, ks=(10,))) == {"HR@10", "NDCG@10", "MRR@10", "DuplicateRate"}
    with pytest.raises(ValueError, match="n_users"):
        evaluate_rankings(RANKED, TARGETS, user_freq=np.ones(10))


ROWS = {
    "beam": {"HR@10": 0.5, "NDCG@10": 0.25},
    "mmr": {"HR@10": 0.125, "NDCG@10": float("nan")},
    "pop": {"HR@10": 1.0},
}


def test_format_table():
    assert format_table(ROWS, ["HR@10", "NDCG@10"]) == (
        "| method | HR@10 | NDCG@10 |\n"
        "|---|---:|---:|\n"
        "| beam | 0.5000 | 0.2500 |\n"
        "| mmr | 0.1250 | nan |\n"
        "| pop | 1.0000 | - |\n"
    )
    assert "| new-item users | 36 |" in format_table({"new-item users": {"users": 36}})  # a count, not 36.0000
    # a column may have its own digits (seconds), the others keep four
    assert "| t | 0.1235 | 12.3 |" in format_table(
        {"t": {"NDCG@10": 0.123456, "seconds": 12.3456}}, digits={"seconds": 1}
    )


def test_write_results(tmp_path):
    paths = write_results(tmp_path / "sub" / "results", ROWS)
    assert [p.name for p in paths] == ["results.md", "results.csv", "results.json"]
    assert paths[0].read_text() == format_table(ROWS, ["HR@10", "NDCG@10"])
    with open(paths[1], newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["method", "HR@10", "NDCG@10"] and rows[3] == ["pop", "1.0", ""]
    data = json.loads(paths[2].read_text())
    assert data["mmr"] == {"HR@10": 0.125, "NDCG@10": None}
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["results.csv", "results.json", "results.md"]


def test_paired_bootstrap_known_answers():
    ref = np.array([0.0, 1.0, 0.5, 0.0, 0.25, 1.0])
    same = paired_bootstrap(ref, ref, n_resamples=500)
    assert same["ratio"] == same["ratio_low"] == same["ratio_high"] == 1.0
    assert same["diff"] == same["diff_low"] == same["diff_high"] == 0.0
    assert same["p_not_better"] == 1.0  # never above itself
    pos = ref + 0.125  # no all-zero resample, so every one has method > reference
    double = paired_bootstrap(2 * pos, pos, n_resamples=500)  # x2 is exact in floating point: every resample says 2
    assert double["ratio"] == double["ratio_low"] == double["ratio_high"] == 2.0
    assert double["p_not_better"] == 0.0 and double["diff"] == pytest.approx(pos.mean())
    # one user flips from a miss to a hit out of 4: diff 0.25; resamples without that user give 0
    a, b = np.array([1.0, 0.0, 0.0, 0.0]), np.zeros(4)
    r = paired_bootstrap(a, b, n_resamples=4000, seed=1)
    assert math.isnan(r["ratio"]) and r["diff"] == 0.25 and r["diff_low"] == 0.0
    assert r["p_not_better"] == pytest.approx((3 / 4) ** 4, abs=0.03)  # P(user 1 never drawn in 4 draws)
    assert paired_bootstrap(pos, ref, n_resamples=300, seed=5) == paired_bootstrap(pos, ref, n_resamples=300, seed=5)
    with pytest.raises(ValueError, match="equal length"):
        paired_bootstrap(a, b[:3])


def test_popularity_groups_cut_at_thirds_and_keep_ties_together():
    counts = np.array([3, 0, 7, 7, 7, 1, 2, 8, 100])  # sorted: 0 1 2 | 3 7 7 | 7 8 100: a 7 crosses the cut
    groups = popularity_groups(counts)
    assert [g.users.tolist() for g in groups] == [[1, 5, 6], [0, 2, 3, 4], [7, 8]]  # every 7 in the middle
    assert [g.label for g in groups] == [
        "target's training count 0-2",
        "target's training count 3-7",
        "target's training count 8-100",
    ]
    assert [g.users.tolist() for g in popularity_groups(np.arange(6))] == [[0, 1], [2, 3], [4, 5]]
    same = popularity_groups(np.full(4, 5))  # all equally popular: one group, not three
    assert len(same) == 1 and same[0].label == "target's training count 5" and same[0].users.tolist() == [0, 1, 2, 3]
    assert popularity_groups(np.array([], dtype=np.int64)) == []
    assert [g.users.tolist() for g in popularity_groups(np.array([9, 5]), n_groups=5)] == [
        [1],
        [0],
    ]  # more groups than users
    assert [g.users.tolist() for g in popularity_groups(counts, n_groups=1)] == [list(range(9))]
    with pytest.raises(ValueError, match="n_groups"):
        popularity_groups(counts, n_groups=0)
