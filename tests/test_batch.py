"""Batch recommendation lists: formats, resume after a kill, users files."""

import csv
import json

import numpy as np
import pytest
from helpers import write_world_data

from m6gen.commands.recommend import main, read_user_ids
from m6gen.outputs import UserListError, done_users


def run(world, out, *extra):
    data, model_dir = world
    return main(
        [
            "--data",
            str(data),
            "--model",
            str(model_dir),
            "--output",
            str(out),
            "--beams",
            "4",
            "--k",
            "3",
            "--batch-size",
            "4",
            "--no-progress",
            *extra,
        ]
    )


def test_jsonl_every_user_once_and_resume_after_kill(world, tmp_path):
    out = tmp_path / "recs.jsonl"
    assert run(world, out) == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    records = [json.loads(x) for x in lines]
    assert [r["user_id"] for r in records] == [f"u{i}" for i in range(6)]
    assert all(len(r["items"]) == 3 and r["filled"] for r in records)
    # a kill mid-write: two complete users and half of the third line
    out.write_text("\n".join(lines[:2]) + "\n" + lines[2][:20], encoding="utf-8")
    assert run(world, out) == 0
    again = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert [r["user_id"] for r in again] == [f"u{i}" for i in range(6)]
    # deterministic decoding: the same lists (scores may differ in the last digits with batching)
    assert [[i["item_id"] for i in r["items"]] for r in again] == [[i["item_id"] for i in r["items"]] for r in records]


def test_csv_resume_redoes_a_half_written_user(world, tmp_path):
    out = tmp_path / "recs.csv"
    assert run(world, out) == 0
    full = out.read_text(encoding="utf-8").splitlines()
    assert full[0].startswith("user_id,rank,item_id,title")
    out.write_text("\n".join(full[:5]) + "\n", encoding="utf-8")  # header, u0 x3, first row of u1
    assert done_users(out, k=3) == ["u0"]
    assert run(world, out) == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [(r["user_id"], r["rank"]) for r in rows] == [(f"u{i}", str(k)) for i in range(6) for k in (1, 2, 3)]
    assert {r["filled"] for r in rows} == {"true"}  # the JSONL's flag, on every row of the list
    out.write_text("\n".join(full[:7]) + "\n" + full[7][:9], encoding="utf-8")  # u0, u1 x3, cut inside u2's row
    assert done_users(out, k=3) == ["u0", "u1"]
    assert out.read_text(encoding="utf-8") == "\n".join(full[:7]) + "\n"


def test_a_file_of_another_k_is_not_resumed_even_without_its_record(world, tmp_path):
    """Once a file copied without its settings record was resumed with another --k: lists of 3 and 2 mixed."""
    from m6gen.outputs import settings_file

    for name in ("recs.jsonl", "recs.csv"):
        out = tmp_path / name
        assert run(world, out, "--max-users", "2") == 0  # k 3, filled
        settings_file(out).unlink()
        before = out.read_bytes()
        with pytest.raises(UserListError, match=r"a list of 3 items, written with another --k than this run's 2"):
            done_users(out, k=2)
        assert f"{out}:" in capsys_error(world, out, "--k", "2") and out.read_bytes() == before
        assert done_users(out, k=3) == ["u0", "u1"] and out.read_bytes() == before
    short = tmp_path / "short.jsonl"  # a list that could not be filled is shorter than k, and fine
    short.write_text(json.dumps({"user_id": "u0", "items": [{"item_id": "1"}], "filled": False}) + "\n")
    assert done_users(short, k=3) == ["u0"]
    short.write_text(json.dumps({"user_id": "u0", "items": [{"item_id": "1"}], "filled": True}) + "\n")
    with pytest.raises(UserListError, match="short.jsonl:1: a list of 1 items"):
        done_users(short, k=3)


