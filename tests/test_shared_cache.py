"""The shared prompt cache (one KV copy per user, read by all its beams) gives the copying path's
results on every architecture it is enabled for, and is never enabled where it would not."""

import numpy as np
import pytest
import torch
from tiny_lm import CORPUS, make_model, make_tokenizer

from m6gen.decoding import shared_cache
from m6gen.decoding.search import constrained_beam_search
from m6gen.model import build_catalog_trie, encode_prompts

TITLES = [" " + title for title in CORPUS[:10]]  # the tiny tokenizer's own titles
PROMPTS = [  # different lengths: left padding must not leak into attention
    "A user watched these movies, in order:\n- Heat (1995)\n- Alien (1979)\n- Casino (1995)\nNext:",
    "Next:",
    "- Casino (1995)\nNext:",
]


@pytest.fixture(scope="module")
def setup():
    tok = make_tokenizer()
    return tok, build_catalog_trie(tok, TITLES), encode_prompts(tok, PROMPTS)


def _search(model, trie, prompts, share, **kw):
    with torch.no_grad():
        return constrained_beam_search(model, trie, prompts, 6, pad_token_id=0, share_prompt=share, **kw)


@pytest.mark.parametrize("model_type", sorted(shared_cache.ARCHITECTURES))
@pytest.mark.parametrize("search_by", ["logprob", "catalog"])
def test_shared_prompt_equals_copying(setup, model_type, search_by):
    tok, trie, prompts = setup
    model = make_model(len(tok), model_type=model_type)
    assert shared_cache.supports(model)
    banned = [np.array([0]), np.array([], dtype=np.int64), np.array([5, 6])]
    prior = np.log(np.random.default_rng(0).dirichlet(np.ones(len(TITLES)), size=len(PROMPTS)))
    kw = dict(search_by=search_by, banned=banned, prior=prior, prior_weight=0.5)
    copied, shared = _search(model, trie, prompts, False, **kw), _search(model, trie, prompts, True, **kw)
    for a, b in zip(copied, shared):
        assert [h.item for h in a] == [h.item for h in b]
        assert [h.logprob for h in a] == pytest.approx([h.logprob for h in b], abs=1e-4)
        assert [h.catalog for h in a] == pytest.approx([h.catalog for h in b], abs=1e-4)
    assert model.config._attn_implementation != shared_cache.ATTENTION  # restored after the search


def test_default_shares_where_supported(setup):
    tok, trie, prompts = setup
    model = make_model(len(tok))  # the tests' tiny Llama
    calls = []
    original = shared_cache.SharedPromptCache.attend

    def spy(self, *args):
        calls.append(1)
        return original(self, *args)

    shared_cache.SharedPromptCache.attend = spy
    try:
        _search(model, trie, prompts, None)
    finally:
        shared_cache.SharedPromptCache.attend = original
    assert calls  # the default took the shared path


def test_a_prompt_batch_equals_one_prompt_at_a_time(setup):
    """Beams of several users in one grid (padded to the user with most beams) do not mix."""
    tok, trie, prompts = setup
    model = make_model(len(tok))
    together = _search(model, trie, prompts, True)
    for prompt, got in zip(prompts, together):
        alone = _search(model, trie, [prompt], True)[0]
        assert [h.item for h in alone] == [h.item for h in got]
        assert [h.logprob for h in alone] == pytest.approx([h.logprob for h in got], abs=1e-4)


def test_not_enabled_for_a_sliding_window_or_an_unknown_model(setup):
    tok, trie, prompts = setup
    windowed = make_model(len(tok), model_type="mistral")
    windowed.config.sliding_window = 4  # attention limited to 4 tokens: the two-part softmax would differ
    assert not shared_cache.supports(windowed)
    with pytest.raises(ValueError, match="share_prompt"):
        _search(windowed, trie, prompts, True)
    gpt2 = _tiny_gpt2(len(tok))
    assert not shared_cache.supports(gpt2)
    assert len(_search(gpt2, trie, prompts, None)[0]) == 6  # the copying path still decodes it


def _tiny_gpt2(vocab_size: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=4, n_positions=512)
    return GPT2LMHeadModel(cfg).eval()


def test_attention_restored_after_an_error(setup):
    tok, trie, prompts = setup
    model = make_model(len(tok))
    before = model.config._attn_implementation
    with pytest.raises(KeyError), shared_cache.shared_prompt_attention(model):
        {}["missing"]
    assert model.config._attn_implementation == before
