"""Regression tests for what a new user tripped over (issue #20), each named after the defect it pins."""

import json
import re

import numpy as np
import pytest

from m6gen.commands.tune import record_best, warn_if_within_noise
from m6gen.data import DataError, detect_format
from m6gen.prompts import TemplateLibrary


def write_plain(folder, n_users=4):
    folder.mkdir(parents=True, exist_ok=True)
    titles = ["Toy Story", "Alien", "Heat", "Fargo", "Casino"]
    (folder / "items.jsonl").write_text(
        "".join(json.dumps({"item_id": str(i), "title": t}) + "\n" for i, t in enumerate(titles)), encoding="utf-8"
    )
    rows = ["user_id,item_id,timestamp"] + [f"u{u},{(u + s) % 5},{s}" for u in range(n_users) for s in range(4)]
    (folder / "interactions.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def test_a_folder_with_two_formats_is_an_error_not_a_silent_choice(tmp_path):
    folder = write_plain(tmp_path / "d")
    (folder / "x.inter").write_text("user_id:token\titem_id:token\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"several formats \(recbole: x.inter; plain: items.jsonl, interactions.csv\)"):
        detect_format(folder)


def test_data_command_says_which_format_it_detected(tmp_path, capsys):
    from m6gen.commands import main

    folder = write_plain(tmp_path / "d")
    (folder / "items.csv").write_text("item_id,title\n0,Other\n", encoding="utf-8")  # read after items.jsonl
    with open(folder / "interactions.csv", "a", encoding="utf-8") as f:
        f.write("u0,0,9\nu0,0,10\n")  # two repeats of (u0, item 0)
    assert main(["data", "--data", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "plain (detected)" in out
    # which of the files it read, and from which column its titles came: once said nowhere
    table = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in out.strip().splitlines())
    assert table["items file"] == "items.jsonl" and table["interactions file"] == "interactions.csv"
    assert table["title column"] == "title" and table["repeated_interactions"] == "2 (--dedupe first)"


def test_rewriting_the_tuned_config_keeps_the_users_comments(tmp_path):
    path = tmp_path / "m6gen.yaml"
    path.write_text("# my settings for the shop\ntemplate: titles  # the old winner\nbeams: 10\n", encoding="utf-8")
    record_best(path, "sequence", 20)
    text = path.read_text(encoding="utf-8")
    assert "# my settings for the shop" in text and "# the old winner" in text and "beams: 10" in text
    import yaml

    assert yaml.safe_load(text) == {"template": "sequence", "beams": 10, "max_history": 20}


def test_rewriting_a_tuned_config_keeps_its_grouped_keys_where_they_are(tmp_path):
    """A recipe that nests its options under group headings (prompts:) was given a second, top-level
    template key, which the config loader then refused as given twice."""
    import yaml

    path = tmp_path / "nested.yaml"
    path.write_text(
        "prompts:\n  template: titles   # old\n  max_history: 10\ndecoding:\n  beams: 5\n", encoding="utf-8"
    )
    record_best(path, "sequence", 5)
    assert yaml.safe_load(path.read_text(encoding="utf-8")) == {
        "prompts": {"template": "sequence", "max_history": 5},
        "decoding": {"beams": 5},
    }
    assert "# old" in path.read_text(encoding="utf-8")


def test_tune_prompts_checks_where_it_will_write_before_scoring(world, tmp_path, capsys):
    from m6gen.commands import main

    data, model = world
    target = tmp_path / "missing" / "m6gen.yaml"
    argv = ["tune-prompts", "--data", str(data), "--model", str(model), "--tune-users", "2", "--beams", "3"]
    assert main([*argv, "--template", "titles", "--history-lengths", "3", "--write-config", str(target)]) == 2
    captured = capsys.readouterr()
    assert f"--write-config {target}: its folder {target.parent} does not exist" in captured.err
    assert "best:" not in captured.out  # refused before any scoring


def test_a_candidate_template_is_known_to_need_a_retriever():
    lib = TemplateLibrary()
    assert lib.load_template("candidates").reads("candidates")
    assert not lib.load_template("titles").reads("candidates")


def test_a_leaderboard_within_noise_says_so(capsys):
    rng = np.random.default_rng(0)
    tie = rng.random(20) < 0.1
    board = {"a": {"per_user_NDCG": tie.astype(float)}, "b": {"per_user_NDCG": np.roll(tie, 1).astype(float)}}
    warn_if_within_noise(board)
    assert "within noise" in capsys.readouterr().err
    clear = {"a": {"per_user_NDCG": np.ones(200)}, "b": {"per_user_NDCG": np.zeros(200)}}
    warn_if_within_noise(clear)
    assert capsys.readouterr().err == ""


def test_a_template_error_at_render_time_comes_before_the_model_loads(tmp_path, monkeypatch, capsys):
    import m6gen.recommender
    from m6gen.commands import main

    data = write_plain(tmp_path / "d")
    folder = tmp_path / "tpl"
    folder.mkdir()
    (folder / "bad.jinja").write_text(
        "{% block prompt %}{{ user.age }} {{ history[-1].title }}{% endblock %}"
        "{% block target %}{{ item.title }}{% endblock %}",
        encoding="utf-8",
    )
    monkeypatch.setattr(
        m6gen.recommender.Recommender,
        "from_pretrained",
        classmethod(lambda *a, **k: pytest.fail("loaded the model before rendering a prompt")),
    )
    argv = [
        "recommend",
        "--data",
        str(data),
        "--templates",
        str(folder),
        "--template",
        "bad",
        "--output",
        str(tmp_path / "r.jsonl"),
        "--no-progress",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "age" in err and err.count("\n") == 1
    assert not (tmp_path / "r.jsonl").exists()


def test_no_progress_also_silences_the_libraries_bars():
    from transformers.utils import logging as hf_logging

    from m6gen.commands.common import quiet_library_progress

    hf_logging.enable_progress_bar()
    quiet_library_progress()
    try:
        assert not hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.enable_progress_bar()


def test_demo_steers_the_untuned_model_with_a_cached_quick_sasrec(world, tmp_path, monkeypatch, capsys):
    """Issue #18.4: the first run's lists follow each user's history (a quick SASRec prior), trained once."""
    from m6gen.commands import main

    monkeypatch.setenv("M6GEN_CACHE", str(tmp_path / "cache"))
    data, model = world
    argv = ["demo", "--data", str(data), "--model", str(model), "--beams", "4", "--k", "3", "--no-progress"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "quick SASRec prior: trained" in first and "searched with a quick SASRec" in first
    cached = list((tmp_path / "cache").glob("demo-sasrec-*/sasrec.json"))
    assert len(cached) == 1 and not list((tmp_path / "cache").glob("demo-sasrec-*/resume.pt"))
    from m6gen.commands.demo import QUICK_SASREC_EPOCHS

    config = json.loads(cached[0].read_text())["config"]  # a fixed length, the same on a slow machine
    assert config["epochs"] == QUICK_SASREC_EPOCHS and config["time_budget_s"] is None
    assert "logp: the language model's log-probability of the title alone" in first  # the columns are named
    assert main(argv) == 0
    assert "(cached)" in capsys.readouterr().out
    assert main([*argv, "--no-quick-prior"]) == 0
    assert "quick SASRec" not in capsys.readouterr().out


def test_an_empty_user_list_is_refused_not_read_as_the_default(world, capsys):
    """`m6gen prompts --users ""` once showed the first user, as if no list had been given."""
    from m6gen.commands import main

    assert main(["prompts", "--data", str(world[0]), "--users", " , "]) == 2
    assert "users: no user id in ' , '" in capsys.readouterr().err
