"""Tests for m6gen.prompts: shipped templates, loading, error messages, sandbox, chat templates."""

from __future__ import annotations

import pytest

from m6gen.data.catalog import Item
from m6gen.prompts import DEFAULT_FOLDER, ENV_VAR, PromptTemplate, TemplateError, TemplateLibrary

SHIPPED = ["instruct", "sequence", "titles", "titles_genres"]

TOY = Item(0, "1", "Toy Story (1995)", year=1995, genres=("Animation", "Children's", "Comedy"))
HEAT = Item(1, "6", "Heat (1995)", year=1995, genres=("Action", "Crime", "Thriller"))
ALIEN = Item(2, "1214", "Alien (1979)", year=1979, genres=("Horror", "Sci-Fi"))
BARE = Item(3, "99", "Untitled", raw_title="Untitled")  # no year, genres or description


def numbered(n: int) -> list[Item]:
    return [Item(i, str(i), f"Movie {i:02d}", year=2000 + i, genres=("Drama",)) for i in range(n)]


def write(folder, name: str, text: str):
    path = folder / f"{name}.jinja"
    path.write_text(text, encoding="utf-8")
    return path


TARGET = "{% block target %} {{ item.title }}{% endblock %}\n"


def blocks(prompt: str, target: str = " {{ item.title }}") -> str:
    """A template file's text with both blocks on line 1."""
    return "{% block prompt %}" + prompt + "{% endblock %}{% block target %}" + target + "{% endblock %}\n"


BASIC = "{# basic #}\n{% block prompt %}{{ history | map(attribute='title') | join('|') }}{% endblock %}\n" + TARGET


@pytest.fixture
def lib() -> TemplateLibrary:
    return TemplateLibrary()


def test_shipped_templates_are_listed_with_descriptions(lib):
    assert DEFAULT_FOLDER.name == "prompts"
    assert set(SHIPPED) <= set(lib.names())
    for name in SHIPPED:
        assert lib.get(name).description, name


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_template_renders_prompt_and_target(lib, name):
    tpl = lib.get(name)
    prompt, target = tpl.render_example([TOY, HEAT, BARE], ALIEN, user={"user_id": "u1"}, k=5)
    assert "Toy Story (1995)" in prompt and "Heat (1995)" in prompt and "Untitled" in prompt
    assert prompt.index("Toy Story") < prompt.index("Heat") < prompt.index("Untitled")  # most recent last
    assert "Alien" not in prompt
    assert target.strip() == "Alien (1979)"
    assert not target.endswith("\n")
    # Empty history renders too (cold start).
    assert isinstance(tpl.render_prompt([]), str)


def test_titles_exact_text(lib):
    prompt, target = lib.get("titles").render_example([TOY, HEAT], ALIEN)
    assert prompt == "Movies watched, most recent last:\nToy Story (1995)\nHeat (1995)\nNext:"
    assert target == " Alien (1979)"


def test_titles_genres_exact_text(lib):
    prompt = lib.get("titles_genres").render_prompt([TOY, Item(5, "5", "Heat", year=1995, genres=()), BARE])
    # The year is added only where the title lacks it; genres only where there are some.
    assert prompt == (
        "Movies watched, most recent last:\n"
        "- Toy Story (1995) [Animation, Children's, Comedy]\n- Heat (1995)\n- Untitled\nNext:"
    )


def test_truncation_keeps_the_most_recent(tmp_path):
    path = write(
        tmp_path,
        "counts",
        blocks("{{ n_history }}/{{ n_total }}:{{ history | map(attribute='title') | join(',') }}"),
    )
    items = numbered(30)
    assert PromptTemplate(path).render_prompt(items) == "20/30:" + ",".join(f"Movie {i:02d}" for i in range(10, 30))
    assert PromptTemplate(path, max_history=3).render_prompt(items) == "3/30:Movie 27,Movie 28,Movie 29"
    assert PromptTemplate(path, max_history=None).render_prompt(items).startswith("30/30:Movie 00,")
    assert TemplateLibrary(tmp_path, max_history=2).get("counts").render_prompt(items) == "2/30:Movie 28,Movie 29"
    with pytest.raises(ValueError, match="max_history"):
        PromptTemplate(path, max_history=0)


