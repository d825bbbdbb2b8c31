"""``ConfigParser``: option groups on transformers' ``HfArgumentParser``, ``--config`` recipes
(YAML/JSON, flat or nested by group), the command line winning, and one-line errors."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from m6gen.config.groups import ConfigError


def _none_or(convert):
    def parse(text: str):
        return None if str(text).lower() in ("none", "null") else convert(text)

    parse.__name__ = getattr(convert, "__name__", "value")  # argparse names the type in its messages
    return parse


def _optional_fields(dtype: type) -> set[str]:
    import typing

    hints = typing.get_type_hints(dtype)
    return {name for name, tp in hints.items() if type(None) in typing.get_args(tp) and tp is not bool}


def _hf_parser_class():
    # transformers is imported here, not at module level, so that `--help` of modules that only
    # import the dataclasses stays fast.
    from transformers import HfArgumentParser

    return HfArgumentParser


def _help_formatter_class():
    import argparse

    class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
        """Says an option's default once: not where its help already says it, nor a None, False or empty one."""

        def _get_help_string(self, action):
            if (
                action.default is None
                or action.default is False
                or action.default in ("", [])
                or "(default" in (action.help or "")
            ):
                return action.help
            return super()._get_help_string(action)

    return HelpFormatter


class ConfigParser:
    """An ``HfArgumentParser`` over option groups, with ``--config FILE`` and one-line errors."""

    def __init__(self, groups: list[type], prog: str, description: str = "", every_group: list[type] | None = None):
        """``every_group``: the groups of all commands, so that a recipe shared between commands may hold
        another command's options (skipped with a note); without it, a key this parser lacks is an error."""
        base = _hf_parser_class()
        outer = self

        class _Parser(base):
            def error(self, message: str):  # one line, no usage block (the README promises it)
                outer.fail(message)

            def _add_dataclass_arguments(self, dtype):
                super()._add_dataclass_arguments(dtype)
                optional = _optional_fields(dtype)
                for action in self._actions:
                    if action.dest in optional and action.type is not None and action.nargs != "?":
                        action.type = _none_or(action.type)  # "--max-steps none" on the command line means None
                    action.option_strings.sort(key=lambda o: "_" in o)  # usage and help show --max-history first
                    if action.nargs == 0 and action.const is False and action.option_strings[0].startswith("--no-"):
                        # HfArgumentParser gives --no-X the help of --X, which then reads as its opposite
                        action.help = f"turn {action.option_strings[0].replace('--no-', '--', 1)} off"

        self.groups = list(groups)
        self.every_group = list(every_group or groups)
        self.prog = prog
        # allow_abbrev=False: a prefix like --user must not silently mean --users
        self.parser = _Parser(
            self.groups, prog=prog, description=description, allow_abbrev=False, formatter_class=_help_formatter_class()
        )
        self.parser.add_argument("--config", metavar="FILE", help="YAML/JSON recipe of these options (flags win)")

    @staticmethod
    def fail(message: str):
        raise ConfigError(message)

    def fields(self) -> dict[str, type]:
        return {f.name: g for g in self.groups for f in dataclasses.fields(g)}

    def parse(self, argv: list[str] | None = None) -> tuple:
        """One instance per group: defaults, then ``--config`` file values, then typed flags."""
        argv = list(sys.argv[1:] if argv is None else argv)
        pre = argparse.ArgumentParser(add_help=False)
        pre.add_argument("--config", default=None)
        known, _ = pre.parse_known_args(argv)
        self.parser.set_defaults(**self._file_defaults(known.config) if known.config else {})
        namespace = self.parser.parse_args(argv)
        values = vars(namespace)
        out = []
        for group in self.groups:
            kwargs = {f.name: values[f.name] for f in dataclasses.fields(group) if f.init}
            try:
                out.append(group(**kwargs))
            except ConfigError as err:
                field_name = str(err).split(":", 1)[0]
                typed = any(a.split("=")[0] in (f"--{field_name}", f"--{field_name.replace('_', '-')}") for a in argv)
                raise ConfigError(f"{known.config}: {err}" if known.config and not typed else str(err)) from None
        return tuple(out)

    def _file_defaults(self, path: str) -> dict[str, Any]:
        options_of: dict[str, set[str]] = {}  # each group name (as --help prints it) -> its options
        for g in self.every_group:
            options_of.setdefault(getattr(g, "_argument_group_name", ""), set()).update(
                f.name for f in dataclasses.fields(g)
            )
        values = read_config_file(path, options_of)
        mine = self.fields()
        defaults = {}
        skipped = []
        for key, value in values.items():
            if key not in mine:
                skipped.append(key)
                continue
            defaults[key] = self._file_value(path, key, value)
        if skipped:
            known = {f.name for g in self.every_group for f in dataclasses.fields(g)}
            unknown = [k for k in skipped if k not in known]
            if unknown:  # a typo must not run with a default
                raise ConfigError(f"{path}: unknown option {unknown[0]!r} (no m6gen command takes it)")
            print(f"note: {path}: {self.prog} does not take {', '.join(skipped)} (skipped)", file=sys.stderr)
        return defaults

    def _file_value(self, path: str, key: str, value: Any) -> Any:
        """A file value checked exactly as the same flag typed on the command line would be."""
        action = next(a for a in self.parser._actions if a.dest == key and a.option_strings)
        if value is None or isinstance(value, bool) and action.nargs == "?":
            return value
        if action.nargs == "?" and str(value).strip().lower() in ("on", "off"):  # a switch, as chat's `set open on`
            return str(value).strip().lower() == "on"
        if isinstance(value, bool):  # YAML's true/false where a number or a word is wanted
            raise ConfigError(f"{path}: {key}: expected {_kind(action)}, got {str(value).lower()}")
        if action.nargs == "+":
            items = value if isinstance(value, list) else str(value).split(",")
            return [self._convert(path, key, action, str(v)) for v in items]
        if isinstance(value, (list, dict)):
            raise ConfigError(f"{path}: {key}: expected one value, got {value!r}")
        return self._convert(path, key, action, str(value))

    @staticmethod
    def _convert(path: str, key: str, action: argparse.Action, text: str) -> Any:
        try:
            converted = action.type(text) if action.type is not None else text
        except (argparse.ArgumentTypeError, TypeError, ValueError):
            raise ConfigError(f"{path}: {key}: expected {_kind(action)}, got {text!r}") from None
        if action.choices is not None and converted not in action.choices:
            raise ConfigError(f"{path}: {key}: {text!r} is not one of {', '.join(map(str, action.choices))}")
        return converted

    def value_from_text(self, name: str, text: str) -> Any:
        """A value for ``name`` from the text a person typed (chat's ``set``), checked as its flag would be."""
        fields = self.fields()
        if name not in fields:
            raise ConfigError(f"unknown setting {name!r}")
        return self._file_value("set", name, text.strip())

    def print_help(self) -> None:
        self.parser.print_help()


