"""m6gen tune-prompts: leaderboard over templates and history lengths; best recorded in a config."""

import numpy as np
import pytest
import yaml

from m6gen.commands import recommend, tune
from m6gen.commands.registry import all_groups
from m6gen.commands.tune import main
from m6gen.config import ConfigParser, DecodeArgs, PromptArgs, RerankArgs


def test_leaderboard_records_best_template_and_config_is_read_back(world, tmp_path, capsys, monkeypatch):
    data, model_dir = world
    real_score = tune.score_template
    known = {("titles", 2): 0.1, ("titles", 5): 0.2, ("titles_genres", 2): 0.4, ("titles_genres", 5): 0.3}

    def score(rec, *args, **kwargs):  # scored for real (the tiny random model ties at 0), then given known NDCGs
        row = real_score(rec, *args, **kwargs)
        ndcg = known[rec.config.template, rec.config.max_history]
        return {**row, "NDCG@4": ndcg, "per_user_NDCG": np.full(6, ndcg)}  # --beams 4: lists of 4

    monkeypatch.setattr(tune, "score_template", score)
    cfg = tmp_path / "m6gen.yaml"
    cfg.write_text("beams: 4\nk: 3\n")  # other keys are kept
    argv = [
        "--data",
        str(data),
        "--model",
        str(model_dir),
        "--beams",
        "4",
        "--template",
        "titles,titles_genres",
        "--history-lengths",
        "2,5",
        "--tune-users",
        "6",
        "--write-config",
        str(cfg),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("(history ") >= 4 and "\nbest: titles_genres with history 2" in out and "coverage@4" in out
    assert "NDCG@10" not in out  # lists of 4 beams are scored and labelled at 4
    saved = yaml.safe_load(cfg.read_text())
    assert saved["template"] == "titles_genres" and saved["max_history"] == 2
    assert saved["beams"] == 4 and saved["k"] == 3

    # the recorded choice is what --config gives every command; flags still win
    def parse(module, prog, argv):  # one instance per option group, by group
        return {type(g): g for g in ConfigParser(module.GROUPS, prog=prog, every_group=all_groups()).parse(argv)}

    assert parse(tune, "m6gen tune-prompts", ["--config", str(cfg)])[DecodeArgs].beams == 4
    args = parse(recommend, "m6gen recommend", ["--config", str(cfg), "--output", "x.jsonl", "--k", "7"])
    assert args[PromptArgs].template == saved["template"] and args[PromptArgs].max_history == saved["max_history"]
    assert args[DecodeArgs].beams == 4 and args[RerankArgs].k == 7


def test_short_training_per_template_leaves_no_run_folders(world, tmp_path, capsys, monkeypatch):
    """--train-steps: a short LoRA run per template (history packing where the template allows), folders removed."""
    import tempfile

    data, model_dir = world
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    argv = [
        "--data",
        str(data),
        "--model",
        str(model_dir),
        "--beams",
        "4",
        "--template",
        "titles,sequence",
        "--history-lengths",
        "3",
        "--tune-users",
        "4",
        "--train-steps",
        "2",
        "--write-config",
        "",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "titles (history 3)" in out and "sequence (history 3)" in out and "after 2 LoRA steps" in out
    assert "(history packing)" in out  # the sequence template's run packed whole blocks
    assert not list(tmp_path.glob("m6gen-tune-*"))


def test_score_template_known_answers():
    from types import SimpleNamespace

    from m6gen.commands.tune import score_template

    beam = lambda *items: [SimpleNamespace(item=i) for i in items]  # noqa: E731
    seen = []  # the profiles each call got: templates are scored on the prompts they are used with

    def generate(hs, profiles=None, progress=False):
        seen.append(profiles)
        return [beam(3, 1), beam(3, 2)]

    def prompts(hs, profiles=None):
        seen.append(profiles)
        return ["a b", "a b c d"]

    class Tokenizer:  # words as tokens, no BOS: what m6gen.model.encode_prompts reads of a tokenizer
        bos_token_id = None

        def __call__(self, texts, add_special_tokens=True):
            return {"input_ids": [t.split() for t in texts]}

    rec = SimpleNamespace(generate=generate, prompts=prompts, tokenizer=Tokenizer(), catalog=list(range(8)))
    users = [{"user_id": "u1", "age": "30"}, {"user_id": "u2", "age": ""}]
    row = score_template(rec, [[0], [0]], np.array([1, 5]), users)
    assert seen == [users, users]
    assert row["HR@10"] == pytest.approx(0.5)  # user 0 finds item 1 at rank 2
    assert row["NDCG@10"] == pytest.approx(0.5 / np.log2(3))
    assert row["coverage@10"] == pytest.approx(3 / 8)  # items 1, 2, 3 of 8
    assert row["prompt_tokens"] == pytest.approx(3.0)
    at_1 = score_template(rec, [[0], [0]], np.array([3, 5]), users, k=1)  # user 0's first item is its target
    assert at_1["HR@1"] == pytest.approx(0.5) and at_1["coverage@1"] == pytest.approx(1 / 8)


def test_own_template_folder_is_trained_recorded_and_checked_first(world, tmp_path, capsys, monkeypatch):
    """--templates reaches the short training runs and the written config; a wrong name fails before any scoring."""
    import tempfile

    data, model_dir = world
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "films.jinja").write_text(
        "{% block prompt %}Films:{% for it in history %} {{ it.title }};{% endfor %}"
        "\nNext:{% endblock %}{% block target %} {{ item.title }}{% endblock %}"
    )
    cfg = tmp_path / "best.yaml"
    argv = [
        "--data",
        str(data),
        "--model",
        str(model_dir),
        "--templates",
        str(folder),
        "--beams",
        "4",
        "--template",
        "films",
        "--history-lengths",
        "3,",
        "--tune-users",
        "2",
        "--train-steps",
        "1",
        "--no-progress",
        "--write-config",
        str(cfg),
    ]
    assert main(argv) == 0
    assert "films (history 3)" in capsys.readouterr().out
    assert yaml.safe_load(cfg.read_text()) == {
        "template": "films",
        "max_history": 3,
        "templates": str(folder.resolve()),
    }
    bad = [
        "--data",
        str(data),
        "--model",
        str(model_dir),
        "--template",
        "titles,nosuch",
        "--tune-users",
        "2",
        "--write-config",
        "",
    ]
    assert main(bad) == 2
    out, err = capsys.readouterr()
    assert "titles (history" not in out and "unknown template 'nosuch'" in err
    (folder / "typo.jinja").write_text(
        "{% block prompt %}{{ history[0].titel }}{% endblock %}{% block target %} {{ item.title }}{% endblock %}"
    )
    assert main([*bad[:4], "--templates", str(folder), "--template", "titles,typo", *bad[6:]]) == 2
    out, err = capsys.readouterr()  # found by rendering, before titles is scored
    assert "titles (history" not in out and "typo.jinja, line 1: UndefinedError" in err


def test_short_runs_train_collaborative_tokens_for_templates_that_place_them(world, tmp_path, capsys, monkeypatch):
    """--cf-source with --train-steps: the hybrid template's short run trains its projector (the scored model
    embeds the tokens); a template without tokens trains on titles; without --train-steps it is refused."""
    import m6gen.training.loop as loop
    from m6gen.hybrid import find

    data, model_dir = world
    source = tmp_path / "cf.npy"
    np.save(source, np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32))  # 8 world items
    sources, scored = {}, []
    real_train, real_score = loop.train, tune.score_template

    def train(cfg):
        sources[cfg.template] = cfg.cf_source
        return real_train(cfg)

    def score_template(rec, *args, **kwargs):
        scored.append(find(rec.model))
        return real_score(rec, *args, **kwargs)

    monkeypatch.setattr(loop, "train", train)
    monkeypatch.setattr(tune, "score_template", score_template)
    argv = ["--data", str(data), "--model", str(model_dir), "--beams", "4", "--template", "hybrid,titles"]
    argv += ["--history-lengths", "3", "--tune-users", "3", "--write-config", "", "--cf-source", str(source)]
    assert main([*argv, "--train-steps", "1"]) == 0
    assert sources == {"hybrid": str(source), "titles": None}
    assert scored[0] is not None and scored[1] is None  # hybrid first: its tokens go through the projector
    assert main(argv) == 2 and "--cf-source trains a projector" in capsys.readouterr().err


