"""m6gen eval end to end on a tiny world: every row present, files written, beams cached."""

import json
import shutil

import numpy as np
import pytest

from m6gen.commands import eval as eval_command
from m6gen.commands.common import UsageError, parse
from m6gen.commands.eval import main, parse_weights, run
from m6gen.config import ConfigError
from m6gen.data import build_histories, leave_one_out, load_dataset


def eval_args(argv):
    """The options as `m6gen eval` parses them (to call ``run`` directly and see its exception)."""
    return parse(eval_command.GROUPS, "m6gen eval", "", argv)


def test_eval_writes_table_plot_and_caches_beams(world, tmp_path):
    data, model_dir = world
    argv = [
        "--data",
        str(data),
        "--model",
        str(model_dir),
        "--beams",
        "6",
        "--split",
        "valid",
        "--out",
        str(tmp_path),
        "--baselines",
        "Pop,SASRec,EASE",
        "--sasrec-epochs",
        "2",
        "--weights",
        "0.5,0;0,0.5",
        "--no-progress",
    ]
    assert main(argv) == 0
    rows = json.loads((tmp_path / "eval_valid.json").read_text())
    assert {
        "Pop",
        "SASRec",
        "EASE",
        "m6gen beams (rank by logprob)",
        "m6gen beams (rank by catalog)",
        "m6gen reranked (div 0.5, nov 0)",
        "m6gen reranked (div 0, nov 0.5)",
        "m6gen beams + SASRec blend (w 1)",
    } <= set(rows)
    assert (tmp_path / "baselines" / "sasrec" / "sasrec.json").is_file()
    assert (tmp_path / "baselines" / "ease" / "ease.npy").is_file()
    for metrics in rows.values():
        assert 0.0 <= metrics["NDCG@10"] <= metrics["HR@10"] <= 1.0
    assert (tmp_path / "tradeoff_valid.png").stat().st_size > 0
    by_popularity = json.loads((tmp_path / "eval_valid_by_popularity.json").read_text())
    for name, metrics in rows.items():  # the groups split the same users: their weighted mean is the table's
        groups = [v for r, v in by_popularity.items() if r.endswith(f": {name}")]
        assert len(groups) >= 2 and sum(g["users"] for g in groups) == 6
        assert sum(g["users"] * g["NDCG@10"] for g in groups) / 6 == pytest.approx(metrics["NDCG@10"])
    versus = json.loads((tmp_path / "eval_valid_vs_sasrec.json").read_text())
    assert "SASRec" not in versus and set(versus) == set(rows) - {"SASRec"}  # Pop too: its ratio on the same users
    for name, v in versus.items():  # the ratio is the table's own NDCG@10s, inside its interval
        if rows["SASRec"]["NDCG@10"] > 0:
            assert v["ratio"] == pytest.approx(rows[name]["NDCG@10"] / rows["SASRec"]["NDCG@10"])
            assert v["ratio_low"] <= v["ratio"] + 1e-12 and v["ratio"] <= v["ratio_high"] + 1e-12
        assert v["diff"] == pytest.approx(rows[name]["NDCG@10"] - rows["SASRec"]["NDCG@10"])
    cache = next(tmp_path.glob("beams_valid-*.jsonl"))
    lines = cache.read_text().splitlines()
    assert len(lines) == 6 and all(len(json.loads(x)["beams"]) == 6 for x in lines)
    # a second run reuses the cache: same beams, no duplicate users
    assert main(argv[:-5] + ["--baselines", "", "--no-progress"]) == 0
    assert cache.read_text().splitlines() == lines