def _kind(action: argparse.Action) -> str:
    """What an option's values are, in words: 'a whole number', 'a number', ..."""
    if action.choices is not None:
        return f"one of {', '.join(map(str, action.choices))}"
    kind = getattr(action.type, "__name__", None) or "text"
    words = {"int": "a whole number", "float": "a number", "string_to_bool": "on/off (true/false)", "str": "text"}
    return words.get(kind, kind)


GROUP_ALIASES = {
    "prompt": "prompts",
    "decode": "decoding",
    "rerank": "reranking",
    "train": "training",
    "eval": "evaluation",
}


def read_config_file(path: str | Path, group_names: dict[str, set[str]] | list[str] = ()) -> dict[str, Any]:
    """Option values from a YAML or JSON file: flat keys, or nested one level under a group's name
    (one of ``group_names`` or ``GROUP_ALIASES``, short names for nesting in a recipe). Given each
    group's options (a dict), an option nested under a group that does not hold it is an error."""
    import yaml

    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read config ({getattr(err, 'strerror', None) or err})") from None
    try:
        data = yaml.load(text, Loader=_unique_key_loader())  # JSON is YAML
    except _DuplicateKey as dup:
        raise ConfigError(f"{path}:{dup.line}: {dup.key!r} given twice") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML/JSON") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values, got {type(data).__name__}")
    if not isinstance(group_names, dict):
        group_names = dict.fromkeys(group_names)  # names only: nesting allowed, options unchecked
    options = {g.replace("-", "_"): opts for g, opts in group_names.items()}  # `tune-prompts:` as --help names it
    groups = set(options) | set(GROUP_ALIASES)
    flat: dict[str, Any] = {}
    written: dict[str, str] = {}  # each option -> how the file spelled it, for a second spelling's error

    def put(option: str, value: Any, spelled: str) -> None:
        if option in flat:  # `max_history` and `max-history`, or flat and under a group: which one wins is a guess
            raise ConfigError(f"{path}: {option} given twice (as {written[option]} and as {spelled})")
        flat[option], written[option] = value, spelled

    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name in groups and isinstance(value, dict):  # `data: {format: plain}` and `train: {lr: 1e-3}`
            for sub, v in value.items():
                option = str(sub).replace("-", "_")
                _check_group(path, name, option, options)
                put(option, v, f"{key}: {sub}")
        else:
            put(name, value, str(key))
    return flat


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int):
        super().__init__(key)
        self.key, self.line = key, line


def _unique_key_loader():
    """yaml's SafeLoader, except that a key repeated in one mapping is an error (SafeLoader keeps the last)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                try:
                    repeated = key in seen
                except TypeError:  # an unhashable key: SafeLoader's own error names it
                    break
                if repeated:
                    raise _DuplicateKey(key, key_node.start_mark.line + 1)
                seen.add(key)
            return super().construct_mapping(node, deep)

    return UniqueKeyLoader


def _check_group(path: Path, group: str, option: str, options: dict[str, set[str] | None]) -> None:
    """``option`` nested under ``group`` must be one of its options (where they are known): a recipe
    with `prompts: {max_steps: 3}` shows a reader a prompt option that is not one."""
    held = options.get(GROUP_ALIASES.get(group, group))
    if held is None or option in held:
        return
    owners = [g for g, opts in options.items() if opts and option in opts]
    if owners:  # an unknown option is named as such by the caller
        raise ConfigError(f"{path}: {option!r} is not a {group}: option; put it under {owners[0]}:")


def to_dict(*configs: Any) -> dict[str, Any]:
    """The JSON-ready resolved options of several groups, for the config file written next to outputs."""
    out: dict[str, Any] = {}
    for cfg in configs:
        out.update(dataclasses.asdict(cfg))
    return out
