"""Parse data files (RecBole atomic, MovieLens raw, plain JSONL/CSV) into a ``Dataset``.

The formats are described in ``m6gen.data``, whose ``load_dataset`` picks the reader.
Every problem in a file raises ``DataError``, one line: ``file:line: field: problem``.
"""

from __future__ import annotations

import csv
import gc
import io
import json
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from m6gen.data.catalog import Catalog, build_catalog

TITLE_FIELDS = ("movie_title", "title", "name", "item_name", "business_name", "book_title", "track_name")
YEAR_FIELDS = ("release_year", "year")
GENRE_FIELDS = ("class", "genre", "genres", "categories")
RECBOLE_TYPES = ("token", "token_seq", "float", "float_seq")
ML100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
ML1M_AGES = {"1": "Under 18", "18": "18-24", "25": "25-34", "35": "35-44", "45": "45-49", "50": "50-55", "56": "56+"}
ML1M_OCCUPATIONS = (
    "other",
    "academic/educator",
    "artist",
    "clerical/admin",
    "college/grad student",
    "customer service",
    "doctor/health care",
    "executive/managerial",
    "farmer",
    "homemaker",
    "K-12 student",
    "lawyer",
    "programmer",
    "retired",
    "sales/marketing",
    "scientist",
    "self-employed",
    "technician/engineer",
    "tradesman/craftsman",
    "unemployed",
    "writer",
)


class DataError(ValueError):
    """A problem in the data files. ``str(err)`` is one line: ``file:line: field: problem``."""

    def __init__(self, problem: str, path: str | Path | None = None, line: int | None = None, field: str | None = None):
        self.path, self.line, self.field = path, line, field
        where = f"{path}:{line}" if path is not None and line is not None else (str(path) if path is not None else "")
        parts = [p for p in (where, field, problem) if p]
        super().__init__(": ".join(parts).replace("\r", " ").replace("\n", " "))


@dataclass(frozen=True, eq=False)
class UserEvents:
    """One user's interactions in file order; iterating yields ``(item index, timestamp)`` pairs."""

    items: np.ndarray = field(metadata={"help": "(n,) int64 catalog indices"})
    times: np.ndarray = field(metadata={"help": "(n,) float64 timestamps as read (file line numbers if none)"})

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[tuple[int, float]]:
        return zip(self.items.tolist(), self.times.tolist())


@dataclass(eq=False)
class Dataset:
    """A catalog plus every user's interactions, as read."""

    catalog: Catalog = field(metadata={"help": "items with unique display titles"})
    interactions: dict[str, UserEvents] = field(metadata={"help": "user id -> events; users in first-seen order"})
    profiles: dict[str, dict[str, str]] = field(default_factory=dict, metadata={"help": "user id -> profile fields"})
    name: str = field(default="", metadata={"help": "data set name, e.g. 'ml-100k'"})
    skipped: int = field(default=0, metadata={"help": "interactions dropped for unknown item ids"})
    read_from: dict[str, str] = field(
        default_factory=dict,
        metadata={"help": "what was read: the items, interactions and users files, and the title column"},
    )

    def __post_init__(self):
        # Every user has every profile field ("" where not given), so a template's
        # {% if user.age %} works for all users while a misspelt field is still an error.
        fields = list(dict.fromkeys(f for prof in self.profiles.values() for f in prof))
        if fields:
            self.profiles = {
                u: {f: (self.profiles.get(u) or {}).get(f, "") for f in fields}
                for u in dict.fromkeys([*self.profiles, *self.interactions])
            }

    @property
    def n_interactions(self) -> int:
        return sum(len(ev) for ev in self.interactions.values())


# ---------------------------------------------------------------- shared parsing


def _lines(path: Path, encoding: str = "utf-8") -> list[str]:
    """The file's lines (without line ends), decoded strictly; DataError on a missing file or bad bytes."""
    if not path.is_file():
        raise DataError("missing file", path)
    data = path.read_bytes()
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        bad = data[err.start : err.start + 1]
        raise DataError(
            f"byte offset {err.start}: cannot decode byte {bad!r} as {encoding} (save the file as UTF-8)", path, line
        ) from None
    text = text.removeprefix("\ufeff")
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    # split("\n"), not splitlines(): latin-1 titles may hold U+0085, which splitlines() treats as a line end.
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