def test_a_finished_file_is_left_alone_and_says_so(world, tmp_path, capsys, monkeypatch):
    out = tmp_path / "recs.jsonl"
    assert run(world, out) == 0
    assert capsys.readouterr().err.splitlines()[-1] == f"wrote 6 users to {out}"
    before = out.read_bytes()
    import m6gen.commands.common

    monkeypatch.setattr(
        m6gen.commands.common, "load_recommender", lambda *a: pytest.fail("loaded a model with nothing to do")
    )
    assert run(world, out) == 0
    assert out.read_bytes() == before
    assert capsys.readouterr().err.splitlines()[-1] == f"wrote 0 users to {out} (6 already there)"
    (tmp_path / "empty.txt").write_text("# nobody\n")
    assert "empty.txt: no user ids in it" in capsys_error(
        world, tmp_path / "x.jsonl", "--users-file", str(tmp_path / "empty.txt")
    )


def test_csv_resume_with_other_users_keeps_finished_ones(world, tmp_path):
    """A rerun for fewer users must not delete the complete rows of users it does not list."""
    out = tmp_path / "recs.csv"
    (tmp_path / "three.txt").write_text("u0\nu1\nu2\n")
    (tmp_path / "two.txt").write_text("u0\nu1\n")
    assert run(world, out, "--users-file", str(tmp_path / "three.txt")) == 0
    before = out.read_text(encoding="utf-8")
    assert run(world, out, "--users-file", str(tmp_path / "two.txt")) == 0
    assert out.read_text(encoding="utf-8") == before and before.count("\nu2,") == 3


@pytest.mark.parametrize(
    "content, message",
    [
        (b"a,b,c\n1,2,3\n", ":1: not an m6gen recommendations header"),
        (
            b"user_id,rank,item_id,title,score,accuracy,diversity,novelty,logprob,filled\nu0,1\n",
            ":2: not an m6gen recommendations row",
        ),
        (
            b"user_id,rank,item_id,title,score,accuracy,diversity,novelty,logprob,filled\nu0,1,1,A,1,1,1,1,1,yes\n",
            ":2: not an m6gen recommendations row",
        ),
        (
            b"user_id,rank,item_id,title,score,accuracy,diversity,novelty,logprob\nu0,1,1,A,1,1,1,1,1\n",
            ":1: written by an m6gen before 0.3 (no filled column)",
        ),
        (b"\xff\xfe\n", "not UTF-8 text"),
    ],
)
def test_foreign_output_file_is_refused_and_kept(world, tmp_path, content, message):
    for name in ("recs.csv", "recs.jsonl"):
        out = tmp_path / name
        out.write_bytes(content)
        err = capsys_error(world, out)
        assert message in err or name.endswith(".jsonl") and "not an m6gen" in err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert out.read_bytes() == content


