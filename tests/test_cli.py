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
