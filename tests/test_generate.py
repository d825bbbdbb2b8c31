"""Constrained beam search on tiny random Llamas: validity, exactness against teacher forcing,
exclusion, subsets, batching and scripts beyond ASCII."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from tiny_lm import make_model, make_tokenizer

from m6gen.decoding.open_ended import open_generate
from m6gen.decoding.search import constrained_beam_search, rank_hypotheses, score_items
from m6gen.model import build_catalog_trie, encode_prompts

TITLES = [
    " Toy Story (1995)",
    " Toy Soldiers (1991)",
    " Alien (1979)",
    " Aliens (1986)",
    " Alien 3 (1992)",
    " Heat (1995)",
    " Casino (1995)",
    " The Godfather (1972)",
    " The Godfather: Part II (1974)",
    " Amélie (2001)",
    " 千と千尋の神隠し (2001)",
    " 🎬 Emoji Movie (2017)",
]
PROMPTS = [
    "A user watched these movies, in order:\n- Heat (1995)\n- Alien (1979)\nNext:",
    "Next:",
    "- Casino (1995)\nNext:",
]


@pytest.fixture(scope="module")
def setup():
    tok = make_tokenizer()
    trie = build_catalog_trie(tok, TITLES)
    model = make_model(len(tok))
    return tok, trie, model, encode_prompts(tok, PROMPTS)


def run(model, trie, prompts, beams, **kw):
    with torch.no_grad():
        return constrained_beam_search(model, trie, prompts, beams, pad_token_id=0, **kw)


def test_exhaustive_beams_equal_teacher_forcing(setup):
    """With as many beams as items, beam search finds every item with its exact scores."""
    tok, trie, model, prompts = setup
    results = run(model, trie, prompts, len(TITLES))
    for prompt, got in zip(prompts, results):
        with torch.no_grad():
            ref = sorted(score_items(model, trie, prompt, list(range(len(TITLES)))), key=lambda h: -h.logprob)
        assert [h.item for h in got] == [h.item for h in ref]
        for g, r in zip(got, ref):
            assert g.logprob == pytest.approx(r.logprob, abs=1e-3)
            assert g.catalog == pytest.approx(r.catalog, abs=1e-3)
            assert g.n_tokens == r.n_tokens


def test_catalog_scores_are_a_distribution_over_items(setup):
    _, trie, model, prompts = setup
    got = run(model, trie, prompts[:1], len(TITLES), search_by="catalog")[0]
    assert sum(np.exp(h.catalog) for h in got) == pytest.approx(1.0, abs=1e-6)
    assert [h.catalog for h in got] == sorted((h.catalog for h in got), reverse=True)


def test_batch_of_different_lengths_equals_one_at_a_time(setup):
    _, trie, model, prompts = setup
    batched = run(model, trie, prompts, 5)
    for prompt, got in zip(prompts, batched):
        alone = run(model, trie, [prompt], 5)[0]
        assert [h.item for h in got] == [h.item for h in alone]
        assert [h.logprob for h in got] == pytest.approx([h.logprob for h in alone], abs=1e-4)


def test_exclusion_inside_the_constraint(setup):
    _, trie, model, prompts = setup
    banned = [np.array([2, 3, 4]), np.array([], dtype=np.int64), np.arange(len(TITLES) - 1)]
    results = run(model, trie, prompts, len(TITLES), banned=banned)
    assert not {h.item for h in results[0]} & {2, 3, 4}
    assert len(results[0]) == len(TITLES) - 3  # every other item is still reachable
    assert len(results[1]) == len(TITLES)
    assert [h.item for h in results[2]] == [len(TITLES) - 1]  # only one item left unseen


def test_candidate_subset(setup):
    _, trie, model, prompts = setup
    allowed = [np.array([0, 5, 9])] * len(prompts)
    for res in run(model, trie, prompts, 10, allowed=allowed, banned=[np.array([5])] * len(prompts)):
        assert sorted(h.item for h in res) == [0, 9]


def test_prior_in_the_search_equals_blending_every_item(setup):
    """Exhaustive search with an item prior = every item scored by logprob + w * renormalized log-prior."""
    _, trie, model, prompts = setup
    rng = np.random.default_rng(0)
    prior = rng.normal(size=(len(prompts), len(TITLES))) * 3
    banned = [np.array([1, 7]), np.array([], dtype=np.int64), np.array([0])]
    for w in (0.0, 0.5, 2.0):
        results = run(model, trie, prompts, len(TITLES), banned=banned, prior=prior, prior_weight=w)
        for u, (prompt, got) in enumerate(zip(prompts, results)):
            ok = np.setdiff1d(np.arange(len(TITLES)), banned[u])
            log_prior = prior[u, ok] - np.log(np.exp(prior[u, ok]).sum())
            with torch.no_grad():
                lp = np.array([h.logprob for h in score_items(model, trie, prompt, ok.tolist())])
            expected = ok[np.argsort(-(lp + w * log_prior), kind="stable")]
            assert [h.item for h in got] == expected.tolist()
            by_item = dict(zip(ok.tolist(), log_prior))
            assert [h.prior for h in got] == pytest.approx([by_item[h.item] for h in got], abs=1e-9)


def test_a_strong_prior_steers_a_narrow_search(setup):
    """Few beams: the model alone misses the prior's favourites; with a heavy prior they are found."""
    _, trie, model, prompts = setup
    plain = run(model, trie, prompts, 3)
    prior = np.full((len(prompts), len(TITLES)), -20.0)
    favourites = [[h.item for h in run(model, trie, [p], len(TITLES))[0][-3:]] for p in prompts]  # the model's worst
    for u, fav in enumerate(favourites):
        prior[u, fav] = 0.0
    steered = run(model, trie, prompts, 3, prior=prior, prior_weight=5.0)
    for u, fav in enumerate(favourites):
        assert sorted(h.item for h in steered[u]) == sorted(fav)
        assert sorted(h.item for h in plain[u]) != sorted(fav)
    with pytest.raises(ValueError, match="prior must be"):
        run(model, trie, prompts, 3, prior=prior[:, :4])
    with pytest.raises(ValueError, match="prior_weight"):
        run(model, trie, prompts, 3, prior=prior, prior_weight=-1.0)


