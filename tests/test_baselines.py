"""Pop and SASRec: known answers on tiny synthetic data, causality, padding, no leakage, save/load."""

import json

import numpy as np
import pytest
import torch

from m6gen.baselines.run import pop_rank, run_baselines
from m6gen.baselines.sasrec import SASRec, SASRecConfig, SASRecModel, _pad_left, fit, training_windows
from m6gen.data import Split, leave_one_out

N = 20  # items in the synthetic catalog


def cyclic_histories(n_users: int = 60, seed: int = 0) -> dict[str, list[int]]:
    """Item i is always followed by item i+1 mod N; lengths stay below N so the next item is unseen."""
    rng = np.random.default_rng(seed)
    out = {}
    for u in range(n_users):
        start, length = int(rng.integers(N)), int(rng.integers(5, 15))
        out[f"u{u}"] = [(start + j) % N for j in range(length)]
    return out


def tiny(**kw) -> SASRecConfig:
    base = dict(hidden=32, n_blocks=2, max_len=8, dropout=0.0, lr=5e-3, epochs=20, batch_size=32, eval_batch_size=7)
    return SASRecConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def cyclic_model() -> tuple[SASRec, Split]:
    split = leave_one_out(cyclic_histories())
    return fit(split, N, tiny(), valid=False, progress=False), split


# ---- Pop ----


def test_pop_orders_by_popularity_and_drops_seen():
    pop = np.array([5, 1, 9, 3])
    assert [r.tolist() for r in pop_rank(pop, [{2}, set(), np.array([0, 3])], k=3)] == [[0, 3, 1], [2, 0, 3], [2, 1]]


def test_pop_ties_go_to_lower_index_and_full_ranking():
    pop = np.array([2, 7, 2, 7, 0])
    assert pop_rank(pop, [set()], k=None)[0].tolist() == [1, 3, 0, 2, 4]
    assert pop_rank(pop, [{1, 4}], k=None)[0].tolist() == [3, 0, 2]


def test_pop_rejects_bad_k():
    with pytest.raises(ValueError, match="k must be"):
        pop_rank(np.ones(3), [set()], k=0)


# ---- SASRec: known answer ----


def test_sasrec_learns_successor_pattern(cyclic_model):
    rec, split = cyclic_model
    users = split.users
    top1 = rec.recommend([split.test_history(u) for u in users], k=1)
    hr1 = np.mean([t[0] == split.test[u] for t, u in zip(top1, users)])
    assert hr1 >= 0.95


def test_recommend_excludes_history_and_ranks_by_score(cyclic_model):
    rec, _ = cyclic_model
    hist = [[0, 1, 2], [5]]
    recs = rec.recommend(hist, k=N)
    scores = rec.score(hist)
    for h, r, s in zip(hist, recs, scores):
        assert len(r) == N - len(h) and len(set(r.tolist())) == len(r)
        assert not set(h) & set(r.tolist())
        assert np.all(np.diff(s[r]) <= 0)
    assert rec.recommend(hist, k=3, exclude=[set(), set()])[0].tolist() == np.argsort(-scores[0])[:3].tolist()


def test_score_items_are_full_softmax_log_probs(cyclic_model):
    rec, _ = cyclic_model
    hist, cand = [[3, 4], [7]], [[5, 0, 19], [8]]
    logits = torch.from_numpy(rec.score(hist))
    got = rec.score_items(hist, cand)
    for u in range(2):
        np.testing.assert_allclose(got[u], torch.log_softmax(logits[u], -1).numpy()[cand[u]], rtol=1e-5)
    assert np.argmax(got[0]) == 0  # the successor of 4
    np.testing.assert_allclose(rec.score_items(hist, cand, log_probs=False)[1], logits[1, [8]].numpy())


# ---- SASRec: invariants ----


def test_causality_later_items_do_not_change_earlier_outputs():
    torch.manual_seed(0)
    model = SASRecModel(N, tiny()).eval()
    a = torch.tensor([[1, 5, 9, 2, 7, 3]])
    b = a.clone()
    b[0, 4] = 12  # change position 4
    with torch.no_grad():
        ha, hb = model(a), model(b)
    torch.testing.assert_close(ha[:, :4], hb[:, :4])
    assert not torch.allclose(ha[:, 4:], hb[:, 4:])


