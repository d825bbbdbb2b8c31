"""One configuration system: grouped dataclasses, parsed by transformers' ``HfArgumentParser``.

Every option of every command is a field of one of the groups below, with its help text and its
check in ``__post_init__``. A command is built from the groups it needs, so an option has one
name, one default and one meaning everywhere: on the command line (``--max-history 20``), in a
YAML recipe (``max_history: 20``, flat or under its group: ``prompt: {max_history: 20}``), in the
Python API and in ``m6gen chat``'s ``set``.

    parser = ConfigParser([DataArgs, PromptArgs], prog="m6gen data")
    data, prompt = parser.parse(argv)                    # --config FILE fills in; flags win

Precedence: field defaults < ``--config`` file < flags typed on the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

FORMATS = ("auto", "recbole", "ml-100k", "ml-1m", "plain")
RANKINGS = ("logprob", "normalized", "catalog")


class ConfigError(ValueError):
    """A config file or option value is wrong; the message names the file, field or flag."""


def option(default: Any = dataclasses.MISSING, help: str = "", **metadata: Any) -> Any:  # noqa: A002
    """A dataclass field with help text (shown by ``--help``)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **metadata})
    return field(default=default, metadata={"help": help, **metadata})


def _at_least(obj: Any, low: float, *names: str, optional: bool = False) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is None and optional:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= low:
            none = " or none" if optional else ""
            raise ConfigError(f"{name}: expected a number >= {low}{none}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{name}: expected a finite number, got {value!r}")


def _one_of(obj: Any, name: str, allowed: tuple[str, ...]) -> None:
    if getattr(obj, name) not in allowed:
        raise ConfigError(f"{name}: expected one of {', '.join(allowed)}, got {getattr(obj, name)!r}")


# ------------------------------------------------------------------------------------------ groups
@dataclass
class DataArgs:
    """Which interactions and items to read, and which users to keep."""

    _argument_group_name = "data"

    data: str | None = option(None, "data folder (default: $M6GEN_DATA, else MovieLens-100K from scripts/setup.sh)")
    format: Literal["auto", "recbole", "ml-100k", "ml-1m", "plain"] = option(
        "auto", "data format (auto: detected from the files, and said in a note)"
    )
    title_field: str | None = option(None, "item title column (default: detected)")
    dedupe: Literal["first", "keep", "last"] = option(
        "first", "repeated items in a history: keep the first, all, or the last"
    )
    min_history: int = option(
        3, "drop users with fewer interactions (at least 3: a train, a validation and a test item)"
    )
    unknown_items: Literal["error", "skip"] = option(
        "error", "interactions whose item is not in the item file: an error, or skip them"
    )

    def __post_init__(self):
        _at_least(self, 3, "min_history")
        _one_of(self, "format", FORMATS)
        _one_of(self, "dedupe", ("first", "keep", "last"))
        _one_of(self, "unknown_items", ("error", "skip"))


@dataclass
class PromptArgs:
    """How a history becomes a prompt."""

    _argument_group_name = "prompts"

    templates: str | None = option(None, "extra folder of .jinja templates, searched before prompts/")
    template: str | None = option(None, "template name or .jinja path (default: the trained run's, else titles)")
    max_history: int | None = option(None, "most recent items shown in a prompt (default: the trained run's, else 20)")
    candidates: str | None = option(
        None,
        "a saved SASRec folder as retriever: prompts may list its top --n-candidates unseen items and only they "
        "are ranked (default: the retriever the trained run used)",
    )
    n_candidates: int | None = option(
        None, "items the retriever proposes per user (default: the trained run's, else 20)"
    )

    def __post_init__(self):
        _at_least(self, 1, "max_history", "n_candidates", optional=True)


@dataclass
class ModelArgs:
    """Which language model."""

    _argument_group_name = "model"

    model: str | None = option(
        None,
        "a trained m6gen run folder, a Hugging Face model id or folder, or a .gguf file "
        "(default: SmolLM2-135M-Instruct)",
    )
    gguf_file: str | None = option(None, "GGUF file name inside --model's folder")

    def __post_init__(self):
        pass  # any name may be a hub id; loading checks it


@dataclass
class DeviceArgs:
    """Where and in which precision the model runs."""

    _argument_group_name = "device"

    device: str = option("auto", "auto (the GPU or other accelerator torch sees, else cpu), cpu, cuda, cuda:1, mps")
    dtype: Literal["auto", "float32", "bfloat16"] = option(
        "auto", "auto: bfloat16 where the device computes it natively (on other CPUs it is ~400x slower), else float32"
    )

    def __post_init__(self):
        _one_of(self, "dtype", ("auto", "float32", "bfloat16"))


@dataclass
class DecodeArgs:
    """The trie-constrained beam search."""

    _argument_group_name = "decoding"

    beams: int = option(20, "beams = distinct catalog items generated per user before reranking")
    batch_size: int = option(8, "users decoded together")
    rank_by: Literal["logprob", "normalized", "catalog"] = option("logprob", "beam score used for ranking")

    def __post_init__(self):
        _at_least(self, 1, "beams", "batch_size")
        _one_of(self, "rank_by", RANKINGS)


