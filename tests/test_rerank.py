"""Reranker: known answers on tiny hand-made catalogs, plus the k-distinct-unseen invariant."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from m6gen.ranking.rerank import ItemFeatures, RerankConfig, calibrate, rerank, rerank_many

LOG = np.log


def drama_comedy(popularity=(0, 0, 0)) -> ItemFeatures:
    # items 0 and 1 share a genre, item 2 does not
    return ItemFeatures.from_genres([["Drama"], ["Drama"], ["Comedy"]], np.array(popularity))


# beams whose softmax at T=1 is exactly (.5, .3, .2) for items (0, 1, 2)
IDS = np.array([0, 1, 2])
LPS = LOG(np.array([0.5, 0.3, 0.2]))


def test_zero_weights_give_beam_order():
    res = rerank(np.array([3, 1, 2]), np.array([-2.0, -0.5, -1.0]), config=RerankConfig(k=3))
    assert res.item_ids.tolist() == [1, 2, 3]
    assert [r.rank for r in res] == [1, 2, 3]
    assert res.filled


def test_ties_go_to_first_occurrence():
    res = rerank(np.array([5, 4, 6, 7]), np.array([-1.0, -1.0, -0.5, -1.0]), config=RerankConfig(k=4))
    assert res.item_ids.tolist() == [6, 5, 4, 7]


def test_all_weights_zero_is_beam_order_too():
    cfg = RerankConfig(accuracy=0.0, k=3)
    res = rerank(np.array([3, 1, 2]), np.array([-2.0, -0.5, -1.0]), config=cfg)
    assert res.item_ids.tolist() == [1, 2, 3]


def test_tiny_logprob_gap_keeps_beam_order():
    # softmax of values 1 ulp apart rounds to a tie; the higher logprob must still win
    lp = np.array([-1.0, np.nextafter(-1.0, 0.0)])
    res = rerank(np.array([0, 1]), lp, config=RerankConfig(k=2))
    assert res.item_ids.tolist() == [1, 0]


def test_duplicates_keep_best_and_seen_dropped():
    ids = np.array([1, 2, 1, 3, 9])
    lps = np.array([-3.0, -2.0, -1.0, -0.1, -0.2])
    res = rerank(ids, lps, seen={3}, config=RerankConfig(k=10))
    assert res.item_ids.tolist() == [9, 1, 2]
    assert res.items[1].logprob == -1.0
    assert res.n_duplicates == 1 and res.n_seen == 1 and res.n_candidates == 3
    # seen as an array works the same
    assert rerank(ids, lps, seen=np.array([3]), config=RerankConfig(k=10)).item_ids.tolist() == [9, 1, 2]


def test_not_filled_when_too_few_candidates():
    res = rerank(np.array([0, 1, 2, 2]), np.array([-1.0, -2.0, -3.0, -4.0]), seen={0}, config=RerankConfig(k=5))
    assert len(res) == 2 and res.requested_k == 5 and not res.filled
    assert res.shortfall() == "only 2 of 5 could be filled"
    empty = rerank(np.array([], dtype=int), np.array([]), config=RerankConfig(k=3))
    assert len(empty) == 0 and not empty.filled


def test_softmax_calibration_sums_to_one():
    lp = np.array([-1.0, -2.5, -0.3, -7.0])
    p = calibrate(lp, temperature=1.0)
    assert p.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(calibrate(LPS), [0.5, 0.3, 0.2])
    # T = 2 takes square roots of the probabilities before renormalizing
    root = np.sqrt([0.5, 0.3, 0.2])
    np.testing.assert_allclose(calibrate(LPS, 2.0), root / root.sum())
    res = rerank(np.array([0, 1, 2, 3]), lp, config=RerankConfig(k=4, temperature=0.7))
    assert sum(r.accuracy for r in res) == pytest.approx(1.0)
    np.testing.assert_allclose(calibrate(np.array([-np.inf, -np.inf])), [0.5, 0.5])


def test_diversity_pushes_same_genre_item_down():
    feats = drama_comedy()
    plain = rerank(IDS, LPS, features=feats, config=RerankConfig(k=3))
    assert plain.item_ids.tolist() == [0, 1, 2]
    # step 2: item 1 (Drama, like pick 0) scores .3 + .5*0 = .3; item 2 (Comedy) .2 + .5*1 = .7
    res = rerank(IDS, LPS, features=feats, config=RerankConfig(k=3, diversity=0.5))
    assert res.item_ids.tolist() == [0, 2, 1]
    first, second, third = res.items
    assert first.diversity == 1.0 and first.score == pytest.approx(1.0)
    assert second.diversity == pytest.approx(1.0) and second.score == pytest.approx(0.7)
    assert third.diversity == pytest.approx(0.0) and third.score == pytest.approx(0.3)
    assert second.accuracy == pytest.approx(0.2)


def test_dpp_pushes_same_genre_item_down():
    feats = drama_comedy()
    res = rerank(IDS, LPS, features=feats, config=RerankConfig(k=3, method="dpp", diversity=0.1))
    assert res.item_ids.tolist() == [0, 2, 1]
    assert [r.diversity for r in res] == pytest.approx([1.0, 1.0, 0.0])
    plain = rerank(IDS, LPS, features=feats, config=RerankConfig(k=3, method="dpp"))
    assert plain.item_ids.tolist() == [0, 1, 2]


def test_novelty_promotes_long_tail_item():
    feats = drama_comedy(popularity=(100, 100, 0))
    # p = (c + 1) / (200 + 3); novelty = -log2(p) / log2(203)
    expected = [math.log2(203 / 101) / math.log2(203)] * 2 + [1.0]
    np.testing.assert_allclose(feats.novelty(IDS), expected)
    res = rerank(IDS, LPS, features=feats, config=RerankConfig(k=3, novelty=0.5))
    # item 2: .2 + .5 * 1 = .7 beats item 0: .5 + .5 * .131
    assert res.item_ids.tolist() == [2, 0, 1]
    assert res.items[0].score == pytest.approx(0.7)
    assert res.items[0].novelty == pytest.approx(1.0)


def test_similarity_genres_and_embeddings():
    genres = [["A", "B"], ["A"], ["C"], []]
    cos = ItemFeatures.from_genres(genres)
    s = cos.similarity(np.array([0, 1, 3]), np.array([0, 1, 2]))
    assert s.shape == (3, 3)
    np.testing.assert_allclose(s, [[1, 1 / math.sqrt(2), 0], [1 / math.sqrt(2), 1, 0], [0, 0, 0]])
    jac = ItemFeatures.from_genres(genres, metric="jaccard")
    np.testing.assert_allclose(jac.similarity(np.array([0]), np.array([0, 1, 2, 3])), [[1, 0.5, 0, 0]])
    emb = ItemFeatures.from_embeddings(np.array([[1.0, 0.0], [1.0, 1.0], [-2.0, 0.0], [0.0, 3.0]], np.float32))
    np.testing.assert_allclose(emb.similarity([0], [0, 1, 2, 3]), [[1, 1 / math.sqrt(2), -1, 0]], atol=1e-6)
    mix = ItemFeatures.from_genres(genres, embeddings=emb.embeddings, genre_weight=0.25)
    np.testing.assert_allclose(mix.similarity([0], [2]), [[0.25 * 0 + 0.75 * -1]], atol=1e-6)
    np.testing.assert_allclose(mix.self_similarity(np.array([0, 3])), [1.0, 0.75])


def test_config_validation_names_the_field():
    for kwargs, name in [
        ({"diversity": -1}, "diversity"),
        ({"method": "xyz"}, "method"),
        ({"temperature": 0}, "temperature"),
        ({"k": 0}, "k"),
    ]:
        with pytest.raises(ValueError, match=name):
            RerankConfig(**kwargs)
    with pytest.raises(ValueError, match="genre_metric"):
        ItemFeatures.from_genres([["A"]], metric="dice")


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="features"):
        rerank(IDS, LPS, config=RerankConfig(novelty=1.0))
    with pytest.raises(ValueError, match="item ids"):
        rerank(np.array([7]), np.array([0.0]), features=drama_comedy())
    with pytest.raises(ValueError, match="length"):
        rerank(np.array([0, 1]), np.array([0.0]))


def test_rerank_many_matches_single():
    feats = drama_comedy()
    cfg = RerankConfig(k=2, diversity=0.5)
    beams = [(IDS, LPS), (np.array([2, 1]), np.array([-1.0, -0.1]))]
    out = rerank_many(beams, [set(), {1}], feats, cfg)
    assert [r.item_ids.tolist() for r in out] == [[0, 2], [2]]
    with pytest.raises(ValueError, match="length"):
        rerank_many(beams, [set()], feats, cfg)


@settings(max_examples=60, deadline=None)
@given(
    ids=st.lists(st.integers(0, 11), max_size=25),
    seen=st.sets(st.integers(0, 11), max_size=6),
    k=st.integers(1, 12),
    w=st.tuples(*[st.floats(0, 3)] * 3),
    method=st.sampled_from(["mmr", "dpp"]),
    seed=st.integers(0, 2**16),
)
def test_property_min_k_distinct_unseen(ids, seen, k, w, method, seed):
    rng = np.random.default_rng(seed)
    genres = [[g for g in "ABCD" if rng.random() < 0.4] for _ in range(12)]
    feats = ItemFeatures.from_genres(genres, rng.integers(0, 50, size=12))
    lps = -rng.exponential(size=len(ids))
    cfg = RerankConfig(accuracy=w[0], diversity=w[1], novelty=w[2], method=method, k=k)
    res = rerank(np.array(ids, dtype=int), lps, seen, feats, cfg)
    expected = min(k, len(set(ids) - seen))
    got = res.item_ids.tolist()
    assert len(got) == expected and len(set(got)) == expected
    assert not set(got) & seen and set(got) <= set(ids)
    assert res.filled == (expected == k)
    assert [r.rank for r in res] == list(range(1, expected + 1))
