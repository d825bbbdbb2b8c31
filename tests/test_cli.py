"""The m6gen command: summary, prompts, demo on a tiny world; bad input is one line, exit 2."""

from test_batch import world  # noqa: F401  (shared fixture: tiny data folder + tiny model)

from m6gen.cli import main


def test_data_summary(world, capsys):  # noqa: F811
    data, _ = world
    assert main(["data", "--data", str(data)]) == 0
    out = capsys.readouterr().out
    assert "users                 6" in out and "items                 8" in out and "test                  6" in out


def test_prompts_and_demo(world, capsys):  # noqa: F811
    data, model_dir = world
    assert main(["prompts", "--data", str(data), "--user", "u2"]) == 0
    out = capsys.readouterr().out
    assert out.count("===== template") >= 3 and "<- target (held out)" in out
    assert main(["prompts", "--data", str(data), "--user", "u2", "--template", "sequence"]) == 0
    assert capsys.readouterr().out.count("===== template 'sequence'") == 1
    assert main(["prompts", "--data", str(data), "--template", "nosuch"]) == 2
    assert "nosuch" in capsys.readouterr().err
    assert main(["demo", "--data", str(data), "--model", str(model_dir), "--beams", "4", "--k", "3", "--n-users", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("all in catalog: True") == 2


def test_bad_input_is_one_line(world, tmp_path, capsys):  # noqa: F811
    data, model_dir = world
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "items.csv").write_text("item_id,title\n1,Heat\n")
    (bad / "interactions.csv").write_text("user_id,item_id,timestamp\nu1,1,10\nu1,2,oops\n")
    assert main(["data", "--data", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "interactions.csv" in err[0]
    assert main(["prompts", "--data", str(data), "--user", "nobody"]) == 2
    assert "unknown user id" in capsys.readouterr().err
    assert main(["demo", "--data", str(data), "--model", str(tmp_path / "missing"), "--n-users", "1"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_device_that_is_not_there_is_one_line(world, capsys):  # noqa: F811
    import torch

    data, model_dir = world
    wanted = "cpu:0" if torch.accelerator.is_available() else "cuda"  # cpu:0 is always there: then it must run
    code = main(["demo", "--data", str(data), "--model", str(model_dir), "--beams", "4", "--k", "3", "--n-users", "1",
                 "--device", wanted])  # fmt: skip
    if wanted == "cuda":
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and err == ["error: device 'cuda': not available here (torch sees only the cpu)"]
    else:
        assert code == 0


BAD_VALUES = [
    (["demo", "--beams", "0"], "--beams"), (["demo", "--k", "x"], "--k"), (["demo", "--n-users", "-2"], "--n-users"),
    (["data", "--min-history", "-1"], "--min-history"), (["data", "--format", "bogus"], "--format"),
    (["recommend", "--sasrec-weight", "nan"], "--sasrec-weight"), (["recommend", "--diversity", "-5"], "--diversity"),
    (["recommend", "--n-candidates", "0"], "--n-candidates"), (["eval", "--max-users", "0"], "--max-users"),
    (["eval", "--blend", "1,x"], "--blend"), (["eval", "--baselines", "Pop,Foo"], "--baselines"),
    (["tune-prompts", "--history", "10,abc"], "--history"), (["tune-prompts", "--train-steps", "-1"], "--train-steps"),
]  # fmt: skip


def test_bad_option_values_name_the_flag(capsys):
    import pytest

    for argv, flag in BAD_VALUES:
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and f"argument {flag}:" in err and "Traceback" not in err, argv


def test_config_file_problems(world, tmp_path, capsys):  # noqa: F811
    import pytest

    data, _ = world
    with pytest.raises(SystemExit) as exit_:
        main(["data", "--config", str(tmp_path / "none.yaml")])
    assert exit_.value.code == 2 and "cannot read config" in capsys.readouterr().err
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {data}\nkk: 2\nmax_steps: 5\n")  # a typo, and a key only train takes
    assert main(["data", "--config", str(cfg)]) == 0
    assert "m6gen data does not take kk, max_steps (skipped)" in capsys.readouterr().err


def test_a_bad_value_from_a_config_file_is_one_line(world, tmp_path, capsys):  # noqa: F811
    data, model_dir = world
    cfg = tmp_path / "c.yaml"
    # a config value gets the checks of the same flag (it once skipped them: max_users 0 evaluated everyone,
    # split: train evaluated the validation items under the name "train", a string "no" switched an option on)
    import pytest

    from m6gen.evaluate import main as eval_main

    for text, command, message in [
        ("k: 0\n", main, "k: expected an integer >= 1, got 0 (as --k)"),
        ("max_users: 0\n", eval_main, "max_users: expected an integer >= 1, got 0 (as --max-users)"),
        ("split: train\n", eval_main, "split: invalid choice 'train' (choose from test, valid) (as --split)"),
        ("choose_on_valid: 'no'\n", eval_main, "choose_on_valid: expected true or false, got 'no' (as --choose-on-valid)"),
        ("blend: -1\n", eval_main, "blend: expected a finite number >= 0, got '-1' (as --blend)"),
    ]:  # fmt: skip
        cfg.write_text(text)
        argv = ["--config", str(cfg), "--data", str(data), "--model", str(model_dir)]
        with pytest.raises(SystemExit) as exit_:
            command(["demo", *argv] if command is main else argv)
        assert exit_.value.code == 2
        assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"error: {cfg}: {message}"), text


def test_a_damaged_run_folder_is_one_line(world, tmp_path, capsys):  # noqa: F811
    data, _ = world
    run = tmp_path / "run"
    run.mkdir()
    (run / "m6gen_config.json").write_text('{"config": {"template": ')  # cut off mid-write
    assert main(["demo", "--data", str(data), "--model", str(run)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {run / 'm6gen_config.json'}:1: damaged, not valid JSON; restore it or train into a new folder\n"


def test_chat_start_options_are_checked_before_the_session(world, tmp_path, capsys):  # noqa: F811
    from m6gen.chat import main as chat

    data, model_dir = world
    base = ["--data", str(data), "--model", str(model_dir), "--beams", "4"]
    assert chat([*base, "--user", "nobody"]) == 2
    assert capsys.readouterr().err == "error: --user: unknown user id 'nobody' (ids look like u0, u1, u2)\n"
    assert chat([*base, "--session", str(tmp_path / "missing.json")]) == 2
    assert "--session" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{not json")
    assert chat([*base, "--session", str(tmp_path / "bad.json")]) == 2
    assert str(tmp_path / "bad.json") in capsys.readouterr().err.splitlines()[-1]


def test_unknown_items_error_or_skip(tmp_path, capsys):
    data = tmp_path / "d"
    data.mkdir()
    (data / "items.csv").write_text("item_id,title\n1,Heat\n2,Alien\n3,Fargo\n")
    (data / "interactions.csv").write_text("user_id,item_id,timestamp\n" + "".join(f"u1,{i},{i}\n" for i in (1, 2, 9, 3)))
    assert main(["data", "--data", str(data)]) == 2
    assert "interactions.csv:4: item_id: unknown item id '9'" in capsys.readouterr().err
    assert main(["data", "--data", str(data), "--unknown-items", "skip"]) == 0
    out, err = capsys.readouterr()
    assert "interactions  " in out and err == f"note: {data / 'interactions.csv'}: skipped 1 interactions with unknown item ids\n"


def test_a_trained_run_brings_its_own_data(world, tmp_path, capsys):  # noqa: F811
    """Without --data, a run folder's recorded data folder and data options are used (the defaults would be MovieLens)."""
    import argparse
    import json

    from m6gen.cli import DATA_DEFAULTS, use_run_data

    data, _ = world
    run = tmp_path / "run"
    run.mkdir()
    (run / "m6gen_config.json").write_text(json.dumps({"config": {"data": str(data), "dedupe": "keep"}, "resolved": {}}))
    args = argparse.Namespace(data=None, model=str(run), **DATA_DEFAULTS)
    use_run_data(args)
    assert (args.data, args.dedupe, args.format) == (str(data), "keep", "auto")
    assert f"note: data {data} (the one {run} was trained on" in capsys.readouterr().err
    args = argparse.Namespace(data=str(tmp_path), model=str(run), **{**DATA_DEFAULTS, "dedupe": "last"})
    use_run_data(args)  # what the command line says wins
    assert (args.data, args.dedupe) == (str(tmp_path), "last")
    (run / "m6gen_config.json").write_text(json.dumps({"config": {"data": str(tmp_path / "gone")}, "resolved": {}}))
    args = argparse.Namespace(data=None, model=str(run), **DATA_DEFAULTS)
    use_run_data(args)
    assert args.data is None and "which is not here; using the default data" in capsys.readouterr().err


def test_a_user_with_too_few_interactions_is_named_as_such(tmp_path, capsys):
    data = tmp_path / "d"
    data.mkdir()
    (data / "items.csv").write_text("item_id,title\n1,Heat\n2,Alien\n3,Fargo\n")
    rows = "".join(f"u1,{i},{i}\n" for i in (1, 2, 3)) + "u2,1,1\nu2,2,2\n"
    (data / "interactions.csv").write_text("user_id,item_id,timestamp\n" + rows)
    assert main(["prompts", "--data", str(data), "--user", "u2"]) == 2
    assert "user 'u2' has too few interactions for --min-history" in capsys.readouterr().err
    assert main(["prompts", "--data", str(data), "--user", "u9"]) == 2
    assert "unknown user id 'u9'" in capsys.readouterr().err


def test_a_run_whose_template_folder_is_gone(world, tmp_path, capsys):  # noqa: F811
    import json

    data, _ = world
    run = tmp_path / "run"
    run.mkdir()
    config = {"data": str(data), "template": "mine", "prompts_dir": str(tmp_path / "gone")}
    (run / "m6gen_config.json").write_text(json.dumps({"config": config, "resolved": {}}))
    assert main(["prompts", "--data", str(data), "--model", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"was trained with templates from {tmp_path / 'gone'}, which is not there: pass --templates DIR" in err


def test_prompts_take_a_path_several_users_and_a_runs_own_template_by_name(world, tmp_path, capsys):  # noqa: F811
    import json

    data, _ = world
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "films.jinja").write_text("{# films #}{% block prompt %}Films: {{ history | map(attribute='title') | join('; ') }}"
                                        "{% endblock %}{% block target %} {{ item.title }}{% endblock %}")  # fmt: skip
    assert main(["prompts", "--data", str(data), "--user", "u1,u2", "--template", str(folder / "films.jinja")]) == 0
    out = capsys.readouterr().out
    assert "===== template 'films' for user u1: films" in out and "===== template 'films' for user u2" in out
    run = tmp_path / "run"
    run.mkdir()
    config = {"data": str(data), "template": "films", "prompts_dir": str(folder)}
    (run / "m6gen_config.json").write_text(json.dumps({"config": config, "resolved": {}}))
    assert main(["prompts", "--model", str(run), "--user", "u1", "--template", "films"]) == 0  # the run's folder is searched
    assert capsys.readouterr().out.count("===== template 'films'") == 1


def test_demo_checks_user_ids_before_loading_the_model(world, tmp_path, capsys):  # noqa: F811
    data, _ = world
    missing_model = tmp_path / "no-model-here"  # never reached: the user id is wrong first
    assert main(["demo", "--data", str(data), "--model", str(missing_model), "--users", "u1,u99"]) == 2
    assert "unknown user id 'u99'" in capsys.readouterr().err


def test_a_prompt_beyond_the_models_context_is_one_line(world, tmp_path, capsys):  # noqa: F811
    """The tiny model's context is 512 tokens; a template repeating the history 200 times is far past it."""
    data, model_dir = world
    folder = tmp_path / "long"
    folder.mkdir()
    (folder / "long.jinja").write_text("{% block prompt %}{% for _ in range(200) %}{% for it in history %}{{ it.title }}"
                                       "{% endfor %}{% endfor %}{% endblock %}{% block target %} {{ item.title }}"
                                       "{% endblock %}")  # fmt: skip
    argv = ["demo", "--data", str(data), "--model", str(model_dir), "--templates", str(folder), "--template", "long",
            "--beams", "2", "--k", "2", "--n-users", "1"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "long.jinja: a prompt of" in err and "exceeds the model's context of 512 tokens" in err and "--max-history" in err