@contextmanager
def _gc_paused():
    """Pause the cyclic GC: building a million small lists triggers it over and over and triples parse time."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _table(path: Path, lines: list[str], sep: str, n_fields: int, start: int = 0) -> tuple[np.ndarray, list[list[str]]]:
    """(1-based line numbers, columns) of the non-blank lines from ``start``; a wrong field count raises."""
    numbers = np.arange(start + 1, len(lines) + 1)
    with _gc_paused():
        rows = [line.split(sep) for line in lines[start:]]
        odd = [k for k, row in enumerate(rows) if len(row) != n_fields]
        blank = [k for k in odd if not lines[start + k].strip()]
        if len(blank) < len(odd):
            k = next(k for k in odd if lines[start + k].strip())
            raise DataError(f"expected {n_fields} fields separated by {sep!r}, got {len(rows[k])}", path, start + k + 1)
        if blank:
            skip = set(blank)
            rows = [row for k, row in enumerate(rows) if k not in skip]
            numbers = np.delete(numbers, blank)
        columns = [[row[j] for row in rows] for j in range(n_fields)]
        del rows  # freed by refcount while the GC is still paused
    return numbers, columns


def _number(value: Any, path: Path, line: int, name: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise DataError(f"expected a number, got {value!r:.60}", path, line, name) from None
    if not np.isfinite(x):
        raise DataError(f"expected a finite number, got {value!r:.60}", path, line, name)
    return x


def _year(value: str) -> int | None:
    """The first 4-digit number in a field ('1995', '01-Jan-1995'), else None (ml-100k has 'unkonwn')."""
    m = re.search(r"(?<!\d)(\d{4})(?!\d)", value)
    return int(m.group(1)) if m else None


def _need(columns: list[str], names: tuple[str, ...], path: Path, hints: dict[str, str] | None = None) -> None:
    """A one-line error naming the first of ``names`` missing from ``columns``, with its hint if any."""
    for name in names:
        if name not in columns:
            hint = f"; {hints[name]}" if hints and name in hints else ""
            raise DataError(f"missing required column (columns: {', '.join(columns) or 'none'}){hint}", path, 1, name)


def _catalog(
    path: Path, numbers: Any, ids: list[str], titles: list[str], years=None, genres=None, descs=None, extras=None
) -> Catalog:
    """``build_catalog`` after checking the ids: none repeated, at least one."""
    if not ids:
        raise DataError("empty catalog: no items", path)
    seen: set[str] = set()
    for item_id, line in zip(ids, numbers):
        if item_id in seen:
            raise DataError(f"duplicate item id {item_id!r:.60}", path, int(line), "item_id")
        seen.add(item_id)
    return build_catalog(ids, titles, years, genres, descs, extras)


def _events(
    path: Path,
    numbers: np.ndarray,
    users: list[str],
    item_ids: list[str],
    times: list[Any] | None,
    catalog: Catalog,
    on_unknown_item: str,
) -> tuple[dict[str, UserEvents], int]:
    """Group per-interaction columns by user, file order kept, into compact arrays (no per-row objects).

    ``times`` None: line numbers serve as timestamps. Returns (events, number of skipped interactions).
    """
    if on_unknown_item not in ("raise", "skip"):
        raise ValueError(f"on_unknown_item must be 'raise' or 'skip', got {on_unknown_item!r}")
    if len(item_ids) == 0:  # else every later step reports 0 users, as if the data were merely small
        raise DataError("no interactions: the file holds none", path)
    index = {it.item_id: it.index for it in catalog}
    items = np.array([index.get(i, -1) for i in item_ids], dtype=np.int64)
    if times is None:
        ts = numbers.astype(np.float64)
    else:
        try:
            ts = np.array(times, dtype=np.float64)  # C-speed parse; on failure find the bad line below
        except (TypeError, ValueError):
            ts = np.full(len(times), np.nan)
        for k in np.flatnonzero(~np.isfinite(ts)):
            _number(times[k], path, int(numbers[k]), "timestamp")  # raises, naming the line
    unknown = np.flatnonzero(items < 0)
    if unknown.size and on_unknown_item == "raise":
        k = unknown[0]
        raise DataError(
            f"unknown item id {item_ids[k]!r:.60} (not in the item file; --unknown-items skip drops such lines)",
            path,
            int(numbers[k]),
            "item_id",
        )
    if unknown.size:
        warnings.warn(f"{path}: skipped {unknown.size} interactions with unknown item ids", stacklevel=3)
        keep = items >= 0
        items, ts = items[keep], ts[keep]
        users = [u for u, k in zip(users, keep.tolist()) if k]
    code_of: dict[str, int] = {}
    codes = np.array([code_of.setdefault(u, len(code_of)) for u in users], dtype=np.int64)
    order = np.argsort(codes, kind="stable")  # stable: each user's events stay in file order
    ends = np.cumsum(np.bincount(codes, minlength=len(code_of))).tolist()
    items, ts = items[order], ts[order]
    items.flags.writeable = ts.flags.writeable = False  # users share these arrays through views
    events = {u: UserEvents(items[a:b], ts[a:b]) for u, a, b in zip(code_of, [0, *ends[:-1]], ends)}
    return events, int(unknown.size)


def _delimited(path: Path, sep: str, n_fields: int, encoding: str = "latin-1"):
    """(line numbers, columns) of a headerless delimited file (MovieLens raw)."""
    return _table(path, _lines(path, encoding), sep, n_fields)


# ---------------------------------------------------------------- RecBole atomic files


def _atomic(path: Path) -> tuple[list[str], np.ndarray, list[list[str]]]:
    """(field names, line numbers, columns) of a RecBole atomic file."""
    lines = _lines(path)
    if not lines:
        raise DataError("empty file: expected a 'field:type' header", path, 1)
    names = []
    for col in lines[0].split("\t"):
        name, _, typ = col.strip().rpartition(":")
        if not name or typ not in RECBOLE_TYPES:
            raise DataError(f"header column {col!r:.60} is not 'name:type' with type in {RECBOLE_TYPES}", path, 1)
        names.append(name)
    _unique_columns(names, path, 1)
    return (names, *_table(path, lines, "\t", len(names), start=1))


def _recbole_name(folder: Path) -> str:
    if (folder / f"{folder.name}.inter").is_file():
        return folder.name
    stems = sorted(p.stem for p in folder.glob("*.inter"))
    if len(stems) != 1:
        raise DataError(f"expected one <name>.inter file, found {len(stems)}", folder)
    return stems[0]


def read_recbole(
    folder: str | Path, name: str | None = None, title_field: str | None = None, on_unknown_item: str = "raise"
) -> Dataset:
    """Read RecBole atomic files ``<name>.inter``, ``<name>.item``, optional ``<name>.user``."""
    folder = Path(folder)
    name = name or _recbole_name(folder)
    path = folder / f"{name}.item"
    names, numbers, cols = _atomic(path)
    title_field = title_field or next((f for f in TITLE_FIELDS if f in names), None)
    if title_field is None:
        raise DataError(f"no title column among {', '.join(TITLE_FIELDS)} (pass --title-field NAME)", path, 1)
    _need(names, ("item_id", title_field), path)
    col = dict(zip(names, cols))
    n = len(numbers)
    year_f = next((f for f in YEAR_FIELDS if f in col), None)
    genre_f = next((f for f in GENRE_FIELDS if f in col), None)
    rest = [f for f in names if f not in ("item_id", title_field, year_f, genre_f, "description")]
    catalog = _catalog(
        path,
        numbers,
        col["item_id"],
        col[title_field],
        [_year(v) for v in col[year_f]] if year_f else None,  # lenient: ml-100k's item 267 has 'unkonwn'
        [v.split() for v in col[genre_f]] if genre_f else None,  # token_seq: space-separated
        [v or None for v in col["description"]] if "description" in col else None,
        [{f: col[f][k] for f in rest} for k in range(n)],
    )

    path = folder / f"{name}.inter"
    names, numbers, cols = _atomic(path)
    _need(names, ("user_id", "item_id"), path)
    col = dict(zip(names, cols))
    events, skipped = _events(
        path, numbers, col["user_id"], col["item_id"], col.get("timestamp"), catalog, on_unknown_item
    )

    profiles: dict[str, dict[str, str]] = {}
    path = folder / f"{name}.user"
    if path.is_file():
        names, numbers, cols = _atomic(path)
        _need(names, ("user_id",), path)
        col = dict(zip(names, cols))
        rest = [f for f in names if f != "user_id"]
        _unique_users(col["user_id"], numbers, path)
        profiles = {u: {f: col[f][k] for f in rest} for k, u in enumerate(col["user_id"])}
    read_from = _read_from(folder, name, ".item", ".inter", ".user", title_field)
    return Dataset(catalog, events, profiles, name, skipped, read_from)


def _read_from(folder: Path, name: str, items: str, interactions: str, users: str, title: str) -> dict[str, str]:
    """``Dataset.read_from`` of a folder whose files are ``<name><suffix>`` (a missing users file left out)."""
    files = {"items file": name + items, "interactions file": name + interactions, "users file": name + users}
    return {**{k: f for k, f in files.items() if (folder / f).is_file()}, "title column": title}


def _unique_users(user_ids, lines, path: Path) -> None:
    """A user file names each user once (which profile would win is a guess): DataError at the first repeat."""
    seen: set[str] = set()
    for uid, line in zip(user_ids, lines):
        if uid in seen:
            raise DataError(f"duplicate user id {uid!r:.60}", path, int(line), "user_id")
        seen.add(uid)


# ---------------------------------------------------------------- MovieLens raw


def read_movielens_100k(folder: str | Path, on_unknown_item: str = "raise") -> Dataset:
    """Read raw MovieLens 100K: ``u.data``, ``u.item``, optional ``u.user`` (latin-1)."""
    folder = Path(folder)
    path = folder / "u.item"
    numbers, cols = _delimited(path, "|", 5 + len(ML100K_GENRES))
    flags = list(zip(*cols[5:]))
    genres = [[g for g, flag in zip(ML100K_GENRES, fl) if flag.strip() == "1"] for fl in flags]
    years = [_year(v) for v in cols[2]]  # release date '01-Jan-1995'; a year in the title wins
    catalog = _catalog(path, numbers, cols[0], cols[1], years, genres)

    path = folder / "u.data"
    numbers, cols = _delimited(path, "\t", 4)
    events, skipped = _events(path, numbers, cols[0], cols[1], cols[3], catalog, on_unknown_item)

    profiles = {}
    path = folder / "u.user"
    if path.is_file():
        numbers, cols = _delimited(path, "|", 5)
        _unique_users(cols[0], numbers, path)
        keys = ("age", "gender", "occupation", "zip_code")
        profiles = {u: dict(zip(keys, rest)) for u, *rest in zip(*cols)}
    read_from = {"items file": "u.item", "interactions file": "u.data", **({"users file": "u.user"} if profiles else {})}
    return Dataset(catalog, events, profiles, "ml-100k", skipped, {**read_from, "title column": "u.item, field 2"})


def read_movielens_1m(folder: str | Path, on_unknown_item: str = "raise") -> Dataset:
    """Read raw MovieLens 1M: ``ratings.dat``, ``movies.dat``, optional ``users.dat`` (latin-1)."""
    folder = Path(folder)
    path = folder / "movies.dat"
    numbers, cols = _delimited(path, "::", 3)
    catalog = _catalog(path, numbers, cols[0], cols[1], None, [[g for g in v.split("|") if g] for v in cols[2]])

    path = folder / "ratings.dat"
    numbers, cols = _delimited(path, "::", 4)
    events, skipped = _events(path, numbers, cols[0], cols[1], cols[3], catalog, on_unknown_item)

    profiles = {}
    path = folder / "users.dat"
    if path.is_file():
        numbers, cols = _delimited(path, "::", 5)
        _unique_users(cols[0], numbers, path)
        occupations = {str(i): name for i, name in enumerate(ML1M_OCCUPATIONS)}
        for u, gender, age, occ, zip_code in zip(*cols):
            profiles[u] = {
                "gender": gender,
                "age": ML1M_AGES.get(age, age),
                "occupation": occupations.get(occ, occ),
                "zip_code": zip_code,
            }
    read_from = {"items file": "movies.dat", "interactions file": "ratings.dat", **({"users file": "users.dat"} if profiles else {})}
    return Dataset(catalog, events, profiles, "ml-1m", skipped, {**read_from, "title column": "movies.dat, field 2"})


# ---------------------------------------------------------------- plain JSONL / CSV


def plain_file(folder: Path, stem: str) -> Path | None:
    """``<stem>.jsonl`` or ``<stem>.csv`` in ``folder`` (JSONL first), or None."""
    return next((p for p in (folder / f"{stem}.jsonl", folder / f"{stem}.csv") if p.is_file()), None)


def _records(path: Path) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    """(columns, [(line, record)]) of a JSONL or CSV file; JSONL columns are the keys of any line, in
    first-seen order, so a key left out of one line (the first included) is a missing value there."""
    lines = _lines(path)
    out = []
    if path.suffix == ".csv":
        reader = csv.reader(io.StringIO("\n".join(lines)))
        try:
            header = [h.strip() for h in next(reader, [])]
            _unique_columns(header, path, 1)
            with _gc_paused():
                for row in reader:
                    if not any(v.strip() for v in row):
                        continue
                    if len(row) != len(header):
                        raise DataError(
                            f"expected {len(header)} comma-separated fields, got {len(row)}", path, reader.line_num
                        )
                    out.append((reader.line_num, {h: v.strip() for h, v in zip(header, row)}))
        except csv.Error as err:  # e.g. a stray carriage return inside an unquoted field
            why = "a line break inside an unquoted field (quote the field)" if "new-line" in str(err) else str(err)
            raise DataError(f"not valid CSV: {why}", path, reader.line_num) from None
        return header, out
    with _gc_paused():
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"invalid JSON: {err.msg} at column {err.colno}", path, i) from None
            if not isinstance(rec, dict):
                raise DataError("expected a JSON object", path, i)
            out.append((i, rec))
    return list(dict.fromkeys(key for _, rec in out for key in rec)), out


def _unique_columns(names: list[str], path: Path, line: int) -> None:
    """A column named twice would be read from its last copy without a word: an error instead."""
    twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if twice is not None:
        raise DataError("column named twice in the header", path, line, twice)


def _text(rec: dict[str, Any], key: str, path: Path, line: int, required: bool = True) -> str | None:
    value = rec.get(key)
    if value is None or value == "":
        if required:
            raise DataError("missing value", path, line, key)
        return None
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _required_file(folder: Path, stem: str) -> Path:
    path = plain_file(folder, stem)
    if path is None:
        raise DataError(f"missing file {stem}.jsonl or {stem}.csv", folder)
    return path


def read_plain(folder: str | Path, title_field: str | None = None, on_unknown_item: str = "raise") -> Dataset:
    """Read the plain format: ``items``, ``interactions`` and optional ``users`` as ``.jsonl`` or ``.csv``."""
    folder = Path(folder)
    title_field = title_field or "title"
    path = _required_file(folder, "items")
    read_from = {"items file": path.name}
    cols, recs = _records(path)
    if not recs:
        raise DataError("empty catalog: no items", path)
    hint = {title_field: "--title-field NAME reads the titles from another column"}  # e.g. a "name" column
    _need(cols, ("item_id", title_field), path, hint)
    known = {"item_id", title_field, "year", "genres", "description"}
    ids, titles, years, genres, descs, extras = [], [], [], [], [], []
    for line, rec in recs:
        ids.append(_text(rec, "item_id", path, line))
        titles.append(_text(rec, title_field, path, line))
        year = _text(rec, "year", path, line, required=False)
        if year is not None and not re.fullmatch(r"-?\d+", year):
            raise DataError(f"expected an integer, got {year!r:.60}", path, line, "year")
        years.append(int(year) if year is not None else None)
        g = rec.get("genres") or []
        if isinstance(g, str):
            g = [s.strip() for s in g.split("|")]
        if not isinstance(g, list):
            raise DataError("expected a list of strings (JSONL) or '|'-separated text (CSV)", path, line, "genres")
        genres.append([str(s) for s in g if str(s)])
        descs.append(_text(rec, "description", path, line, required=False))
        extras.append({k: v for k in rec if k not in known and (v := _text(rec, k, path, line, False)) is not None})
    extra_fields = list(dict.fromkeys(k for e in extras for k in e))  # every item gets each ("" where not given)
    extras = [{k: e.get(k, "") for k in extra_fields} for e in extras]
    catalog = _catalog(path, [line for line, _ in recs], ids, titles, years, genres, descs, extras)

    path = _required_file(folder, "interactions")
    cols, recs = _records(path)
    if recs:
        _need(cols, ("user_id", "item_id"), path)
    numbers = np.array([line for line, _ in recs], dtype=np.int64)
    users = [_text(rec, "user_id", path, line) for line, rec in recs]
    item_ids = [_text(rec, "item_id", path, line) for line, rec in recs]
    times = None
    if "timestamp" in cols:
        times = [rec.get("timestamp") for _, rec in recs]
        for (line, _), t in zip(recs, times):
            if t is None or t == "":
                raise DataError("missing value", path, line, "timestamp")
    events, skipped = _events(path, numbers, users, item_ids, times, catalog, on_unknown_item)

    read_from["interactions file"] = path.name
    profiles = {}
    path = plain_file(folder, "users")
    if path is not None:
        read_from["users file"] = path.name
        cols, recs = _records(path)
        _need(cols, ("user_id",), path)
        _unique_users([_text(rec, "user_id", path, line) for line, rec in recs], [line for line, _ in recs], path)
        for line, rec in recs:
            fields = {k: v for k in rec if k != "user_id" and (v := _text(rec, k, path, line, False)) is not None}
            profiles[_text(rec, "user_id", path, line)] = fields
    return Dataset(catalog, events, profiles, folder.name, skipped, {**read_from, "title column": title_field})
