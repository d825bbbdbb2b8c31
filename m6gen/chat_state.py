"""The chat session's settings and save files: `set` values checked, session JSON written and read back safely."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ALIASES = {"diversity": "div", "novelty": "nov", "rank-by": "rank_by", "num_beams": "beams", "topk": "k"}
RANK_BY = ("logprob", "normalized", "catalog")
MAX_SESSION_BYTES = 10_000_000  # `load` refuses bigger files (and never reads a device like /dev/zero)


class ChatError(ValueError):
    """A line the session cannot act on; the message says what to type instead."""


@dataclass
class ChatSettings:
    """What the session's ``set`` command changes; validated like every config."""

    k: int = field(default=10, metadata={"help": "recommendations shown by `rec` (1..100)"})
    beams: int = field(default=20, metadata={"help": "catalog items generated before reranking (1..1000)"})
    template: str = field(default="titles", metadata={"help": "prompt template name or .jinja path"})
    div: float = field(default=0.0, metadata={"help": "reranker diversity weight (>= 0)"})
    nov: float = field(default=0.0, metadata={"help": "reranker novelty weight (>= 0)"})
    rank_by: str = field(default="logprob", metadata={"help": f"beam score ranked by: one of {RANK_BY}"})
    open: bool = field(default=False, metadata={"help": "open-ended generation: titles may be outside the catalog"})
    tokens: int = field(default=40, metadata={"help": "`why`: most new tokens of an explanation (1..200)"})
    sample: bool = field(default=False, metadata={"help": "`why`: sample (temperature 0.7) instead of greedy"})

    def __post_init__(self):
        for name, top in (("k", 100), ("beams", 1000), ("tokens", 200)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
                raise ChatError(f"{name} must be an integer in 1..{top}, got {value!r}")
        for name in ("div", "nov"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ChatError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.rank_by not in RANK_BY:
            raise ChatError(f"rank_by must be one of {', '.join(RANK_BY)}, got {self.rank_by!r}")
        if not isinstance(self.template, str) or not self.template.strip():
            raise ChatError("template must be a template name or a .jinja path")
        for name in ("open", "sample"):
            if not isinstance(getattr(self, name), bool):
                raise ChatError(f"{name} must be on or off, got {getattr(self, name)!r}")

    def with_value(self, name: str, text: str) -> ChatSettings:
        """A copy with ``name`` set from the text a person typed (``set k 5``)."""
        name = ALIASES.get(name.lower(), name.lower())
        kinds = {f.name: f.type for f in dataclasses.fields(self)}
        if name not in kinds:
            raise ChatError(f"unknown setting {shown(name)}; settings: {', '.join(kinds)} "
                            "(a title starting with 'set': type `add set ...`)")
        kind = kinds[name]
        try:
            if kind == "int":
                value = int(text)
            elif kind == "float":
                value = float(text)
            elif kind == "bool":
                value = {"on": True, "true": True, "1": True, "yes": True,
                         "off": False, "false": False, "0": False, "no": False}[text.lower()]  # fmt: skip
            else:
                value = text
        except (ValueError, KeyError):
            raise ChatError(f"set {name}: {shown(text)} is not {'on/off' if kind == 'bool' else 'a ' + kind}") from None
        return dataclasses.replace(self, **{name: value})


def shown(text: str, limit: int = 60) -> str:
    """User text quoted for a message: control characters escaped, long text clipped."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, so a crash leaves no half file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_session(path: Path) -> dict:
    """The JSON object in a file written by ``save``; a ``ChatError`` says why a file is not one."""
    if not path.is_file():
        raise ChatError(f"{path}: no such file")
    if path.stat().st_size > MAX_SESSION_BYTES:
        raise ChatError(f"{path}: too big for a session file")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ChatError(f"{path}: not a session file ({' '.join(str(err).split())})") from None
    if not isinstance(state, dict) or state.get("m6gen_chat") != 1:
        raise ChatError(f"{path}: not a session file (written by `save`)")
    return state
