"""Behaviour data: load a data set, build time-ordered histories, split leave-one-out, count popularity.

Pipeline::

    ds = load_dataset()                      # default: RecBole ml-100k from scripts/setup.sh
    histories = build_histories(ds)          # user -> item indices, oldest first
    split = leave_one_out(histories)         # train / valid / test per user
    pop = item_popularity(split, len(ds.catalog))

Formats (``load_dataset`` detects them from the files in a folder; ratings are ignored, every
interaction counts as consumption; ids are kept as text):

``recbole``  RecBole atomic files ``<name>.inter``, ``<name>.item``, optional ``<name>.user``
    (``<name>``: the folder's name, or the stem of its only ``*.inter``). UTF-8, tab-separated,
    header ``field:type`` (types token, token_seq, float, float_seq). ``.inter`` needs ``user_id``,
    ``item_id`` (``timestamp`` optional); ``.item`` needs ``item_id`` and a title column
    (``title_field``, else the first present of ``TITLE_FIELDS``: movie_title, title, name, ...);
    ``release_year``/``year``, ``class``/``genre``/``genres``/``categories`` (space-separated) and
    ``description`` are used when present, other columns go to ``Item.extra``; ``.user`` columns
    other than ``user_id`` become profiles.
``ml-100k``  MovieLens 100K raw: ``u.data`` (user, item, rating, timestamp; tabs), ``u.item``
    (``|``-separated, latin-1, 19 genre flags), optional ``u.user``.
``ml-1m``    MovieLens 1M raw: ``ratings.dat``, ``movies.dat`` (``id::title::Genre|Genre``, latin-1),
    optional ``users.dat`` (age and occupation codes mapped to the names in its README).
``plain``    The m6gen plain format, UTF-8; each file is JSONL (one object a line) or CSV (header row):

    ``items.jsonl`` | ``items.csv``
        ``item_id`` (required), ``title`` (required), ``year`` (optional integer),
        ``genres`` (optional; a list of strings in JSONL, ``|``-separated in CSV),
        ``description`` (optional); any other column is kept, as text, in ``Item.extra``.
    ``interactions.jsonl`` | ``interactions.csv``
        ``user_id``, ``item_id`` (required), ``timestamp`` (a number, e.g. Unix seconds).
        Without a ``timestamp`` column (JSONL: key absent from the first line), file order is time order.
    ``users.jsonl`` | ``users.csv`` (optional)
        ``user_id`` plus any profile fields (age, gender, occupation, ...), kept as text.

    Example ``items.jsonl`` line: ``{"item_id": "1", "title": "Toy Story", "year": 1995,
    "genres": ["Animation", "Comedy"]}``; ``interactions.csv``: ``user_id,item_id,timestamp``
    then ``u1,1,881250949``.

Errors: any problem in a file raises ``DataError`` (a ``ValueError``) whose message is one line,
``file:line: field: problem``. An interaction whose item id is not in the catalog raises,
unless ``on_unknown_item="skip"``: it is then dropped, counted in ``Dataset.skipped`` and
reported once with ``warnings.warn``.

Ordering: a history is sorted by timestamp only, with a stable sort, so equal timestamps keep
file order. It is never ordered by item id: on ties that would put the target where its id
says, which leaks the answer.

Repeats: ``dedupe="first"`` (default) keeps each item's first consumption, so a user's valid
and test items never appear in their train items, and "drop already-seen items" at generation
time can never remove the right answer. With ``dedupe="keep"`` an item consumed again later
may appear in train *and* as the valid/test target: a legitimate repeat, not a leak, but
it makes seen-item filtering and metrics ambiguous. ``"last"`` keeps the last consumption,
which hides that the target was seen before; use it only on purpose.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from m6gen.data.readers import (  # re-exported: m6gen.data is the public entry point
    TITLE_FIELDS,
    DataError,
    Dataset,
    UserEvents,
    plain_file,
    read_movielens_1m,
    read_movielens_100k,
    read_plain,
    read_recbole,
)

__all__ = [
    "FORMATS",
    "TITLE_FIELDS",
    "DataError",
    "Dataset",
    "UserEvents",
    "default_data_dir",
    "detect_format",
    "load_dataset",
    "load_dataset_noted",
    "read_movielens_1m",
    "read_movielens_100k",
    "read_plain",
    "read_recbole",
    "DEDUPE",
    "build_histories",
    "Split",
    "leave_one_out",
    "item_popularity",
    "cold_items",
    "user_frequency",
    "summary",
]

FORMATS = ("recbole", "ml-100k", "ml-1m", "plain")
DEDUPE = ("first", "keep", "last")
Dedupe = Literal["first", "keep", "last"]


def default_data_dir(must_exist: bool = True) -> Path:
    """``$M6GEN_DATA`` if set, else ``<repo>/data/cache/ml-100k`` (RecBole ml-100k, put there by set-up).

    Raises DataError, telling how to get the data, when ``must_exist`` and the folder is missing.
    """
    env = os.environ.get("M6GEN_DATA")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "data" / "cache" / "ml-100k"
    if must_exist and not path.is_dir():
        hint = "check M6GEN_DATA" if env else "run `bash scripts/setup.sh` to fetch MovieLens-100K, or set M6GEN_DATA"
        raise DataError(f"no data folder: {hint}", path)
    return path


def detect_format(folder: str | Path) -> str:
    """Which of ``FORMATS`` the files in ``folder`` are; DataError if none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError("not a folder (expected a data folder)", folder)
    found = {
        "recbole": sorted(p.name for p in folder.glob("*.inter"))[:1],
        "ml-100k": [n for n in ("u.data", "u.item") if (folder / n).is_file()],
        "ml-1m": [n for n in ("ratings.dat", "movies.dat") if (folder / n).is_file()],
        "plain": [p.name for p in (plain_file(folder, "items"), plain_file(folder, "interactions")) if p],
    }
    found = {fmt: files for fmt, files in found.items() if files}
    if len(found) > 1:  # silently picking one would read other data than the user meant
        kinds = "; ".join(f"{fmt}: {', '.join(files)}" for fmt, files in found.items())
        raise DataError(f"holds files of several formats ({kinds}); choose one with --format", folder)
    if found:
        return next(iter(found))
    raise DataError(
        "no known data files (<name>.inter, u.data, ratings.dat, or items + interactions .jsonl/.csv)", folder
    )


