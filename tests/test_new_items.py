"""The new-item protocol (--new-items): which items are new, and that no interaction with one reaches
anything that trains (LM examples, SASRec, Pop, collaborative tokens, reranker popularity)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import TITLES, tiny_config, write_world_data

from m6gen.data import build_histories, leave_one_out, load_dataset, new_item_split, new_item_users

# write_world_data(shift=1): user u's step s is item (u + s) mod 8 at time s, users u0..u5.
# Items 0-5 are first seen at time 0, item 6 at time 1 (u5), item 7 at time 2 (u5): the latest two.
NEW = {6, 7}


@pytest.fixture(scope="module")
def world_split(tmp_path_factory):
    data = write_world_data(tmp_path_factory.mktemp("new") / "data")
    ds = load_dataset(data)
    return data, ds, new_item_split(ds, leave_one_out(build_histories(ds)), 0.25)


def test_the_latest_first_seen_items_are_new_and_ties_are_all_taken(world_split):
    _, ds, split = world_split
    assert split.new_items == NEW
    # 0.1 of 8 items is one item; the latest first time is item 7's alone
    assert new_item_split(ds, leave_one_out(build_histories(ds)), 0.1).new_items == {7}
    # 0.5 is four items; item 5's first time (0) ties items 0-4, so all eight are taken rather than 4 by id
    assert new_item_split(ds, leave_one_out(build_histories(ds)), 0.5).new_items == set(range(8))


def test_new_items_leave_training_and_histories_but_stay_targets(world_split):
    _, ds, split = world_split
    full = leave_one_out(build_histories(ds))
    for u in split.users:
        assert not NEW & set(split.train[u]) and not NEW & set(split.test_history(u))
        assert split.train[u] == [i for i in full.train[u] if i not in NEW]
        assert (split.valid[u], split.test[u]) == (full.valid[u], full.test[u])
    assert new_item_users(split) == ["u3", "u4"]  # test items 6 and 7
    assert split.test_history("u4") == [4, 5]  # valid item 6 is new: not in the history


def test_no_interaction_with_a_new_item_reaches_a_trained_part(world_split, tiny_dirs, tmp_path):
    """LM examples, SASRec's windows, Pop, the collaborative table and the reranker's popularity."""
    from m6gen.baselines.sasrec import training_windows
    from m6gen.commands.common import item_features
    from m6gen.data import item_popularity
    from m6gen.hybrid import find
    from m6gen.training.prepare import prepare_run

    data, ds, split = world_split
    np.save(tmp_path / "cf.npy", np.ones((len(TITLES), 4), dtype=np.float32))
    cfg = tiny_config(
        tiny_dirs,
        tmp_path / "run",
        data=str(data),
        new_items=0.25,
        template="hybrid",
        cf_source=str(tmp_path / "cf.npy"),
        max_history=3,
    )
    run = prepare_run(cfg)
    assert run.split.new_items == NEW
    examples = [ex for exs, _ in run.epochs for ex in exs]
    assert examples
    for ex in examples:
        text = run.tokenizer.decode([t for t in ex.prompt_ids + ex.target_ids if t < len(run.tokenizer)])
        assert not NEW & set(ex.items)
        assert not any(TITLES[i] in text for i in NEW), text
        assert not any(t - len(run.tokenizer) in NEW for t in ex.prompt_ids + ex.target_ids if t >= len(run.tokenizer))
    assert not find(run.model).table.known[list(NEW)].any()  # no collaborative token for a new item
    windows = training_windows(split.train, max_len=4)
    assert not np.isin(windows, [i + 1 for i in NEW]).any()  # SASRec's rows are item + 1
    assert not item_popularity(split, len(TITLES))[list(NEW)].any()  # Pop
    assert not item_features(ds, split).popularity[list(NEW)].any()  # the reranker's novelty


def eval_argv(data, model_dir, out, *more: str) -> list[str]:
    """`m6gen eval` on the tiny world: 6 beams, a 2-epoch SASRec, no reranker or blend rows."""
    common = ["--beams", "6", "--sasrec-epochs", "2", "--weights", "", "--blend", "", "--no-progress"]
    return ["--data", str(data), "--model", str(model_dir), "--out", str(out), *common, *more]


def test_eval_reports_new_item_targets_with_content_peers(world_split, world, tmp_path):
    from m6gen.commands.eval import main

    data, _, _ = world_split
    _, model_dir = world
    argv = eval_argv(data, model_dir, tmp_path, "--new-items", "0.25", "--baselines", "Pop,SASRec,Content,TitleNN")
    assert main(argv) == 0
    rows = json.loads((tmp_path / "eval_test_new_items.json").read_text())
    assert {"Pop", "SASRec", "Content", "TitleNN", "m6gen beams (rank by logprob)"} <= set(rows)
    assert all(r["users"] == 2 for r in rows.values())  # u3 and u4
    assert next(tmp_path.glob("eval_test_new_items_vs_*.json")).is_file()
    table = json.loads((tmp_path / "eval_test.json").read_text())
    assert {"Content", "TitleNN"} <= set(table)


def test_genre_year_content_scores_known_answers():
    from m6gen.baselines.content import embedding_scores, genre_matrix, genre_year_scores, rank

    genres = genre_matrix([["Drama"], ["Drama", "War"], ["War"], []])
    years = np.array([1990, 1995, np.nan, 1990.0])
    scores = genre_year_scores([[0]], genres, years)[0]
    # item 0: cosine 1 + 0.5 * e^0; item 1: 1/sqrt(2) + 0.5 * e^-0.5; item 2: 0 (no year); item 3: 0 + 0.5
    np.testing.assert_allclose(scores, [1.5, 2**-0.5 + 0.5 * np.exp(-0.5), 0.0, 0.5])
    assert rank(scores[None], [{0}], 3)[0].tolist() == [1, 3, 2]
    np.testing.assert_allclose(embedding_scores([[0, 1]], np.eye(3)), [[2**-0.5, 2**-0.5, 0]])


def test_newest_peer_ranks_the_latest_year_first_then_by_genre_match():
    from m6gen.baselines.content import genre_matrix, newest_scores, rank

    genres = genre_matrix([["Drama"], ["War"], ["Drama"], ["War"], ["Drama"]])
    years = np.array([1990, 1998, 1998, np.nan, 1995.0])
    scores = newest_scores([[0]], genres, years)
    # 1998 before 1995 before 1990 before unknown; within 1998 the Drama (the history's genre) first
    assert rank(scores, [{0}], 4)[0].tolist() == [2, 1, 4, 3]


def test_eval_on_new_item_users_only_tables_every_row_on_those_users(world_split, world, tmp_path):
    from m6gen.commands.eval import main

    data, _, _ = world_split
    _, model_dir = world
    argv = eval_argv(data, model_dir, tmp_path, "--baselines", "Pop,SASRec,Content")
    assert main([*argv, "--new-item-users"]) == 2  # needs --new-items
    assert main([*argv, "--new-items", "0.25", "--new-item-users"]) == 0
    cache = next(tmp_path.glob("beams_test-*.jsonl")).read_text().splitlines()
    assert sorted(json.loads(x)["user_id"] for x in cache) == ["u3", "u4"]
    both = json.loads((tmp_path / "eval_test.json").read_text())
    alone = json.loads((tmp_path / "eval_test_new_items.json").read_text())
    for row in ("Pop", "SASRec", "Content", "m6gen beams (rank by logprob)"):
        assert both[row]["NDCG@10"] == pytest.approx(alone[row]["NDCG@10"])  # the same two users

    # choosing on valid: on the users whose *valid* target is new (u4, u5), not the test ones
    assert main([*argv, "--new-items", "0.25", "--new-item-users", "--choose-on-valid"]) == 0
    cache = next(tmp_path.glob("beams_valid-*.jsonl")).read_text().splitlines()
    assert sorted(json.loads(x)["user_id"] for x in cache) == ["u4", "u5"]
    assert all(r["users"] == 2 for r in json.loads((tmp_path / "eval_valid_new_items.json").read_text()).values())


def test_a_sasrec_source_trained_with_the_new_items_is_refused(world_split, tiny_dirs, tmp_path):
    from m6gen.commands.baselines import main as baselines
    from m6gen.config import TrainError
    from m6gen.training.prepare import prepare_run

    data, _, _ = world_split
    common = ["--data", str(data), "--sasrec-epochs", "2", "--no-progress"]
    assert baselines([*common, "--out", str(tmp_path / "standard")]) == 0
    assert baselines([*common, "--out", str(tmp_path / "held-out"), "--new-items", "0.25"]) == 0
    config = dict(data=str(data), new_items=0.25, template="hybrid", max_history=3)
    with pytest.raises(TrainError, match="new items would leak"):
        prepare_run(tiny_config(tiny_dirs, tmp_path / "a", cf_source=str(tmp_path / "standard" / "sasrec"), **config))
    run = prepare_run(tiny_config(tiny_dirs, tmp_path / "b", cf_source=str(tmp_path / "held-out" / "sasrec"), **config))
    assert not run.model.get_base_model().get_input_embeddings().table.known[list(NEW)].any()


def test_cold_items_are_the_ones_no_training_interaction_names(world_split):
    from m6gen.data import cold_items

    _, ds, split = world_split
    assert cold_items(split, len(TITLES)).tolist() == sorted(NEW)
    # the standard split: item 7 is only ever a validation (u5) or test (u4) item
    assert cold_items(leave_one_out(build_histories(ds)), len(TITLES)).tolist() == [7]


def test_cold_only_eval_ranks_only_cold_items_in_every_row_and_keeps_the_usual_tables(world_split, world, tmp_path):
    from m6gen.commands.eval import main

    data, _, _ = world_split
    _, model_dir = world
    argv = eval_argv(data, model_dir, tmp_path, "--new-items", "0.25", "--baselines", "Pop,SASRec,Content,Newest")
    argv += ["--decode-prior", "Newest", "--decode-blend", "1", "--new-item-users"]
    assert main(argv) == 0
    usual = (tmp_path / "eval_test.json").read_text()
    (tmp_path / "eval_test_cold_new_items_vs_pop.json").write_text("{}")  # an earlier run's, against another peer
    assert main([*argv, "--cold-only"]) == 0
    versus = [p.name for p in tmp_path.glob("eval_test_cold_new_items_vs_*.json")]
    assert len(versus) == 1 and versus[0] != "eval_test_cold_new_items_vs_pop.json"  # Pop is not a peer here
    assert (tmp_path / "eval_test.json").read_text() == usual  # the cold tables are written apart
    caches = sorted(tmp_path.glob("beams_test-*-cold-*.jsonl"))
    assert len(caches) == 2  # the plain beams and the ones searched with Newest
    for cache in caches:
        for line in cache.read_text().splitlines():
            assert {int(b[0]) for b in json.loads(line)["beams"]} <= NEW
    rows = json.loads((tmp_path / "eval_test_cold.json").read_text())
    assert "Pop" not in rows  # no cold item has a count: Pop's order would be the catalog's
    assert {"SASRec", "Content", "Newest", "m6gen beams (rank by logprob)", "m6gen + Newest in decoding (w 1)"} <= set(
        rows
    )
    for name, row in rows.items():  # every list names the 2 cold items at most, of 8
        assert row["Coverage@10"] <= 2 / 8, name
    assert json.loads(usual)["Content"]["Coverage@10"] > 2 / 8  # unlike the whole catalog's
    new_rows = json.loads((tmp_path / "eval_test_cold_new_items.json").read_text())
    # both users' targets are cold and a history holds none: each two-item list holds the target
    assert all(r["HR@10"] == 1.0 for r in new_rows.values())


def test_the_data_summary_says_what_new_items_held_out(world_split):
    from m6gen.data import summary

    _, ds, split = world_split
    valid_new = sum(split.valid[u] in NEW for u in split.users)
    info = summary(ds, split)
    assert (info["new_items"], info["test_new_item_targets"]) == (2, len(new_item_users(split))) == (2, 2)
    assert info["valid_new_item_targets"] == valid_new == 2
    assert "new_items" not in summary(ds, leave_one_out(build_histories(ds)))  # the standard split: no such rows


def test_no_best_peer_is_named_when_every_peer_scores_zero(tmp_path, capsys):
    """Every peer at 0 on the new-item users once made the first listed (SASRec) "the best peer"."""
    from m6gen.commands.eval_new_items import report_new_items

    new = np.array([True, True, False])
    per_user = {"SASRec": np.zeros(3), "Newest": np.zeros(3), "m6gen beams": np.array([1.0, 0.0, 0.0])}
    hits = {r: (v > 0).astype(float) for r, v in per_user.items()}
    report_new_items(tmp_path, "test", new, per_user, hits)
    assert "no peer ranks a new item" in capsys.readouterr().out
    assert not list(tmp_path.glob("eval_test_new_items_vs_*"))
    per_user["Newest"] = np.array([0.5, 0.0, 0.0])
    report_new_items(tmp_path, "test", new, per_user, {r: (v > 0).astype(float) for r, v in per_user.items()})
    assert [p.name for p in tmp_path.glob("eval_test_new_items_vs_*.json")] == ["eval_test_new_items_vs_newest.json"]