def test_another_model_never_reuses_the_beam_cache(world, tmp_path):
    """Beams are cached per model: a different model evaluated into the same folder generates its own."""
    from helpers import save_tiny_model

    data, model_dir = world
    other = save_tiny_model(tmp_path / "other-model", seed=1)
    out = tmp_path / "eval"
    argv = [
        "--data",
        str(data),
        "--beams",
        "6",
        "--split",
        "valid",
        "--out",
        str(out),
        "--baselines",
        "",
        "--weights",
        "",
        "--no-progress",
    ]
    assert main([*argv, "--model", str(model_dir)]) == 0
    first = json.loads((out / "eval_valid.json").read_text())
    assert main([*argv, "--model", str(other)]) == 0
    second = json.loads((out / "eval_valid.json").read_text())
    caches = sorted(out.glob("beams_valid-*.jsonl"))
    assert len(caches) == 2 and all(len(c.read_text().splitlines()) == 6 for c in caches)
    assert all("-auto" not in c.name and ("-float32-" in c.name or "-bfloat16-" in c.name) for c in caches)
    assert first != second  # different weights, different beams (the old cache name gave identical tables)
    # the same model on other data (items in another order: other indices) never reads those beams either
    reordered = tmp_path / "reordered"
    reordered.mkdir()
    (reordered / "items.jsonl").write_text(
        "".join(reversed((data / "items.jsonl").read_text().splitlines(keepends=True)))
    )
    (reordered / "interactions.csv").write_text((data / "interactions.csv").read_text())
    assert main([*argv[:1], str(reordered), *argv[2:], "--model", str(other)]) == 0
    assert len(list(out.glob("beams_valid-*.jsonl"))) == 3


def test_sasrec_in_decoding_rows(world, tmp_path):
    """--decode-blend searches with SASRec's log-probs; a huge weight makes the beams SASRec's own top items."""
    data, model_dir = world
    argv = [
        "--data",
        str(data),
        "--model",
        str(model_dir),
        "--beams",
        "6",
        "--split",
        "valid",
        "--out",
        str(tmp_path),
        "--baselines",
        "SASRec",
        "--sasrec-epochs",
        "2",
        "--weights",
        "",
        "--blend",
        "",
        "--decode-blend",
        "0.5,10000",
        "--no-progress",
    ]
    assert main(argv) == 0
    rows = json.loads((tmp_path / "eval_valid.json").read_text())
    assert {"m6gen + SASRec in decoding (w 0.5)", "m6gen + SASRec in decoding (w 10000)"} <= set(rows)
    for k in ("HR@5", "NDCG@5"):  # 6 beams: the top 5 must be SASRec's top 5
        assert rows["m6gen + SASRec in decoding (w 10000)"][k] == pytest.approx(rows["SASRec"][k])
    beams = [
        json.loads(x)["beams"] for x in next(tmp_path.glob("beams_valid-*-sasrec0.5.jsonl")).read_text().splitlines()
    ]
    assert all(len(b) == 6 and all(len(x) == 5 and x[4] < 0 for x in b) for b in beams)
    # each searched decoding is also ranked by the other two scores (+ w * prior), for --choose-on-valid to pick
    split = leave_one_out(build_histories(load_dataset(world[0])))
    records = [json.loads(x) for x in next(tmp_path.glob("beams_valid-*-sasrec0.5.jsonl")).read_text().splitlines()]
    for by, col in (("normalized", 2), ("catalog", 3)):
        order = [[int(b[0]) for b in sorted(r["beams"], key=lambda b: -(b[col] + 0.5 * b[4]))] for r in records]
        targets = [split.valid[r["user_id"]] for r in records]
        ranks = [o.index(t) if t in o else 99 for t, o in zip(targets, order)]
        ndcg = np.mean([1 / np.log2(rank + 2) if rank < 5 else 0.0 for rank in ranks])
        assert rows[f"m6gen + SASRec in decoding (w 0.5, rank by {by})"]["NDCG@5"] == pytest.approx(ndcg)
        for k in ("HR@5", "NDCG@5"):  # a huge weight: SASRec's order whatever the score
            assert rows[f"m6gen + SASRec in decoding (w 10000, rank by {by})"][k] == pytest.approx(rows["SASRec"][k])
    with pytest.raises(UsageError, match="decode-blend with the SASRec prior needs the SASRec baseline"):
        run(eval_args([*argv[:-7], "--baselines", "Pop", "--weights", "", "--decode-blend", "1"]))


