"""Smoke tests on the real default model (SmolLM2-135M-Instruct GGUF) and data (MovieLens-100K).

They need `bash scripts/setup.sh`; without the model or data they are skipped with the reason.
"""

import numpy as np
import pytest

pytestmark = pytest.mark.smoke


@pytest.fixture(scope="module")
def real():
    from m6gen.data import DataError, build_histories, default_data_dir, leave_one_out, load_dataset
    from m6gen.model import ModelError, load_tokenizer

    try:
        ds = load_dataset(default_data_dir())
        tok = load_tokenizer()
    except (DataError, ModelError) as err:
        pytest.skip(f"default model or data not installed: {err}")
    return ds, leave_one_out(build_histories(ds)), tok


def test_tokenizer_special_tokens_and_chat_template(real):
    from m6gen.prompts import TemplateLibrary

    ds, split, tok = real
    assert tok.eos_token == "<|im_end|>"  # transformers 4.x misread these
    user = split.users[0]
    prompt = (
        TemplateLibrary()
        .get("instruct")
        .render_prompt([ds.catalog[i] for i in split.test_history(user)], tokenizer=tok)
    )
    assert prompt.startswith("<|im_start|>system") and prompt.endswith("<|im_start|>assistant\n")


def test_catalog_trie_round_trips_every_title(real):
    from m6gen.model import build_catalog_trie
    from m6gen.prompts import TemplateLibrary

    ds, _, tok = real
    tpl = TemplateLibrary().get("titles")
    targets = [tpl.render_target(it) for it in ds.catalog]
    trie = build_catalog_trie(tok, targets)
    assert trie.n_items == len(ds.catalog) == 1682
    for i in range(0, len(targets), 7):
        seq = trie.sequence(i)
        assert seq[-1] == tok.eos_token_id and tok.decode(seq[:-1]) == targets[i]
        assert trie.lookup(seq) == i


def test_sequence_template_is_token_incremental_on_the_real_tokenizer(real):
    """History packing's precondition holds for SmolLM2's tokenizer on MovieLens titles; titles' does not."""
    from m6gen.model import encode_targets
    from m6gen.prompts import TemplateLibrary
    from m6gen.training.examples import is_token_incremental

    ds, split, tok = real
    for name, expected in (("sequence", True), ("titles", False)):
        tpl = TemplateLibrary(max_history=20).get(name)
        target_ids = encode_targets(tok, [tpl.render_target(it) for it in ds.catalog])
        assert is_token_incremental(tpl, tok, ds.catalog, target_ids, split.train, users=20) is expected, name


def test_the_default_gguf_loads_as_plain_tensors_without_a_dtype_warning(real, caplog):
    """GGUF weights are unpacked on load (LoRA needs plain tensors), whatever transformers would do by
    default, and a bf16 load does not tell the user to pass float32."""
    import logging

    import torch

    from m6gen.model import load_model

    with caplog.at_level(logging.WARNING):
        lm = load_model(dtype="bfloat16")
    assert not [r for r in caplog.records if "GGUF" in r.getMessage()]
    assert all(type(p) is torch.nn.Parameter and p.dtype == torch.bfloat16 for p in lm.parameters())
    assert type(lm.get_output_embeddings()) is torch.nn.Linear


def test_default_model_recommends_catalog_items(real):
    from m6gen.model import load_model
    from m6gen.prompts import TemplateLibrary
    from m6gen.recommender import RecommendConfig, Recommender

    ds, split, tok = real
    rec = Recommender(
        load_model(), tok, ds.catalog, TemplateLibrary().get("titles"), RecommendConfig(beams=5, max_history=10)
    )
    user = split.users[0]
    history = split.test_history(user)
    beams = rec.generate([history])[0]
    items = [h.item for h in beams]
    assert len(items) == len(set(items)) == 5
    assert not set(items) & set(history)
    assert all(np.isfinite(h.logprob) and h.logprob < 0 for h in beams)
