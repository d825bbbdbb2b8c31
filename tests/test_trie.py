"""Catalog trie: known answers on tiny catalogs, and a property test against a brute-force trie."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from m6gen.decoding.trie import CatalogTrie, TitleIndex

EOS = 9


def brute_allowed(seqs, prefix):
    k = len(prefix)
    return sorted({s[k] for s in seqs if s[:k] == prefix and len(s) > k})


def test_prefix_titles_complete_only_at_end_marker():
    alien, aliens = [5, 6, EOS], [5, 6, 7, EOS]  # "Alien" is a prefix of "Aliens"
    trie = CatalogTrie.from_sequences([alien, aliens])
    assert trie.allowed_tokens([5, 6]) == [7, EOS]
    assert trie.lookup(alien) == 0 and trie.lookup(aliens) == 1
    assert trie.lookup([5, 6]) == -1  # an unfinished title is no item
    assert trie.allowed_tokens([5, 6, EOS]) == []


def test_long_shared_prefixes_and_sequence_roundtrip():
    base = list(range(20, 40))
    seqs = [base + [t, EOS] for t in (1, 2, 3)] + [base[:10] + [EOS]]
    trie = CatalogTrie.from_sequences(seqs)
    assert trie.allowed_tokens(base) == [1, 2, 3]
    assert trie.allowed_tokens(base[:10]) == [EOS, base[10]]  # children in token order
    for i, s in enumerate(seqs):
        assert trie.sequence(i) == s
    assert trie.max_depth == 22


def test_duplicate_sequences_are_refused():
    with pytest.raises(ValueError, match="share one token sequence"):
        CatalogTrie.from_sequences([[1, EOS], [2, EOS], [1, EOS]])


def test_empty_catalog_and_empty_sequence_are_refused():
    with pytest.raises(ValueError, match="empty catalog"):
        CatalogTrie.from_sequences([])
    with pytest.raises(ValueError, match="empty token sequence"):
        CatalogTrie.from_sequences([[1, EOS], []])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 5), max_size=6), min_size=1, max_size=40, unique_by=tuple))
def test_matches_brute_force(raw):
    seqs = [s + [EOS] for s in raw]
    trie = CatalogTrie.from_sequences(seqs)
    for i, s in enumerate(seqs):
        assert trie.lookup(s) == i
        for k in range(len(s)):
            assert trie.allowed_tokens(s[:k]) == brute_allowed(seqs, s[:k])
        # the subtree range of every prefix holds exactly the items under it
        for k in range(len(s) + 1):
            node = trie.walk(s[:k])
            below = {int(trie.item_rank[j]) for j, x in enumerate(seqs) if x[:k] == s[:k]}
            assert below == set(range(trie.row_lo[node], trie.row_hi[node]))


def test_expand_many_nodes_at_once():
    seqs = [[1, 2, EOS], [1, 3, EOS], [4, EOS]]
    trie = CatalogTrie.from_sequences(seqs)
    nodes = np.array([trie.walk([1]), 0, trie.walk([4])])
    parent, child = trie.expand(nodes)
    assert parent.tolist() == [0, 0, 1, 1, 2]
    assert trie.node_token[child].tolist() == [2, 3, 1, 4, EOS]


def test_banned_subtrees_counted_per_user():
    seqs = [[1, 2, EOS], [1, 3, EOS], [4, EOS]]
    trie = CatalogTrie.from_sequences(seqs)
    keys = trie.user_item_keys([[0, 1], []])  # user 0 has seen both "1 ..." items
    node = np.array([trie.walk([1])] * 2)
    counts = trie.count_in_subtrees(keys, np.array([0, 1]), node)
    assert counts.tolist() == [2, 0]
    assert trie.subtree_size(node).tolist() == [2, 2]


def test_save_and_load(tmp_path):
    seqs = [[1, 2, EOS], [1, 3, EOS], [4, EOS]]
    trie = CatalogTrie.from_sequences(seqs)
    trie.save(tmp_path, {"tokenizer": "abc"})
    loaded, meta = CatalogTrie.load(tmp_path)
    assert meta["tokenizer"] == "abc" and meta["n_items"] == 3
    for name in ("first_child", "node_token", "node_item", "row_lo", "row_hi", "flat", "offsets"):
        assert np.array_equal(getattr(trie, name), getattr(loaded, name))
    assert not list(tmp_path.glob("*.tmp*"))


def test_title_index_exact_and_prefix():
    idx = TitleIndex(
        ["Toy Story (1995)", "Toy Soldiers (1991)", "Alien (1979)", "Amélie (2001)", "千と千尋の神隠し (2001)"]
    )
    assert idx.lookup("Alien (1979)") == 2 and idx.lookup("alien (1979)") == -1
    assert idx.prefix("toy s") == [0, 1]
    assert idx.prefix("AMÉ") == [3]
    assert idx.prefix("千と") == [4]