def test_a_content_peer_as_the_prior_in_decoding(world, tmp_path):
    """--decode-prior Newest: a huge weight makes the beams the Newest peer's own top items, no SASRec needed."""
    data, model_dir = world
    argv = ["--data", str(data), "--model", str(model_dir), "--beams", "6", "--split", "valid"]
    argv += ["--out", str(tmp_path), "--baselines", "Newest", "--weights", "", "--blend", "", "--no-progress"]
    assert main([*argv, "--decode-blend", "10000", "--decode-prior", "Newest"]) == 0
    rows = json.loads((tmp_path / "eval_valid.json").read_text())
    for k in ("HR@5", "NDCG@5"):
        assert rows["m6gen + Newest in decoding (w 10000)"][k] == pytest.approx(rows["Newest"][k])
    assert next(tmp_path.glob("beams_valid-*-newest10000.jsonl")).is_file()


def test_bad_weights():
    assert parse_weights("0.1,0;0,0.2") == [(0.1, 0.0), (0.0, 0.2)]
    with pytest.raises(ConfigError, match="weights: expected 'diversity,novelty' pairs"):
        parse_weights("0.1")
    assert main(["--weights", "0.1"]) == 2  # checked with the options, before any data or model loads


def test_a_tie_on_validation_is_named_not_passed_off_as_a_choice(capsys):
    from m6gen.commands.eval_rows import choose_row, tied_rows

    rows = {"Pop": {"NDCG@10": 0.5}, "m6gen a": {"NDCG@10": 0.0}, "m6gen b": {"NDCG@10": 0.0}}
    assert choose_row(rows) == "m6gen a" and tied_rows(rows, "m6gen a") == ["m6gen b"]
    rows["m6gen b"]["NDCG@10"] = 0.1
    assert choose_row(rows) == "m6gen b" and tied_rows(rows, "m6gen b") == []


def test_choose_on_valid_adds_the_validation_pick_to_the_test_table(world, tmp_path):
    data, model_dir = world
    argv = [
        "--data",
        str(data),
        "--model",
        str(model_dir),
        "--beams",
        "6",
        "--out",
        str(tmp_path),
        "--baselines",
        "SASRec",
        "--sasrec-epochs",
        "2",
        "--weights",
        "0.5,0;0,0.5",
        "--blend",
        "1,100",
        "--choose-on-valid",
        "--no-progress",
    ]
    assert main(argv) == 0
    valid = json.loads((tmp_path / "eval_valid.json").read_text())
    test = json.loads((tmp_path / "eval_test.json").read_text())
    m6gen_rows = [r for r in valid if r.startswith("m6gen")]
    best = max(m6gen_rows, key=lambda r: valid[r]["NDCG@10"])  # first of equals, as the command picks
    config = json.loads((tmp_path / "eval_test_config.json").read_text())
    tied = [r for r in m6gen_rows if r != best and valid[r]["NDCG@10"] == valid[best]["NDCG@10"]]
    assert config["chosen_on_valid"] == {"row": best, "valid_NDCG@10": valid[best]["NDCG@10"], "tied_with": tied}
    # what the options became, and the validation tables' own config beside them
    assert config["dtype"] == "auto" and config["resolved"]["dtype"] in ("float32", "bfloat16")
    assert config["resolved"]["template"] == "titles" and config["resolved"]["n_users"] == 6
    assert json.loads((tmp_path / "eval_valid_config.json").read_text())["split"] == "valid"
    label = f"m6gen, chosen on valid: {best.removeprefix('m6gen ')}"
    assert label not in valid and test[label] == test[best]  # the test row is the test score of the valid pick
    assert set(test) == set(valid) | {label}
    assert label in json.loads((tmp_path / "eval_test_vs_sasrec.json").read_text())
    assert len(list(tmp_path.glob("beams_valid-*.jsonl"))) == len(list(tmp_path.glob("beams_test-*.jsonl"))) == 1
    with pytest.raises(UsageError, match="use it with --split test"):
        run(eval_args([*argv, "--split", "valid"]))