def test_rank_by_normalized(setup):
    _, trie, model, prompts = setup
    hyps = run(model, trie, prompts[:1], len(TITLES))[0]
    ranked = rank_hypotheses(hyps, "normalized")
    assert [h.normalized for h in ranked] == sorted((h.logprob / h.n_tokens for h in hyps), reverse=True)
    with pytest.raises(ValueError, match="rank_by"):
        rank_hypotheses(hyps, "bogus")


@pytest.mark.parametrize("kind", ["bytelevel", "sentencepiece"])
def test_any_script_round_trips(kind):
    tok = make_tokenizer(kind)
    trie = build_catalog_trie(tok, TITLES)
    eos = tok.eos_token_id
    for i, title in enumerate(TITLES):
        seq = trie.sequence(i)
        assert seq[-1] == eos
        assert tok.decode(seq[:-1]).strip() == title.strip()


@settings(max_examples=15, deadline=None)
@given(
    st.integers(0, 10_000),
    st.integers(1, 8),
    st.lists(st.text("abcxyz ", min_size=1, max_size=8), min_size=1, max_size=15, unique=True),
)
def test_every_output_is_a_distinct_catalog_item(seed, beams, words):
    """Property: random catalogs and random models only ever produce distinct catalog items."""
    tok = make_tokenizer()
    titles = [" " + w for w in words]
    # two titles that tokenize alike (e.g. trailing spaces) are not a valid catalog: not an example
    assume(len({tuple(tok(t, add_special_tokens=False)["input_ids"]) for t in titles}) == len(titles))
    trie = build_catalog_trie(tok, titles)
    model = make_model(len(tok), seed=seed % 7)
    rng = np.random.default_rng(seed)
    banned = [rng.choice(len(titles), size=rng.integers(0, len(titles)), replace=False)]
    res = run(model, trie, encode_prompts(tok, ["Next:"]), beams, banned=banned)[0]
    items = [h.item for h in res]
    assert len(items) == len(set(items)) == min(beams, len(titles) - len(banned[0]))
    assert all(0 <= i < len(titles) and i not in set(banned[0].tolist()) for i in items)
    for h in res:
        assert trie.lookup(trie.sequence(h.item)) == h.item


