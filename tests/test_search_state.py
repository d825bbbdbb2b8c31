"""Constrained beam search on a hand-made bigram model, against answers worked out by hand.

The next token depends only on the last one, so every score below is a product of the table's
entries; the traces in the comments are the search's steps (pool = finished items kept).
"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from m6gen.decoding.search import constrained_beam_search
from m6gen.decoding.trie import CatalogTrie

PAD, EOS, A, B, C, START = range(6)
NEXT = {  # P(next token | last token)
    START: {A: 0.55, B: 0.25, C: 0.2},
    A: {EOS: 0.1, B: 0.9},
    B: {EOS: 0.4, C: 0.6},
    C: {EOS: 0.6, A: 0.4},
}
ITEMS = [[A, EOS], [A, B, EOS], [A, B, C, EOS], [B, EOS], [C, A, EOS], [B, C, EOS], [C, A, B, EOS]]
# P(item): 0.055, 0.198, 0.1782, 0.1, 0.008, 0.09, 0.0288
# P(item | catalog), each step renormalized over the trie's children:
CATALOG = [0.055, 0.198, 0.297, 0.1, 0.02, 0.15, 0.18]


class _NoCache:
    def reorder_cache(self, rows: torch.Tensor) -> None:
        pass  # the bigram model keeps no state


class BigramLM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        table = torch.full((6, 6), 1 / 6)
        for prev, row in NEXT.items():
            table[prev] = 0.0
            for tok, p in row.items():
                table[prev, tok] = p
        self.log_table = torch.nn.Parameter(table.log())  # (V, V)

    def forward(
        self, input_ids, attention_mask=None, position_ids=None, use_cache=False, logits_to_keep=0, past_key_values=None
    ):
        return SimpleNamespace(logits=self.log_table[input_ids], past_key_values=_NoCache())  # (B, T, V)


def search(num_beams: int, **kw) -> tuple[list, dict]:
    stats = {}
    trie = CatalogTrie.from_sequences(ITEMS)
    with torch.no_grad():
        hyps = constrained_beam_search(BigramLM(), trie, [[START], [PAD, START]], num_beams, stats=stats, **kw)
    assert hyps[0] == hyps[1]  # a padded prompt with the same last token is the same user
    return hyps[0], stats


def test_narrow_search_by_logprob():
    # step 1: a .55, b .25, c .2; step 2: items 0 and 3 finish, ab .495, bc .15, ca .08 go on;
    # step 3: items 1, 5, 4 finish, the pool {1: .198, 3: .1, 5: .09} is full and beats cab .072, so only
    # abc .297 goes on; step 4: item 2 (.1782) finishes. Rows advanced: 3 + 3 + 1 (one prompt's share).
    hyps, stats = search(3)
    assert [h.item for h in hyps] == [1, 2, 3]
    assert [h.logprob for h in hyps] == pytest.approx(np.log([0.198, 0.1782, 0.1]), abs=1e-5)
    assert [h.catalog for h in hyps] == pytest.approx(np.log([CATALOG[1], CATALOG[2], CATALOG[3]]), abs=1e-5)
    assert [h.n_tokens for h in hyps] == [3, 4, 2]
    assert [h.normalized for h in hyps] == pytest.approx([h.logprob / h.n_tokens for h in hyps])
    assert [h.prior for h in hyps] == [0.0, 0.0, 0.0]
    assert (stats["steps"], stats["rows"]) == (3, 2 * 7)


def test_narrow_search_by_catalog():
    # step 3: the pool {1: .198, 5: .15, 3: .1} is full but abc .297 and cab .18 both beat it and go on.
    hyps, stats = search(3, search_by="catalog")
    assert [h.item for h in hyps] == [2, 1, 6]
    assert [h.catalog for h in hyps] == pytest.approx(np.log([0.297, 0.198, 0.18]), abs=1e-5)
    assert [h.logprob for h in hyps] == pytest.approx(np.log([0.1782, 0.198, 0.0288]), abs=1e-5)
    assert (stats["steps"], stats["rows"]) == (3, 2 * 8)


def test_one_beam_and_a_token_cap():
    hyps, _ = search(1)  # a -> ab (item 0 .055 finishes) -> abc (item 1 .198 finishes) -> item 2 .1782 loses
    assert [h.item for h in hyps] == [1]
    hyps, stats = search(3, max_new_tokens=2)  # only two-token titles can end
    assert [h.item for h in hyps] == [3, 0]
    assert (stats["steps"], stats["rows"]) == (1, 2 * 3)


def test_exclusion_subset_and_prior_by_hand():
    hyps, _ = search(3, banned=[np.array([1, 3])] * 2)  # the next best by logprob: 2 .1782, 5 .09, 0 .055
    assert [h.item for h in hyps] == [2, 5, 0]
    hyps, _ = search(7, allowed=[np.array([4, 6])] * 2)  # only c's subtree: a renormalized choice
    assert [h.item for h in hyps] == [6, 4]
    assert [h.catalog for h in hyps] == pytest.approx(np.log([0.9, 0.1]), abs=1e-5)
    # A prior of 0.9 on item 4 and 0.1 on item 6 (renormalized over the allowed pair), weight 1.
    prior = np.log(np.tile([0.0, 0.0, 0.0, 0.0, 0.9, 0.0, 0.1], (2, 1)) + 1e-300)
    hyps, _ = search(7, allowed=[np.array([4, 6])] * 2, prior=prior)
    assert [h.item for h in hyps] == [4, 6]  # .008 * .9 beats .0288 * .1
    assert [h.prior for h in hyps] == pytest.approx(np.log([0.9, 0.1]), abs=1e-9)