def test_shipped_titles_truncates_to_max_history(lib):
    prompt = lib.get("titles", max_history=5).render_prompt(numbered(12))
    assert "Movie 06" not in prompt
    assert prompt.splitlines()[1:-1] == [f"Movie {i:02d}" for i in range(7, 12)]


@pytest.mark.parametrize("name", SHIPPED)
def test_target_is_independent_of_history(lib, name):
    tpl = lib.get(name)
    first = tpl.render_target(ALIEN)
    tpl.render_prompt(numbered(25), user={"user_id": "x", "age": 30}, k=3)
    assert tpl.render_target(ALIEN) == first
    _, target = tpl.render_example([TOY], ALIEN)
    assert target == first


def test_target_may_not_use_history(tmp_path):
    path = write(
        tmp_path, "leaky", "{% block prompt %}x{% endblock %}\n{% block target %} {{ history[-1].title }}{% endblock %}"
    )
    with pytest.raises(TemplateError, match=r"leaky\.jinja, line 2.*'history' is undefined"):
        PromptTemplate(path).render_target(ALIEN)


def test_empty_target_is_an_error(tmp_path):
    path = write(tmp_path, "blank", blocks("x", target=" "))
    with pytest.raises(TemplateError, match="empty"):
        PromptTemplate(path).render_target(ALIEN)


def test_variables_user_k_and_item_fields(tmp_path):
    path = write(
        tmp_path,
        "vars",
        "{% block prompt %}{{ user.user_id }}|{{ user.age }}|{{ k }}|{{ history[0].item_id }}|"
        "{{ history[0].genres | join('+') }}|{{ history[0].year }}|{{ history[0].description }}{% endblock %}"
        "{% block target %} {{ item.raw_title }}/{{ item.extra.imdb }}{% endblock %}",
    )
    tpl = PromptTemplate(path)
    toy = Item(0, "1", "Toy Story (1995)", "Toy Story", 1995, ("Animation",), "Toys.", {"imdb": "tt0114709"})
    assert tpl.render_prompt([toy], user={"user_id": "u7", "age": 25}, k=3) == "u7|25|3|1|Animation|1995|Toys."
    assert tpl.render_target(toy) == " Toy Story/tt0114709"
    with pytest.raises(ValueError, match="k must be"):
        tpl.render_prompt([toy], k=0)


def test_user_id_defaults_to_empty(tmp_path):
    path = write(tmp_path, "uid", blocks("[{{ user.user_id }}]"))
    assert PromptTemplate(path).render_prompt([TOY]) == "[]"


def test_template_dropped_in_a_folder_is_usable_by_name(tmp_path):
    write(tmp_path, "mine", BASIC)
    lib = TemplateLibrary(tmp_path)
    assert "mine" in lib.names() and "titles" in lib.names()  # user folder first, shipped ones still there
    tpl = lib.get("mine")
    assert (tpl.name, tpl.description, tpl.path) == ("mine", "basic", (tmp_path / "mine.jinja").resolve())
    assert tpl.render_example([TOY, HEAT], ALIEN) == ("Toy Story (1995)|Heat (1995)", " Alien (1979)")
    assert lib.load_template("mine").path == tpl.path
    assert lib.load_template(str(tmp_path / "mine.jinja")).name == "mine"
    assert ("mine", "basic") in lib.describe()


def test_user_folder_overrides_shipped_name(tmp_path):
    write(tmp_path, "titles", BASIC)
    assert TemplateLibrary(tmp_path).get("titles").render_prompt([TOY]) == "Toy Story (1995)"


def test_env_var_folder(tmp_path, monkeypatch):
    write(tmp_path, "from_env", BASIC)
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert "from_env" in TemplateLibrary().names()
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "missing"))
    with pytest.raises(TemplateError, match="missing"):
        TemplateLibrary()