def test_users_file(world, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("u3\n# comment\n\nu1\nu3\n")
    assert read_user_ids(ids, {"u1", "u3"}) == ["u3", "u1"]
    out = tmp_path / "some.jsonl"
    assert run(world, out, "--users-file", str(ids)) == 0
    assert [json.loads(x)["user_id"] for x in out.read_text().splitlines()] == ["u3", "u1"]


def test_users_named_on_the_command_line(world, tmp_path, capsys):
    """--users 196,186 names users as demo and prompts take them, without writing a file."""
    out = tmp_path / "named.jsonl"
    assert run(world, out, "--users", "u3,u1") == 0
    assert [json.loads(x)["user_id"] for x in out.read_text().splitlines()] == ["u3", "u1"]
    assert run(world, tmp_path / "x.jsonl", "--users", "u1,nobody") == 2
    assert "unknown user id 'nobody'" in capsys.readouterr().err
    ids = tmp_path / "ids.txt"
    ids.write_text("u1\n")
    assert run(world, tmp_path / "x.jsonl", "--users", "u1", "--users-file", str(ids)) == 2
    assert "not both" in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()


def test_bad_users_file_is_one_line_error(world, tmp_path, capsys):
    ids = tmp_path / "ids.txt"
    ids.write_text("u1\nnobody\n")
    with pytest.raises(UserListError, match=r"ids.txt:2: unknown user id 'nobody'"):
        read_user_ids(ids, {"u1"})
    ids.write_text("u1, u2\n")
    assert run(world, tmp_path / "x.jsonl", "--users-file", str(ids)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "ids.txt:1" in err[-1]
    assert run(world, tmp_path / "x.txt") == 2


def test_merge_shards_keeps_one_csv_header(tmp_path):
    from m6gen.outputs import merge_shards

    out = tmp_path / "recs.csv"
    shards = [tmp_path / "recs.shard0of2.csv", tmp_path / "recs.shard1of2.csv"]
    shards[0].write_text("user_id,rank\nu0,1\n")
    shards[1].write_text("user_id,rank\nu1,1\n")
    merge_shards(out, shards)
    assert out.read_text() == "user_id,rank\nu0,1\nu1,1\n"
    assert not any(s.exists() for s in shards)


def test_sasrec_prior_steers_recommendations(world, tmp_path):
    """--sasrec joins SASRec's log-probabilities to the search; a heavy weight returns SASRec's own top-k."""
    from m6gen.baselines.sasrec import SASRecConfig, fit
    from m6gen.data import build_histories, leave_one_out, load_dataset

    data, _ = world
    ds = load_dataset(data)
    split = leave_one_out(build_histories(ds))
    sasrec = fit(split, len(ds.catalog), SASRecConfig(epochs=2, hidden=16), valid=False, progress=False)
    sasrec.save(tmp_path / "sasrec")
    out = tmp_path / "recs.jsonl"
    assert run(world, out, "--sasrec", str(tmp_path / "sasrec"), "--sasrec-weight", "1000", "--beams", "6") == 0
    records = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    users = [r["user_id"] for r in records]
    histories = [split.train[u] + [split.valid[u], split.test[u]] for u in users]  # recommend reads whole histories
    expected = sasrec.recommend(histories, k=3)
    ids = [it.item_id for it in ds.catalog]
    assert [[i["item_id"] for i in r["items"]] for r in records] == [[ids[j] for j in e] for e in expected]
    # "logprob" is the language model's own, not the blended search score (about 1000 x SASRec's log-prob here):
    # the same items searched without SASRec, one at a time, score the same.
    from m6gen.recommender import RecommendConfig, Recommender

    rec = Recommender.from_pretrained(world[1], ds.catalog, RecommendConfig(beams=6, batch_size=1), device="cpu")
    for r, hist in zip(records, histories):
        for item in r["items"]:
            (alone,) = rec.generate([hist], allowed=[np.array([ids.index(item["item_id"])])])[0]
            assert item["logprob"] == pytest.approx(alone.logprob, abs=1e-4)
    assert "no saved SASRec" in capsys_error(world, tmp_path / "x.jsonl", "--sasrec", str(tmp_path))
    # from Python: generate() returns the beams recommend() reranks, the recommender's own prior included
    steered = Recommender.from_pretrained(
        world[1], ds.catalog, RecommendConfig(beams=6), device="cpu", sasrec=tmp_path / "sasrec", sasrec_weight=1000
    )
    assert [[h.item for h in b][:3] for b in steered.generate(histories)] == [list(e) for e in expected]
    plain = [[h.item for h in b] for b in steered.generate(histories, prior=None)]
    assert plain == [[h.item for h in b] for b in rec.generate(histories)]


def test_histories_must_hold_catalog_indices(world):
    """A raw data id, an index past the catalog or a negative one (which Python would read from the end) is named."""
    from m6gen.data import load_dataset
    from m6gen.recommender import RecommendConfig, Recommender

    ds = load_dataset(world[0])
    rec = Recommender.from_pretrained(world[1], ds.catalog, RecommendConfig(beams=2), device="cpu")
    for bad in (["3"], [1, 99], [-1]):
        with pytest.raises(ValueError, match=rf"history 1: {bad[-1]!r} is not a catalog index \(0..7\)"):
            rec.recommend([[0, 1], bad])


def test_python_api_inputs_found_by_a_new_user_are_named(world):
    """Each of these once failed deep inside (an IndexError in the trie, a numpy truth-value error, a
    message blaming the genres) or passed silently (a negative allowed index, True read as item 1)."""
    from m6gen.data import load_dataset
    from m6gen.ranking.rerank import ItemFeatures, RerankConfig
    from m6gen.recommender import RecommendConfig, Recommender

    ds = load_dataset(world[0])
    rec = Recommender.from_pretrained(world[1], ds.catalog, RecommendConfig(beams=2), device="cpu")
    for allowed in ([np.array([99])], [np.array([-5, 3])]):
        with pytest.raises(ValueError, match=r"allowed 0: -?\d+ is not a catalog index \(0..7\)"):
            rec.recommend([[1, 2]], RerankConfig(k=2), allowed=allowed)
    with pytest.raises(TypeError, match="histories: a 2-D array"):
        rec.recommend(np.array([[1, 2, 3]]), RerankConfig(k=2))
    with pytest.raises(ValueError, match="history 0: True is not a catalog index"):
        rec.recommend([[True, 2]], RerankConfig(k=2))
    with pytest.raises(TypeError, match=r"profiles\[0\]: expected a dict of profile fields, got str"):
        rec.recommend([[1, 2]], RerankConfig(k=2), profiles=["x"])
    with pytest.raises(ValueError, match="diversity must be a number from 0 to 1000, got '0.3'"):
        RerankConfig(diversity="0.3")
    with pytest.raises(ValueError, match="popularity has 5 entries, genres 8 items"):
        ItemFeatures.from_genres([["a"]] * 8, popularity=np.ones(5))
    with pytest.raises(ValueError, match="features: they cover 10 items, the catalog has 8"):
        Recommender.from_pretrained(
            world[1],
            ds.catalog,
            RecommendConfig(beams=2),
            device="cpu",
            features=ItemFeatures.from_genres([["a"]] * 10),
        )
    assert len(rec.recommend([list(np.array([1, 2]))], RerankConfig(k=2), allowed=[np.array([3, 4])])[0]) == 2


def test_misshapen_api_input_is_named_before_any_work(world):
    """One history without its list, a string, None, profiles of another count, a dict for a RerankConfig,
    a k the beams cannot fill and a catalog that is not one: each a message naming it, not a TypeError deep inside."""
    from m6gen.data import load_dataset
    from m6gen.ranking.rerank import RerankConfig
    from m6gen.recommender import RecommendConfig, Recommender

    ds = load_dataset(world[0])
    rec = Recommender.from_pretrained(world[1], ds.catalog, RecommendConfig(beams=2), device="cpu")
    with pytest.raises(TypeError, match=r"history 0: expected a list of catalog indices, got 0; for one user pass"):
        rec.recommend([0, 1])
    for bad in ("196", None):
        with pytest.raises(TypeError, match="histories: expected a list of histories"):
            rec.recommend(bad)
    with pytest.raises(TypeError, match="history 1: expected a list of catalog indices, got None"):
        rec.generate([[0], None])
    with pytest.raises(ValueError, match="profiles: 2 for 1 histories"):
        rec.recommend([[0, 1]], profiles=[{}, {}])
    with pytest.raises(TypeError, match="rerank_config: expected a RerankConfig, got dict"):
        rec.recommend([[0, 1]], {"k": 1})
    with pytest.raises(ValueError, match=r"k: 3 recommendations need at least as many beams \(config.beams=2\)"):
        rec.recommend([[0, 1]], RerankConfig(k=3))
    with pytest.raises(ValueError, match="beams must be an int >= 1, got '20'"):
        RecommendConfig(beams="20")
    with pytest.raises(TypeError, match="catalog: expected an m6gen Catalog"):
        Recommender.from_pretrained(world[1], None)
    assert len(rec.recommend([[0, 1]], RerankConfig(k=2))[0].items) == 2  # within the beams: still served


def capsys_error(world, out, *extra) -> str:
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert run(world, out, *extra) == 2
    return err.getvalue()


def test_appending_with_other_options_is_refused_and_the_file_kept(world, tmp_path):
    """A rerun with another --k (or model, template, weights...) would mix lists in one file, or skip every user."""
    for name in ("recs.jsonl", "recs.csv"):
        out = tmp_path / name
        assert run(world, out) == 0
        before = out.read_bytes()
        settings = json.loads((tmp_path / f"{name}.m6gen.json").read_text())
        assert settings["k"] == 3 and settings["beams"] == 4 and settings["template"] == "titles"
        err = capsys_error(world, out, "--k", "2")  # run() passes --k 3 first; the last flag wins
        assert f"{out}: written with other options (--k 3 there, 2 now); resume it with the same options" in err
        assert out.read_bytes() == before
        assert run(world, out) == 0 and out.read_bytes() == before  # the same options: nothing to do


def test_an_output_that_cannot_be_written_is_one_line_before_any_loading(world, tmp_path):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir.jsonl").mkdir()
    assert "adir.jsonl: --output is a folder" in capsys_error(world, tmp_path / "adir.jsonl")
    assert "cannot create its folder" in capsys_error(world, tmp_path / "afile" / "x.csv")
    # once ignored: the slash asked for a folder, and a file was written at outdir.jsonl
    assert "--output ends in a slash" in capsys_error(world, f"{tmp_path / 'outdir.jsonl'}/")
    assert not (tmp_path / "outdir.jsonl").exists()


def test_a_folder_as_users_file_says_so(tmp_path):
    with pytest.raises(UserListError, match="is a folder; give a users file"):  # once "does not exist"
        read_user_ids(tmp_path, {"u1"})


def test_settings_name_the_default_data_and_ignore_a_weight_without_sasrec():
    """Leaving --data out and naming the default folder are the same data; the SASRec weight without a
    SASRec changes nothing (and a weight other than the default is refused: test_cli's BAD_VALUES)."""
    from m6gen.commands import recommend
    from m6gen.commands.common import parse
    from m6gen.commands.recommend import settings_of
    from m6gen.data import default_data_dir

    def args(*argv):  # the options as `m6gen recommend` parses them
        return parse(recommend.GROUPS, "m6gen recommend", "", list(argv))

    a = args("--output", "x.jsonl", "--sasrec-weight", "1")
    b = args("--output", "x.jsonl", "--data", str(default_data_dir(must_exist=False)))
    assert settings_of(a) == settings_of(b)
    assert settings_of(args("--output", "x.jsonl", "--k", "5"))["k"] == 5  # and it reads the options it is given


# ---------------------------------------------------------------------- issue #20 regressions
def test_a_users_file_with_a_byte_order_mark_is_read(world, tmp_path):
    """Windows editors save UTF-8 with a BOM; it is not part of the first id (it once made it '\\ufeffu3', unknown)."""
    ids = tmp_path / "ids.txt"
    ids.write_bytes("\ufeffu3\r\nu1\r\n".encode("utf-8"))
    assert ids.read_bytes().startswith(b"\xef\xbb\xbf")
    assert read_user_ids(ids, {"u1", "u3"}) == ["u3", "u1"]
    out = tmp_path / "bom.jsonl"
    assert run(world, out, "--users-file", str(ids)) == 0
    assert [json.loads(x)["user_id"] for x in out.read_text(encoding="utf-8").splitlines()] == ["u3", "u1"]


def test_max_users_keeps_the_first_users(world, tmp_path):
    out = tmp_path / "two.jsonl"
    assert run(world, out, "--max-users", "2") == 0
    assert [json.loads(x)["user_id"] for x in out.read_text(encoding="utf-8").splitlines()] == ["u0", "u1"]


@pytest.mark.parametrize("name", ["recs.jsonl", "recs.csv"])
def test_more_recommendations_than_beams_is_refused_in_one_line(world, tmp_path, name):
    """--k 30 --beams 5 once wrote lists of at most 5 items (marked unfilled) and exited 0."""
    out = tmp_path / name
    err = capsys_error(world, out, "--k", "30", "--beams", "5")
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    assert "k: 30" in err and "--beams 5" in err
    assert not out.exists() and not (tmp_path / f"{name}.m6gen.json").exists()


@pytest.mark.parametrize("name", ["recs.jsonl", "recs.csv"])
def test_no_user_left_is_an_error_not_an_empty_file(world, tmp_path, name):
    """Every world user has 4 interactions: with --min-history 5 none is left. This once exited 0, "wrote 0 users"
    (and for CSV left a file holding only the header)."""
    out = tmp_path / name
    err = capsys_error(world, out, "--min-history", "5")
    assert err.count("\n") == 1 and err.startswith("error: no user left to recommend for")
    assert "--min-history 5" in err  # says why
    assert not out.exists() and not (tmp_path / f"{name}.m6gen.json").exists()


def test_generate_batches_by_prompt_length_and_answers_in_the_order_given(world):
    """Users are decoded sorted by prompt length; each gets its own beams, allowed items and prior row back."""
    from m6gen.data import load_dataset
    from m6gen.recommender import RecommendConfig, Recommender

    ds = load_dataset(world[0])
    rec = Recommender.from_pretrained(world[1], ds.catalog, RecommendConfig(beams=4, batch_size=2), device="cpu")
    histories = [[0, 1, 2, 3, 4], [5], [6, 7, 0], [1], [2, 3]]  # prompt lengths out of order
    allowed = [np.arange(len(ds.catalog)) for _ in histories]
    allowed[1] = np.array([2, 3])  # user 1 may only get items 2 and 3
    seen_by_prior = []

    favourite = {0: 7, 1: 3, 2: 3, 3: 5, 4: 6}  # an unseen, allowed item per user

    def prior(batch):  # strongly favours each user's own favourite: a row given to the wrong user shows
        seen_by_prior.extend(tuple(h) for h in batch)
        scores = np.full((len(batch), len(ds.catalog)), -20.0)
        for row, h in enumerate(batch):
            scores[row, favourite[histories.index(list(h))]] = 0.0
        return scores

    together = rec.generate(histories, allowed=allowed, prior=prior, prior_weight=1000.0)
    assert seen_by_prior != [tuple(h) for h in histories]  # the batches really were reordered
    one_by_one = RecommendConfig(beams=4, batch_size=1)
    single = Recommender.from_pretrained(world[1], ds.catalog, one_by_one, device="cpu")
    for hist, allow, got in zip(histories, allowed, together):
        (alone,) = single.generate([hist], allowed=[allow], prior=prior, prior_weight=1000.0)
        assert [h.item for h in got] == [h.item for h in alone]
        assert [h.logprob for h in got] == pytest.approx([h.logprob for h in alone], abs=1e-4)
    assert {h.item for h in together[1]} <= {2, 3}
    assert [b[0].item for b in together] == [favourite[u] for u in range(len(histories))]


def test_cold_only_recommends_only_items_no_shown_history_holds(world, tmp_path):
    """A shelf of new arrivals: with items 6 and 7 held out (--new-items), the train histories hold neither."""
    out = tmp_path / "shelf.jsonl"
    assert run(world, out, "--cold-only", "--new-items", "0.25", "--history", "valid", "--k", "2") == 0
    records = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 6
    for r in records:
        assert sorted(int(it["item_id"]) for it in r["items"]) == [6, 7]
    assert json.loads((tmp_path / "shelf.jsonl.m6gen.json").read_text())["cold_only"] is True
    # resuming without the option would mix shelves and usual lists in one file
    shelf = ("--new-items", "0.25", "--history", "valid", "--k", "2")
    assert "(--cold-only True there, None now)" in capsys_error(world, out, *shelf)
    assert "(--new-items 0.25 there, None now)" in capsys_error(world, out, "--cold-only", *shelf[2:])
    # every item trained (user u's items 2u..2u+3 mod 8): nothing is cold, said in one line before the model loads
    all_trained = (write_world_data(tmp_path / "all", shift=2), world[1])
    err = capsys_error(all_trained, tmp_path / "none.jsonl", "--cold-only")
    assert "--cold-only: every catalog item has a training interaction" in err and "Traceback" not in err


def test_a_user_with_nothing_to_recommend_keeps_a_csv_row_as_in_jsonl(tmp_path):
    """A user who had seen every item got no CSV row at all: 'wrote 2 users' with one user in the file."""
    from m6gen.outputs import format_records
    from m6gen.ranking.rerank import RerankResult

    class Item:
        item_id, title = "7", "Alpha"

    nothing = RerankResult(items=[], requested_k=3, n_candidates=0)
    for suffix in ("csv", "jsonl"):
        out = tmp_path / f"recs.{suffix}"
        text = format_records(["u1"], [nothing], [Item()], suffix)
        out.write_text(
            ("user_id,rank,item_id,title,score,accuracy,diversity,novelty,logprob,filled\n" if suffix == "csv" else "")
            + text
        )
        if suffix == "csv":
            rows = list(csv.DictReader(out.open()))
            assert rows == [dict.fromkeys(rows[0], "") | {"user_id": "u1", "rank": "0", "filled": "false"}]
            assert done_users(out, k=3) == []  # the last user of a CSV shorter than k is redone (it may be cut)
        else:
            assert json.loads(out.read_text()) == {"user_id": "u1", "items": [], "filled": False}
            assert done_users(out, k=3) == ["u1"]


def test_a_second_run_on_the_same_output_is_refused_while_the_first_writes(world, tmp_path):
    """Two runs on one --output once both appended every user (each user twice in the file)."""
    import fcntl

    out = tmp_path / "recs.jsonl"
    assert run(world, out, "--max-users", "2") == 0
    before = out.read_bytes()
    with open(out, "a") as first:  # what the first run holds while it writes
        fcntl.flock(first, fcntl.LOCK_EX | fcntl.LOCK_NB)
        err = capsys_error(world, out)
    assert f"{out}: another m6gen run is writing to it now" in err and err.count("\n") == 1
    assert out.read_bytes() == before
    assert run(world, out) == 0  # once it is free, the run resumes: every user once
    assert sorted(done_users(out)) == [f"u{u}" for u in range(6)]
    assert not (tmp_path / "never.jsonl").exists()
    assert capsys_error(world, tmp_path / "never.jsonl", "--min-history", "9")  # a run that fails leaves no file
    assert not (tmp_path / "never.jsonl").exists()


def test_resuming_on_changed_data_is_refused(world, tmp_path):
    """A resume after the data changed once appended lists made from other histories (and removed users)."""
    _, model_dir = world
    data = write_world_data(tmp_path / "data")
    out = tmp_path / "recs.jsonl"
    argv = ["--data", str(data), "--model", str(model_dir), "--output", str(out), "--beams", "4", "--k", "3"]
    assert main([*argv, "--max-users", "2", "--no-progress"]) == 0
    before = out.read_bytes()
    settings_path = tmp_path / "recs.jsonl.m6gen.json"
    rows = (data / "interactions.csv").read_text().splitlines()
    (data / "interactions.csv").write_text("\n".join(r for r in rows if not r.startswith("u1,")) + "\n")
    err = capsys_error((data, model_dir), out)
    assert "written with other options (the data's interactions or titles have changed since)" in err
    assert out.read_bytes() == before
    recorded = json.loads(settings_path.read_text())  # a record from before the fingerprint: not compared
    del recorded["interactions"]
    settings_path.write_text(json.dumps(recorded))
    assert main([*argv, "--no-progress"]) == 0
