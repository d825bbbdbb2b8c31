"""Typed configs for sub-commands: a dataclass's fields become CLI flags, ``--config`` fills them from YAML/JSON.

Precedence: dataclass defaults < ``--config`` file < flags given on the command line. Field help
comes from ``field(metadata={"help": ...})``; validation lives in each dataclass's ``__post_init__``.

    parser = argparse.ArgumentParser()
    add_config_args(parser, TrainConfig)
    cfg = config_from_args(TrainConfig, parser.parse_args(argv))
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

C = TypeVar("C")


class ConfigError(ValueError):
    """A config file or value is wrong; the message names the file and field."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """(inner type, allows None) for ``X | None``; other types unchanged."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], len(args) < len(typing.get_args(tp))
    return tp, False


def _none_or(convert):
    def parse(text: str):
        return None if text.lower() in ("none", "null") else convert(text)

    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


def add_config_args(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add ``--config`` and one flag per field of dataclass ``cls`` (``--field-name``).

    Flags default to "not given" (``argparse.SUPPRESS``) so a config file's values are only
    overridden by flags the user typed. ``bool`` fields get ``--x/--no-x``; ``list[str]``
    fields take one or more values (or one comma-separated value).
    """
    parser.add_argument("--config", metavar="FILE", help="YAML or JSON file of these options; flags override it")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, optional = _unwrap_optional(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # fmt: skip
        help_text = f.metadata.get("help", "")
        help_text = f"{help_text} (default: {default})" if help_text else f"default: {default}"
        flags = [_flag(f.name), *f.metadata.get("aliases", ())]  # e.g. --format, as the other commands spell it
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        if "choices" in f.metadata:
            kw["choices"] = f.metadata["choices"]
        if tp is bool:
            parser.add_argument(*flags, action=argparse.BooleanOptionalAction, **kw)
        elif typing.get_origin(tp) is list:
            parser.add_argument(*flags, nargs="+", metavar=f.name.upper(), **kw)
        else:
            convert = tp if tp in (int, float, str) else str
            if "choices" not in kw:
                kw["metavar"] = f.name.upper()
            parser.add_argument(*flags, type=_none_or(convert) if optional else convert, **kw)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A mapping of option names to values from a ``.json``, ``.yaml`` or ``.yml`` file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{path}: config file does not exist")
    text = path.read_text(encoding="utf-8")
    fmt = "JSON" if path.suffix.lower() == ".json" else "YAML"
    try:
        if fmt == "JSON":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as err:  # json.JSONDecodeError, yaml.YAMLError: their text carries the line
        raise ConfigError(f"{path}: not valid {fmt}: {' '.join(str(err).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values, got {type(data).__name__}")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def _coerce(cls: type, name: str, value: Any, source: str) -> Any:
    """Check a file value against the field's type (ints for floats and one string for a list are accepted)."""
    tp, optional = _unwrap_optional(typing.get_type_hints(cls)[name])
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{source}: {name}: may not be null")
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typing.get_origin(tp) is list:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
        raise ConfigError(f"{source}: {name}: expected a list of strings, got {value!r}")
    if tp in (int, float, str, bool) and not (isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        raise ConfigError(f"{source}: {name}: expected {tp.__name__}, got {value!r}")
    return value


def _split_commas(values: dict[str, Any]) -> dict[str, Any]:
    # "--target-modules q_proj,v_proj" means the same as "--target-modules q_proj v_proj"
    split = lambda val: [p for v in val for p in v.split(",") if p] if isinstance(val, list) else val  # noqa: E731
    return {k: split(val) for k, val in values.items()}


def build_config(cls: type[C], file_values: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None,
                 source: str = "config", others: set[str] = frozenset()) -> C:  # fmt: skip
    """An instance of dataclass ``cls``: defaults, then ``file_values`` (checked), then ``overrides``.

    A file key that ``cls`` lacks is an error (a typo must not silently train with a default),
    unless it is in ``others`` (another command's option, in a file shared between commands): skipped with a note.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    aliases = {a.lstrip("-").replace("-", "_"): f.name for f in dataclasses.fields(cls) for a in f.metadata.get("aliases", ())}
    values: dict[str, Any] = {}
    for key, value in (file_values or {}).items():
        key = aliases.get(key, key)  # a file shared with other commands may say format/templates
        if key not in names and key in others:
            print(f"note: {source}: this command does not take {key} (skipped)", file=sys.stderr)
            continue
        if key not in names:
            raise ConfigError(f"{source}: unknown option {key!r}; known: {', '.join(sorted(names))}")
        values[key] = _coerce(cls, key, value, source)
    values.update(overrides or {})
    values = _split_commas(values)
    try:
        return cls(**values)
    except TypeError as err:
        raise ConfigError(f"{source}: {err}") from None


def config_from_args(cls: type[C], args: argparse.Namespace) -> C:
    """The config from parsed args: ``--config`` file values, overridden by the flags given."""
    given = {k: v for k, v in vars(args).items() if k != "config"}
    file_values = read_config_file(args.config) if getattr(args, "config", None) else {}
    source = str(args.config) if getattr(args, "config", None) else "options"
    others: set[str] = set()
    if file_values:
        from m6gen.cli import other_command_options

        others = other_command_options(but="train")
    return build_config(cls, file_values, given, source=source, others=others)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a dataclass config."""
    return dataclasses.asdict(cfg)