def test_unknown_name_lists_available(lib):
    with pytest.raises(TemplateError, match=r"unknown template 'nope'.*instruct, sequence, titles, titles_genres"):
        lib.get("nope")
    with pytest.raises(TemplateError, match="not found"):
        lib.load_template("no/such/file.jinja")


def test_missing_block_names_the_file(tmp_path):
    path = write(tmp_path, "half", "{% block prompt %}x{% endblock %}\n")
    with pytest.raises(TemplateError, match=r"half\.jinja.*missing block\(s\) target"):
        PromptTemplate(path)


def test_syntax_error_names_file_and_line(tmp_path):
    text = "{# d #}\n{% block prompt %}\n{% for it in history %}\n{{ it.title }\n{% endfor %}{% endblock %}\n" + TARGET
    write(tmp_path, "broken", text)
    with pytest.raises(TemplateError) as info:
        TemplateLibrary(tmp_path).get("broken")
    message = str(info.value)
    assert "broken.jinja" in message and "line 4" in message and "\n" not in message


def test_unknown_variable_names_variable_file_and_line(tmp_path):
    text = (
        "{# d #}\n{% block prompt %}\n{% for it in history %}\n{{ it.title }}\n{% endfor %}\n"
        "{{ histroy }}{% endblock %}\n"
    )
    write(tmp_path, "typo", text + TARGET)
    with pytest.raises(TemplateError) as info:
        TemplateLibrary(tmp_path).get("typo").render_prompt([TOY])
    message = str(info.value)
    assert "'histroy' is undefined" in message and "typo.jinja" in message and "line 6" in message
    assert "\n" not in message


def test_unknown_attribute_names_attribute_and_line(tmp_path):
    write(tmp_path, "attr", blocks("\n\n{{ history[0].rating }}"))
    with pytest.raises(TemplateError, match=r"attr\.jinja, line 3.*'rating'"):
        TemplateLibrary(tmp_path).get("attr").render_prompt([TOY])


def test_error_in_included_file_names_that_file(tmp_path):
    write(tmp_path, "macros", "{% macro show(it) %}\n{{ it.nope }}\n{% endmacro %}")
    write(tmp_path, "uses", blocks("{% import 'macros.jinja' as m %}{{ m.show(history[0]) }}"))
    with pytest.raises(TemplateError, match=r"macros\.jinja, line 2.*'nope'"):
        TemplateLibrary(tmp_path).get("uses").render_prompt([TOY])


def test_import_macros_from_the_library_folder(tmp_path):
    write(tmp_path, "macros", "{% macro show(it) %}<{{ it.title }}>{% endmacro %}")
    write(tmp_path, "uses", blocks("{% import 'macros.jinja' as m %}{{ m.show(history[0]) }}"))
    assert TemplateLibrary(tmp_path).get("uses").render_prompt([TOY]) == "<Toy Story (1995)>"


