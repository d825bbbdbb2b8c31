"""Tests for m6gen.training (loop, examples, config) on tiny models and a synthetic catalog (no downloads)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from helpers import LENGTH, N_ITEMS, N_USERS, tiny_config, tiny_world  # noqa: F401

from m6gen.commands.registry import all_groups
from m6gen.commands.train import main
from m6gen.config import TRAIN_GROUPS, ConfigError, ConfigParser, PromptArgs, TrainConfig, TrainError
from m6gen.runs import load_trained
from m6gen.training.examples import (
    IGNORE,
    Example,
    build_block_examples,
    build_examples,
    collate,
    pack,
    plan_batches,
    rare_target_weights,
    sample_blocks,
    sample_steps,
)
from m6gen.training.loop import train
from m6gen.training.loss import check_loss_paths, loss_module
from tests.tiny_lm import make_model, make_tokenizer


# ---------------------------------------------------------------- fixtures (tiny_dirs: conftest.py)
def adapter_weights(folder):
    from safetensors.torch import load_file

    return load_file(folder / "adapter_model.safetensors")


def ex(prompt: list[int], target: list[int], user: str = "u", item: int = 0) -> Example:
    return Example(user, 1, (item,), prompt, target)


# ------------------------------------------------------------------------------ examples, packing, masking
def test_collate_masks_prompt_tokens_and_restarts_positions():
    a, b = ex([5, 6, 7], [8, 9, 1]), ex([10, 11], [12, 1])
    batch = collate([[a, b]], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9, 1, 10, 11, 12, 1]]
    assert batch["labels"].tolist() == [[IGNORE, IGNORE, IGNORE, 8, 9, 1, IGNORE, IGNORE, 12, 1]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 5, 0, 1, 2, 3]]
    assert (batch["n_tokens"], batch["n_targets"]) == (10, 5)
    padded = collate([[a], [b]], pad_id=0)  # the shorter row is padded, padding carries no loss
    assert padded["input_ids"][1].tolist() == [10, 11, 12, 1, 0, 0]
    assert padded["labels"][1].tolist() == [IGNORE, IGNORE, 12, 1, IGNORE, IGNORE]
    assert padded["position_ids"][1].tolist() == [0, 1, 2, 3, 0, 1]
    assert padded["n_tokens"] == 10


def test_pack_places_every_example_once_within_the_row_budget():
    lengths = [50, 20, 90, 10, 60, 30, 130]
    rows = pack(lengths, pack_len=100)
    assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in r) <= 100 or len(r) == 1 for r in rows)
    assert rows == [[6], [2, 3], [4, 5], [0, 1]]  # first-fit decreasing: 130 | 90+10 | 60+30 | 50+20
    batches = plan_batches(lengths, pack_len=100, batch_size=2, seed=3)
    assert batches == plan_batches(lengths, pack_len=100, batch_size=2, seed=3)  # same order for --resume
    assert sorted(i for b in batches for r in b for i in r) == list(range(len(lengths)))


def test_sample_steps_limits_per_user_and_is_reproducible():
    train_items = {"a": list(range(10)), "b": [1, 2], "c": [4]}
    every = sample_steps(train_items, min_history=1, per_user=None)
    assert every == [("a", s) for s in range(1, 10)] + [("b", 1)]  # "c" has no step with a history
    assert sample_steps(train_items, min_history=3, per_user=None) == [("a", s) for s in range(3, 10)]
    assert sample_steps(train_items, per_user=2, sampling="last") == [("a", 8), ("a", 9), ("b", 1)]
    e0 = sample_steps(train_items, per_user=3, seed=1, epoch=0)
    assert e0 == sample_steps(train_items, per_user=3, seed=1, epoch=0)
    draws = {tuple(sample_steps(train_items, per_user=3, seed=1, epoch=e)) for e in range(5)}
    assert len(draws) > 1  # a fresh draw each epoch
    assert all(len([s for s in d if s[0] == "a"]) == 3 for d in draws)


def test_packed_loss_equals_unpacked_loss():
    import torch

    tok = make_tokenizer()
    model = make_model(len(tok), seed=1)
    rng = np.random.default_rng(0)
    examples = [
        ex(rng.integers(3, len(tok), size=n).tolist(), rng.integers(3, len(tok), size=m).tolist() + [1])
        for n, m in [(7, 3), (4, 5), (12, 2), (5, 4)]
    ]
    module = loss_module(model)
    with torch.no_grad():
        one_by_one = 0.0
        for e in examples:  # reference: the model's own loss (mean over targets) times the count
            b = collate([[e]], 0)
            one_by_one += float(model(input_ids=b["input_ids"], labels=b["labels"]).loss) * b["n_targets"]
        packed = collate([examples[:3], examples[3:]], 0)  # two packed rows, the second padded
        loss, n = module(packed["input_ids"], packed["labels"], packed["position_ids"])
    assert int(n) == sum(len(e.target_ids) for e in examples)
    assert float(loss) == pytest.approx(one_by_one, rel=1e-5)
    assert check_loss_paths(module, examples, 0) == (True, True)


# ------------------------------------------------------------------------------ rare targets (--rare-target-power)
def test_rare_target_weights_follow_inverse_counts_with_mean_one_over_training_items():
    train_items = {"a": [0, 1], "b": [0, 2], "c": [0]}  # counts 3, 1, 1, and item 3 never trained on
    assert rare_target_weights(train_items, 4, 0.0) is None
    w = rare_target_weights(train_items, 4, 1.0)
    # raw 1/3, 1, 1, 1; their mean over the five training items is (3 * 1/3 + 1 + 1) / 5 = 0.6
    assert w == pytest.approx([1 / 3 / 0.6, 1 / 0.6, 1 / 0.6, 1 / 0.6])
    assert (np.array([3, 1, 1, 0]) @ w) / 5 == pytest.approx(1.0)
    half = rare_target_weights(train_items, 4, 0.5)
    assert half[1] / half[0] == pytest.approx(3**0.5)


def test_collate_weighs_each_title_token_by_its_own_item():
    block = Example("u", 1, (2, 0), [5, 6], [8, 9, 1, 12, 1], title_starts=(0, 3))  # two titles: 3 + 2 tokens
    one = ex([10, 11], [13, 1], item=1)
    weight = np.array([0.5, 2.0, 3.0])
    batch = collate([[block, one]], pad_id=0, target_weight=weight)
    assert batch["weights"].tolist() == [[1, 1, 3, 3, 3, 0.5, 0.5, 1, 1, 2, 2]]
    assert "weights" not in collate([[block, one]], pad_id=0)  # off: the batch is as before


def test_weighted_loss_sums_each_tokens_cross_entropy_times_its_weight():
    import torch

    tok = make_tokenizer()
    model = make_model(len(tok), seed=1)
    examples = [ex([5, 6, 7], [8, 9, 1], item=0), ex([10, 11], [12, 1], item=1)]
    module = loss_module(model)
    batch = collate([examples], 0, target_weight=np.array([1.0, 4.0]))
    with torch.no_grad():
        plain, _ = module(batch["input_ids"], batch["labels"], batch["position_ids"])
        plain_part = module.last.title
        weighted, _ = module(batch["input_ids"], batch["labels"], batch["position_ids"], weights=batch["weights"])
        logged = module.last.title
        second = collate([[examples[1]]], 0)
        second_loss, _ = module(second["input_ids"], second["labels"], second["position_ids"])
    assert logged == pytest.approx(plain_part)  # the log keeps the plain sum
    assert float(weighted) == pytest.approx(float(plain) + 3 * float(second_loss), rel=1e-5)


def test_rare_target_power_changes_what_a_run_learns_and_is_recorded(tiny_dirs, tmp_path):
    plain = train(tiny_config(tiny_dirs, tmp_path / "plain", max_steps=3, eval_every=0, eval_at_start=False))
    rare = train(
        tiny_config(tiny_dirs, tmp_path / "rare", max_steps=3, eval_every=0, eval_at_start=False, rare_target_power=1.0)
    )
    assert plain["steps"] == rare["steps"] == 3
    a, b = adapter_weights(tmp_path / "plain"), adapter_weights(tmp_path / "rare")
    assert a.keys() == b.keys() and any(not np.allclose(a[k].float(), b[k].float()) for k in a)
    saved = json.loads((tmp_path / "rare" / "m6gen_config.json").read_text())
    assert saved["config"]["rare_target_power"] == 1.0


# ------------------------------------------------------------------------------ history packing
def test_sample_blocks_cover_every_step_once():
    train_items = {"a": list(range(23)), "b": list(range(3)), "c": [7]}
    for sampling in ("random", "last"):
        for epoch in range(3):
            blocks = sample_blocks(train_items, block=5, min_history=2, sampling=sampling, epoch=epoch)
            for user, items in train_items.items():
                steps = [i for u, a, b in blocks if u == user for i in range(a, b)]
                assert steps == list(range(2, len(items)))  # in order, each once, none before min_history
            assert all(1 <= b - a <= 5 for _, a, b in blocks)
    last = sample_blocks(train_items, block=5, min_history=2, sampling="last")
    assert [(a, b) for u, a, b in last if u == "a"] == [(2, 3), (3, 8), (8, 13), (13, 18), (18, 23)]
    firsts = {sample_blocks(train_items, block=5, epoch=e)[0][2] for e in range(20)}
    assert len(firsts) > 1  # the first block's length is drawn per epoch
    limited = sample_blocks(train_items, block=5, min_history=2, per_user=2, sampling="last")
    assert [(a, b) for u, a, b in limited if u == "a"] == [(13, 18), (18, 23)]
    assert sample_blocks(train_items, block=5, per_user=2, seed=4) == sample_blocks(
        train_items, block=5, per_user=2, seed=4
    )


def test_token_incremental_templates(tiny_dirs):
    from m6gen.training.examples import is_token_incremental

    for name, expected in [("sequence", True), ("titles", False), ("titles_genres", False), ("instruct", False)]:
        tok, ds, split, template, target_ids = tiny_world(tiny_dirs, name, max_history=6)
        assert is_token_incremental(template, tok, ds.catalog, target_ids, split.train) is expected, name


def test_history_packed_block_teaches_each_step_as_its_own_example_would(tiny_dirs):
    """One block = the sum of the one-step examples of its targets (a window wide enough to show all)."""
    import torch

    tok, ds, split, template, target_ids = tiny_world(tiny_dirs, "sequence")
    blocks = sample_blocks(split.train, block=3, min_history=1)
    examples, dropped = build_block_examples(blocks, split.train, ds.catalog, template, tok, target_ids)
    assert dropped == 0 and sum(len(e.items) for e in examples) == N_USERS * (LENGTH - 3)
    for e in examples:  # no valid/test item anywhere
        assert not {split.valid[e.user], split.test[e.user]} & (set(e.items) | set(split.train[e.user][: e.step]))
        assert list(e.items) == split.train[e.user][e.step : e.step + len(e.items)]
    steps = [(e.user, e.step + j) for e in examples[:6] for j in range(len(e.items))]
    singles, _ = build_examples(steps, split.train, ds.catalog, template, tok, target_ids)
    module = loss_module(make_model(len(tok), seed=2))
    with torch.no_grad():
        b = collate([examples[:3], examples[3:6]], tok.pad_token_id)
        block_loss, block_n = module(b["input_ids"], b["labels"], b["position_ids"])
        s = collate([[x] for x in singles], tok.pad_token_id)
        single_loss, single_n = module(s["input_ids"], s["labels"], s["position_ids"])
    assert int(block_n) == int(single_n)
    assert float(block_loss) == pytest.approx(float(single_loss), rel=1e-4)
    assert sum(len(x) for x in examples[:6]) < 0.6 * sum(len(x) for x in singles)  # the point: fewer tokens


def test_train_with_history_packing(tiny_dirs, tmp_path, capsys):
    out = tmp_path / "seq"
    summary = train(tiny_config(tiny_dirs, out, template="sequence", history_block=3, epochs=2))
    resolved = json.loads((out / "m6gen_config.json").read_text())["resolved"]
    assert resolved["history_packing"] is True
    assert resolved["steps_per_epoch"] == N_USERS * (LENGTH - 3) and resolved["examples_per_epoch"] < N_USERS * 3
    log = read_log(out / "train_log.csv")
    assert len(log) == summary["steps"] and float(log[-1]["loss"]) < float(log[0]["loss"])
    off = train(tiny_config(tiny_dirs, tmp_path / "off", template="sequence", history_packing="off", max_steps=1))
    assert off["examples_per_epoch"] == N_USERS * (LENGTH - 3)
    err = run_main(capsys, tiny_argv(tiny_dirs, tmp_path / "x", "--history-packing", "on"))
    assert "history packing needs a token-incremental template" in err and "titles.jinja" in err


def tiny_arch(kind: str):
    """A tiny random causal LM of another architecture (vocab 300)."""
    import torch
    from transformers import Gemma2Config, Gemma2ForCausalLM, GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    small = dict(
        vocab_size=300,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    if kind == "gpt2":
        return GPT2LMHeadModel(
            GPT2Config(vocab_size=300, n_embd=32, n_layer=2, n_head=4, n_positions=128, bos_token_id=2, eos_token_id=1)
        ).eval()
    if kind == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**small)).eval()
    model = Gemma2ForCausalLM(Gemma2Config(**small, head_dim=8, final_logit_softcapping=2.0)).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(50)  # logits large enough for the soft-capping to matter
    return model


@pytest.mark.parametrize("kind", ["gpt2", "qwen2", "gemma2"])
def test_default_targets_and_loss_shortcuts_per_architecture(kind):
    from m6gen.training.lora import LLAMA_LIKE, resolve_target_modules

    model = tiny_arch(kind)
    assert resolve_target_modules(model, None) == (["c_attn", "c_proj", "c_fc"] if kind == "gpt2" else LLAMA_LIKE)
    assert resolve_target_modules(model, ["all-linear"]) == ["all-linear"]
    rng = np.random.default_rng(0)
    examples = [
        ex(rng.integers(3, 300, size=n).tolist(), rng.integers(3, 300, size=m).tolist() + [1])
        for n, m in [(7, 3), (4, 5), (12, 2)]
    ]
    fast_ok, packed_ok = check_loss_paths(loss_module(model), examples, 0)
    assert packed_ok
    # Gemma-2 soft-caps its logits after the output layer: the target-only shortcut must be refused.
    assert fast_ok == (kind != "gemma2")


def test_no_valid_or_test_item_in_any_training_example(tiny_dirs):
    tok, ds, split, template, target_ids = tiny_world(tiny_dirs, "titles")
    steps = sample_steps(split.train, per_user=None)
    examples, dropped = build_examples(steps, split.train, ds.catalog, template, tok, target_ids)
    assert dropped == 0 and len(examples) == N_USERS * (LENGTH - 3)
    for e in examples:
        held_out = {split.valid[e.user], split.test[e.user]}
        assert e.item not in held_out and e.item in split.train[e.user]
        prompt = tok.decode(e.prompt_ids)
        assert not any(ds.catalog[i].title in prompt for i in held_out)
        assert e.target_ids == target_ids[e.item]
        assert tok.decode(e.target_ids[:-1]) == template.render_target(ds.catalog[e.item])


# ------------------------------------------------------------------------------ training runs
def read_log(path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def generate_top(model, tok, trie, prompts: list[str]) -> list[list[tuple[int, float]]]:
    import torch

    from m6gen.decoding.search import constrained_beam_search
    from m6gen.model import encode_prompts

    with torch.no_grad():
        hyps = constrained_beam_search(model, trie, encode_prompts(tok, prompts), 5, pad_token_id=tok.pad_token_id)
    return [[(h.item, float(h.logprob)) for h in hs] for hs in hyps]


def assert_same_beams(a, b, atol: float = 1e-3) -> None:
    """The same items in the same order, and scores equal within fp32 merging noise (CPUs differ in the last digits)."""
    assert [[item for item, _ in beams] for beams in a] == [[item for item, _ in beams] for beams in b]
    gaps = [abs(x - y) for beams_a, beams_b in zip(a, b) for (_, x), (_, y) in zip(beams_a, beams_b)]
    assert max(gaps, default=0.0) <= atol, f"scores differ by up to {max(gaps)}"


def test_short_run_lowers_loss_and_saved_adapter_generates_identically(tiny_dirs, tmp_path):
    from m6gen.data import load_dataset
    from m6gen.decoding.trie import CatalogTrie
    from m6gen.model import load_model, tokenizer_fingerprint

    out = tmp_path / "run"
    summary = train(
        tiny_config(tiny_dirs, out, epochs=3, eval_every=40, eval_at_start=True, merge=True, final_adapter="best")
    )
    log = read_log(out / "train_log.csv")
    assert [int(r["step"]) for r in log] == list(range(1, summary["steps"] + 1))
    losses = np.array([float(r["loss"]) for r in log])
    assert losses[-10:].mean() < 0.6 * losses[:10].mean()
    assert all(float(r["tokens_per_s"]) > 0 and float(r["lr"]) > 0 for r in log)
    for name in (
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer.json",
        "m6gen_config.json",
        "train_loss.png",
        "valid_log.csv",
        "train_summary.json",
        "trie/trie.npz",
        "merged/config.json",
    ):
        assert (out / name).is_file(), name
    saved = json.loads((out / "m6gen_config.json").read_text())
    assert saved["config"]["template"] == "titles" and saved["config"]["max_history"] == 4
    assert saved["config"]["data"] == str(tiny_dirs[1]) and saved["config"]["target_modules"]
    assert summary["best"]["step"] == summary["adapter_from_step"]
    card = (out / "README.md").read_text()  # m6gen's card, not peft's blank one naming a local path
    assert card.startswith("---\nlibrary_name: peft\n") and "More Information Needed" not in card
    assert "base_model" not in card and str(tiny_dirs[0]) in card  # a local base: shown, not Hub metadata
    assert f"| steps | {summary['steps']} of {summary['total_steps']};" in card
    assert f"- untuned: NDCG@5 {summary['untuned']['NDCG@5']:.4f}" in card  # k = min(10, 5 beams)
    kept = summary["adapter_from_step"]
    assert f"- step {kept}: NDCG@5 {summary['best']['NDCG@5']:.4f}" in card and "(the adapter in this folder)" in card
    user = summary["example_user"]  # a user of this data (its ids are not MovieLens's "196")
    assert user in load_dataset(tiny_dirs[1]).interactions and f"m6gen chat --model {out} --user {user}" in card

    model, tok, cfg = load_trained(out)
    assert tokenizer_fingerprint(tok) == tokenizer_fingerprint(make_tokenizer())
    trie, _ = CatalogTrie.load(out / "trie")
    prompts = [
        "Movies watched, most recent last:\nMovie A (1980)\nMovie B (1981)\nNext:",
        "Movies watched, most recent last:\nMovie K (1990)\nNext:",
    ]
    tuned = generate_top(model, tok, trie, prompts)
    assert tuned == generate_top(load_trained(out)[0], tok, trie, prompts)  # loading is deterministic
    assert_same_beams(
        tuned, generate_top(load_model(str(out / "merged")), tok, trie, prompts)
    )  # merged == base + adapter
    untuned = generate_top(load_model(cfg.model), tok, trie, prompts)
    assert tuned != untuned


def test_resume_after_a_kill_gives_the_weights_of_an_uninterrupted_run(tiny_dirs, tmp_path):
    import torch

    # dropout: the RNG state must be restored too; bf16 autocast: as deterministic as fp32
    kw = dict(max_steps=9, save_every=3, eval_every=4, lora_dropout=0.2, mixed_precision="bf16")
    train(tiny_config(tiny_dirs, tmp_path / "whole", **kw))

    def kill_at_step_8(step, loss):
        if step == 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(tiny_dirs, tmp_path / "killed", **kw), step_callback=kill_at_step_8)
    assert json.loads((tmp_path / "killed/checkpoints/latest.json").read_text())["last"] == "step-000006"
    assert not (tmp_path / "killed/adapter_model.safetensors").exists()
    with pytest.raises(TrainError, match="--resume"):
        train(tiny_config(tiny_dirs, tmp_path / "killed", **kw))
    summary = train(tiny_config(tiny_dirs, tmp_path / "killed", resume=True, **kw))
    assert summary["steps"] == 9

    whole, resumed = adapter_weights(tmp_path / "whole"), adapter_weights(tmp_path / "killed")
    assert whole.keys() == resumed.keys()
    for name in whole:
        assert torch.equal(whole[name], resumed[name]), name
    log = read_log(tmp_path / "killed/train_log.csv")
    assert [int(r["step"]) for r in log] == list(range(1, 10))  # steps 7-8 redone once, none lost
    assert [r["loss"] for r in log] == [r["loss"] for r in read_log(tmp_path / "whole/train_log.csv")]
    assert [int(r["step"]) for r in read_log(tmp_path / "killed/valid_log.csv")] == [4, 8, 9]


def test_init_adapter_starts_from_a_finished_run(tiny_dirs, tmp_path, capsys):
    import torch
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

    from m6gen.model import load_model
    from m6gen.training.run_folder import load_init_adapter, resolve_paths

    first = tmp_path / "first"
    train(tiny_config(tiny_dirs, first, epochs=2))
    saved = adapter_weights(first)
    # The LoRA weights of a new model become exactly the saved ones.
    cfg = tiny_config(
        tiny_dirs,
        tmp_path / "x",
        init_adapter=str(first),
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )
    peft_model = get_peft_model(load_model(cfg.model), LoraConfig(r=4, lora_alpha=8, target_modules=cfg.target_modules))
    load_init_adapter(peft_model, str(first), cfg)
    loaded = get_peft_model_state_dict(peft_model)
    assert loaded.keys() == saved.keys()
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)

    # A run started from it begins where the first one ended, not at an untuned model's loss.
    second = tmp_path / "second"
    train(tiny_config(tiny_dirs, second, init_adapter=str(first), max_steps=3))
    first_log, second_log = read_log(first / "train_log.csv"), read_log(second / "train_log.csv")
    assert float(second_log[0]["loss"]) < 0.6 * float(first_log[0]["loss"])
    assert json.loads((second / "m6gen_config.json").read_text())["config"]["init_adapter"] == str(first)

    err = run_main(capsys, tiny_argv(tiny_dirs, tmp_path / "c", "--init-adapter", str(first), "--lora-r", "2"))
    assert "--init-adapter" in err and "r=4" in err and "r=2" in err
    err = run_main(capsys, tiny_argv(tiny_dirs, tmp_path / "c", "--init-adapter", str(first), "--lora-alpha", "64"))
    assert "alpha=8" in err and "alpha=64" in err  # another alpha would rescale the loaded update
    err = run_main(capsys, tiny_argv(tiny_dirs, tmp_path / "c", "--init-adapter", str(tmp_path)))
    assert "no adapter_config.json" in err

    # --overwrite deletes the old run only after every check: a refused command keeps it, and a run can be
    # trained further into its own folder (its adapter is read before the folder is replaced)
    before = adapter_weights(second)
    with pytest.raises(TrainError, match="history packing needs"):
        train(tiny_config(tiny_dirs, second, overwrite=True, history_packing="on"))
    assert all(torch.equal(before[k], adapter_weights(second)[k]) for k in before)
    train(tiny_config(tiny_dirs, second, overwrite=True, init_adapter=str(second), max_steps=2))
    assert len(read_log(second / "train_log.csv")) == 2
    with pytest.raises(TrainError, match="no adapter_config.json"):
        resolve_paths(tiny_config(tiny_dirs, tmp_path / "c", init_adapter=str(tmp_path / "nope")))


def test_final_adapter_last_keeps_the_last_checkpoint_not_the_best(tiny_dirs, tmp_path):
    import torch

    out = tmp_path / "run"
    # a learning rate too small to change any ranking: no validation beats the untuned one (step 0)
    kw = dict(max_steps=4, eval_every=2, eval_at_start=True, lr=1e-7, final_adapter="last")
    summary = train(tiny_config(tiny_dirs, out, **kw))
    assert json.loads((out / "checkpoints/latest.json").read_text()) == {"last": "step-000004", "best": "step-000000"}
    assert summary["adapter_from_step"] == 4
    last = adapter_weights(out / "checkpoints/step-000004")
    assert all(torch.equal(last[k], v) for k, v in adapter_weights(out).items())
    with pytest.raises(TrainError, match="final_adapter"):
        tiny_config(tiny_dirs, out, final_adapter="first")


def test_a_kill_while_saving_leaves_the_previous_checkpoint_current(tiny_dirs, tmp_path, monkeypatch):
    import torch

    kw = dict(max_steps=6, save_every=2, eval_every=0, lora_dropout=0.2)
    train(tiny_config(tiny_dirs, tmp_path / "whole", **kw))
    real_save = torch.save

    def dies_in_step_4(obj, path, *a, **k):
        if "step-000004" in str(path) and str(path).endswith("optimizer.pt"):
            raise KeyboardInterrupt  # killed half-way through writing checkpoint 4
        return real_save(obj, path, *a, **k)

    monkeypatch.setattr(torch, "save", dies_in_step_4)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(tiny_dirs, tmp_path / "killed", **kw))
    monkeypatch.setattr(torch, "save", real_save)
    ck = tmp_path / "killed/checkpoints"
    assert json.loads((ck / "latest.json").read_text())["last"] == "step-000002"
    assert (ck / ".tmp-step-000004").is_dir() and not (ck / "step-000004").exists()
    train(tiny_config(tiny_dirs, tmp_path / "killed", resume=True, **kw))
    assert not (ck / ".tmp-step-000004").exists()  # the half-written folder is cleaned up
    whole, resumed = adapter_weights(tmp_path / "whole"), adapter_weights(tmp_path / "killed")
    assert all(torch.equal(whole[n], resumed[n]) for n in whole)


# ------------------------------------------------------------------------------ bad input: one-line errors
def run_main(capsys, argv) -> str:
    assert main(argv) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip() and "Loading weights" not in ln]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def tiny_argv(tiny_dirs, out, *extra) -> list[str]:
    return [
        "--model",
        str(tiny_dirs[0]),
        "--data",
        str(tiny_dirs[1]),
        "--output-dir",
        str(out),
        "--max-history",
        "4",
        "--max-steps",
        "1",
        "--eval-every",
        "0",
        "--no-eval-at-start",
        "--no-progress",
        *extra,
    ]


def test_two_processes_train_exactly_like_one_with_accumulation(tiny_dirs, tmp_path):
    """torchrun with 2 CPU processes (DDP over gloo) = 1 process accumulating their 2 micro-batches."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    args = [
        "--lora-dropout",
        "0",
        "--max-steps",
        "3",
        "--train-batch-size",
        "1",
        "--examples-per-user",
        "none",
        "--threads",
        "1",
        "--mixed-precision",
        "no",
    ]
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "m6gen",
        "train",
    ]
    two = subprocess.run(
        [*torchrun, *tiny_argv(tiny_dirs, tmp_path / "two", *args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr[-2000:]
    assert main(tiny_argv(tiny_dirs, tmp_path / "one", *args, "--grad-accum", "2")) == 0
    resolved = json.loads((tmp_path / "two" / "m6gen_config.json").read_text())["resolved"]
    assert resolved["world_size"] == 2
    a, b = adapter_weights(tmp_path / "two"), adapter_weights(tmp_path / "one")
    assert set(a) == set(b) and all(np.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert any(float(abs(a[k]).max()) > 0 for k in a if "lora_B" in k)  # trained, not the zero init
    losses = lambda d: [float(r["loss"]) for r in read_log(d / "train_log.csv")]  # noqa: E731
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), rel=1e-5)


def test_fsdp_trains_like_one_process_and_resumes_after_a_kill(tiny_dirs, tmp_path, capsys):
    """FSDP2 on 2 CPU processes (forced, see tests/fsdp_train.py): sharded LoRA weights and optimizer state.

    Same update as 1 process accumulating both micro-batches; validation runs in lock-step on both
    processes; a killed run resumes from its gathered checkpoint to the weights of an unkilled one.
    """
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    args = [
        "--lora-dropout",
        "0",
        "--max-steps",
        "4",
        "--train-batch-size",
        "1",
        "--examples-per-user",
        "none",
        "--threads",
        "1",
        "--mixed-precision",
        "no",
        "--eval-every",
        "2",
        "--eval-users",
        "6",
        "--merge",
    ]
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "tests.fsdp_train",
    ]

    def launch(out, *extra, kill_at=0):
        return subprocess.run(
            [*torchrun, *tiny_argv(tiny_dirs, out, *args, *extra)],
            capture_output=True,
            text=True,
            env={**env, "M6GEN_TEST_KILL_AT": str(kill_at)},
            timeout=300,
        )

    fsdp = launch(tmp_path / "fsdp")
    assert fsdp.returncode == 0, fsdp.stderr[-3000:]
    assert main(tiny_argv(tiny_dirs, tmp_path / "one", *args, "--grad-accum", "2")) == 0
    a, b = adapter_weights(tmp_path / "fsdp"), adapter_weights(tmp_path / "one")
    assert set(a) == set(b) and all(np.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert any(float(abs(a[k]).max()) > 0 for k in a if "lora_B" in k)  # trained, not the zero init
    losses = lambda d: [float(r["loss"]) for r in read_log(d / "train_log.csv")]  # noqa: E731
    assert losses(tmp_path / "fsdp") == pytest.approx(losses(tmp_path / "one"), rel=1e-4)
    valid = lambda d: [(r["step"], r["NDCG@10"]) for r in read_log(d / "valid_log.csv")]  # noqa: E731
    assert valid(tmp_path / "fsdp") == valid(tmp_path / "one")  # steps 2 and 4, same metrics
    assert (tmp_path / "fsdp/merged/config.json").is_file()
    assert json.loads((tmp_path / "fsdp/m6gen_config.json").read_text())["resolved"]["engine"] == "FSDP"
    capsys.readouterr()
    err = run_main(capsys, tiny_argv(tiny_dirs, tmp_path / "fsdp", *args, "--resume"))  # one process, no FSDP
    assert "written by an FSDP run" in err

    killed = launch(tmp_path / "killed", kill_at=3)
    assert killed.returncode != 0 and not (tmp_path / "killed/adapter_model.safetensors").exists()
    resumed = launch(tmp_path / "killed", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout + resumed.stderr
    c = adapter_weights(tmp_path / "killed")
    assert all(np.allclose(a[k], c[k], atol=1e-6) for k in a)
    assert [int(r["step"]) for r in read_log(tmp_path / "killed/train_log.csv")] == [1, 2, 3, 4]


def test_deepspeed_and_fsdp1_are_refused_in_one_line(tiny_dirs, tmp_path, capsys, monkeypatch):
    """DeepSpeed's engine (GPU-only in accelerate) needs its own checkpoints; FSDP1 shards differently."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedType

    monkeypatch.setattr(Accelerator, "distributed_type", property(lambda self: DistributedType.DEEPSPEED))
    err = run_main(capsys, tiny_argv(tiny_dirs, tmp_path / "a"))
    assert "DEEPSPEED is not supported yet" in err and "DDP or FSDP" in err
    assert not (tmp_path / "a").exists()
    monkeypatch.setattr(Accelerator, "distributed_type", property(lambda self: DistributedType.FSDP))
    monkeypatch.setattr(Accelerator, "is_fsdp2", property(lambda self: False))
    assert "fsdp_version 2" in run_main(capsys, tiny_argv(tiny_dirs, tmp_path / "a"))
    assert not (tmp_path / "a").exists()


def test_bad_inputs_give_one_line_errors(tiny_dirs, tmp_path, capsys):
    assert "unknown template 'nope'" in run_main(capsys, tiny_argv(tiny_dirs, tmp_path / "a", "--template", "nope"))
    assert "does not exist" in run_main(
        capsys, tiny_argv(tiny_dirs, tmp_path / "a", "--model", str(tmp_path / "no/such"))
    )
    err = run_main(capsys, tiny_argv(tiny_dirs, tmp_path / "a", "--target-modules", "q_proj,c_attn"))
    assert "c_attn" in err and "q_proj" in err.split("linear layers:")[1]
    assert main(tiny_argv(tiny_dirs, tmp_path / "a")) == 0
    capsys.readouterr()
    err = run_main(capsys, tiny_argv(tiny_dirs, tmp_path / "a", "--lr", "0.5"))
    assert "holds a different run (lr: 0.001 there, 0.5 here)" in err
    err = run_main(capsys, tiny_argv(tiny_dirs, tmp_path / "a", "--lr", "0.5", "--seed", "3"))
    assert "lr: 0.001 there, 0.5 here" in err and "seed: 0 there, 3 here" in err  # every difference, not the first
    (tmp_path / "other").mkdir()
    (tmp_path / "other/notes.txt").write_text("mine")
    assert "not an m6gen training output" in run_main(capsys, tiny_argv(tiny_dirs, tmp_path / "other"))
    assert "lora_r: expected a number >= 1, got 0" in run_main(
        capsys, tiny_argv(tiny_dirs, tmp_path / "b", "--lora-r", "0")
    )
    assert "rare_target_power: expected a number >= 0, got -1.0" in run_main(
        capsys, tiny_argv(tiny_dirs, tmp_path / "b", "--rare-target-power", "-1")
    )
    (tmp_path / "c.yaml").write_text("lr: 0.01\nbogus: 1\n")
    assert "unknown option 'bogus'" in run_main(
        capsys, tiny_argv(tiny_dirs, tmp_path / "b", "--config", str(tmp_path / "c.yaml"))
    )


def parse_train(argv) -> TrainConfig:
    return TrainConfig.from_groups(
        *ConfigParser(list(TRAIN_GROUPS), prog="m6gen train", every_group=all_groups()).parse(argv)
    )


def test_config_file_then_flags(tmp_path):
    (tmp_path / "t.yaml").write_text("lr: 0.01\nmax-history: 7\ntarget_modules: [q_proj, v_proj]\nmax_steps: null\n")
    cfg = parse_train(["--config", str(tmp_path / "t.yaml"), "--lr", "0.02"])
    assert (cfg.lr, cfg.max_history, cfg.target_modules, cfg.max_steps) == (0.02, 7, ["q_proj", "v_proj"], None)
    cfg = parse_train(["--target-modules", "q_proj,k_proj", "--no-packing"])
    assert cfg.target_modules == ["q_proj", "k_proj"] and cfg.packing is False and cfg.lr == TrainConfig().lr
    (tmp_path / "t.json").write_text(json.dumps({"lr": "fast"}))
    with pytest.raises(ConfigError, match="lr: expected a number, got 'fast'"):
        parse_train(["--config", str(tmp_path / "t.json")])
    # one spelling per option in every command: train reads data and template options as the others do
    cfg = parse_train(["--format", "plain", "--templates", "mine/", "--min-history", "5", "--min-prompt-items", "2"])
    assert (cfg.format, cfg.templates, cfg.min_history, cfg.min_prompt_items) == ("plain", "mine/", 5, 2)
    cfg = parse_train(["--title-field", "name", "--dedupe", "keep", "--unknown-items", "skip"])
    assert (cfg.title_field, cfg.dedupe, cfg.unknown_items) == ("name", "keep", "skip")
    with pytest.raises(TrainError, match="dedupe: expected one of first, keep, last"):
        TrainConfig(dedupe="never")
    # a file shared with recommend/eval: their keys are skipped with a note, a typo is still an error
    (tmp_path / "shared.yaml").write_text("beams: 5\nsplit: valid\nk: 3\nlr: 0.03\n")
    assert parse_train(["--config", str(tmp_path / "shared.yaml")]).lr == 0.03
    (tmp_path / "typo.yaml").write_text("beams: 5\nmaxsteps: 3\n")
    with pytest.raises(ConfigError, match="unknown option 'maxsteps'"):
        parse_train(["--config", str(tmp_path / "typo.yaml")])


def test_one_default_history_length_everywhere():
    from m6gen.runs import resolve_prompt

    assert TrainConfig().max_history == resolve_prompt(None, PromptArgs()).max_history == 20


def test_runs_saved_before_the_renames_still_load():
    from m6gen.runs import upgrade_saved_config

    old = {"data_format": "plain", "prompts_dir": "p/", "min_history": 2, "batch_size": 4, "lr": 0.1}
    assert upgrade_saved_config(old) == {
        "format": "plain",
        "templates": "p/",
        "min_prompt_items": 2,
        "train_batch_size": 4,
        "lr": 0.1,
    }


@pytest.mark.smoke
def test_real_default_model_trains_merges_and_reloads(tmp_path):
    """Two steps on the GGUF default model and MovieLens-100K: saving, --merge and load_trained work on it."""
    from m6gen.data import DataError, default_data_dir
    from m6gen.decoding.trie import CatalogTrie
    from m6gen.model import ModelError, default_model_location, load_model

    try:
        default_data_dir()
        default_model_location()
    except (DataError, ModelError) as err:
        pytest.skip(f"default model or data not installed: {err}")
    out = tmp_path / "real"
    summary = train(
        TrainConfig(
            output_dir=str(out),
            max_steps=2,
            examples_per_user=1,
            train_batch_size=1,
            pack_len=256,
            eval_users=3,
            eval_beams=3,
            eval_at_start=False,
            merge=True,
            progress=False,
        )
    )
    assert summary["steps"] == 2 and (out / "merged/model.safetensors").is_file()
    model, tok, cfg = load_trained(out)
    assert cfg.model == "default" and cfg.target_modules[0] == "q_proj"
    trie, _ = CatalogTrie.load(out / "trie")
    prompts = ["Movies watched, most recent last:\nToy Story (1995)\nHeat (1995)\nNext:"]
    items = lambda m: [item for item, _ in generate_top(m, tok, trie, prompts)[0]]  # noqa: E731
    assert items(model) == items(load_model(str(out / "merged")))


def test_from_pretrained_loads_a_run_with_its_own_template_and_equals_manual_assembly(tiny_dirs, tmp_path):
    from m6gen.model import ModelError, load_model
    from m6gen.prompts import TemplateLibrary
    from m6gen.recommender import RecommendConfig, Recommender

    out = tmp_path / "run"
    train(tiny_config(tiny_dirs, out, epochs=1, template="sequence", max_history=3))
    tok, ds, split, _, _ = tiny_world(tiny_dirs, "titles")
    histories = [split.test_history(u) for u in split.users[:4]]

    rec = Recommender.from_pretrained(out, ds.catalog, device="cpu")  # no config: the run's template and history
    assert (rec.config.template, rec.config.max_history) == ("sequence", 3) and rec.template.max_history == 3
    config = RecommendConfig(template="sequence", max_history=3, beams=5, dtype="float32")  # as load_trained
    rec = Recommender.from_pretrained(out, ds.catalog, config, device="cpu")
    by_hand = Recommender(
        load_trained(out, merge=True)[0], tok, ds.catalog, TemplateLibrary(max_history=3).get("sequence"), config
    )

    def beams(r):
        return [[(h.item, float(h.logprob)) for h in b] for b in r.generate(histories)]

    assert_same_beams(beams(rec), beams(by_hand))  # from_pretrained merges the adapter: fp32 noise
    assert all(len(b) == 5 for b in beams(rec))

    config = RecommendConfig(beams=5, dtype="float32")
    plain = Recommender.from_pretrained(tiny_dirs[0], ds.catalog, config, device="cpu")
    assert plain.config.template == "titles"  # a plain model folder: the package defaults
    untuned = Recommender(load_model(str(tiny_dirs[0])), tok, ds.catalog, TemplateLibrary().get("titles"), config)
    assert_same_beams(beams(plain), beams(untuned))
    with pytest.raises(ModelError, match="no saved SASRec there"):
        Recommender.from_pretrained(out, ds.catalog, sasrec=tmp_path)


def test_a_run_folder_without_tokenizer_files_loads_the_base_tokenizer(tiny_dirs, tmp_path):
    from m6gen.model import tokenizer_fingerprint

    out = tmp_path / "run"
    train(tiny_config(tiny_dirs, out, epochs=1))
    saved = load_trained(out)[1]
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"):
        (out / name).unlink(missing_ok=True)
    assert tokenizer_fingerprint(load_trained(out)[1]) == tokenizer_fingerprint(saved)


def test_history_packing_check_renders_with_the_users_profiles(tiny_dirs, tmp_path):
    """A template using a profile field must not fail the token-incremental check (it once rendered without
    profiles)."""
    from m6gen.prompts import PromptTemplate
    from m6gen.training.examples import is_token_incremental

    tok, ds, split, _, _ = tiny_world(tiny_dirs, "sequence", max_history=6)
    (tmp_path / "aged.jinja").write_text(
        "{% block prompt %}Age {{ user.age }}:{% for it in history %} {{ it.title }}"
        "{{ eos }}{% endfor %}{% endblock %}{% block target %} {{ item.title }}"
        "{% endblock %}"
    )
    template = PromptTemplate(tmp_path / "aged.jinja", max_history=6)
    from m6gen.model import encode_targets

    target_ids = encode_targets(tok, [template.render_target(it) for it in ds.catalog])
    profiles = {u: {"age": "30"} for u in split.train}
    assert is_token_incremental(template, tok, ds.catalog, target_ids, split.train, profiles=profiles) is True


def test_output_folder_problems_are_found_before_loading(tiny_dirs, tmp_path):
    """--resume of a folder with no run (a typo would start over from step 0), a folder that cannot be made."""
    with pytest.raises(TrainError, match="no run to resume there; check --output-dir"):
        train(tiny_config(tiny_dirs, tmp_path / "typo", resume=True))
    assert not (tmp_path / "typo").exists()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(TrainError, match=r"cannot create the output folder \(.*afile is not a writable folder\)"):
        train(tiny_config(tiny_dirs, tmp_path / "afile" / "sub"))


def test_a_run_keeps_its_own_copy_of_its_template(tiny_dirs, tmp_path, capsys):
    """Editing or deleting the template after training changes nothing the run reads (it once read the live file)."""
    import shutil

    from m6gen.commands import main as cli_main
    from m6gen.recommender import Recommender

    folder = tmp_path / "mine"
    folder.mkdir()
    text = (
        "{% block prompt %}{% import '_m.jinja' as m %}Seen:{% for it in history %}{{ m.t(it) }}{% endfor %}"
        "\nNext:{% endblock %}{% block target %} {{ item.title }}{% endblock %}"
    )
    (folder / "films.jinja").write_text(text)
    (folder / "_m.jinja").write_text("{% macro t(it) %} {{ it.title }};{% endmacro %}")
    out = tmp_path / "run"
    train(tiny_config(tiny_dirs, out, epochs=1, max_steps=1, template="films", templates=str(folder)))
    assert (out / "prompts" / "films.jinja").read_text() == text and (out / "prompts" / "_m.jinja").is_file()
    _, ds, split, _, _ = tiny_world(tiny_dirs, "titles")
    before = Recommender.from_pretrained(out, ds.catalog, device="cpu").prompts([split.test_history(split.users[0])])
    (folder / "films.jinja").write_text(text.replace("Seen:", "EDITED:"))
    after = Recommender.from_pretrained(out, ds.catalog, device="cpu")
    assert after.template.path == (out / "prompts" / "films.jinja").resolve()
    assert after.prompts([split.test_history(split.users[0])]) == before and "Seen:" in before[0]
    shutil.rmtree(folder)  # moved to another machine, say: the run still has what it needs
    assert cli_main(["prompts", "--model", str(out), "--data", str(tiny_dirs[1]), "--template", "films"]) == 0
    assert "Seen:" in capsys.readouterr().out


def test_stopped_early_only_when_steps_were_left(tiny_dirs, tmp_path):
    """A vanishing lr: validation never improves, so patience 1 stops at the second validation; at the last
    step that is no early stop."""
    kw = dict(lr=1e-12, eval_every=2, patience=1, epochs=5, eval_users=4)
    done = train(tiny_config(tiny_dirs, tmp_path / "a", max_steps=4, **kw))
    assert (done["steps"], done["stopped_early"]) == (4, False)
    cut = train(tiny_config(tiny_dirs, tmp_path / "b", max_steps=8, **kw))
    assert (cut["steps"], cut["stopped_early"]) == (4, True)


def test_a_short_run_validates_once_and_says_when_it_kept_step_zero(tiny_dirs, tmp_path, capsys):
    """Issue #20: --max-steps below --eval-every validated twice (before and at the end); keeping the
    untuned adapter went unsaid."""
    cfg = tiny_config(tiny_dirs, tmp_path / "short", max_steps=3, eval_every=20, eval_at_start=True, lr=1e-9)
    train(cfg)
    assert [int(r["step"]) for r in read_log(tmp_path / "short/valid_log.csv")] == [3]
    assert "validating at the end only" in capsys.readouterr().out
    # a run long enough to validate before training: a vanishing lr never beats step 0, which is kept
    kw = dict(max_steps=2, eval_every=1, eval_at_start=True, lr=1e-12, final_adapter="best")
    cfg = tiny_config(tiny_dirs, tmp_path / "kept0", **kw)
    summary = train(cfg)
    assert summary["adapter_from_step"] == 0  # equal scores: the earlier checkpoint stays best
    assert "kept the untuned adapter (step 0)" in capsys.readouterr().out


def test_by_default_the_last_adapter_is_kept_and_the_bar_ends_on_the_last_validation(tiny_dirs, tmp_path, monkeypatch):
    """The default 40-step run once kept its untuned adapter (a noisy 100-user validation preferred it),
    and its progress bar ended on the validation before the last."""
    import tqdm.auto

    postfixes = []

    class Bar(tqdm.auto.tqdm):  # the real bar (disabled here), its postfixes recorded
        def set_postfix(self, *args, **kwargs):
            postfixes.append(kwargs)

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    cfg = tiny_config(tiny_dirs, tmp_path / "run", max_steps=3, lr=1e-12)  # eval_every 0: at the end only
    summary = train(cfg)
    assert summary["adapter_from_step"] == 3 == summary["last_eval"]["step"]
    assert postfixes[-1]["ndcg@5"] == f"{summary['last_eval']['NDCG@5']:.4f}"


def test_the_end_of_train_says_what_to_run_next_and_when_validation_did_not_improve():
    from m6gen.commands.registry import all_groups, command
    from m6gen.commands.train import next_steps
    from m6gen.config import ConfigParser

    untuned = {"step": 0, "HR@10": 0.01, "NDCG@10": 0.01}
    worse = {"output_dir": "runs/x", "untuned": untuned, "last_eval": {"step": 40, "HR@10": 0.0, "NDCG@10": 0.0}}
    text = next_steps(worse)
    hinted = [line.split("#")[0].split() for line in text.splitlines() if line.startswith("  m6gen ")]
    assert [argv[1] for argv in hinted] == ["chat", "recommend", "eval"]
    for argv in hinted:  # each parses with its command's own options (recommend has no --users)
        module = command(argv[1])
        ConfigParser(module.GROUPS, prog=f"m6gen {argv[1]}", every_group=all_groups()).parse(argv[2:])
    assert "note: validation NDCG@10 0.0000 after 40 steps, 0.0100 untuned: 40 steps is a first look" in text
    better = {**worse, "last_eval": {"step": 40, "HR@10": 0.1, "NDCG@10": 0.05}}
    assert "note:" not in next_steps(better) and "note:" not in next_steps({**worse, "untuned": None})


def test_a_run_with_collaborative_tokens_is_told_to_fit_its_readout_first(tmp_path):
    """A --cf-source run's best rows rank with its readout: the end of train names fit-readout first,
    and every hinted command parses."""
    from m6gen.commands.registry import all_groups, command
    from m6gen.commands.train import next_steps
    from m6gen.config import ConfigParser
    from m6gen.hybrid.placeholders import INFO_FILE

    run = tmp_path / "run"
    run.mkdir()
    (run / INFO_FILE).write_text("{}")
    text = next_steps({"output_dir": str(run), "untuned": None, "last_eval": None})
    hinted = [line.split("#")[0].split() for line in text.splitlines() if line.startswith("  m6gen ")]
    assert [argv[1] for argv in hinted] == ["fit-readout", "chat", "recommend", "eval"]
    for argv in hinted:
        module = command(argv[1])
        ConfigParser(module.GROUPS, prog=f"m6gen {argv[1]}", every_group=all_groups()).parse(argv[2:])


def test_a_killed_run_is_told_what_continues_it(tmp_path):
    """A run killed while the model loaded was told to --resume, which then found no run there."""
    from m6gen.commands.train import interrupted_hint
    from m6gen.runs import CONFIG_FILE

    out = tmp_path / "run"
    assert interrupted_hint(str(out)) == "interrupted before the run folder was written: run the same command again"
    out.mkdir()
    (out / CONFIG_FILE).write_text("{}")
    assert "--resume starts the run again from step 0" in interrupted_hint(str(out))
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "latest.json").write_text('{"last": "step-000002", "best": "step-000002"}')
    assert interrupted_hint(str(out)) == "interrupted: continue from the last checkpoint with --resume"
