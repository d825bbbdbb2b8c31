"""Request body -> checked job: size, UTF-8, JSON, types, items and k, each error naming its field.

Every check runs before a job reaches the model worker, so a bad request costs no model time and
cannot fail a batch. Items are given as ids of the data files or as titles: an id is tried first,
then the exact title, then the title ignoring case, accents and a missing year when that leaves
exactly one item. Anything else is refused with the closest titles as suggestions.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel, ValidationError

from m6gen.serving.engine import ExplainJob, RecommendJob
from m6gen.serving.errors import ApiError

MAX_TEXT = 300  # longest id or title accepted (fuzzy matching a longer one would only waste time)
SUGGESTIONS = 5
Model = TypeVar("Model", bound=BaseModel)


# ---------------------------------------------------------------------- the body
async def read_body(request, limit: int) -> bytes:
    """The raw body, refused with 413 past ``limit`` bytes, by its Content-Length or while it streams."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit, int(declared))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int, size: int | None = None) -> ApiError:
    """413; ``size`` None: the body was still streaming when it passed the limit, its size is unknown."""
    said = f"{size:,} bytes" if size is not None else f"more than {limit:,} bytes"
    return ApiError(413, "body", f"{said}; at most {limit:,} (the server's --max-body-bytes)")


def _short_int(digits: str) -> int:
    # Python refuses to read integers over 4,300 digits with a message about its own settings
    length = len(digits.lstrip("-"))
    if length > MAX_TEXT:
        raise ApiError(400, "body", f"a number of {length:,} digits; numbers and ids have at most {MAX_TEXT}")
    return int(digits)