class _CannedGenerator:
    """Stands in for a model in ``open_generate``: ``generate`` returns fixed texts, so the answers are known."""

    def __init__(self, tok, texts: list[list[str]]):
        self.tok, self.texts = tok, texts

    def generate(self, input_ids, num_return_sequences, pad_token_id, **kw):
        rows = [self.tok(t, add_special_tokens=False)["input_ids"] for user in self.texts for t in user]
        width = max(len(r) for r in rows)
        new = torch.tensor([r + [pad_token_id] * (width - len(r)) for r in rows])  # (users * beams, new tokens)
        prompts = input_ids.repeat_interleave(num_return_sequences, dim=0)  # (users * beams, prompt width)
        scores = -torch.arange(1.0, len(rows) + 1)
        return SimpleNamespace(sequences=torch.cat([prompts, new], dim=1), sequences_scores=scores)


def test_open_mode_flags_titles_outside_the_catalog(setup):
    tok, _, _, prompts = setup
    catalog = TITLES[:4]  # Toy Story, Toy Soldiers, Alien, Aliens
    texts = [
        [" Alien (1979)", " Alien 5 (2031)"],  # a catalog title; a made-up one
        ["\n Toy Story (1995)\nNext:", "Aliens (1986) "],  # the first non-empty line; other whitespace
        [" Alien", " Heat (1995)"],  # a prefix of a title; a real film outside this catalog
    ]
    outs = open_generate(_CannedGenerator(tok, texts), tok, prompts, catalog, num_beams=2)
    assert [[o.item for o in row] for row in outs] == [[2, -1], [0, 3], [-1, -1]]
    assert [[o.in_catalog for o in row] for row in outs] == [[True, False], [True, True], [False, False]]
    assert outs[1][0].text == " Toy Story (1995)"
    assert [o.logprob for row in outs for o in row] == [-1.0, -2.0, -3.0, -4.0, -5.0, -6.0]


def test_open_mode_runs_a_real_beam_search(setup):
    tok, _, model, prompts = setup
    outs = open_generate(model, tok, prompts, TITLES[:4], num_beams=4, max_new_tokens=6)
    assert len(outs) == len(prompts) and all(len(row) == 4 for row in outs)
    for row in outs:
        assert [o.logprob for o in row] == sorted((o.logprob for o in row), reverse=True)
        assert all(-1 <= o.item < 4 and o.in_catalog == (o.item >= 0) for o in row)


def test_open_beams_end_at_a_line_break_and_never_open_with_one(setup):
    """A model that would write line breaks above all: each beam is then one title, a different one,
    where before every beam opened with a line break and most came out empty or the same."""
    from m6gen.decoding.open_ended import line_break_tokens

    tok, _, _, prompts = setup
    breaks = line_break_tokens(tok)
    assert breaks and all("\n" in tok.decode([t]) for t in breaks)
    assert not any("\n" in tok.decode([t]) for t in set(range(len(tok))) - set(breaks))
    model = make_model(len(tok))
    bias = torch.rand(len(tok), generator=torch.Generator().manual_seed(0))  # the same logits at every step
    bias[breaks] = 5.0
    model.lm_head = torch.nn.Linear(model.config.hidden_size, len(tok), bias=True)
    torch.nn.init.zeros_(model.lm_head.weight)
    with torch.no_grad():
        model.lm_head.bias.copy_(bias)
    outs = open_generate(model, tok, prompts[:1], TITLES[:4], num_beams=4, max_new_tokens=6)[0]
    likeliest = [int(t) for t in torch.argsort(bias, descending=True) if int(t) not in breaks]
    words = [tok.decode([t], skip_special_tokens=True) for t in likeliest if t != tok.eos_token_id]
    texts = [o.text for o in outs]
    # one token each, the likeliest that is no line break or end of text (a blank one leaves no title)
    assert [t for t in texts if t.strip()] == [w for w in words[:4] if w.strip()]
    assert len(set(texts)) == 4


def test_stats_are_reported(setup):
    _, trie, model, prompts = setup
    stats = {}
    with torch.no_grad():
        constrained_beam_search(model, trie, prompts, 4, stats=stats)
    assert stats["steps"] >= 1 and stats["rows"] >= stats["steps"]
    assert stats["model_s"] > 0 and stats["constraint_s"] > 0


def test_chunked_target_encoding_matches_plain(setup):
    from m6gen.model import encode_targets, encode_targets_flat

    tok = setup[0]
    flat, offsets = encode_targets_flat(tok, TITLES, chunk=5)
    plain = encode_targets(tok, TITLES)
    assert [flat[offsets[i] : offsets[i + 1]].tolist() for i in range(len(TITLES))] == plain