def test_padding_and_batching_do_not_change_scores(cyclic_model):
    rec, _ = cyclic_model
    short, long = [4, 5], list(range(12))
    alone = rec.score([short])[0]
    np.testing.assert_allclose(rec.score([long, short])[1], alone, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        narrow = rec.model(_pad_left([short], 2))[:, -1]
        wide = rec.model(_pad_left([short], rec.config.max_len))[:, -1]
    torch.testing.assert_close(narrow, wide, rtol=1e-5, atol=1e-5)


def test_states_are_what_the_scores_are_made_from(cyclic_model):
    rec, _ = cyclic_model
    hist = [[3, 4], [7], list(range(12)), [], [0, 9, 1]]
    states = rec.states(hist)
    assert states.shape == (5, rec.config.hidden) and states.dtype == np.float32
    with torch.no_grad():
        logits = rec.model.logits(torch.from_numpy(states)).numpy()
    np.testing.assert_allclose(logits, rec.score(hist), rtol=1e-5, atol=1e-5)
    # the state after a history is its own, whatever batch it is read in
    np.testing.assert_allclose(rec.states(hist, batch_size=2), states, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rec.states([[7]])[0], states[1], rtol=1e-5, atol=1e-5)
    assert not np.allclose(states[0], states[1])


def test_empty_history_scores_are_finite(cyclic_model):
    rec, _ = cyclic_model
    assert np.isfinite(rec.score([[]])).all()


# ---- no leakage ----


def test_training_windows_hold_exactly_the_train_transitions():
    train = {"a": list(range(20)), "b": [3, 1], "c": [7]}
    w = training_windows(train, max_len=4)  # embedding rows: item + 1, 0 = padding
    pairs = sorted((int(x) - 1, int(y) - 1) for row in w for x, y in zip(row[:-1], row[1:]) if x and y)
    expected = sorted([(i, i + 1) for i in range(19)] + [(3, 1)])
    assert pairs == expected
    assert len(training_windows(train, max_len=4, all_windows=False)) == 2  # last window of a and b


def test_training_reads_only_the_train_split():
    hist = cyclic_histories(20, seed=1)
    split = leave_one_out(hist)
    other = Split(split.train, {u: (v + 7) % N for u, v in split.valid.items()}, {u: 0 for u in split.test})
    cfg = tiny(epochs=3)
    a = fit(split, N, cfg, valid=False, progress=False).model.state_dict()
    b = fit(other, N, cfg, valid=False, progress=False).model.state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)


def test_early_stopping_keeps_best_validation_model():
    split = leave_one_out(cyclic_histories(30))
    rec = fit(split, N, tiny(epochs=6, eval_every=2, patience=1), valid=True, progress=False)
    best = max(rec.log, key=lambda r: r["valid_NDCG@10"])
    assert rec.best_epoch == best["epoch"]
    from m6gen.baselines.sasrec import validation_ndcg

    assert validation_ndcg(rec, split) == pytest.approx(best["valid_NDCG@10"])


# ---- persistence and config ----


def test_save_load_round_trip(cyclic_model, tmp_path):
    rec, _ = cyclic_model
    rec.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sasrec.json", "sasrec.pt"]  # no temp files left
    assert json.loads((tmp_path / "sasrec.json").read_text())["config"]["hidden"] == 32
    back = SASRec.load(tmp_path)
    hist = [[1, 2, 3], [9]]
    np.testing.assert_array_equal(back.score(hist), rec.score(hist))


@pytest.mark.parametrize("bad", [dict(hidden=30, n_heads=4), dict(dropout=1.0), dict(max_len=0), dict(lr=-1.0)])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="SASRecConfig"):
        SASRecConfig(**bad)


def test_bad_item_index_is_reported(cyclic_model):
    rec, _ = cyclic_model
    with pytest.raises(ValueError, match=r"history 1 holds item indices outside \[0, 20\)"):
        rec.score([[1], [25]])


# ---- runner ----


