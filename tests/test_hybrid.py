"""Collaborative item tokens ({{ it.cf }}, m6gen.hybrid) on tiny random models: the placeholder's
embedding is replaced, batches equal single prompts, runs save and reload the projector, bad
sources are one-line errors."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import N_ITEMS, tiny_config, tiny_world  # noqa: F401

from m6gen.hybrid import CollaborativeError, ItemTable, attach, find, load_item_table
from m6gen.hybrid.item_table import fingerprint
from m6gen.model import encode_prompts
from tests.tiny_lm import make_model, make_tokenizer


def table(n: int = N_ITEMS, d: int = 8, seed: int = 0, known=None) -> ItemTable:
    vectors = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    known = np.ones(n, dtype=bool) if known is None else np.asarray(known)
    return ItemTable(vectors, known, "test", fingerprint(vectors))


@pytest.fixture
def hybrid_model():
    tok = make_tokenizer()
    model = make_model(len(tok), seed=1)
    model.eval()
    return model, tok, attach(model, table(), offset=len(tok), hidden=16)


def test_placeholder_becomes_the_projected_vector_and_text_embeds_as_before(hybrid_model):
    model, tok, embedding = hybrid_model
    ids = encode_prompts(tok, ["Seen: Alien<|cf:3|> Heat<|cf:7|>"])[0]
    plain = encode_prompts(tok, ["Seen: Alien Heat"])[0]
    virtual = [i for i in ids if i >= len(tok)]
    assert virtual == [len(tok) + 3, len(tok) + 7]
    assert [i for i in ids if i < len(tok)] == plain  # the text around the tokens tokenizes as without them
    with torch.no_grad():
        out = embedding(torch.tensor([ids]))[0]
        projected = embedding.cf_projector(embedding.cf_vectors[[3, 7]])
        text = embedding.text(torch.tensor([plain]))[0]
    soft = torch.tensor([i >= len(tok) for i in ids])
    torch.testing.assert_close(out[soft], projected)
    torch.testing.assert_close(out[~soft], text)
    assert not torch.allclose(projected[0], projected[1])  # each item its own vector


def test_template_renders_placeholders_only_for_items_with_a_vector(tiny_dirs):
    _, ds, split, template, _ = tiny_world(tiny_dirs, "hybrid")
    tok = make_tokenizer()
    model = make_model(len(tok))
    known = np.ones(len(ds.catalog), dtype=bool)
    known[2] = False
    embedding = attach(model, table(len(ds.catalog), known=known), offset=len(tok))
    history = [ds.catalog[i] for i in (1, 2, 3)]
    text = template.render_prompt(history, tokenizer=tok, cf=embedding.placeholder)
    assert "<|cf:1|>" in text and "<|cf:3|>" in text and "<|cf:2|>" not in text
    assert "cf" not in template.render_prompt(history, tokenizer=tok)  # no model tokens: plain titles


def test_generate_batch_with_and_without_tokens_equals_one_at_a_time(tiny_dirs):
    from m6gen.recommender import RecommendConfig, Recommender

    _, ds, split, template, _ = tiny_world(tiny_dirs, "hybrid", max_history=4)
    tok = make_tokenizer()
    model = make_model(len(tok), seed=2)
    known = np.ones(len(ds.catalog), dtype=bool)
    known[::3] = False  # some items without a vector: their prompts carry fewer tokens
    attach(model, table(len(ds.catalog), seed=3, known=known), offset=len(tok), hidden=16)
    model.eval()
    rec = Recommender(model, tok, ds.catalog, template, RecommendConfig(beams=5, batch_size=8))
    assert rec.collaborative is not None
    histories = [[0, 3, 6], [1], [2, 4, 5, 7], [9, 12], [15, 18, 10]]  # all unknown, mixed, none ...
    batch = rec.generate(histories)
    for h, beams in zip(histories, batch):
        single = rec.generate([h])[0]
        assert [b.item for b in single] == [b.item for b in beams]
        np.testing.assert_allclose([b.logprob for b in single], [b.logprob for b in beams], atol=1e-4)
    # the tokens change what the model reads: without them the same histories score differently
    plain = Recommender(make_model(len(tok), seed=2).eval(), tok, ds.catalog, template, rec.config)
    assert [b.logprob for b in plain.generate([histories[3]])[0]] != [b.logprob for b in batch[3]]


def test_run_saves_and_reloads_its_projector_exactly(tiny_dirs, tmp_path):
    from m6gen.recommender import Recommender
    from m6gen.runs import load_trained
    from m6gen.training.loop import train

    source = tmp_path / "cf.npy"
    np.save(source, np.random.default_rng(0).normal(size=(N_ITEMS, 8)).astype(np.float32))
    cfg = tiny_config(tiny_dirs, tmp_path / "run", template="hybrid", cf_source=str(source), epochs=1)
    summary = train(cfg)
    assert summary["steps"] > 0
    assert (tmp_path / "run" / "collaborative.json").is_file()
    model, tok, _ = load_trained(tmp_path / "run")
    embedding = find(model)
    assert embedding is not None and embedding.table.source == str(source)
    from safetensors.torch import load_file

    saved = {k: v for k, v in load_file(tmp_path / "run" / "adapter_model.safetensors").items() if "cf_projector" in k}
    assert saved  # the projector went with the adapter
    state = {k: v for k, v in model.state_dict().items() if "cf_projector" in k and "modules_to_save" in k}
    assert len(state) == len(saved)
    for key, value in saved.items():
        match = [
            v
            for k, v in state.items()
            if k.split("cf_projector.")[1].replace("modules_to_save.default.", "") == key.split("cf_projector.")[1]
        ]
        torch.testing.assert_close(match[0], value)
    initial = torch.nn.Sequential(*[m for m in embedding.cf_projector.original_module])
    assert not all(torch.equal(a, b) for a, b in zip(initial.state_dict().values(), state.values()))  # it trained
    merged, _, _ = load_trained(tmp_path / "run", merge=True)  # what Recommender.from_pretrained loads
    with torch.no_grad():
        ids = torch.tensor([[5, len(tok) + 4, 6]])
        torch.testing.assert_close(find(merged)(ids), find(model)(ids))
    rec = Recommender.from_pretrained(tmp_path / "run", tiny_world(tiny_dirs, "hybrid")[1].catalog, device="cpu")
    assert rec.collaborative is not None and "<|cf:" in rec.prompts([[1, 2, 3]])[0]


def test_bad_sources_are_one_line_errors(tmp_path):
    with pytest.raises(CollaborativeError, match=r"no such file"):
        load_item_table(tmp_path / "missing.npy", 5)
    np.save(tmp_path / "wrong.npy", np.zeros((4, 3), dtype=np.float32))
    with pytest.raises(CollaborativeError, match=r"4 rows, the catalog has 5 items"):
        load_item_table(tmp_path / "wrong.npy", 5)
    np.save(tmp_path / "flat.npy", np.zeros(5, dtype=np.float32))
    with pytest.raises(CollaborativeError, match=r"2-D"):
        load_item_table(tmp_path / "flat.npy", 5)
    (tmp_path / "table.txt").write_text("1 2 3")
    with pytest.raises(CollaborativeError, match=r"unknown file type"):
        load_item_table(tmp_path / "table.txt", 5)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CollaborativeError, match=r"no sasrec.pt"):
        load_item_table(tmp_path / "empty", 5)


def test_damaged_and_empty_sources_are_one_line_errors_and_bf16_is_read(tmp_path):
    """Each of these once gave a traceback (damaged files) or trained without a single token (no usable row)."""
    from safetensors.torch import save_file

    (tmp_path / "empty.npy").write_bytes(b"")
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 64)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "sasrec.pt").write_bytes(b"PK\x03\x04 cut short")
    np.save(tmp_path / "nan.npy", np.full((5, 3), np.nan, dtype=np.float32))
    np.save(tmp_path / "zero_d.npy", np.zeros((5, 0), dtype=np.float32))
    np.save(tmp_path / "complex.npy", np.ones((5, 3), dtype=np.complex64))
    for name, error in [
        ("empty.npy", "not a readable .npy file"),
        ("junk.safetensors", "not a readable .safetensors file"),
        ("junk", "sasrec.pt is not a readable saved SASRec"),
        ("nan.npy", "no usable row"),
        ("zero_d.npy", "2-D real items x d matrix"),
        ("complex.npy", "2-D real items x d matrix"),
    ]:
        with pytest.raises(CollaborativeError, match=error) as caught:
            load_item_table(tmp_path / name, 5)
        assert "\n" not in str(caught.value) and name in str(caught.value)
    table = torch.arange(15, dtype=torch.float32).reshape(5, 3) + 1
    save_file({"embeddings": table.to(torch.bfloat16)}, tmp_path / "bf16.safetensors")
    loaded = load_item_table(tmp_path / "bf16.safetensors", 5)
    np.testing.assert_array_equal(loaded.vectors, table.numpy())  # small integers: exact in bf16


def test_a_damaged_saved_sasrec_is_a_one_line_error(tmp_path):
    from m6gen.baselines.sasrec import SASRec, SASRecConfig, load_sasrec
    from m6gen.model import ModelError

    SASRec(4, SASRecConfig(hidden=8, max_len=5)).save(tmp_path / "s")
    whole = (tmp_path / "s" / "sasrec.pt").read_bytes()
    (tmp_path / "s" / "sasrec.pt").write_bytes(whole[: len(whole) // 2])  # a copy cut short
    with pytest.raises(ModelError, match="not a readable saved SASRec"):
        load_sasrec(tmp_path / "s", 4)


def test_a_bad_source_fails_before_the_model_loads_and_blank_rows_are_noted(tiny_dirs, tmp_path, monkeypatch):
    import m6gen.training.prepare as prepare
    from m6gen.config import TrainConfig
    from m6gen.training.collaborative import collaborative_table

    def no_model(*a, **k):
        raise AssertionError("the model loaded before the collaborative source was checked")

    monkeypatch.setattr(prepare, "load_model", no_model, raising=False)
    monkeypatch.setattr("m6gen.model.load_model", no_model)
    model_dir, data_dir = tiny_dirs
    np.save(tmp_path / "nan.npy", np.full((20, 4), np.nan, dtype=np.float32))
    cfg = TrainConfig(model=str(model_dir), data=str(data_dir), template="hybrid", cf_source=str(tmp_path / "nan.npy"))
    with pytest.raises(CollaborativeError, match="no usable row"):
        prepare.prepare_run(replace(cfg, output_dir=str(tmp_path / "run")))
    from m6gen.data import item_popularity

    _, ds, split, _, _ = tiny_world(tiny_dirs, "hybrid")
    trained = item_popularity(split, len(ds.catalog)) > 0
    vectors = np.ones((len(ds.catalog), 4), dtype=np.float32)
    vectors[np.flatnonzero(trained)[:2]] = 0.0  # two items with training interactions but no vector
    np.save(tmp_path / "some.npy", vectors)
    said = []
    collaborative_table(replace(cfg, cf_source=str(tmp_path / "some.npy")), split, ds.catalog, said.append)
    assert said == [
        f"note: --cf-source {tmp_path / 'some.npy'}: 2 of {int(trained.sum())} items with training interactions "
        "have an all-zero or non-finite row there and get no collaborative token"
    ]


def test_train_command_reports_a_wrong_shaped_source_in_one_line(tiny_dirs, tmp_path, capsys):
    from m6gen.commands.train import main

    np.save(tmp_path / "wrong.npy", np.zeros((3, 4), dtype=np.float32))
    model_dir, data_dir = tiny_dirs
    rc = main(
        [
            "--model",
            str(model_dir),
            "--data",
            str(data_dir),
            "--template",
            "hybrid",
            "--cf-source",
            str(tmp_path / "wrong.npy"),
            "--output-dir",
            str(tmp_path / "run"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "3 rows, the catalog has 20 items" in err[0]


@pytest.mark.parametrize(
    "template, error",
    [
        ("sequence", r"does not place collaborative tokens"),
        ("hybrid_state", r"not a saved SASRec folder"),  # user-state tokens need the SASRec itself
    ],
)
def test_a_template_that_does_not_fit_the_source_is_refused(tiny_dirs, tmp_path, template, error):
    from m6gen.config import TrainError
    from m6gen.training.loop import train

    np.save(tmp_path / "cf.npy", np.ones((N_ITEMS, 4), dtype=np.float32))
    cfg = tiny_config(tiny_dirs, tmp_path / "run", template=template, cf_source=str(tmp_path / "cf.npy"))
    with pytest.raises(TrainError, match=error):
        train(cfg)


def test_items_without_a_training_interaction_get_no_token(tmp_path):
    np.save(tmp_path / "cf.npy", np.ones((4, 2), dtype=np.float32))
    t = load_item_table(tmp_path / "cf.npy", 4, trained=np.array([True, False, True, True]))
    assert t.known.tolist() == [True, False, True, True]
    assert not t.vectors[1].any()


@pytest.mark.parametrize("template", ["hybrid", "hybrid_state"])
def test_packed_hybrid_blocks_give_the_loss_of_single_examples(tiny_dirs, template):
    """Item tokens (and state tokens, each reading only its own packed example's items) inside packed
    blocks give the loss of one example per row."""
    from m6gen.training.examples import (
        SoftTokens,
        build_block_examples,
        is_token_incremental,
        sample_blocks,
    )
    from m6gen.training.loss import check_loss_paths, loss_module

    tok, ds, split, template, target_ids = tiny_world(tiny_dirs, template, max_history=4)
    model = make_model(len(tok), seed=4)
    states = tiny_sasrec(len(ds.catalog)) if template.name == "hybrid_state" else None
    embedding = attach(model, table(len(ds.catalog)), offset=len(tok), hidden=16, sequence=states)
    soft = SoftTokens(embedding)
    assert is_token_incremental(template, tok, ds.catalog, target_ids, split.train, soft=soft)
    blocks = sample_blocks(split.train, block=3, per_user=1, sampling="last")[:3]
    examples, _ = build_block_examples(blocks, split.train, ds.catalog, template, tok, target_ids, soft=soft)
    first_soft = len(tok) + (1 << 24 if states is not None else 0)
    assert all(any(t >= first_soft for t in ex.target_ids) for ex in examples)  # tokens inside the blocks
    module = loss_module(model)
    fast, packed = check_loss_paths(module, examples, tok.pad_token_id, soft_from=len(tok))
    assert fast and packed


def test_the_projector_can_learn_at_its_own_rate(hybrid_model):
    """--cf-lr-scale: the projector's parameters, and only they, get lr x scale; at 1 there is one group."""

    from peft import LoraConfig, get_peft_model

    from m6gen.config import TrainConfig
    from m6gen.hybrid.soft_tokens import PROJECTOR
    from m6gen.training.prepare import parameter_groups

    model, _, _ = hybrid_model
    lora = LoraConfig(r=2, target_modules=["q_proj", "v_proj"], modules_to_save=[PROJECTOR], task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, lora)
    cfg = replace(TrainConfig(), lr=1e-3, cf_lr_scale=10.0)
    rest, projector = parameter_groups(peft_model, cfg)
    trainable = {id(p): n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert projector["lr"] == pytest.approx(1e-2) and "lr" not in rest
    assert projector["params"] and all(PROJECTOR in trainable[id(p)] for p in projector["params"])
    assert rest["params"] and all("lora_" in trainable[id(p)] for p in rest["params"])
    assert len(projector["params"]) + len(rest["params"]) == len(trainable)
    assert len(parameter_groups(peft_model, replace(cfg, cf_lr_scale=1.0))) == 1


def test_alignment_teaches_the_projector_each_items_title(hybrid_model):
    """--cf-align-steps: after the stage each item's token is nearest to its own title's mean token
    embedding, among all titles."""
    from m6gen.hybrid.align import align_projector, title_embeddings

    model, tok, embedding = hybrid_model
    titles = [f" Title number {i}" for i in range(N_ITEMS)]
    targets = title_embeddings(embedding, tok, titles)
    ids = tok(titles[3], add_special_tokens=False)["input_ids"]
    assert torch.allclose(targets[3], embedding.text.weight[ids].float().mean(0))

    def nearest_title() -> torch.Tensor:
        with torch.no_grad():
            projected = embedding(torch.arange(N_ITEMS)[None] + embedding.offset)[0].float()
        return torch.cdist(projected, targets).argmin(1)

    assert (nearest_title() == torch.arange(N_ITEMS)).float().mean() < 0.5  # not by chance before
    before, after = align_projector(embedding, targets, steps=300, lr=1e-2)
    assert after < 0.2 * before
    assert bool((nearest_title() == torch.arange(N_ITEMS)).all())


# ----- user-state tokens ({{ it.state }}): a frozen SASRec's state after the history so far


def tiny_sasrec(n: int = N_ITEMS, seed: int = 0):
    from m6gen.baselines.sasrec import SASRec, SASRecConfig

    torch.manual_seed(seed)
    return SASRec(n, SASRecConfig(hidden=8, n_blocks=1, n_heads=1, max_len=6, dropout=0.0))


def sasrec_state(sasrec, items: list[int]) -> torch.Tensor:
    """SASRec's own hidden state after ``items`` (its last max_len), as its score() computes it."""
    from m6gen.baselines.sasrec import _pad_left

    with torch.no_grad():
        return sasrec.model(_pad_left([items], min(len(items), sasrec.config.max_len)))[0, -1]


@pytest.fixture
def state_model():
    tok = make_tokenizer()
    model = make_model(len(tok), seed=1)
    model.eval()
    return model, tok, attach(model, table(), offset=len(tok), hidden=16, sequence=tiny_sasrec())


def test_a_state_token_reads_the_sasrec_state_after_the_items_so_far(state_model):
    model, tok, embedding = state_model
    items = [3, 7, 1, 4, 9, 2, 8, 5]  # longer than the SASRec's max_len: it reads the last 6, as SASRec does
    prompt = "Seen:" + "".join(f" T{i}<|cf:{i}|><|state:{i}|>" for i in items)
    ids = torch.tensor(encode_prompts(tok, [prompt]))
    states = ids[0] >= len(tok) + (1 << 24)
    assert int(states.sum()) == len(items)
    with torch.no_grad():
        out = embedding(ids)[0][states]
        expected = embedding.cf_state_projector(
            torch.stack([sasrec_state(embedding.sequence, items[: j + 1]) for j in range(len(items))])
        )
    torch.testing.assert_close(out, expected)
    assert not torch.allclose(out[0], out[1])  # each position its own state
    # causal: another later item leaves every earlier state token as it was
    changed = "Seen:" + "".join(f" T{i}<|cf:{i}|><|state:{i}|>" for i in [*items[:-1], 11])
    other_ids = torch.tensor(encode_prompts(tok, [changed]))
    with torch.no_grad():
        other = embedding(other_ids)[0][other_ids[0] >= len(tok) + (1 << 24)]
    torch.testing.assert_close(other[:-1], out[:-1])
    assert not torch.allclose(other[-1], out[-1])


def test_state_tokens_in_a_padded_batch_equal_one_prompt_at_a_time(tiny_dirs):
    from m6gen.recommender import RecommendConfig, Recommender

    _, ds, split, template, _ = tiny_world(tiny_dirs, "hybrid_state", max_history=4)
    tok = make_tokenizer()
    model = make_model(len(tok), seed=2)
    known = np.ones(len(ds.catalog), dtype=bool)
    known[::3] = False  # items without a vector have no tokens, and the SASRec does not read them
    attach(
        model,
        table(len(ds.catalog), seed=3, known=known),
        offset=len(tok),
        hidden=16,
        sequence=tiny_sasrec(len(ds.catalog)),
    )
    model.eval()
    rec = Recommender(model, tok, ds.catalog, template, RecommendConfig(beams=5, batch_size=8))
    assert "<|state:1|>" in rec.prompts([[1, 2]])[0] and "<|state:0|>" not in rec.prompts([[0, 1]])[0]
    histories = [[0, 3, 6], [1], [2, 4, 5, 7], [9, 12], [15, 18, 10]]
    batch = rec.generate(histories)
    for h, beams in zip(histories, batch):
        single = rec.generate([h])[0]
        assert [b.item for b in single] == [b.item for b in beams]
        np.testing.assert_allclose([b.logprob for b in single], [b.logprob for b in beams], atol=1e-4)


def test_a_run_with_state_tokens_saves_and_reloads_them_exactly(tiny_dirs, tmp_path):
    from m6gen.recommender import Recommender
    from m6gen.runs import load_trained
    from m6gen.training.loop import train

    sasrec = tiny_sasrec()
    sasrec.save(tmp_path / "sasrec")
    cfg = tiny_config(
        tiny_dirs,
        tmp_path / "run",
        template="hybrid_state",
        cf_source=str(tmp_path / "sasrec"),
        epochs=1,
        cf_align_steps=5,
    )
    assert train(cfg)["steps"] > 0
    assert (tmp_path / "run" / "collaborative_sequence" / "sasrec.pt").is_file()
    from safetensors.torch import load_file

    assert any("cf_state_projector" in k for k in load_file(tmp_path / "run" / "adapter_model.safetensors"))
    model, tok, _ = load_trained(tmp_path / "run")
    merged, _, _ = load_trained(tmp_path / "run", merge=True)
    ids = torch.tensor([[5, len(tok) + 4, len(tok) + (1 << 24) + 4, 6, len(tok) + (1 << 24) + 2]])
    with torch.no_grad():
        torch.testing.assert_close(find(merged)(ids), find(model)(ids))
        trained = find(model).cf_state_projector.modules_to_save["default"]
        initial = find(model).cf_state_projector.original_module
        assert not all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), initial.state_dict().values()))
    rec = Recommender.from_pretrained(tmp_path / "run", tiny_world(tiny_dirs, "hybrid")[1].catalog, device="cpu")
    assert "<|state:" in rec.prompts([[1, 2, 3]])[0]