def load_dataset(
    path: str | Path | None = None, fmt: str = "auto", title_field: str | None = None, on_unknown_item: str = "raise"
) -> Dataset:
    """Read the data set in folder ``path`` (None: ``default_data_dir()``).

    Args:
        fmt: one of ``FORMATS``, or "auto" to detect it from the files present.
        title_field: the item title column (RecBole, plain); default: detected / "title".
        on_unknown_item: "raise" (default) or "skip" interactions whose item id is not in the catalog.
    """
    folder = default_data_dir() if path is None else Path(path)
    if fmt == "auto":
        fmt = detect_format(folder)
    elif not folder.is_dir():
        raise DataError("not a folder (expected a data folder)", folder)
    if fmt == "recbole":
        return read_recbole(folder, title_field=title_field, on_unknown_item=on_unknown_item)
    if fmt == "ml-100k":
        return read_movielens_100k(folder, on_unknown_item)
    if fmt == "ml-1m":
        return read_movielens_1m(folder, on_unknown_item)
    if fmt == "plain":
        return read_plain(folder, title_field, on_unknown_item)
    raise ValueError(f"fmt must be 'auto' or one of {FORMATS}, got {fmt!r}")


def load_dataset_noted(path: str | Path | None, fmt: str, title_field: str | None, unknown_items: str, say) -> Dataset:
    """``load_dataset`` for the commands: ``unknown_items`` is "error" or "skip", and what a reader
    warns about (the interactions it skipped) goes to ``say`` as one line instead of a Python warning."""
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always", UserWarning)
        ds = load_dataset(
            path, fmt=fmt, title_field=title_field, on_unknown_item="skip" if unknown_items == "skip" else "raise"
        )
    for w in said:
        say(f"note: {w.message}")
    return ds


def _dedupe(items: np.ndarray, how: str) -> np.ndarray:
    """Keep the first or last occurrence of each item, in time order."""
    if how == "keep" or len(items) < 2:
        return items
    if how == "first":
        _, first = np.unique(items, return_index=True)  # index of each value's first occurrence
        return items[np.sort(first)]
    _, from_end = np.unique(items[::-1], return_index=True)
    return items[np.sort(len(items) - 1 - from_end)]


def build_histories(dataset: Dataset, dedupe: Dedupe = "first", min_history: int = 3) -> dict[str, list[int]]:
    """Per-user item indices, oldest first.

    Args:
        dataset: as read by ``load_dataset``.
        dedupe: "first" (default), "keep" or "last" occurrence of repeated items (module docstring).
        min_history: users with fewer items (after dedupe) are dropped; 3 leaves leave-one-out
            at least one train item.

    Returns
    -------
    dict user id -> list of catalog indices, users in dataset order.
    """
    if dedupe not in DEDUPE:
        raise ValueError(f"dedupe must be one of {DEDUPE}, got {dedupe!r}")
    if isinstance(min_history, bool) or not isinstance(min_history, int) or min_history < 1:
        raise ValueError(f"min_history must be an integer >= 1, got {min_history!r}")
    out = {}
    for user, ev in dataset.interactions.items():
        order = np.argsort(ev.times, kind="stable")  # timestamp only; ties keep file order
        items = _dedupe(ev.items[order], dedupe)
        if len(items) >= min_history:
            out[user] = items.tolist()
    return out


