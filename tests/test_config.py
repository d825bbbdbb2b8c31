"""The one configuration system: every recipe parses, every option has help, one name means one thing."""

import dataclasses
import re
from pathlib import Path

import pytest

from m6gen.commands.registry import COMMANDS, all_groups, command
from m6gen.config import ConfigError, ConfigParser, DataArgs, DecodeArgs, PromptArgs, RerankArgs

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "configs").glob("*.yaml"))


def recipe_commands(path: Path) -> list[str]:
    """The commands a recipe's comments say it runs with (``m6gen train --config configs/x.yaml``)."""
    return re.findall(r"m6gen ([a-z-]+) --config configs/" + re.escape(path.name), path.read_text())


def test_there_are_recipes_and_each_names_its_command():
    assert len(RECIPES) >= 5
    for path in RECIPES:
        assert recipe_commands(path), f"{path.name}: no 'm6gen <command> --config configs/{path.name}' line"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_recipe_parses_for_its_command(path, capsys):
    for name in recipe_commands(path):
        module = command(name)
        argv = ["--config", str(path)] + (["--output", "x.jsonl"] if name == "recommend" else [])
        parsed = ConfigParser(module.GROUPS, prog=f"m6gen {name}", every_group=all_groups()).parse(argv)
        assert len(parsed) == len(module.GROUPS)
        assert "does not take" not in capsys.readouterr().err, f"{path.name} has keys {name} ignores"


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_option_of_every_command_has_help(name):
    for group in command(name).GROUPS:
        assert getattr(group, "_argument_group_name", None), f"{group.__name__}: no group name for --help"
        for f in dataclasses.fields(group):
            assert len(f.metadata.get("help", "")) >= 8, f"{group.__name__}.{f.name} has no help text"


def test_one_name_one_meaning_across_groups():
    import typing

    seen = {}
    for group in all_groups():
        hints = typing.get_type_hints(group)
        for f in dataclasses.fields(group):
            kind = (hints[f.name], f.default)
            assert seen.setdefault(f.name, kind) == kind, f"{f.name}: two types or defaults in two groups"