def test_peers_use_the_same_data_options(world, tmp_path):
    """--min-history (and the other data options) shape the peers' split too: the same users for every row."""
    _, model_dir = world
    data = tmp_path / "data"
    data.mkdir()
    (data / "items.jsonl").write_text(
        "".join(
            json.dumps({"item_id": str(i), "title": t}) + "\n"
            for i, t in enumerate(["Heat", "Alien", "Fargo", "Casino", "Amélie", "Aliens"])
        )
    )
    rows = ["user_id,item_id,timestamp"] + [
        f"u{u},{(u + s) % 6},{s}" for u in range(6) for s in range(3 if u < 2 else 5)
    ]
    (data / "interactions.csv").write_text("\n".join(rows) + "\n")
    argv = [
        "--data",
        str(data),
        "--model",
        str(model_dir),
        "--beams",
        "4",
        "--split",
        "valid",
        "--out",
        str(tmp_path / "e"),
        "--baselines",
        "Pop,SASRec",
        "--sasrec-epochs",
        "1",
        "--weights",
        "",
        "--blend",
        "",
        "--min-history",
        "4",
        "--no-progress",
    ]
    assert main(argv) == 0
    assert json.loads((tmp_path / "e" / "baselines" / "baselines.json").read_text())["users_evaluated"] == 4


def test_a_saved_sasrec_is_reused_only_on_the_same_train_items(tmp_path, capsys):
    """A rerun reuses the folder's SASRec, and so its beam cache, and says which; other data trains SASRec
    again."""
    from helpers import save_tiny_model, write_world_data

    def world(name, shift):  # user u's step s is item u * shift + s: other shifts, other training interactions
        return write_world_data(tmp_path / name, shift=shift)

    model = save_tiny_model(tmp_path / "model")
    out = tmp_path / "out"
    argv = [
        "--model",
        str(model),
        "--out",
        str(out),
        "--beams",
        "3",
        "--baselines",
        "SASRec",
        "--blend",
        "",
        "--weights",
        "",
        "--no-progress",
    ]
    assert main(["--data", str(world("a", 1)), *argv]) == 0
    assert f"SASRec: training it on these interactions, then saving it in {out / 'baselines' / 'sasrec'}" in (
        capsys.readouterr().out
    )  # said even under --no-progress: it takes minutes
    caches = sorted(out.glob("beams_*.jsonl"))
    stamp = (out / "baselines" / "sasrec" / "sasrec.json").stat().st_mtime_ns
    assert main(["--data", str(tmp_path / "a"), *argv]) == 0
    assert f"SASRec: {out / 'baselines' / 'sasrec'} (trained on these interactions with these settings; reused)" in (
        capsys.readouterr().out
    )
    assert sorted(out.glob("beams_*.jsonl")) == caches  # the same SASRec, not saved again: the cache is reused
    assert (out / "baselines" / "sasrec" / "sasrec.json").stat().st_mtime_ns == stamp
    capsys.readouterr()
    assert main(["--data", str(world("b", 2)), *argv]) == 0
    assert "was trained on other data; training SASRec again" in capsys.readouterr().err


def test_sasrec_from_a_saved_folder_is_used_and_checked(tmp_path, capsys):
    """--sasrec-from DIR: the saved SASRec is the peer (no training, no copy in the output folder), and the
    same SASRec's rows match an eval that trained it; one trained on other interactions is refused in one line."""
    from helpers import save_tiny_model, write_world_data

    model = save_tiny_model(tmp_path / "model")
    data = write_world_data(tmp_path / "a", shift=1)
    argv = ["--data", str(data), "--model", str(model), "--beams", "3", "--baselines", "SASRec"]
    argv += ["--blend", "", "--weights", "", "--decode-blend", "1", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "trained")]) == 0
    saved = tmp_path / "trained" / "baselines" / "sasrec"
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "given"), "--sasrec-from", str(saved)]) == 0
    out = capsys.readouterr().out
    assert f"SASRec: {saved} (--sasrec-from; trained on these interactions)" in out and "training it" not in out
    assert not (tmp_path / "given" / "baselines" / "sasrec").exists()
    trained, given = (json.loads((tmp_path / d / "eval_test.json").read_text()) for d in ("trained", "given"))
    assert set(given) == set(trained)
    for row in trained:  # SASRec's row and the rows searched with its prior
        assert given[row] == pytest.approx(trained[row]), row
    names = lambda d: sorted(p.name for p in (tmp_path / d).glob("beams_*.jsonl"))  # noqa: E731
    assert names("given") == names("trained") and any("-sasrec1" in n for n in names("given"))

    other = write_world_data(tmp_path / "b", shift=2)  # other training interactions
    capsys.readouterr()
    assert main([*argv[2:], "--data", str(other), "--out", str(tmp_path / "x"), "--sasrec-from", str(saved)]) == 2
    err = capsys.readouterr().err
    assert "note: --beams 3: m6gen's lists hold 3 items, so its rows' metrics at 5, 10, 20 count those 3" in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--sasrec-from" in errors[0] and "trained on other interactions" in errors[0]
    (tmp_path / "bare").mkdir()  # a SASRec with no record of its training interactions
    shutil.copytree(saved, tmp_path / "bare" / "sasrec")
    assert main([*argv, "--out", str(tmp_path / "y"), "--sasrec-from", str(tmp_path / "bare" / "sasrec")]) == 2
    assert "no record of what it was trained on" in capsys.readouterr().err
    assert main([*argv, "--baselines", "Pop", "--out", str(tmp_path / "z"), "--sasrec-from", str(saved)]) == 2
    assert "keep SASRec in --baselines" in capsys.readouterr().err