@dataclass
class Split:
    """Leave-one-out split: per user, the last item is test, the one before is valid, the rest train."""

    train: dict[str, list[int]] = field(metadata={"help": "user -> all items but the last two, oldest first"})
    valid: dict[str, int] = field(metadata={"help": "user -> second-to-last item"})
    test: dict[str, int] = field(metadata={"help": "user -> last item"})
    new_items: frozenset[int] = field(
        default=frozenset(),
        metadata={"help": "items held out as new (m6gen.data.new_items): in no train list and no history"},
    )

    @property
    def users(self) -> list[str]:
        return list(self.train)

    def _check_user(self, user) -> None:
        """A user the split does not hold is named, with what its ids look like (strings, e.g. '196')."""
        if user not in self.train:
            raise KeyError(f"unknown user id {user!r} (ids are strings like {', '.join(map(repr, self.users[:3]))})")

    def valid_history(self, user: str) -> list[int]:
        """What the model sees when predicting ``valid[user]``: the train items."""
        self._check_user(user)
        return list(self.train[user])

    def test_history(self, user: str) -> list[int]:
        """What the model sees when predicting ``test[user]``: train items, then the valid item
        (unless the valid item is a new item: new items are in no history)."""
        self._check_user(user)
        valid = [] if self.valid[user] in self.new_items else [self.valid[user]]
        return [*self.train[user], *valid]


def leave_one_out(histories: dict[str, list[int]]) -> Split:
    """Split every history (>= 3 items; see ``build_histories(min_history=3)``) into train/valid/test."""
    train, valid, test = {}, {}, {}
    for user, items in histories.items():
        if len(items) < 3:
            raise ValueError(
                f"user {user!r} has {len(items)} items; leave-one-out needs >= 3 (--min-history 3 or more)"
            )
        train[user] = list(items[:-2])
        valid[user] = int(items[-2])
        test[user] = int(items[-1])
    return Split(train, valid, test)


def _train_indices(split: Split, n_items: int, per_user) -> np.ndarray:
    arrays = [per_user(np.asarray(v, dtype=np.int64)) for v in split.train.values() if v]
    flat = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
    if flat.size and (flat.min() < 0 or flat.max() >= n_items):
        raise ValueError(f"train item indices must lie in [0, {n_items}), got range [{flat.min()}, {flat.max()}]")
    return np.bincount(flat, minlength=n_items)


def item_popularity(split: Split, n_items: int) -> np.ndarray:
    """(n_items,) int64: how often each item occurs in train (valid/test items are not counted)."""
    return _train_indices(split, n_items, lambda a: a)


def cold_items(split: Split, n_items: int) -> np.ndarray:
    """Catalog indices of the items no training interaction names (under the new-item protocol: the
    new items), in catalog order: what a shelf of new items may show."""
    return np.flatnonzero(item_popularity(split, n_items) == 0)


def user_frequency(split: Split, n_items: int) -> np.ndarray:
    """(n_items,) int64: how many distinct users have each item in train (for novelty metrics)."""
    return _train_indices(split, n_items, np.unique)


def summary(dataset: Dataset, split: Split) -> dict[str, int | float | str]:
    """Counts for the CLI to print: data as read, then the split."""
    n_split = len(split.train)
    n_train = sum(len(v) for v in split.train.values())
    return {
        "name": dataset.name,
        "users": len(dataset.interactions),
        "items": len(dataset.catalog),
        "interactions": dataset.n_interactions,
        "skipped_interactions": dataset.skipped,
        "split_users": n_split,
        "train_interactions": n_train,
        "valid": len(split.valid),
        "test": len(split.test),
        # after dedupe and the min_history filter: train + valid + test items per user
        "mean_history_length": round((n_train + 2 * n_split) / n_split, 2) if n_split else 0.0,
        **(new_item_counts(split) if split.new_items else {}),
    }


def new_item_counts(split: Split) -> dict[str, int]:
    """What --new-items held out, to check a split by: the new items, and the users whose target is one."""
    return {
        "new_items": len(split.new_items),
        "valid_new_item_targets": sum(item in split.new_items for item in split.valid.values()),
        "test_new_item_targets": sum(item in split.new_items for item in split.test.values()),
    }