@dataclass
class PriorArgs:
    """A collaborative prior inside the search."""

    _argument_group_name = "prior"

    sasrec: str | None = option(
        None, "a saved SASRec folder whose log-probabilities join the beam search as an item prior"
    )
    sasrec_weight: float = option(1.0, "weight of the SASRec prior (with --sasrec)")

    def __post_init__(self):
        _at_least(self, 0, "sasrec_weight")


@dataclass
class RerankArgs:
    """The final top-k: accuracy traded against diversity and novelty."""

    _argument_group_name = "reranking"

    k: int = option(10, "recommendations per user (at most --beams)")
    diversity: float = option(0.0, "reranker diversity weight (>= 0)")
    novelty: float = option(0.0, "reranker novelty weight (>= 0)")

    def __post_init__(self):
        _at_least(self, 1, "k")
        _at_least(self, 0, "diversity", "novelty")


@dataclass
class RuntimeArgs:
    """Console and CPU settings."""

    _argument_group_name = "runtime"

    progress: bool = option(True, "show progress bars (--no-progress: none)")
    threads: int | None = option(None, "CPU threads for torch (default: torch's, all cores)")

    def __post_init__(self):
        _at_least(self, 1, "threads", optional=True)


def check_k_fits_beams(rerank: RerankArgs, decode: DecodeArgs) -> None:
    """k > beams would silently return short lists: refuse it in one line."""
    if rerank.k > decode.beams:
        raise ConfigError(f"k: {rerank.k} recommendations need at least as many beams (--beams {decode.beams})")


# ------------------------------------------------------------------------------------------ parser
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


def all_groups() -> list[type]:
    """Every option group of every command, for the "one name per concept" check and shared files."""
    from m6gen.commands import registry

    return registry.all_groups()


class ConfigParser:
    """An ``HfArgumentParser`` over option groups, with ``--config FILE`` and one-line errors."""

    def __init__(self, groups: list[type], prog: str, description: str = ""):
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

        self.groups = list(groups)
        self.prog = prog
        # allow_abbrev=False: a prefix like --user must not silently mean --users
        self.parser = _Parser(self.groups, prog=prog, description=description, allow_abbrev=False)
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
        values = read_config_file(path)
        mine = self.fields()
        defaults = {}
        skipped = []
        for key, value in values.items():
            if key not in mine:
                skipped.append(key)
                continue
            defaults[key] = self._file_value(path, key, value)
        if skipped:
            known = {f.name for g in all_groups() for f in dataclasses.fields(g)}
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
        if isinstance(value, bool):
            raise ConfigError(f"{path}: {key}: expected a value, got {value!r}")
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
            kind = getattr(action.type, "__name__", "value")
            kind = {"int": "a whole number", "float": "a number", "string_to_bool": "on/off (true/false)"}.get(
                kind, kind
            )
            raise ConfigError(f"{path}: {key}: expected {kind}, got {text!r}") from None
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


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Option values from a YAML or JSON file: flat keys, or nested one level under a group's name."""
    import yaml

    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read config ({getattr(err, 'strerror', None) or err})") from None
    try:
        data = yaml.safe_load(text)  # JSON is YAML
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML/JSON") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values, got {type(data).__name__}")
    groups = {getattr(g, "_argument_group_name", "") for g in all_groups()} | {
        "prompt",
        "decode",
        "rerank",
        "train",
        "eval",
    }
    flat: dict[str, Any] = {}
    for key, value in data.items():
        key = str(key).replace("-", "_")
        if key in groups and isinstance(value, dict):  # `data: {format: plain}` and `train: {lr: 1e-3}`
            for sub, v in value.items():
                flat[str(sub).replace("-", "_")] = v
        else:
            flat[key] = value
    return flat


def to_dict(*configs: Any) -> dict[str, Any]:
    """The JSON-ready resolved options of several groups, for the config file written next to outputs."""
    out: dict[str, Any] = {}
    for cfg in configs:
        out.update(dataclasses.asdict(cfg))
    return out


# ------------------------------------------------------------------------------------------ SASRec
def _sasrec_args() -> type:
    """SASRec's own options (``SASRecConfig``) as a group, each prefixed ``sasrec_`` (``--sasrec-epochs``)."""
    from m6gen.baselines.config import SASRecConfig

    fields = [
        (f"sasrec_{f.name}", f.type, field(default=f.default, metadata={"help": f.metadata.get("help", "")}))
        for f in dataclasses.fields(SASRecConfig)
    ]

    def __post_init__(self):
        self.to_config()

    def to_config(self) -> SASRecConfig:
        values = {f.name: getattr(self, f"sasrec_{f.name}") for f in dataclasses.fields(SASRecConfig)}
        try:
            return SASRecConfig(**values)
        except ValueError as err:
            raise ConfigError(str(err).replace("SASRecConfig.", "sasrec_")) from None

    cls = dataclasses.make_dataclass(
        "SASRecArgs",
        fields,
        namespace={
            "__post_init__": __post_init__,
            "to_config": to_config,
            "_argument_group_name": "SASRec baseline",
            "__module__": __name__,
        },
    )
    cls.__doc__ = "The SASRec baseline (full cross-entropy): architecture, training and early stopping."
    return cls


SASRecArgs = _sasrec_args()
