"""The chat session's settings and save files: `set` values checked, session JSON written and read back safely."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path

from m6gen.config import ConfigError, ConfigParser, DecodeArgs, PromptArgs, RerankArgs, at_least, option

MAX_SESSION_BYTES = 10_000_000  # `load` refuses bigger files (and never reads a device like /dev/zero)


class ChatError(ValueError):
    """A line the session cannot act on; the message says what to type instead."""


@dataclass
class ChatArgs:
    """What `why` and `open` do in a chat session."""

    _argument_group_name = "chat"

    open: bool = option(False, "open-ended generation: titles may be outside the catalog (flagged)")
    cold_only: bool = option(False, "a shelf of new items: only items no training interaction names")
    tokens: int = option(40, "`why`: most new tokens of an explanation (1..200)")
    sample: bool = option(False, "`why`: sample (temperature 0.7) instead of greedy")

    def __post_init__(self):
        at_least(self, 1, "tokens")


# What `set` changes: the same fields, names and checks as the command-line options.
SETTABLE = {
    "k": RerankArgs,
    "diversity": RerankArgs,
    "novelty": RerankArgs,
    "beams": DecodeArgs,
    "rank_by": DecodeArgs,
    "template": PromptArgs,
    "open": ChatArgs,
    "cold_only": ChatArgs,
    "tokens": ChatArgs,
    "sample": ChatArgs,
}
LIMITS = {"k": 100, "beams": 1000, "tokens": 200}  # a session must stay responsive


# A setting's annotation -> the JSON types its value may have, and how an error names them.
_SETTING_TYPES = {
    "int": ((int,), "a whole number"),
    "float": ((int, float), "a number"),
    "bool": ((bool,), "true or false"),
    "str": ((str,), "text"),
}


@dataclass
class ChatSettings:
    """What the session's ``set`` command changes; each value checked by its option group."""

    k: int = 10
    beams: int = 20
    template: str = "titles"
    diversity: float = 0.0
    novelty: float = 0.0
    rank_by: str = "logprob"
    open: bool = False
    cold_only: bool = False
    tokens: int = 40
    sample: bool = False

    def __post_init__(self):
        self._check_types()
        try:
            RerankArgs(k=self.k, diversity=self.diversity, novelty=self.novelty)
            DecodeArgs(beams=self.beams, rank_by=self.rank_by)
            ChatArgs(open=self.open, cold_only=self.cold_only, tokens=self.tokens, sample=self.sample)
        except ConfigError as err:
            raise ChatError(str(err)) from None
        for name, top in LIMITS.items():
            if getattr(self, name) > top:
                raise ChatError(f"{name}: at most {top} in a chat session, got {getattr(self, name)}")
        if not isinstance(self.template, str) or not self.template.strip():
            raise ChatError("template: a template name or a .jinja path")
        if self.open and self.cold_only:
            raise ChatError("open and cold_only: one at a time (open mode may name titles outside the catalog)")
        if self.k > self.beams:
            raise ChatError(f"k: {self.k} recommendations need at least as many beams (now {self.beams})")

    def _check_types(self) -> None:
        """Each value of the type its field names (a session file may hold any JSON: 2.7 for k, "yes" for open)."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            types, wanted = _SETTING_TYPES[f.type]
            if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):  # True is an int
                raise ChatError(f"{f.name}: expected {wanted}, got {value!r}")

    @staticmethod
    def help_of(name: str) -> str:
        group = SETTABLE[name]
        return next(f.metadata["help"] for f in dataclasses.fields(group) if f.name == name)

    def with_value(self, name: str, text: str) -> ChatSettings:
        """A copy with ``name`` set from the text a person typed (``set k 5``), checked as its flag would be."""
        name = name.lower().replace("-", "_")
        if name not in SETTABLE:
            raise ChatError(
                f"unknown setting {shown(name)}; settings: {', '.join(SETTABLE)} "
                "(a title starting with 'set': type `add set ...`)"
            )
        try:
            value = _settings_parser().value_from_text(name, text)
        except ConfigError as err:  # "set: k: expected ...": the session says "k: ..." as for other checks
            raise ChatError(str(err).removeprefix("set: ")) from None
        return dataclasses.replace(self, **{name: value})


@functools.cache
def _settings_parser():
    """One parser over the settable groups (built once: it imports transformers)."""
    return ConfigParser([PromptArgs, DecodeArgs, RerankArgs, ChatArgs], prog="set")


def shown(text: str, limit: int = 60) -> str:
    """User text quoted for a message: control characters escaped, long text clipped."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def read_session(path: Path) -> dict:
    """The JSON object in a file written by ``save``; a ``ChatError`` says why a file is not one."""
    if not path.exists():
        raise ChatError(f"{path}: no such file")
    if not path.is_file():
        raise ChatError(f"{path}: not a file (a folder, device or pipe)")
    if path.stat().st_size > MAX_SESSION_BYTES:
        raise ChatError(f"{path}: too big for a session file")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ChatError(f"{path}: not a session file ({' '.join(str(err).split())})") from None
    if not isinstance(state, dict) or state.get("m6gen_chat") != 1:
        raise ChatError(f"{path}: not a session file (written by `save`)")
    return state


def session_state(user: str | None, history: list[int], settings: ChatSettings, last: list[dict], catalog) -> dict:
    """What ``save`` writes: plain JSON data (nan scores become null); history items by id and title."""

    def plain(v):
        return None if isinstance(v, float) and not math.isfinite(v) else v

    return {
        "m6gen_chat": 1,
        "user": user,
        "history": [{"item_id": catalog[i].item_id, "title": catalog[i].title} for i in history],
        "settings": dataclasses.asdict(settings),
        "recommendations": [{k: plain(v) for k, v in r.items()} for r in last],
    }


def restore_history(entries: list, catalog) -> tuple[list[int], int]:
    """A saved history as catalog indices (each once, in order) and the number of entries this
    catalog does not hold (found by id, else by title)."""
    history, missing = [], 0
    for entry in entries:
        item = _find(entry, catalog)
        if item is None:
            missing += 1
        elif item not in history:
            history.append(item)
    return history, missing


def _find(entry, catalog) -> int | None:
    if not isinstance(entry, dict):
        return None
    item_id, title = entry.get("item_id"), entry.get("title")
    if isinstance(item_id, str) and catalog.has_id(item_id):
        return catalog.index_of(item_id)
    found = catalog.by_title(title) if isinstance(title, str) else None
    return found.index if found is not None else None