def test_two_processes_share_the_decoding_and_give_the_tables_of_one(world, tmp_path):
    """torchrun --nproc_per_node 2 -m m6gen eval: each process decodes every other user into its own shard
    of the beam cache, the main one merges them and scores; the tables are those of one process."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    data, model_dir = world
    argv = ["--data", str(data), "--model", str(model_dir), "--beams", "6", "--choose-on-valid", "--threads", "1"]
    argv += ["--baselines", "Pop,SASRec", "--sasrec-epochs", "2", "--decode-blend", "1", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "one")]) == 0
    shutil.copytree(tmp_path / "one" / "baselines", tmp_path / "two" / "baselines")  # the same SASRec, reused
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    two = subprocess.run(
        [*torchrun, "-m", "m6gen", "eval", *argv, "--out", str(tmp_path / "two")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr[-2000:]
    for name in ("eval_valid.json", "eval_test.json"):
        a, b = (json.loads((tmp_path / d / name).read_text()) for d in ("one", "two"))
        assert set(a) == set(b) and any(r.startswith("m6gen + SASRec in decoding") for r in a)
        for row in a:
            assert a[row] == pytest.approx(b[row], abs=1e-9), row
    for cache in (tmp_path / "one").glob("beams_*.jsonl"):
        merged = (tmp_path / "two" / cache.name).read_text().splitlines()
        assert sorted(json.loads(x)["user_id"] for x in merged) == sorted(
            json.loads(x)["user_id"] for x in cache.read_text().splitlines()
        )
    assert not list((tmp_path / "two").glob("*.shard*"))


def test_merging_beam_shards_after_a_kill_loses_and_repeats_nothing(tmp_path):
    """A kill can leave a cut last line in the cache, or a shard already appended but not deleted."""
    from m6gen.commands.beam_cache import merge_shards

    line = lambda u: json.dumps({"user_id": u, "beams": [[1, -1.0, -1.0, -1.0, 0.0]]}) + "\n"  # noqa: E731
    cache = tmp_path / "beams_valid-t[1]-x.jsonl"  # a template name with glob characters
    cache.write_text(line("u0") + line("u1")[:10])  # killed while appending u1
    (tmp_path / f"{cache.name}.shard0of2").write_text(line("u1") + line("u2"))
    (tmp_path / f"{cache.name}.shard1of2").write_text(line("u0") + line("u3") + line("u4")[:7])
    merge_shards(cache)
    users = [json.loads(x)["user_id"] for x in cache.read_text().splitlines()]
    assert sorted(users) == ["u0", "u1", "u2", "u3"]  # u0 once, u1 whole, u4's cut line left to decode again
    assert not list(tmp_path.glob("*.shard*"))


def test_a_copied_sasrec_keeps_the_beam_caches_and_a_retrained_one_renews_only_its_prior_rows(world, tmp_path):
    """The plain beams do not depend on SASRec at all; the beams searched with its prior are named
    by the SASRec's content, so copying the folder (new modification times) keeps every cache."""
    import shutil

    data, model_dir = world
    out = tmp_path / "out"
    argv = ["--data", str(data), "--model", str(model_dir), "--beams", "4", "--split", "valid", "--out", str(out)]
    argv += ["--baselines", "SASRec", "--sasrec-epochs", "2", "--blend", "", "--weights", "", "--no-progress"]
    argv += ["--decode-blend", "1"]
    assert main(argv) == 0
    first = sorted(p.name for p in out.glob("beams_*.jsonl"))
    assert len(first) == 2
    saved = out / "baselines" / "sasrec"
    shutil.copytree(saved, tmp_path / "copy")
    shutil.rmtree(saved)
    shutil.copytree(tmp_path / "copy", saved, copy_function=shutil.copy)  # the same SASRec, new modification times
    assert main(argv) == 0
    assert sorted(p.name for p in out.glob("beams_*.jsonl")) == first
    assert main([*argv, "--sasrec-epochs", "3"]) == 0  # another SASRec: its prior's beams are searched again
    after = sorted(p.name for p in out.glob("beams_*.jsonl"))
    plain = [n for n in first if not n.endswith("-sasrec1.jsonl")]
    assert len(after) == 3 and set(first) <= set(after) and [n for n in after if n not in first][0] not in plain