def test_run_baselines_on_plain_files(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    items = [{"item_id": str(i), "title": f"Item {i}", "genres": ["A" if i % 2 else "B"]} for i in range(N)]
    (data / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
    rows = [
        {"user_id": u, "item_id": str(i), "timestamp": t}
        for u, h in cyclic_histories(30).items()
        for t, i in enumerate(h)
    ]
    (data / "interactions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    res = run_baselines(data, config=tiny(epochs=4, eval_every=2), out_dir=out, progress=False)
    assert set(res["valid"]) == set(res["test"]) == {"Pop", "SASRec"}
    assert res["test"]["SASRec"]["SeenRate"] == 0.0 and res["test"]["Pop"]["SeenRate"] == 0.0
    assert res["users_evaluated"] == 30 and "ILD@10" in res["test"]["Pop"]
    assert (out / "baselines_test.md").is_file() and (out / "sasrec" / "sasrec.pt").is_file()
    assert json.loads((out / "baselines.json").read_text())["sasrec"]["config"]["max_len"] == 8


# ---- a killed SASRec keeps its best model and resumes (issue #20) ----


def test_killed_fit_keeps_the_best_model_and_resumes_to_the_same_weights(tmp_path, monkeypatch):
    import m6gen.baselines.sasrec as sasrec_module

    split = leave_one_out(cyclic_histories())
    config = tiny(epochs=6, patience=100)
    whole = fit(split, N, config, valid=True, progress=False)

    real_check, calls = sasrec_module.validation_ndcg, []

    def check_then_die(rec, split_):
        calls.append(1)
        if len(calls) == 4:  # killed during the 4th epoch's validation
            raise KeyboardInterrupt
        return real_check(rec, split_)

    monkeypatch.setattr(sasrec_module, "validation_ndcg", check_then_die)
    with pytest.raises(KeyboardInterrupt):
        fit(split, N, config, valid=True, progress=False, checkpoint=tmp_path / "ck")
    kept = SASRec.load(tmp_path / "ck")  # the best model of the first three epochs, loadable
    assert 1 <= kept.best_epoch <= 3
    monkeypatch.setattr(sasrec_module, "validation_ndcg", real_check)
    resumed = fit(split, N, config, valid=True, progress=False, checkpoint=tmp_path / "ck")
    assert [e["epoch"] for e in resumed.log] == list(range(1, 7))
    for name, weight in whole.model.state_dict().items():
        assert torch.equal(weight, resumed.model.state_dict()[name]), name
    assert resumed.stopped == whole.stopped == "epochs"


def test_a_killed_fit_on_other_interactions_is_not_continued(tmp_path, monkeypatch, capsys):
    """A training killed on one split (say, the standard one) and started again on another (--new-items
    holds interactions out) starts over: continuing would train on what the second split holds out."""
    import m6gen.baselines.sasrec as sasrec_module

    histories = cyclic_histories()
    other = leave_one_out({u: h[1:] for u, h in histories.items()})  # other training interactions
    split = leave_one_out(histories)
    config = tiny(epochs=4, patience=100)
    fresh = fit(split, N, config, valid=True, progress=False)

    real_check, calls = sasrec_module.validation_ndcg, []

    def check_then_die(rec, split_):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_check(rec, split_)

    monkeypatch.setattr(sasrec_module, "validation_ndcg", check_then_die)
    with pytest.raises(KeyboardInterrupt):
        fit(other, N, config, valid=True, progress=False, checkpoint=tmp_path / "ck")
    monkeypatch.setattr(sasrec_module, "validation_ndcg", real_check)
    again = fit(split, N, config, valid=True, progress=False, checkpoint=tmp_path / "ck")
    assert "SASRec training on other interactions; starting again" in capsys.readouterr().err
    assert [e["epoch"] for e in again.log] == [1, 2, 3, 4]  # every epoch on these interactions
    for name, weight in fresh.model.state_dict().items():  # as if the folder had been empty
        assert torch.equal(weight, again.model.state_dict()[name]), name


def test_fit_says_why_it_stopped():
    split = leave_one_out(cyclic_histories())
    assert "patience" in fit(split, N, tiny(epochs=50, patience=1, lr=1e-9), progress=False).stopped
    assert "time budget" in fit(split, N, tiny(epochs=50, time_budget_s=1e-6), progress=False).stopped


# ---- the command: one-line errors and the same data options as every command (issue #20) ----


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--sasrec-epochs", "0"], "sasrec_epochs must be an integer >= 1"),
        (["--sasrec-hidden", "10", "--sasrec-n-heads", "3"], "sasrec_hidden (10) must be divisible"),
        (["--methods", "Pop,ItemKNN"], "methods: unknown 'ItemKNN'"),
    ],
)
def test_baselines_command_bad_options_are_one_line(plain_data, capsys, extra, message):
    from m6gen.commands import main

    assert main(["baselines", "--data", str(plain_data), "--no-progress", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_baselines_command_takes_the_data_options(plain_data, tmp_path, capsys):
    from m6gen.commands import main

    with open(plain_data / "interactions.csv", "a", encoding="utf-8") as f:
        f.write("u0,no-such-item,999\n")
    assert main(["baselines", "--data", str(plain_data), "--no-progress", "--sasrec-epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert "no-such-item" in err and err.count("\n") == 1
    out = tmp_path / "b"
    assert (
        main(
            [
                "baselines",
                "--data",
                str(plain_data),
                "--unknown-items",
                "skip",
                "--no-progress",
                "--sasrec-epochs",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "stopped by epochs" in capsys.readouterr().out
    assert (out / "sasrec" / "sasrec.json").is_file() and not (out / "sasrec.partial").exists()


@pytest.fixture
def plain_data(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    items = "".join(json.dumps({"item_id": str(i), "title": f"Film {i} ({1990 + i})"}) + "\n" for i in range(N))
    (data / "items.jsonl").write_text(items, encoding="utf-8")
    rows = ["user_id,item_id,timestamp"]
    for u, hist in cyclic_histories(30).items():
        rows += [f"{u},{item},{t}" for t, item in enumerate(hist)]
    (data / "interactions.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return data