PAYLOADS = [
    "{{ item.__class__.__mro__ }}",
    "{{ ''.__class__.__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'] }}",
    "{{ item.title.format.__globals__ }}",
    "{{ '{0.__class__.__mro__}'.format(item) }}",
    "{{ item.genres.append('x') }}",
    "{{ item.extra.update({'a': 1}) }}",
    "{{ item.__class__ }}",
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_sandbox_refuses_internals(tmp_path, payload):
    path = write(tmp_path, "evil", blocks("x", target=" " + payload))
    with pytest.raises(TemplateError, match="SecurityError|unsafe"):
        PromptTemplate(path).render_target(ALIEN)


def test_sandbox_does_not_mutate_inputs(tmp_path):
    path = write(tmp_path, "mut", blocks("{{ history.pop() }}"))
    items = [TOY, HEAT]
    with pytest.raises(TemplateError, match="unsafe"):
        PromptTemplate(path).render_prompt(items)
    assert items == [TOY, HEAT]


def make_tokenizer(chat_template: str | None):
    """A tiny fast tokenizer built in memory (no downloads)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "</s>": 1, "Alien": 2, "(1979)": 3}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    kwargs = {"chat_template": chat_template} if chat_template else {}
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", eos_token="</s>", **kwargs)


CHAT_TEMPLATE = (
    "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}[assistant]{% endif %}"
)


def test_instruct_uses_the_tokenizer_chat_template(lib):
    tpl = lib.get("instruct")
    prompt = tpl.render_prompt([TOY, HEAT], tokenizer=make_tokenizer(CHAT_TEMPLATE))
    assert prompt.startswith("[system]") and "[user]" in prompt and prompt.endswith("</s>[assistant]")
    assert prompt.index("1. Toy Story (1995)") < prompt.index("2. Heat (1995)")
    assert "<|assistant|>" not in prompt
    assert tpl.render_target(ALIEN) == "Alien (1979)"  # no leading space after the assistant header


def test_instruct_fallback_without_chat_template(lib):
    tpl = lib.get("instruct")
    plain = tpl.render_prompt([TOY, HEAT])
    assert plain.startswith("<|system|>\n") and "\n<|user|>\n" in plain and plain.endswith("\n<|assistant|>\n")
    # A tokenizer without a chat template (a base model) gets the same fallback.
    assert tpl.render_prompt([TOY, HEAT], tokenizer=make_tokenizer(None)) == plain


def test_partials_named_with_underscore_are_not_templates(tmp_path):
    """Files for {% import %}/{% include %} live next to the templates without being listed as ones."""
    write(tmp_path, "_macros", "{% macro line(it) %}* {{ it.title }}{% endmacro %}")
    write(
        tmp_path,
        "mine",
        "{% block prompt %}{% import '_macros.jinja' as m %}{{ m.line(history[0]) }}{% endblock %}"
        "{% block target %} {{ item.title }}{% endblock %}",
    )
    lib = TemplateLibrary(tmp_path)
    assert "mine" in lib.names() and "_macros" not in lib.names()
    assert lib.get("mine").render_prompt([TOY]) == "* Toy Story (1995)"
    with pytest.raises(TemplateError, match="unknown template '_macros'"):
        lib.get("_macros")


def test_template_not_utf8_names_the_file(tmp_path):
    path = tmp_path / "latin.jinja"
    path.write_bytes(blocks("caf\xe9").encode("latin-1"))
    with pytest.raises(TemplateError, match=r"latin\.jinja: byte offset \d+: not UTF-8"):
        PromptTemplate(path)


def test_description_survives_a_byte_order_mark(tmp_path):
    path = tmp_path / "bom.jinja"
    path.write_text("\ufeff" + BASIC, encoding="utf-8")
    assert PromptTemplate(path).description == "basic"


def test_empty_prompt_is_an_error_naming_the_template(tmp_path):
    path = write(tmp_path, "void", blocks("{% if n_history > 5 %}long{% endif %}"))
    with pytest.raises(TemplateError, match=r"void\.jinja: block 'prompt' rendered empty text \(user 'u1'\)"):
        PromptTemplate(path).render_prompt([TOY], user={"user_id": "u1"})


def test_targets_that_do_not_tell_items_apart_are_an_error(tmp_path):
    """raw_title repeats on MovieLens; a constant target names no item: both fail before a trie is built."""
    twins = [
        Item(0, "296", "Ulee's Gold (1997)", "Ulee's Gold (1997)"),
        Item(1, "303", "Ulee's Gold (1997) [item 303]", "Ulee's Gold (1997)"),
    ]
    raw = PromptTemplate(write(tmp_path, "raw", blocks("x", target=" {{ item.raw_title }}")))
    with pytest.raises(
        TemplateError, match=r"raw\.jinja: .*same text \"Ulee's Gold \(1997\)\" for items '296' and '303'"
    ):
        raw.render_targets(twins)
    titled = PromptTemplate(write(tmp_path, "titled", blocks("x")))
    assert titled.render_targets(twins) == [" Ulee's Gold (1997)", " Ulee's Gold (1997) [item 303]"]