def test_tables_written_into_the_model_folder_keep_its_beam_caches(world, tmp_path):
    """An eval writes its tables (.csv among them) next to the model by default: the next eval must
    still find the beams, as only the model's own files name them."""
    import shutil

    data, model_dir = world
    run_dir = tmp_path / "run"
    shutil.copytree(model_dir, run_dir)
    argv = ["--data", str(data), "--model", str(run_dir), "--beams", "4", "--split", "valid", "--out", str(run_dir)]
    argv += ["--baselines", "", "--blend", "", "--weights", "", "--no-progress"]
    assert main(argv) == 0
    first = sorted(p.name for p in run_dir.glob("beams_*.jsonl"))
    assert len(first) == 1 and (run_dir / "eval_valid.csv").is_file()
    assert main(argv) == 0
    assert sorted(p.name for p in run_dir.glob("beams_*.jsonl")) == first
    (run_dir / "config.json").write_text((run_dir / "config.json").read_text() + "\n")  # the model changed
    assert main(argv) == 0
    assert len(list(run_dir.glob("beams_*.jsonl"))) == 2


def test_the_popularity_table_compares_each_group_with_sasrec_on_its_own_users(tmp_path):
    from m6gen.commands.eval_report import report_by_popularity
    from m6gen.ranking.metrics import popularity_groups

    groups = popularity_groups(np.array([1, 2, 50, 60]), n_groups=2)  # rare: users 0, 1; popular: 2, 3
    per_user = {"SASRec": np.array([1.0, 0.0, 0.5, 0.5]), "m6gen x": np.array([0.0, 0.5, 1.0, 1.0])}
    hits = {"SASRec": np.array([1.0, 0.0, 1.0, 1.0]), "m6gen x": np.array([0.0, 1.0, 1.0, 1.0])}
    report_by_popularity(tmp_path, "test", groups, per_user, hits)
    table = json.loads((tmp_path / "eval_test_by_popularity.json").read_text())
    rare, popular = "target's training count 1-2", "target's training count 50-60"
    assert table[f"{rare}: SASRec"] == {"users": 2, "HR@10": 0.5, "NDCG@10": 0.5}
    assert table[f"{rare}: m6gen x"]["ratio"] == 0.5 and table[f"{popular}: m6gen x"]["ratio"] == 2.0
    assert table[f"{popular}: m6gen x"]["NDCG@10"] == 1.0 and table[f"{popular}: m6gen x"]["HR@10"] == 1.0
    # one group would only repeat the main table: nothing is written, and an earlier run's table goes
    report_by_popularity(tmp_path, "test", popularity_groups(np.full(4, 7)), per_user, hits)
    assert not list(tmp_path.glob("eval_test_by_popularity.*"))


def test_the_popularity_table_without_sasrec_promises_no_ratio(tmp_path, capsys):
    from m6gen.commands.eval_report import report_by_popularity
    from m6gen.ranking.metrics import popularity_groups

    groups = popularity_groups(np.array([1, 2, 50, 60]), n_groups=2)
    per_user = {"Pop": np.array([1.0, 0.0, 0.5, 0.5]), "m6gen x": np.array([0.0, 0.5, 1.0, 1.0])}
    report_by_popularity(tmp_path, "test", groups, per_user, {r: (v > 0).astype(float) for r, v in per_user.items()})
    out = capsys.readouterr().out
    assert "against SASRec" not in out and "ratio" not in out  # once: a ratio clause over columns of "-"