def test_a_tie_at_the_top_records_no_best(world, tmp_path, capsys, monkeypatch):
    """Once every template scored 0 on a few users, the first one scored was written to m6gen.yaml as 'best'."""
    data, model_dir = world
    cfg = tmp_path / "m6gen.yaml"
    cfg.write_text("beams: 4\n")
    zeros = {"NDCG@4": 0.0, "HR@4": 0.0, "coverage@4": 0.0, "prompt_tokens": 1, "seconds": 0.0}
    monkeypatch.setattr(tune, "score_template", lambda *a, **k: {**zeros, "per_user_NDCG": np.zeros(3)})
    argv = ["--data", str(data), "--model", str(model_dir), "--beams", "4", "--template", "titles,sequence"]
    assert main([*argv, "--history-lengths", "2", "--tune-users", "3", "--write-config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "no best: 2 of 2 tie at NDCG@4 0.0000 on 3 users" in out and "left as it was" in out
    assert "best: " not in out.replace("no best: ", "") and cfg.read_text() == "beams: 4\n"


def test_short_runs_show_no_library_deprecation_notes(world, tmp_path, monkeypatch):
    import tempfile
    import warnings

    data, model_dir = world
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    argv = ["--data", str(data), "--model", str(model_dir), "--beams", "4", "--template", "titles"]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        argv += ["--history-lengths", "3", "--tune-users", "2", "--train-steps", "1", "--write-config", ""]
        assert main(argv) == 0
    from_libraries = [w for w in seen if "/transformers/" in w.filename or "/peft/" in w.filename]
    assert not from_libraries, [str(w.message) for w in from_libraries]