def test_a_frozen_state_projector_is_saved_as_it_started(tiny_dirs, tmp_path, monkeypatch):
    """--cf-state-frozen: the state projector is neither aligned nor trained, and the adapter saves it
    as attached; the item projector still learns."""
    from safetensors.torch import load_file

    import m6gen.hybrid as hybrid
    from m6gen.training.loop import train

    attached = {}

    def recording_attach(*args, **kwargs):
        embedding = real_attach(*args, **kwargs)
        for name in ("cf_state_projector", "cf_projector"):
            attached[name] = {k: v.clone() for k, v in getattr(embedding, name).state_dict().items()}
        return embedding

    real_attach = hybrid.attach
    monkeypatch.setattr(hybrid, "attach", recording_attach)
    tiny_sasrec().save(tmp_path / "sasrec")
    cfg = tiny_config(
        tiny_dirs,
        tmp_path / "run",
        template="hybrid_state",
        cf_source=str(tmp_path / "sasrec"),
        epochs=1,
        cf_align_steps=5,
        cf_state_frozen=True,
    )
    assert train(cfg)["steps"] > 0
    saved = load_file(tmp_path / "run" / "adapter_model.safetensors")

    def saved_projector(name: str) -> dict:
        return {k.split(f"{name}.")[-1]: v for k, v in saved.items() if f".{name}." in k}

    state, items = saved_projector("cf_state_projector"), saved_projector("cf_projector")
    assert state.keys() == attached["cf_state_projector"].keys()
    assert all(torch.equal(state[k], attached["cf_state_projector"][k]) for k in state)
    assert not all(torch.equal(items[k], attached["cf_projector"][k]) for k in items)


def test_a_frozen_state_projector_needs_state_tokens(tiny_dirs, tmp_path):
    from m6gen.config import TrainError
    from m6gen.training.loop import train

    tiny_sasrec().save(tmp_path / "sasrec")
    cfg = tiny_config(tiny_dirs, tmp_path / "run", template="hybrid", cf_source=str(tmp_path / "sasrec"))
    with pytest.raises(TrainError, match="places no user-state tokens"):
        train(replace(cfg, cf_state_frozen=True))
    with pytest.raises(TrainError, match="give --cf-source"):
        replace(cfg, cf_source=None, cf_state_frozen=True)


def test_alignment_teaches_the_state_projector_the_next_title(state_model):
    from m6gen.hybrid.align import align_state_projector, title_embeddings

    model, tok, embedding = state_model
    targets = title_embeddings(embedding, tok, [f" Title number {i}" for i in range(N_ITEMS)])
    train = {"a": [1, 2, 3, 4, 5], "b": [6, 7, 8, 9], "c": [10, 11, 12, 13, 14]}
    before, after = align_state_projector(embedding, targets, train, steps=300, lr=1e-2)
    assert after < 0.2 * before
