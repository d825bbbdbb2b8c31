"""The collaborative readout (m6gen.hybrid.readout, `m6gen fit-readout`) on tiny data: known training
pairs, a fit that learns a known mapping, padded batches equal single prompts, an exact save and
reload, and its log-probabilities joining the search as the run's own prior."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import N_ITEMS, tiny_config, tiny_world  # noqa: F401

from m6gen.hybrid.item_table import CollaborativeError, ItemTable, fingerprint
from m6gen.hybrid.readout import (
    ItemReadout,
    ReadoutEnsemble,
    Window,
    fit_readout,
    fit_readouts,
    layer_states_at,
    load_readout,
    prompt_states,
    save_readout,
    states_at,
    training_windows,
    window_pairs,
)
from tests.tiny_lm import make_model, make_tokenizer


def test_training_windows_are_the_last_training_positions_with_a_known_next_item():
    known = np.array([True, True, True, False, True, True, True])
    train = {"a": [0, 1, 2, 3, 4, 5], "b": [4, 5], "c": [1]}
    windows = training_windows(train, per_user=3, known=known, max_history=2)
    # a: positions 3, 4, 5 -> items 3 (no vector: left out), 4, 5; the first pair shows 2 items ([1, 2, 3])
    # b: [4] -> 5; c: no item before its only one
    assert [(w.user, w.shown, w.cuts, w.targets) for w in windows] == [
        ("a", [2, 3, 4], [2, 3], [4, 5]),
        ("b", [4], [1], [5]),
    ]
    # a teacher reads each pair's whole training history, not only the items the prompt shows
    assert [windows[0].history(c) for c in windows[0].cuts] == [[0, 1, 2, 3], [0, 1, 2, 3, 4]]


def test_window_pairs_read_prefixes_in_one_prompt_and_others_alone():
    windows = [Window("a", [2, 3, 4], [2, 3], [4, 5])]
    prefix_template = window_pairs(windows, lambda hs, user: [[9] + [10 + i for i in h] for h in hs])
    assert prefix_template.prompt_ids == [[9, 12, 13, 14]]
    assert prefix_template.positions == [[2, 3]]
    assert prefix_template.targets.tolist() == [4, 5] and prefix_template.users == ["a", "a"]
    # a template that writes a closing token after the history: no prompt extends another
    closing = window_pairs(windows, lambda hs, user: [[9] + [10 + i for i in h] + [99] for h in hs])
    assert closing.prompt_ids == [[9, 12, 13, 14, 99], [9, 12, 13, 99]]  # the last pair's prompt is the whole
    assert closing.positions == [[4], [3]]
    assert closing.targets.tolist() == [5, 4]  # in the order the states are read
    assert closing.histories == [[2, 3, 4], [2, 3]]  # each pair's history, in the same order


def test_a_distilled_readout_learns_more_from_the_teachers_distributions_than_from_its_draws():
    # the true next items are drawn from the teacher, whose logits are a linear readout of the states:
    # 180 draws say less than the 180 distributions they were drawn from
    rng = np.random.default_rng(0)
    table = rng.normal(size=(12, 4)).astype(np.float32)
    states = rng.normal(size=(180, 10)).astype(np.float32)
    teacher = (states @ rng.normal(size=(10, 4)).astype(np.float32)) @ table.T
    chances = np.exp(teacher) / np.exp(teacher).sum(1, keepdims=True)
    drawn = np.array([rng.choice(12, p=row) for row in chances])
    users = [f"u{i // 6}" for i in range(180)]

    def fitted(distill: float):
        readout, fit = fit_readout(
            states, drawn, users, table, epochs=150, lr=3e-2, weight_decay=0.0, teacher=teacher, distill=distill
        )
        return float((readout.log_probs(states).argmax(1) == teacher.argmax(1)).mean()), fit

    (distilled, by_teacher), (alone, by_draws) = fitted(1.0), fitted(0.0)
    assert distilled > 0.9 and alone < 0.85
    assert by_teacher.held_out_loss < by_draws.held_out_loss - 0.1  # on the held-out users' true items
    with pytest.raises(ValueError, match="teacher"):
        fit_readout(states, drawn, users, table, distill=0.5)


def test_teacher_targets_are_the_teachers_probabilities_sharpened_by_the_temperature():
    from m6gen.hybrid.readout import teacher_targets

    log_p = np.log([[0.5, 0.25, 0.25]])
    np.testing.assert_allclose(teacher_targets(log_p).numpy(), [[0.5, 0.25, 0.25]], rtol=1e-6)
    # p ** (1 / 0.5), normalized: 0.25, 0.0625, 0.0625 over 0.375
    np.testing.assert_allclose(teacher_targets(log_p, 0.5).numpy(), [[2 / 3, 1 / 6, 1 / 6]], rtol=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        teacher_targets(log_p, 0.0)


def test_a_sharper_teacher_gives_a_sharper_readout():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(12, 4)).astype(np.float32)
    states = rng.normal(size=(120, 10)).astype(np.float32)
    teacher = 0.3 * (states @ rng.normal(size=(10, 4)).astype(np.float32)) @ table.T  # a flat teacher
    users = [f"u{i // 6}" for i in range(120)]

    def top_probability(temperature: float) -> float:
        readout, fit = fit_readout(
            states, teacher.argmax(1), users, table, epochs=100, lr=3e-2, weight_decay=0.0,
            teacher=teacher, distill=1.0, teacher_temperature=temperature,
        )  # fmt: skip
        assert fit.teacher_temperature == temperature
        return float(np.exp(readout.log_probs(states)).max(1).mean())

    assert top_probability(0.25) > top_probability(1.0) + 0.1


def test_an_mlp_readout_follows_a_teacher_no_linear_map_can():
    # the teacher's state is a nonlinear function of the prompt state (signs flipped by a product of
    # two coordinates): one linear map cannot recover it, a hidden layer can
    rng = np.random.default_rng(0)
    table = rng.normal(size=(12, 4)).astype(np.float32)
    states = rng.normal(size=(600, 6)).astype(np.float32)
    teacher = 3 * (np.abs(states[:, :4]) * np.sign(states[:, 4:5] * states[:, 5:6])) @ table.T
    users = [f"u{i // 6}" for i in range(600)]

    def agreement(hidden: int) -> float:
        readout, fit = fit_readout(
            states, teacher.argmax(1), users, table, epochs=150, lr=1e-2, weight_decay=0.0,
            teacher=teacher, distill=1.0, hidden=hidden,
        )  # fmt: skip
        assert fit.hidden == hidden and readout.hidden == hidden
        return float((readout.log_probs(states).argmax(1) == teacher.argmax(1)).mean())

    assert agreement(0) < 0.6 and agreement(64) > 0.75


def test_states_read_inside_a_prompt_equal_the_states_of_its_prefixes():
    tok = make_tokenizer()
    model = make_model(len(tok), seed=1).eval()
    whole, short = [1, 5, 6, 7, 8, 9], [1, 9, 8]
    inside = states_at(model, [short, whole], [[2], [1, 3, 5]], tok.pad_token_id, batch_size=2)
    alone = prompt_states(model, [short, whole[:2], whole[:4], whole], tok.pad_token_id, batch_size=1)
    np.testing.assert_allclose(inside, alone, rtol=1e-4, atol=1e-5)


def test_layer_states_read_the_input_embeddings_and_the_last_layer_in_one_pass():
    tok = make_tokenizer()
    model = make_model(len(tok), seed=1).eval()
    prompts, positions = [[1, 9, 8], [1, 5, 6, 7, 8]], [[2], [1, 4]]
    layers = layer_states_at(model, prompts, positions, tok.pad_token_id, batch_size=2, layers=(0, -1))
    embeddings = model.get_input_embeddings().weight.detach().numpy()
    np.testing.assert_allclose(layers[0], embeddings[[8, 5, 8]], rtol=1e-6)  # layer 0: the tokens' own rows
    np.testing.assert_array_equal(layers[-1], states_at(model, prompts, positions, tok.pad_token_id, batch_size=2))


def test_a_fitted_readout_names_the_item_its_states_point_to():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(12, 4)).astype(np.float32)
    targets = rng.integers(0, 12, size=600)
    mixing = rng.normal(size=(4, 10)).astype(np.float32)  # the states hide the target's vector in 10 dims
    states = table[targets] @ mixing + 0.05 * rng.normal(size=(600, 10)).astype(np.float32)
    users = [f"u{i // 6}" for i in range(600)]
    readout, fit = fit_readout(states, targets, users, table, epochs=40, lr=1e-2, weight_decay=0.0)
    assert fit.examples == 600 and fit.held_out == 60  # 10 of 100 users, all six pairs of each
    assert fit.held_out_loss < 0.5 * fit.first_loss
    accuracy = (readout.log_probs(states).argmax(1) == targets).mean()
    assert accuracy > 0.9
    np.testing.assert_allclose(np.exp(readout.log_probs(states[:3])).sum(1), 1.0, rtol=1e-6)


def test_an_ensemble_is_the_normalized_mean_of_readouts_fitted_with_their_own_seeds():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(12, 4)).astype(np.float32)
    targets = rng.integers(0, 12, size=120)
    states = (table[targets] @ rng.normal(size=(4, 10)) + rng.normal(size=(120, 10))).astype(np.float32)
    users = [f"u{i // 6}" for i in range(120)]
    ensemble, fits = fit_readouts(states, targets, users, table, members=3, seed=4, epochs=5, hidden=8)
    assert isinstance(ensemble, ReadoutEnsemble) and len(fits) == 3
    alone, _ = fit_readout(states, targets, users, table, seed=5, epochs=5, hidden=8)  # the second member
    for name, value in alone.state_dict().items():
        torch.testing.assert_close(ensemble.members[1].state_dict()[name], value)
    members = np.stack([m.log_probs(states) for m in ensemble.members])
    assert not np.allclose(members[0], members[1])  # other seeds: other held-out users and minibatches
    mean = members.mean(0)
    np.testing.assert_allclose(ensemble.log_probs(states), mean - np.log(np.exp(mean).sum(1, keepdims=True)))
    np.testing.assert_allclose(np.exp(ensemble.log_probs(states)).sum(1), 1.0, rtol=1e-9)
    single, [fit] = fit_readouts(states, targets, users, table, members=1, epochs=5)
    assert isinstance(single, ItemReadout) and fit.epochs <= 5


def test_prompt_states_of_a_padded_batch_equal_one_prompt_at_a_time():
    tok = make_tokenizer()
    model = make_model(len(tok), seed=1).eval()
    prompts = [[1, 5, 6, 7, 8, 9], [1, 5], [1, 9, 8, 7]]
    together = prompt_states(model, prompts, tok.pad_token_id, batch_size=3)
    for p, row in zip(prompts, together):
        with torch.no_grad():
            alone = model(input_ids=torch.tensor([p]), output_hidden_states=True).hidden_states[-1][0, -1]
        torch.testing.assert_close(torch.from_numpy(row), alone, rtol=1e-4, atol=1e-5)


def _table(n: int = 5, d: int = 3) -> ItemTable:
    vectors = np.random.default_rng(0).normal(size=(n, d)).astype(np.float32)
    return ItemTable(vectors, np.ones(n, dtype=bool), "test", fingerprint(vectors))


@pytest.mark.parametrize("hidden, members", [(0, 1), (5, 1), (5, 3)])
def test_a_readout_saves_and_reloads_exactly_and_refuses_another_table(tmp_path, hidden, members):
    from m6gen.hybrid.readout import ReadoutFit

    table = _table()
    readouts = [ItemReadout(table.vectors, 6, hidden) for _ in range(members)]
    readout = readouts[0] if members == 1 else ReadoutEnsemble(readouts)
    with torch.no_grad():
        for p in readout.parameters():
            p.normal_()
        for one in readouts:
            one.mean.normal_()
    save_readout(readout, tmp_path, [ReadoutFit(10, 1, 3, 1.0, 2.0, hidden=hidden)] * members, table.fingerprint)
    again = load_readout(tmp_path, table)
    assert type(again) is type(readout) and again.members[0].hidden == hidden if members > 1 else again.hidden == hidden
    states = np.random.default_rng(1).normal(size=(4, 6)).astype(np.float32)
    np.testing.assert_array_equal(again.log_probs(states), readout.log_probs(states))
    assert json.loads((tmp_path / "readout.json").read_text())["epochs"] == 3
    other = _table(d=3)
    other = ItemTable(other.vectors + 1, other.known, "other", fingerprint(other.vectors + 1))
    with pytest.raises(CollaborativeError, match="fit-readout"):
        load_readout(tmp_path, other)
    assert load_readout(tmp_path / "nothing", table) is None
    (tmp_path / "adapter_model.safetensors").write_bytes(b"another adapter")  # the run trained on since
    with pytest.raises(CollaborativeError, match="another adapter"):
        load_readout(tmp_path, table)


def _sure_of(readout, item: int) -> None:
    """Make every readout in ``readout`` (one, or an ensemble's members) certain of ``item``."""
    with torch.no_grad():
        for member in (m for m in readout.modules() if isinstance(m, ItemReadout)):
            for weights in member.project.parameters():
                weights.zero_()
            member.bias.fill_(-30.0)
            member.bias[item] = 30.0


@pytest.fixture(scope="module")
def hybrid_run(tiny_dirs, tmp_path_factory):
    """A tiny run with collaborative tokens (template hybrid), and its readout fitted by the command."""
    from m6gen.commands.fit_readout import main
    from m6gen.training.loop import train

    root = tmp_path_factory.mktemp("readout")
    source = root / "cf.npy"
    np.save(source, np.random.default_rng(0).normal(size=(N_ITEMS, 8)).astype(np.float32))
    train(tiny_config(tiny_dirs, root / "run", template="hybrid", cf_source=str(source), epochs=1))
    from m6gen.commands.beam_cache import cache_fingerprint
    from m6gen.prompts import TemplateLibrary

    template = TemplateLibrary().get("hybrid").path
    before = cache_fingerprint(str(root / "run"), template)
    argv = ["--model", str(root / "run"), "--readout-epochs", "5", "--readout-per-user", "2", "--no-progress"]
    assert main(argv) == 0
    return root / "run", before


def test_fit_readout_saves_a_readout_that_plain_beam_caches_ignore(hybrid_run, tiny_dirs, capsys):
    from m6gen.commands.beam_cache import cache_fingerprint
    from m6gen.prompts import TemplateLibrary

    run, before = hybrid_run
    info = json.loads((run / "readout.json").read_text())
    assert info["examples"] == 30 * 2  # 30 users, their last two training items
    assert info["distill"] == 0  # tokens from a .npy file: no SASRec to distil from, none by default
    assert info["hidden"] == 1024 and info["members"] == 5  # by default five MLP readouts
    assert [fit["examples"] for fit in info["fits"]] == [60] * 5
    template = TemplateLibrary().get("hybrid").path
    assert cache_fingerprint(str(run), template) == before  # a plain search never reads the readout


def test_fit_readout_keeps_the_pairs_states_so_a_refit_runs_no_forward(hybrid_run, tmp_path, monkeypatch, capsys):
    """The training pairs' prompt states are kept in the run folder: fitting again with other readout
    options reads them (and fits exactly what fresh states fit); other pairs read and replace them."""
    import shutil

    from safetensors.numpy import load_file

    import m6gen.hybrid.readout as readout_module
    from m6gen.commands.fit_readout import main

    run, _ = hybrid_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (cached,) = copy.glob("readout_states-*.npy")  # left by the fixture's fit
    fresh = load_file(str(copy / "readout.safetensors"))
    argv = ["--model", str(copy), "--readout-epochs", "5", "--readout-per-user", "2", "--no-progress"]

    forwards = []
    real = readout_module.layer_states_at

    def counted(*args, **kwargs):
        forwards.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(readout_module, "layer_states_at", counted)
    assert main(argv) == 0
    assert "prompt states read from" in capsys.readouterr().out
    again = load_file(str(copy / "readout.safetensors"))
    assert fresh.keys() == again.keys() and all(np.array_equal(fresh[k], again[k]) for k in fresh)
    assert main([*argv, "--readout-members", "2", "--readout-distill", "0"]) == 0  # other options, same pairs
    assert json.loads((copy / "readout.json").read_text())["members"] == 2
    assert not forwards
    assert main([*argv[:-2], "3", "--no-progress"]) == 0  # other pairs: their states are read
    assert forwards
    (renewed,) = copy.glob("readout_states-*.npy")  # only the latest pairs' states are kept
    assert renewed != cached and len(np.load(renewed)) == 30 * 3


def test_the_readout_prior_joins_the_search_as_the_runs_own(hybrid_run, tiny_dirs):
    from m6gen.recommender import Recommender

    run, _ = hybrid_run
    catalog = tiny_world(tiny_dirs, "hybrid")[1].catalog
    rec = Recommender.from_pretrained(run, catalog, device="cpu")
    assert rec.readout is not None and rec.readout_weight == 0
    histories = [[1, 2, 3], [7, 8]]
    plain = rec.generate(histories, prior=None)
    asked = rec.generate(histories, prior=None, readout_weight=2.0)
    own = Recommender.from_pretrained(run, catalog, device="cpu", readout_weight=2.0)
    assert own.search_weight() == 2.0
    searched = own.generate(histories)
    for a, b in zip(asked, searched):
        assert [h.item for h in a] == [h.item for h in b]
        np.testing.assert_allclose([h.prior for h in a], [h.prior for h in b])
    assert all(h.prior == 0 for beams in plain for h in beams)
    # read from the search's own prefill, as from a forward of its own
    from m6gen.model import encode_prompts

    states = prompt_states(rec.model, encode_prompts(rec.tokenizer, rec.prompts(histories)), rec.tokenizer.pad_token_id)
    by_hand = rec.generate(  # a batch comes in prompt-length order
        histories, prior=lambda hs: rec.readout.log_probs(states[[histories.index(h) for h in hs]]), prior_weight=2.0
    )
    for a, b in zip(asked, by_hand):
        assert [h.item for h in a] == [h.item for h in b]
        np.testing.assert_allclose([h.prior for h in a], [h.prior for h in b], rtol=1e-5, atol=1e-6)
    assert any(h.prior != 0 for beams in searched for h in beams)
    # with another prior too: prior_weight * prior + readout_weight * readout
    other = np.log(np.random.default_rng(3).dirichlet(np.ones(N_ITEMS), size=2))

    def other_prior(hs):
        return other[[histories.index(h) for h in hs]]

    both = rec.generate(histories, prior=other_prior, prior_weight=2.0, readout_weight=1.0)
    rows = lambda hs: [histories.index(h) for h in hs]  # noqa: E731
    summed = rec.generate(
        histories, prior=lambda hs: other[rows(hs)] + 0.5 * rec.readout.log_probs(states[rows(hs)]), prior_weight=2.0
    )
    for a, b in zip(both, summed):
        assert [h.item for h in a] == [h.item for h in b]
        np.testing.assert_allclose([h.prior for h in a], [h.prior for h in b], rtol=1e-5, atol=1e-6)
    assert [h.item for h in both[0]] != [
        h.item for h in rec.generate(histories, prior=other_prior, prior_weight=2.0)[0]
    ]
    # a readout sure of one item puts it first, whatever the language model says
    assert isinstance(own.readout, ReadoutEnsemble) and len(own.readout.members) == 5  # fit-readout's default
    _sure_of(own.readout, 11)
    assert [beams[0].item for beams in own.generate(histories)] == [11, 11]
    top = own.recommend(histories)
    assert [r.items[0].item_id for r in top] == [11, 11]


def test_fit_readout_distils_from_the_runs_sasrec(tiny_dirs, tmp_path, capsys):
    """--readout-distill reads the SASRec the run's tokens came from, by default 0.9 of the loss where
    there is one; a run with no SASRec behind its tokens gets a one-line error naming the option."""
    from m6gen.baselines.sasrec import SASRec, SASRecConfig
    from m6gen.commands.fit_readout import distillation_teacher, main
    from m6gen.recommender import Recommender
    from m6gen.training.loop import train

    torch.manual_seed(0)
    SASRec(N_ITEMS, SASRecConfig(hidden=8, n_blocks=1, n_heads=1, max_len=6, dropout=0.0)).save(tmp_path / "sasrec")
    train(tiny_config(tiny_dirs, tmp_path / "run", template="hybrid", cf_source=str(tmp_path / "sasrec"), epochs=1))
    _, dataset, split, _, _ = tiny_world(tiny_dirs, "hybrid")
    run = Recommender.from_pretrained(tmp_path / "run", dataset.catalog, device="cpu")
    teacher = distillation_teacher(run, split, N_ITEMS)
    saved = SASRec.load(tmp_path / "sasrec")
    np.testing.assert_array_equal(teacher.score([[1, 2, 3]]), saved.score([[1, 2, 3]]))
    argv = ["--model", str(tmp_path / "run"), "--readout-epochs", "3", "--no-progress"]
    from safetensors.torch import load_file

    assert main(argv) == 0
    assert json.loads((tmp_path / "run" / "readout.json").read_text())["distill"] == 0.9  # the default here
    everyone = json.loads((tmp_path / "run" / "readout.json").read_text())["examples"]
    assert main([*argv, "--max-users", "3", "--readout-members", "1"]) == 0  # a quick trial on 3 users' pairs
    assert 0 < json.loads((tmp_path / "run" / "readout.json").read_text())["examples"] < everyone
    linear = ["--readout-hidden", "0", "--readout-members", "1"]  # one linear map
    assert main([*argv, "--readout-distill", "1", *linear]) == 0
    distilled = load_file(str(tmp_path / "run" / "readout.safetensors"))["project.weight"]
    assert main([*argv, "--readout-distill", "0", *linear]) == 0  # the same pairs, the true next items only
    assert not torch.equal(load_file(str(tmp_path / "run" / "readout.safetensors"))["project.weight"], distilled)
    assert json.loads((tmp_path / "run" / "readout.json").read_text())["distill"] == 0
    assert main([*argv, "--readout-distill", "1.5"]) == 2
    assert "readout_distill" in capsys.readouterr().err


def test_teacher_log_probs_averages_the_teachers_log_softmax():
    from m6gen.baselines.sasrec import SASRec, SASRecConfig
    from m6gen.commands.fit_readout import teacher_log_probs

    config = SASRecConfig(hidden=8, n_blocks=1, n_heads=1, max_len=6, dropout=0.0)
    torch.manual_seed(0)
    one, two = SASRec(N_ITEMS, config), SASRec(N_ITEMS, config)
    histories = [[1, 2, 3], [4]]
    np.testing.assert_array_equal(teacher_log_probs([one], histories), one.score(histories))  # one: its logits
    expected = (
        torch.log_softmax(torch.from_numpy(one.score(histories)), -1)
        + torch.log_softmax(torch.from_numpy(two.score(histories)), -1)
    ) / 2
    np.testing.assert_allclose(teacher_log_probs([one, two], histories), expected.numpy(), rtol=1e-6)


def test_fit_readout_distils_from_more_teachers(tiny_dirs, tmp_path, capsys, monkeypatch):
    """--readout-teachers adds saved SASRecs to the run's own as the teacher; a folder that is no SASRec,
    or one trained on other interactions, or teachers without distillation, are one-line errors."""
    from safetensors.torch import load_file

    from m6gen.baselines.ease import EASE
    from m6gen.baselines.run import split_fingerprint
    from m6gen.baselines.sasrec import SASRec, SASRecConfig
    from m6gen.commands.fit_readout import main
    from m6gen.training.loop import train

    config = SASRecConfig(hidden=8, n_blocks=1, n_heads=1, max_len=6, dropout=0.0)
    torch.manual_seed(0)
    SASRec(N_ITEMS, config).save(tmp_path / "own" / "sasrec")
    SASRec(N_ITEMS, config).save(tmp_path / "more" / "sasrec")
    split = tiny_world(tiny_dirs, "hybrid")[2]
    (tmp_path / "more" / "baselines.json").write_text(json.dumps({"train_split": split_fingerprint(split)}))
    train(tiny_config(tiny_dirs, tmp_path / "run", template="hybrid", cf_source=str(tmp_path / "own" / "sasrec")))
    run = tmp_path / "run"
    argv = ["--model", str(run), "--readout-epochs", "3", "--no-progress", "--readout-distill", "1"]
    argv += ["--readout-hidden", "0", "--readout-members", "1"]
    assert main(argv) == 0
    own_only = load_file(str(run / "readout.safetensors"))["project.weight"]
    assert json.loads((run / "readout.json").read_text())["more_teachers"] == []
    assert main([*argv, "--readout-teachers", str(tmp_path / "more" / "sasrec")]) == 0
    assert not torch.equal(load_file(str(run / "readout.safetensors"))["project.weight"], own_only)
    assert json.loads((run / "readout.json").read_text())["more_teachers"] == [str(tmp_path / "more" / "sasrec")]
    with_sasrec = load_file(str(run / "readout.safetensors"))["project.weight"]
    EASE.fit(list(split.train.values()), N_ITEMS).save(tmp_path / "more" / "ease")  # a second kind of teacher
    assert main([*argv, "--readout-teachers", str(tmp_path / "more" / "sasrec"), str(tmp_path / "more" / "ease")]) == 0
    assert not torch.equal(load_file(str(run / "readout.safetensors"))["project.weight"], with_sasrec)
    assert "distilled from 2 SASRec(s) and 1 EASE" in capsys.readouterr().out  # the run's own, one more, EASE
    with_ease = load_file(str(run / "readout.safetensors"))["project.weight"]
    sharper = [*argv, "--readout-teachers", str(tmp_path / "more" / "sasrec"), str(tmp_path / "more" / "ease")]
    sharper += ["--readout-teacher-temperature", "0.5"]  # the same teachers, only sharper
    assert main(sharper) == 0
    assert "at temperature 0.5" in capsys.readouterr().out
    assert json.loads((run / "readout.json").read_text())["teacher_temperature"] == 0.5
    assert not torch.equal(load_file(str(run / "readout.safetensors"))["project.weight"], with_ease)
    assert main([*argv, "--readout-teacher-temperature", "0"]) == 2
    assert "readout_teacher_temperature" in capsys.readouterr().err.strip().splitlines()[-1]

    assert main([*argv, "--readout-teachers", str(tmp_path)]) == 2  # no SASRec or EASE there
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--readout-teachers" in error and "holds no saved SASRec or EASE" in error
    capsys.readouterr()
    from m6gen.recommender import Recommender

    with monkeypatch.context() as patch:  # refused before the model is loaded
        patch.setattr(Recommender, "from_pretrained", lambda *a, **k: pytest.fail("the model was loaded"))
        assert main([*argv, "--readout-teachers", str(tmp_path / "nowhere")]) == 2
    assert f"--readout-teachers: {tmp_path / 'nowhere'} does not exist" in capsys.readouterr().err
    (tmp_path / "more" / "baselines.json").write_text(json.dumps({"train_split": "0123456789ab"}))
    assert main([*argv, "--readout-teachers", str(tmp_path / "more" / "sasrec")]) == 2
    assert "other interactions" in capsys.readouterr().err
    # the run's own SASRec is held to the same record: fitting on other data than it saw is refused
    (tmp_path / "own" / "baselines.json").write_text(json.dumps({"train_split": "0123456789ab"}))
    assert main(argv) == 2
    assert "the run's SASRec" in capsys.readouterr().err
    (tmp_path / "own" / "baselines.json").write_text(json.dumps({"train_split": split_fingerprint(split)}))
    no_distill = ["--model", str(run), "--no-progress", "--readout-distill", "0"]
    assert main([*no_distill, "--readout-teachers", str(tmp_path / "own" / "sasrec")]) == 2
    assert "--readout-distill 0" in capsys.readouterr().err


def test_readout_errors_are_one_line(hybrid_run, tiny_dirs, tmp_path, capsys):
    from m6gen.commands.fit_readout import main
    from m6gen.recommender import Recommender
    from m6gen.training.loop import train

    model_dir, _ = tiny_dirs
    assert main(["--model", str(model_dir), "--no-progress"]) == 2  # not a run
    assert "trained m6gen run folder" in capsys.readouterr().err
    train(tiny_config(tiny_dirs, tmp_path / "plain", epochs=1))
    assert main(["--model", str(tmp_path / "plain"), "--no-progress"]) == 2
    assert "no collaborative tokens" in capsys.readouterr().err
    catalog = tiny_world(tiny_dirs, "titles")[1].catalog
    from m6gen.model import ModelError

    with pytest.raises(ModelError, match="no collaborative readout"):
        Recommender.from_pretrained(tmp_path / "plain", catalog, device="cpu", readout_weight=1.0)
    with pytest.raises(ModelError, match=f"{model_dir} is not a trained run, so it has no collaborative readout"):
        Recommender.from_pretrained(model_dir, catalog, device="cpu", readout_weight=1.0)  # named, not None
    from m6gen.commands.eval import main as eval_main

    argv = ["--model", str(tmp_path / "plain"), "--out", str(tmp_path / "e"), "--no-progress", "--beams", "4"]
    assert eval_main([*argv, "--decode-prior", "Readout", "--decode-blend", "1", "--baselines", ""]) == 2
    assert "has no readout" in capsys.readouterr().err
    run, _ = hybrid_run  # tokens from a .npy file: no SASRec to distil from
    assert main(["--model", str(run), "--readout-distill", "0.5", "--no-progress"]) == 2
    assert "--readout-distill" in capsys.readouterr().err.strip().splitlines()[-1]


def test_eval_searches_with_the_readout_and_chooses_among_its_rows_on_validation(hybrid_run, tmp_path):
    from m6gen.commands.eval import main

    run, _ = hybrid_run
    argv = ["--model", str(run), "--out", str(tmp_path), "--no-progress", "--beams", "4", "--baselines", ""]
    assert main([*argv, "--decode-prior", "Readout", "--decode-blend", "1,3", "--choose-on-valid"]) == 0
    rows = json.loads((tmp_path / "eval_test.json").read_text())
    assert {"m6gen + Readout in decoding (w 1)", "m6gen + Readout in decoding (w 3)"} <= set(rows)
    assert any(r.startswith("m6gen, chosen on valid: ") for r in rows)  # the readout rows were candidates
    caches = sorted(p.name for p in tmp_path.glob("beams_test-*readout*.jsonl"))
    assert len(caches) == 2  # one per weight, named apart from the plain beams
    beams = [json.loads(x)["beams"] for x in (tmp_path / caches[0]).read_text().splitlines()]
    assert any(b[4] != 0 for user in beams for b in user)  # the prior column is the readout's


def test_eval_without_the_plain_beams_decodes_and_chooses_only_the_searches(hybrid_run, tmp_path, capsys):
    """--plain-beams false: the plain search is not decoded, --choose-on-valid picks among the searched
    rows, and every row left is the one an eval decoding the plain beams too gives (same cache files)."""
    from m6gen.commands.eval import main
    from m6gen.commands.eval_rows import READOUT_ROW

    run, _ = hybrid_run
    argv = ["--model", str(run), "--no-progress", "--beams", "4", "--baselines", "", "--dtype", "float32"]
    argv += ["--decode-prior", "Readout", "--decode-blend", "1", "--choose-on-valid"]
    both, searched = tmp_path / "both", tmp_path / "searched"
    assert main([*argv, "--out", str(both)]) == 0
    assert main([*argv, "--out", str(searched), "--plain-beams", "false"]) == 0
    names = lambda folder: sorted(p.name for p in folder.glob("*.jsonl"))  # noqa: E731
    assert names(searched) == [n for n in names(both) if not n.startswith("beams_") or "readout1" in n]
    rows, all_rows = (json.loads((f / "eval_test.json").read_text()) for f in (searched, both))
    assert not any(row.startswith("m6gen beams") for row in rows)
    m6gen_rows = [row for row in rows if row.startswith("m6gen") and not row.startswith("m6gen, chosen")]
    assert READOUT_ROW in m6gen_rows and len(m6gen_rows) > 2
    assert all(rows[row] == all_rows[row] for row in m6gen_rows)
    chosen = next(row for row in rows if row.startswith("m6gen, chosen on valid: "))
    assert "Readout in decoding" in chosen
    assert main([*argv[:-5], "--out", str(searched), "--plain-beams", "false"]) == 2  # nothing to decode
    assert "plain_beams: false" in capsys.readouterr().err


def test_the_readout_alone_reads_the_state_the_search_starts_from(hybrid_run, tiny_dirs):
    """Recommender.readout_log_probs: the readout on each prompt's last state, the same state the
    search's prefill hands its prior (one batch, padded alike)."""
    from m6gen.decoding.decoder import Decoder
    from m6gen.model import encode_prompts
    from m6gen.recommender import RecommendConfig, Recommender

    run, _ = hybrid_run
    _, ds, split, _, _ = tiny_world(tiny_dirs, "hybrid")
    rec = Recommender.from_pretrained(run, ds.catalog, RecommendConfig(batch_size=16), device="cpu")
    users = split.users[:7]
    histories = [split.test_history(u) for u in users]
    got = rec.readout_log_probs(histories)
    assert got.shape == (7, len(ds.catalog))
    prompt_ids = encode_prompts(rec.tokenizer, rec.prompts(histories))
    with torch.no_grad():
        decoder = Decoder.prefill(rec.model, prompt_ids, rec.tokenizer.pad_token_id, False, keep_states=True)
    np.testing.assert_allclose(got, rec.readout.log_probs(decoder.prompt_states), atol=1e-5)
    assert np.allclose(np.exp(got).sum(axis=1), 1)


def test_eval_tables_the_readout_alone_but_never_chooses_it(hybrid_run, tiny_dirs, tmp_path, monkeypatch):
    """The readout's own whole-catalog ranking is a row of its own, scored like the others, and
    --choose-on-valid leaves it out even where it is best on validation (m6gen's list is its search's)."""
    from m6gen.commands import eval as eval_command
    from m6gen.commands.eval_rows import READOUT_ROW
    from m6gen.ranking.metrics import per_user_scores
    from m6gen.recommender import RecommendConfig, Recommender

    run, _ = hybrid_run
    argv = ["--model", str(run), "--out", str(tmp_path), "--no-progress", "--beams", "4", "--baselines", ""]
    argv += ["--blend", "", "--weights", "", "--decode-prior", "Readout", "--decode-blend", "1"]
    # the readout made perfect: each user's next item gets all the probability (validation, then test)
    _, ds, split, _, _ = tiny_world(tiny_dirs, "hybrid")
    targets = iter([[split.valid[u] for u in split.users], [split.test[u] for u in split.users]])

    def oracle(self, histories, profiles=None, progress=None, states=None):
        scores = np.full((len(histories), len(ds.catalog)), -50.0)
        scores[np.arange(len(histories)), next(targets)] = 0.0
        return scores

    monkeypatch.setattr(Recommender, "readout_log_probs", oracle)
    assert eval_command.main([*argv, "--choose-on-valid"]) == 0
    rows = json.loads((tmp_path / "eval_test.json").read_text())
    assert rows[READOUT_ROW]["NDCG@10"] == pytest.approx(1.0)
    assert rows["m6gen + Readout in decoding (w 1, rank by prior)"]["NDCG@10"] < 1.0
    chosen = next(r for r in rows if r.startswith("m6gen, chosen on valid: "))
    assert rows[chosen]["NDCG@10"] < 1.0  # the perfect readout row was not a candidate
    monkeypatch.undo()
    # unpatched: the row is the readout's top items, its history left out
    assert eval_command.main(argv) == 0
    rows = json.loads((tmp_path / "eval_test.json").read_text())
    rec = Recommender.from_pretrained(run, ds.catalog, RecommendConfig(), device="cpu")
    histories = [split.test_history(u) for u in split.users]
    scores = rec.readout_log_probs(histories)
    for u, h in enumerate(histories):
        scores[u, h] = -np.inf
    lists = [np.argsort(-s, kind="stable")[:20] for s in scores]
    want = per_user_scores(lists, np.array([split.test[u] for u in split.users]), 10)["NDCG"].mean()
    assert rows[READOUT_ROW]["NDCG@10"] == pytest.approx(want)
    # "rank by prior": the searched beams in the order of the prior they were searched with, titles aside
    cache = next(tmp_path.glob("beams_test-*readout1.jsonl")).read_text().splitlines()
    beams = {line["user_id"]: np.array(line["beams"]) for line in map(json.loads, cache)}
    by_prior = [beams[u][np.argsort(-beams[u][:, 4], kind="stable"), 0].astype(int) for u in split.users]
    want = per_user_scores(by_prior, np.array([split.test[u] for u in split.users]), 10)["NDCG"].mean()
    assert rows["m6gen + Readout in decoding (w 1, rank by prior)"]["NDCG@10"] == pytest.approx(want)
    by_title = [beams[u][np.argsort(-beams[u][:, 1], kind="stable"), 0].astype(int) for u in split.users]
    assert per_user_scores(by_title, np.array([split.test[u] for u in split.users]), 10)["NDCG"].mean() != want


def test_eval_reads_the_readout_rows_states_once_and_caches_them(hybrid_run, tiny_dirs, tmp_path, monkeypatch):
    """The readout-alone row's prompt states are computed with the beams, stored exactly in a cache named
    like the plain beams', and a second eval (a refitted readout, say) reads them instead of the model."""
    import base64

    from m6gen.commands.eval import main
    from m6gen.commands.eval_rows import READOUT_ROW
    from m6gen.recommender import RecommendConfig, Recommender

    run, _ = hybrid_run
    argv = ["--model", str(run), "--out", str(tmp_path), "--no-progress", "--beams", "4", "--baselines", ""]
    argv += ["--blend", "", "--weights", "", "--decode-prior", "Readout", "--decode-blend", "1", "--split", "valid"]
    argv += ["--dtype", "float32"]  # bf16 states would differ with the batches' padding
    assert main(argv) == 0
    first = json.loads((tmp_path / "eval_valid.json").read_text())[READOUT_ROW]
    (cache,) = tmp_path.glob("states_valid-*.jsonl")
    lines = [json.loads(x) for x in cache.read_text().splitlines()]
    _, ds, split, _, _ = tiny_world(tiny_dirs, "hybrid")
    assert [x["user_id"] for x in lines] == split.users  # one line per user, in order
    rec = Recommender.from_pretrained(run, ds.catalog, RecommendConfig(dtype="float32"), device="cpu")
    want = rec.prompt_states([split.valid_history(u) for u in split.users])
    got = np.stack([np.frombuffer(base64.b64decode(x["state"]), dtype="<f4") for x in lines])
    np.testing.assert_allclose(got, want, atol=1e-5)

    def no_forward(self, *args, **kwargs):
        raise AssertionError("the cached prompt states were computed again")

    monkeypatch.setattr(Recommender, "prompt_states", no_forward)
    assert main(argv) == 0
    assert json.loads((tmp_path / "eval_valid.json").read_text())[READOUT_ROW] == first


def _readout_eval_argv(run, out):
    argv = ["--model", str(run), "--out", str(out), "--no-progress", "--beams", "4", "--baselines", ""]
    argv += ["--blend", "", "--weights", "", "--decode-prior", "Readout", "--decode-blend", "1", "--split", "valid"]
    return [*argv, "--dtype", "float32", "--plain-beams", "false"]


def _cached_states(out):
    import base64

    (cache,) = out.glob("states_valid-*.jsonl")
    lines = [json.loads(x) for x in cache.read_text().splitlines()]
    states = np.stack([np.frombuffer(base64.b64decode(x["state"]), "<f4") for x in lines])
    return cache, [x["user_id"] for x in lines], states


def test_eval_keeps_the_prompt_states_its_search_read_at_the_prefill(hybrid_run, tiny_dirs, tmp_path, monkeypatch):
    """The readout-alone row's states come from the searches' own prefill: no second forward reads the
    prompts, and the cache holds what that forward would have given, in the users' order."""
    from m6gen.commands.eval import main
    from m6gen.recommender import RecommendConfig, Recommender

    run, _ = hybrid_run

    def no_forward(self, *args, **kwargs):
        raise AssertionError("the prompt states were read by a second forward")

    with monkeypatch.context() as patch:
        patch.setattr(Recommender, "prompt_states", no_forward)
        assert main(_readout_eval_argv(run, tmp_path)) == 0
    _, users, got = _cached_states(tmp_path)
    _, ds, split, _, _ = tiny_world(tiny_dirs, "hybrid")
    assert users == split.users
    rec = Recommender.from_pretrained(run, ds.catalog, RecommendConfig(dtype="float32"), device="cpu")
    want = rec.prompt_states([split.valid_history(u) for u in split.users])
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_a_resumed_eval_writes_each_prompt_state_once(hybrid_run, tmp_path, monkeypatch):
    """Killed between a batch's states and its beams, the redone batch's states are not appended twice;
    a state missing beside finished beams is read by the states pass, for that user alone."""
    from m6gen.commands.eval import main
    from m6gen.recommender import Recommender

    run, _ = hybrid_run
    argv = _readout_eval_argv(run, tmp_path)
    assert main(argv) == 0
    cache, users, whole = _cached_states(tmp_path)
    (beams,) = tmp_path.glob("beams_valid-*.jsonl")
    beams.write_text("".join(beams.read_text().splitlines(keepends=True)[:-1]))  # the last user's beams lost
    assert main(argv) == 0
    assert _cached_states(tmp_path)[1] == users  # once each
    cache.write_text("".join(cache.read_text().splitlines(keepends=True)[:-1]))  # the last user's state lost
    asked = []
    real = Recommender.prompt_states

    def counted(self, histories, *args, **kwargs):
        asked.append(len(histories))
        return real(self, histories, *args, **kwargs)

    monkeypatch.setattr(Recommender, "prompt_states", counted)
    assert main(argv) == 0
    assert asked == [1]
    _, again, states = _cached_states(tmp_path)
    assert again == users
    np.testing.assert_allclose(states, whole, atol=1e-5)


def test_eval_searches_with_sasrec_and_the_readout_together(hybrid_run, tiny_dirs, tmp_path):
    import torch

    from m6gen.baselines.sasrec import SASRec
    from m6gen.commands.eval import main
    from m6gen.commands.eval_rows import PRIOR_ROW
    from m6gen.ranking.metrics import per_user_scores
    from m6gen.recommender import RecommendConfig, Recommender

    run, _ = hybrid_run
    argv = ["--model", str(run), "--out", str(tmp_path), "--no-progress", "--beams", "4", "--sasrec-epochs", "2"]
    argv += ["--baselines", "SASRec", "--blend", "", "--weights", "", "--decode-prior", "SASRec+Readout"]
    assert main([*argv, "--decode-blend", "2"]) == 0
    rows = json.loads((tmp_path / "eval_test.json").read_text())
    assert "m6gen + SASRec+Readout in decoding (w 2)" in rows
    # the search's prior alone: SASRec's and the readout's log-probabilities added, the history left out
    _, ds, split, _, _ = tiny_world(tiny_dirs, "hybrid")
    histories = [split.test_history(u) for u in split.users]
    rec = Recommender.from_pretrained(run, ds.catalog, RecommendConfig(), device="cpu")
    sasrec = SASRec.load(tmp_path / "baselines" / "sasrec").score(histories)
    scores = rec.readout_log_probs(histories) + torch.log_softmax(torch.from_numpy(sasrec).double(), -1).numpy()
    for u, h in enumerate(histories):
        scores[u, h] = -np.inf
    lists = [np.argsort(-s, kind="stable")[:20] for s in scores]
    want = per_user_scores(lists, np.array([split.test[u] for u in split.users]), 10)["NDCG"].mean()
    assert rows[PRIOR_ROW]["NDCG@10"] == pytest.approx(want)
    both = next(tmp_path.glob("beams_test-*sasrec+readout2.jsonl"))
    assert main([*argv, "--decode-prior", "SASRec", "--decode-blend", "2"]) == 0
    alone = next(tmp_path.glob("beams_test-*-sasrec2.jsonl"))
    assert both.read_text() != alone.read_text()  # the readout changed the search


def test_collate_marks_the_state_just_before_each_packed_title():
    from m6gen.training.examples import Example, collate

    # a packed block: prompt [1, 2], then item 4's title [7, 8, 0] and its token 90, then item 6's title [9, 0]
    block = Example("u", 2, (4, 6), [1, 2], [7, 8, 0, 90, 9, 0], title_starts=(0, 4))
    single = Example("v", 1, (3,), [1, 5, 5], [6, 0])
    batch = collate([[single, block]], pad_id=0)
    at = batch["readout_at"]
    assert at.tolist() == [[0, 2], [0, 6], [0, 10]]  # each last prompt token, and the token before a later title
    assert batch["readout_items"].tolist() == [3, 4, 6]
    assert [int(batch["labels"][r, c + 1]) for r, c in at.tolist()] == [6, 7, 9]  # the state writes the title next


@pytest.fixture(scope="module")
def readout_trained_with_lora(tiny_dirs, tmp_path_factory):
    """A tiny hybrid run whose readout is trained with LoRA (--readout-loss), history packing on."""
    from m6gen.training.loop import train

    root = tmp_path_factory.mktemp("joint")
    source = root / "cf.npy"
    np.save(source, np.random.default_rng(0).normal(size=(N_ITEMS, 8)).astype(np.float32))
    config = tiny_config(
        tiny_dirs,
        root / "run",
        template="hybrid",
        cf_source=str(source),
        readout_loss=1.0,
        history_packing="on",
        history_block=3,
        cf_dropout=0.0,
        epochs=3,
        lr=1e-2,
        cf_lr_scale=3.0,
    )
    train(config)
    return root / "run", config


def test_the_readout_loss_is_the_cross_entropy_of_the_states_its_prompts_end_with(readout_trained_with_lora):
    """The readout's share of the loss, from packed blocks, equals the readout scored on the last state of
    each target's own prompt (read apart), so packing teaches it what a prompt would show."""
    from m6gen.hybrid import find
    from m6gen.runs import load_trained
    from m6gen.training.examples import Example, collate
    from m6gen.training.loss import loss_module

    run, _ = readout_trained_with_lora
    model, tok, _ = load_trained(run)
    model.eval()

    readout = find(model).readout
    assert readout is not None and not bool((readout.std == 1).all())  # calibrated, then trained
    prompt, items = [tok.bos_token_id or 1, 11, 12], (4, 6, 2)
    offset = find(model).offset
    titles = [[20 + i, 30 + i, tok.eos_token_id] for i in items]
    after = [[offset + i] for i in items]  # each target but the last is followed by its collaborative token
    targets = titles[0] + after[0] + titles[1] + after[1] + titles[2]
    block = Example("u", 3, items, prompt, targets, title_starts=(0, 4, 8))
    batch = collate([[block]], tok.pad_token_id, soft_from=offset)
    inputs = {k: batch[k] for k in ("input_ids", "labels", "position_ids", "readout_at", "readout_items")}
    with torch.no_grad():
        with_readout, _ = loss_module(model, readout_weight=2.0)(**inputs)
        without, _ = loss_module(model, readout_weight=0.0)(**inputs)
    prefixes = [prompt, prompt + titles[0] + after[0], prompt + titles[0] + after[0] + titles[1] + after[1]]
    states = prompt_states(model, prefixes, tok.pad_token_id, batch_size=1)
    by_hand = -readout.log_probs(states)[np.arange(3), list(items)].sum()
    assert float(with_readout - without) == pytest.approx(2.0 * by_hand, rel=1e-4)


def test_a_readout_trained_with_lora_is_saved_with_the_adapter_and_searched(readout_trained_with_lora, tiny_dirs):
    from safetensors.torch import load_file

    from m6gen.recommender import Recommender

    run, _ = readout_trained_with_lora
    assert json.loads((run / "collaborative.json").read_text())["readout"] is True
    assert not (run / "readout.safetensors").exists()  # nothing fitted: the adapter holds it
    saved = load_file(str(run / "adapter_model.safetensors"))
    weights = [k for k in saved if "cf_readout" in k and k.endswith("project.weight")]
    assert len(weights) == 1
    catalog = tiny_world(tiny_dirs, "hybrid")[1].catalog
    rec = Recommender.from_pretrained(run, catalog, device="cpu", readout_weight=2.0)
    torch.testing.assert_close(rec.readout.project.weight, saved[weights[0]])
    histories = [[1, 2, 3], [7, 8]]
    assert any(h.prior != 0 for beams in rec.generate(histories) for h in beams)
    with torch.no_grad():  # the search reads this readout: one sure of an item puts it first
        rec.readout.project.weight.zero_()
        rec.readout.bias.fill_(-30.0)
        rec.readout.bias[11] = 30.0
    assert [beams[0].item for beams in rec.generate(histories)] == [11, 11]


def test_the_readout_trained_with_lora_learns_its_training_items(readout_trained_with_lora, tiny_dirs):
    """Against the same run's readout before training (calibrated, untrained: uniform up to the
    bias), the trained one gives the next training items a higher likelihood."""
    import dataclasses

    from m6gen.runs import load_trained
    from m6gen.training.examples import collate
    from m6gen.training.loss import loss_module
    from m6gen.training.prepare import prepare_run

    run, config = readout_trained_with_lora
    fresh = prepare_run(dataclasses.replace(config, output_dir=str(run.parent / "fresh"), max_steps=1))
    trained, _, _ = load_trained(run)
    examples = fresh.epochs[0][0][:16]
    batch = collate([[ex] for ex in examples], fresh.tokenizer.pad_token_id, fresh.soft_from)
    inputs = {k: batch[k] for k in ("input_ids", "labels", "position_ids", "readout_at", "readout_items")}

    def readout_loss(model) -> float:
        model.eval()
        with torch.no_grad():
            return float(loss_module(model, readout_weight=1.0)(**inputs)[0] - loss_module(model)(**inputs)[0])

    assert readout_loss(trained) < readout_loss(fresh.model) - 0.1 * len(batch["readout_items"])


def test_init_adapter_from_a_run_with_a_trained_readout_names_the_option(readout_trained_with_lora, tmp_path):
    import dataclasses

    from m6gen.config import TrainError
    from m6gen.training.loop import train

    run, config = readout_trained_with_lora
    plain = dataclasses.replace(config, output_dir=str(tmp_path / "next"), readout_loss=0.0, init_adapter=str(run))
    with pytest.raises(TrainError, match="holds a collaborative readout .* give --readout-loss here too"):
        train(plain)


def test_a_readout_loss_needs_collaborative_vectors(tiny_dirs, tmp_path):
    from m6gen.config import TrainError

    with pytest.raises(TrainError, match="readout_loss: .*--cf-source"):
        tiny_config(tiny_dirs, tmp_path / "r", readout_loss=1.0)


def test_eval_searches_with_a_readout_trained_with_lora(readout_trained_with_lora, tmp_path):
    from m6gen.commands.eval import main

    run, _ = readout_trained_with_lora
    argv = ["--model", str(run), "--out", str(tmp_path), "--no-progress", "--beams", "4", "--baselines", ""]
    assert main([*argv, "--decode-prior", "Readout", "--decode-blend", "2", "--weights", ""]) == 0
    assert "m6gen + Readout in decoding (w 2)" in json.loads((tmp_path / "eval_test.json").read_text())


def test_the_training_log_keeps_the_title_loss_apart_from_the_readouts(tiny_dirs, tmp_path):
    """LoRA's B starts at zero, so the first step's title loss is the same with and without a readout:
    the logged ``loss`` must not include the readout's, which gets a column of its own."""
    import csv

    from m6gen.training.loop import train

    source = tmp_path / "cf.npy"
    np.save(source, np.random.default_rng(0).normal(size=(N_ITEMS, 8)).astype(np.float32))
    logs = {}
    for weight in (0.0, 2.0):
        out = tmp_path / f"w{weight}"
        train(tiny_config(tiny_dirs, out, template="hybrid", cf_source=str(source), readout_loss=weight, max_steps=1))
        logs[weight] = list(csv.DictReader((out / "train_log.csv").open()))[0]
    assert "readout_loss" not in logs[0.0]
    assert float(logs[2.0]["loss"]) == pytest.approx(float(logs[0.0]["loss"]), rel=1e-5)
    assert 0.5 * np.log(N_ITEMS) < float(logs[2.0]["readout_loss"]) < 3 * np.log(N_ITEMS)