def test_file_values_then_flags_win(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("data:\n  dedupe: last\nk: 5\nbeams: 30\n", encoding="utf-8")
    parser = ConfigParser([DataArgs, DecodeArgs, RerankArgs], prog="t")
    data, decode, rerank = parser.parse(["--config", str(path), "--k", "7"])
    assert (data.dedupe, decode.beams, rerank.k) == ("last", 30, 7)


def test_a_recipe_nests_options_under_group_names_as_help_prints_them(tmp_path):
    from m6gen.commands import tune

    path = tmp_path / "r.yaml"
    path.write_text("tune-prompts:\n  tune_users: 7\nprompts:\n  max_history: 5\n", encoding="utf-8")
    parsed = ConfigParser(tune.GROUPS, prog="m6gen tune-prompts").parse(["--config", str(path)])
    assert {(type(g).__name__, v) for g in parsed for v in [getattr(g, "tune_users", None)] if v} == {("TuneArgs", 7)}
    assert next(g for g in parsed if isinstance(g, PromptArgs)).max_history == 5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("k: abc\n", "k: expected a whole number, got 'abc'"),
        ("k: 0\n", "k: expected a number >= 1, got 0"),
        ("dedupe: sometimes\n", "dedupe: 'sometimes' is not one of first, keep, last"),
        ("lr_typo: 1\n", "unknown option 'lr_typo'"),
        ("- a\n- b\n", "expected a mapping"),
        ("k: [1\n", "not valid YAML"),
        ("k: true\n", "k: expected a whole number, got true"),  # was: "expected a value, got True"
        ("dedupe: false\n", "dedupe: expected one of first, keep, last, got false"),
        ("k: 3\nmin_history: 2\nk: 4\n", ":3: 'k' given twice"),  # YAML kept the last one silently
        ("k: 3\nK: 4\nk: 5\n", ":3: 'k' given twice"),
        ("max_history: 2\nmax-history: 3\n", "max_history given twice (as max_history and as max-history)"),
        ("k: 2\nreranking:\n  k: 3\n", "k given twice (as k and as reranking: k)"),
    ],
)
def test_a_bad_file_value_is_one_line_naming_file_and_field(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        ConfigParser([DataArgs, RerankArgs], prog="t").parse(["--config", str(path)])
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_another_commands_key_is_skipped_with_a_note(tmp_path, capsys):
    path = tmp_path / "shared.yaml"
    path.write_text("lr: 0.001\nmin_history: 5\n", encoding="utf-8")
    (data,) = ConfigParser([DataArgs], prog="m6gen data", every_group=all_groups()).parse(["--config", str(path)])
    assert data.min_history == 5
    assert "m6gen data does not take lr" in capsys.readouterr().err


def test_none_on_the_command_line_means_none():
    (prompt,) = ConfigParser([PromptArgs], prog="t").parse(["--max-history", "none"])
    assert prompt.max_history is None


def test_command_line_errors_are_one_line(capsys):
    from m6gen.commands import main

    assert main(["data", "--min-history", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "min_history: expected a number >= 3, got 2" in err
    assert main(["data", "--bogus"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "usage" not in err


# ----------------------------------------------------------------------------------- layering
CORE = ("m6gen.data", "m6gen.decoding", "m6gen.ranking")
MODEL_CODE = ("torch", "transformers", "peft", "accelerate", "m6gen.model", "m6gen.training", "m6gen.recommender")


def imports_of(path: Path) -> set[str]:
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def test_imports_point_the_right_way():
    wrong = []
    for path in sorted((ROOT / "m6gen").rglob("*.py")):
        name = module_name(path)
        for target in imports_of(path):
            core = name.startswith(CORE)
            if core and target.startswith("m6gen.commands"):
                wrong.append(f"{name} -> {target} (the core imports no command code)")
            if name.startswith(("m6gen.data", "m6gen.ranking")) and target.startswith(MODEL_CODE):
                wrong.append(f"{name} -> {target} (data and ranking import no model code)")
            if not name.startswith("m6gen.commands") and target == "argparse" and not name.startswith("m6gen.config"):
                wrong.append(f"{name} -> argparse (argparse lives in m6gen.commands and m6gen.config)")
    assert not wrong, "\n".join(wrong)


def test_each_package_folder_opens_with_a_docstring():
    import ast

    for init in (ROOT / "m6gen").glob("*/__init__.py"):
        assert ast.get_docstring(ast.parse(init.read_text())), f"{init} has no docstring of its job"


def test_every_recipe_is_listed_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    missing = [p.name for p in RECIPES if f"`{p.name}`" not in readme]
    assert not missing, f"README.md's list of recipes lacks {missing}"


def test_every_recipe_the_docs_name_exists():
    named = set()
    for path in [ROOT / "README.md", *ROOT.glob("docs/*.md"), *RECIPES, *ROOT.glob("m6gen/**/*.py")]:
        named |= set(re.findall(r"configs/([\w.-]+\.yaml)", path.read_text()))
    assert named, "no recipe named anywhere"
    missing = sorted(name for name in named if not (ROOT / "configs" / name).exists())
    assert not missing, f"named but not in configs/: {missing}"


def test_the_fit_readout_recipe_writes_out_its_defaults():
    from m6gen.commands.fit_readout import AUTO_DISTILL, ReadoutArgs

    module = command("fit-readout")
    parsed = ConfigParser(module.GROUPS, prog="m6gen fit-readout", every_group=all_groups()).parse(
        ["--config", str(ROOT / "configs" / "fit-readout.yaml")]
    )
    recipe = next(p for p in parsed if isinstance(p, ReadoutArgs))
    defaults = dataclasses.replace(ReadoutArgs(), readout_distill=AUTO_DISTILL)
    assert recipe == defaults


@pytest.mark.parametrize("name", list(COMMANDS))
def test_help_says_each_default_once(name, capsys):
    """Once `--model ... (default: SmolLM2-135M-Instruct) (default: None)` and `--output ... (default: None)`."""
    from m6gen.commands.common import parse

    module = command(name)
    with pytest.raises(SystemExit):
        parse(module.GROUPS, f"m6gen {name}", "", ["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in text and "(default: False)" not in text and "(default: )" not in text
    for option_help in re.split(r" (?=--[a-z])", text):
        assert option_help.count("(default") <= 1, option_help


def test_a_no_switch_says_it_turns_its_option_off(capsys):
    """HfArgumentParser gives --no-eval-at-start the help of --eval-at-start ("validate the untuned model
    first"), the opposite of what it does."""
    from m6gen.commands.common import parse

    with pytest.raises(SystemExit):
        parse(command("train").GROUPS, "m6gen train", "", ["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--no-eval-at-start, --no_eval_at_start turn --eval-at-start off" in text
    assert "--no-packing, --no_packing turn --packing off" in text
    assert text.count("validate the untuned model first") == 1


def test_an_option_nested_under_another_group_is_an_error(tmp_path):
    """Once `prompts: {max_steps: 3}` was taken as --max-steps 3 without a word."""
    from m6gen.commands.registry import command

    parser = ConfigParser(command("train").GROUPS, prog="m6gen train", every_group=all_groups())
    recipe = tmp_path / "r.yaml"
    recipe.write_text("prompts:\n  max_steps: 3\n")
    with pytest.raises(ConfigError, match=r"r.yaml: 'max_steps' is not a prompts: option; put it under training:"):
        parser.parse(["--config", str(recipe)])
    recipe.write_text("train:\n  max_steps: 3\nprompt:\n  max_history: 5\n")  # the short names still nest
    values = {k: v for g in parser.parse(["--config", str(recipe)]) for k, v in vars(g).items()}
    assert values["max_steps"] == 3 and values["max_history"] == 5