def test_the_popularity_groups_are_the_evaluated_users_by_their_own_targets(world, tmp_path, monkeypatch):
    from m6gen.commands import eval_run
    from m6gen.data import item_popularity
    from m6gen.ranking.metrics import popularity_groups

    seen = []
    monkeypatch.setattr(eval_run, "report_by_popularity", lambda *a: seen.append(a))
    data, model_dir = world
    argv = ["--data", str(data), "--model", str(model_dir), "--beams", "4", "--split", "test", "--out", str(tmp_path)]
    assert main([*argv, "--baselines", "Pop", "--weights", "", "--blend", "", "--no-progress"]) == 0
    ds = load_dataset(data)
    split = leave_one_out(build_histories(ds))
    targets = np.array([split.test[u] for u in split.users])  # the test split's, in the evaluated users' order
    expected = popularity_groups(item_popularity(split, len(ds.catalog))[targets])
    (_, name, groups, per_user, hits) = seen[0]
    assert name == "test" and [g.label for g in groups] == [g.label for g in expected]
    assert [g.users.tolist() for g in groups] == [g.users.tolist() for g in expected]
    assert all(len(v) == len(split.users) for v in [*per_user.values(), *hits.values()])


def test_option_errors_write_nothing(world, tmp_path):
    """Once the SASRec-prior check came after the peers' tables were written; a bad template left an empty folder."""
    from m6gen.prompts import TemplateError

    data, model_dir = world
    out = tmp_path / "ev"
    base = ["--data", str(data), "--model", str(model_dir), "--split", "valid", "--out", str(out)]
    with pytest.raises(UsageError, match="SASRec prior needs the SASRec baseline"):
        run(eval_args([*base, "--baselines", "Pop", "--decode-prior", "SASRec", "--decode-blend", "1"]))
    assert not out.exists()
    with pytest.raises(TemplateError):
        run(eval_args([*base, "--template", "nosuch"]))
    assert not out.exists()


def test_the_beam_cache_is_named_by_the_models_contents_not_its_path_or_times(world, tmp_path):
    """A copied or touched run keeps its beam caches (copying one used to decode everything again);
    a weight file changed in place, with its size and modification time kept, renews them."""
    import os
    import shutil

    from m6gen.commands.beam_cache import cache_fingerprint

    data, model_dir = world
    template = tmp_path / "t.jinja"
    template.write_text("{{ history }}")
    before = cache_fingerprint(str(model_dir), template, data)
    copy = tmp_path / "elsewhere" / "copied-run"
    shutil.copytree(model_dir, copy)  # new path, new modification times
    assert cache_fingerprint(str(copy), template, data) == before
    (weights,) = [p for p in copy.iterdir() if p.suffix == ".safetensors"]
    stat = weights.stat()
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 1
    weights.write_bytes(bytes(raw))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert cache_fingerprint(str(copy), template, data) != before


def test_a_ratio_to_a_sasrec_scoring_zero_is_explained_not_left_a_bare_nan(tmp_path, capsys):
    from m6gen.commands.eval_report import report_by_popularity
    from m6gen.ranking.metrics import popularity_groups

    groups = popularity_groups(np.array([1, 2, 50, 60]), n_groups=2)
    per_user = {"SASRec": np.array([0.0, 0.0, 0.5, 0.5]), "m6gen x": np.array([0.0, 0.5, 1.0, 1.0])}
    hits = {name: (scores > 0).astype(float) for name, scores in per_user.items()}
    report_by_popularity(tmp_path, "test", groups, per_user, hits)
    out = capsys.readouterr().out
    assert "| nan |" in out and "nan: SASRec's NDCG@10 is 0 on those users" in out
    per_user["SASRec"] = np.array([0.5, 0.5, 0.5, 0.5])  # every ratio exists: no note
    report_by_popularity(tmp_path, "test", groups, per_user, hits)
    assert "nan:" not in capsys.readouterr().out