def parse_json(raw: bytes, schema: type[Model]) -> Model:
    """``raw`` as a ``schema`` object: UTF-8 text (400), one JSON object (400, 422), each field's type (422)."""
    if not raw.strip():
        raise ApiError(400, "body", "empty; expected a JSON object")
    try:
        text = raw.decode("utf-8-sig")  # a BOM, as some Windows tools write, is not part of the JSON
    except UnicodeDecodeError as err:
        raise ApiError(400, "body", f"not UTF-8 text (byte {err.start} is {raw[err.start]:#04x})") from None
    try:
        data = json.loads(text, parse_constant=_no_constant, parse_int=_short_int)
    except json.JSONDecodeError as err:
        raise ApiError(400, "body", f"not valid JSON: {err.msg} (line {err.lineno}, column {err.colno})") from None
    except RecursionError:
        raise ApiError(400, "body", "not valid JSON here: nested too deeply") from None
    except ValueError as err:
        raise ApiError(400, "body", f"not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ApiError(422, "body", f"expected a JSON object, got {_json_kind(data)}")
    try:
        return schema.model_validate(data)
    except ValidationError as err:
        raise validation_error(err.errors()) from None


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _json_kind(value: Any) -> str:
    kinds = {dict: "an object", list: "an array", str: "a string", bool: "true/false", type(None): "null"}
    return kinds.get(type(value), "a number")


def validation_error(errors: list[dict]) -> ApiError:
    """The first failing field as one 422; a union's two complaints ("a string", "a whole number") become one."""
    field = field_name(errors[0]["loc"])
    same = [e for e in errors if field_name(e["loc"]) == field]
    if len(same) > 1 and all(e["type"] in _KINDS for e in same):
        message = "expected " + " or ".join(dict.fromkeys(_KINDS[e["type"]] for e in same))
    elif errors[0]["type"] == "extra_forbidden":
        message = "unknown field (see /docs for the fields this endpoint takes)"
    elif errors[0]["type"] == "missing":
        message = "required"
    else:
        message = errors[0]["msg"][:1].lower() + errors[0]["msg"][1:]
    if "input" in errors[0] and errors[0]["type"] not in ("missing", "extra_forbidden"):
        message += f", got {_short(errors[0]['input'])}"
    return ApiError(422, field, message)


_KINDS = {
    "string_type": "a string",
    "int_type": "a whole number",
    "float_type": "a number",
    "bool_type": "true/false",
    "list_type": "a list",
    "none_required": "null",
}


def field_name(loc: tuple) -> str:
    """``("history", 3, "str")`` -> ``history[3]``: list positions kept, union member names dropped."""
    name = str(loc[0]) if loc else "body"
    for part in loc[1:]:
        if not isinstance(part, int):
            break
        name += f"[{part}]"
    return name


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, bytes) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------------- items, users and k
class Inputs:
    """Turns checked request bodies into jobs over the loaded catalog and users.

    Args:
        catalog: the recommender's catalog.
        split: the data's leave-one-out split, for ``user_id`` (None: no users loaded).
        profiles: user id -> profile fields, given to templates.
        matcher: a ``TitleMatcher`` over the catalog's titles (suggestions for unknown titles).
        defaults: ``k``, ``diversity``, ``novelty`` and ``rank_by`` of a request that leaves them out.
        beams: the server's beams (k may not exceed them).
        max_items: longest history or exclude list.
    """

    def __init__(self, catalog, split, profiles: dict | None, matcher, defaults: dict, beams: int, max_items: int):
        from m6gen.data import cold_items

        self.catalog, self.split, self.profiles, self.matcher = catalog, split, profiles or {}, matcher
        self.defaults, self.beams, self.max_items = defaults, beams, max_items
        # cold_only requests may name only these: every other item is excluded (None: no data loaded)
        cold = cold_items(split, len(catalog)) if split is not None else None
        self.warm = None if cold is None else tuple(np.setdiff1d(np.arange(len(catalog)), cold).tolist())

    def recommend_job(self, req) -> RecommendJob:
        history, profile = self.history(req.history, req.user_id)
        k = self.defaults["k"] if req.k is None else req.k
        self.check_k(k)
        pick = {
            name: self.defaults[name] if getattr(req, name) is None else getattr(req, name)
            for name in ("diversity", "novelty", "rank_by")
        }
        exclude = self.items(req.exclude, "exclude")
        if req.cold_only:
            exclude = [*exclude, *self.cold_only_exclusions(req.open)]
        return RecommendJob(
            history=tuple(history),
            k=k,
            exclude=tuple(exclude),
            open=req.open,
            profile=tuple(sorted(profile.items())),
            **pick,
        )

    def cold_only_exclusions(self, open_mode: bool) -> tuple[int, ...]:
        """The items a cold_only request may not name: every one with a training interaction."""
        if open_mode:
            raise ApiError(422, "cold_only", "not with open: open mode may name titles outside the catalog")
        if self.warm is None:
            raise ApiError(422, "cold_only", "the server has no interaction data to tell cold items from others")
        if len(self.warm) == len(self.catalog):
            raise ApiError(422, "cold_only", "no item is cold: every catalog item has a training interaction")
        return self.warm

    def explain_job(self, req) -> ExplainJob:
        history, _ = self.history(req.history, req.user_id)
        if (req.item is None) == (req.title is None):
            raise ApiError(422, "item", "give item (an id or catalog title) or title (any text), exactly one")
        title = (
            self.catalog[self.items([req.item], "item", single=True)[0]].title if req.item is not None else req.title
        )
        if not title.strip():
            raise ApiError(422, "title", "empty")
        return ExplainJob(history_titles=tuple(self.catalog[i].title for i in history), title=title.strip())

    def check_k(self, k: int) -> None:
        n = len(self.catalog)
        if k > self.beams and self.beams <= n:  # the tighter of the two limits
            raise ApiError(422, "k", f"at most {self.beams} (the server's --beams), got {k}")
        if k > n:
            raise ApiError(422, "k", f"at most {n} (the catalog's size), got {k}")

    def history(self, history: list | None, user_id: str | int | None) -> tuple[list[int], dict]:
        """(catalog indices, oldest first, without repeats; the user's profile) from a history or a user id."""
        if (history is None) == (user_id is None):
            raise ApiError(422, "history", "give history (item ids or titles) or user_id, exactly one")
        if user_id is not None:
            return self.user_history(str(user_id))
        if not history:
            raise ApiError(422, "history", "empty; give at least one item id or title, or a user_id")
        return list(dict.fromkeys(self.items(history, "history"))), {}

    def user_history(self, user: str) -> tuple[list[int], dict]:
        from m6gen.prompts import user_vars

        if len(user) > MAX_TEXT:
            raise ApiError(422, "user_id", f"{len(user):,} characters; a user id has at most {MAX_TEXT}")
        if self.split is None or user not in self.split.train:
            example = ", ".join(self.split.users[:3]) if self.split is not None else "none loaded"
            raise ApiError(422, "user_id", f"unknown user {user[:MAX_TEXT]!r} (ids look like {example})")
        return self.split.test_history(user) + [self.split.test[user]], user_vars(user, self.profiles)

    def items(self, values: list, field: str, single: bool = False) -> list[int]:
        """Catalog indices of ``values`` (ids or titles); the first unknown one is a 422 with suggestions."""
        if len(values) > self.max_items:
            raise ApiError(
                422,
                field,
                f"{len(values):,} items; at most {self.max_items:,} (the server's "
                f"--max-history-items; longer lists are refused, not cut)",
            )
        return [self.item(v, field if single else f"{field}[{n}]") for n, v in enumerate(values)]

    def item(self, value: str | int, field: str) -> int:
        text = str(value)
        if len(text) > MAX_TEXT:
            raise ApiError(422, field, f"{len(text):,} characters; an id or title has at most {MAX_TEXT}")
        if self.catalog.has_id(text):
            return self.catalog.index_of(text)
        found = self.catalog.by_title(text)
        if found is not None:
            return found.index
        how, matches = self.matcher.match(text, limit=SUGGESTIONS)
        if how == "exact":
            return matches[0]
        raise ApiError(422, field, f"unknown item id or title {text!r}", suggestions=self.suggest(matches))

    def suggest(self, matches: list[int]) -> list[str]:
        return [self.catalog[i].title for i in matches[:SUGGESTIONS]]
